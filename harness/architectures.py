"""Real architectures to validate verdicts on, with seeded, realistic weights.

- `REAL`: torchvision's and transformers' own model classes (MobileNetV3-Small, ResNet-18, a small
  ViT, BERT, GPT-2 configurations), for the benchmarks. Install them with
  `pip install --no-deps torchvision==0.28.0` (its compiled ops do not load beside the CPU torch
  wheel; `import_torchvision` skips the fake-op registration that fails, and the model classes work)
  and `pip install -c constraints.txt transformers`. Nothing is downloaded: weights are random.
- `SMALL`: in-code networks of the same kinds (depthwise/hardswish/squeeze-excite CNN, ResNet, a
  BERT-like encoder with an attention mask, a GPT-like decoder), small enough for the test suite.

Freshly initialised networks' outputs are not those of trained ones: BatchNorm sits at its identity
statistics and classifier heads start near zero, so outputs can be 1e-9 (a tolerance check of those
accepts anything). Every model here is seeded, has its BatchNorm statistics re-estimated on random
inputs, and has its output head scaled so its largest output over a calibration batch is about
HEAD_MAX, as a trained classifier's logits are.
"""

from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from harness import zoo

#: The largest output of a calibrated model over its calibration batch (trained logits reach O(10-100)).
HEAD_MAX = 40.0


@dataclass(frozen=True)
class Architecture:
    """A model family: how to build it for a seed, its input spec and an example input factory."""

    name: str
    build: Callable[[int], nn.Module]
    inputs: tuple[str, ...]
    example: Callable[[int], tuple[torch.Tensor, ...]]
    #: What it needs installed (the package names), for a clear message when it is missing.
    needs: tuple[str, ...] = ()


def import_torchvision() -> Any:
    """torchvision's model classes beside the CPU torch wheel: its compiled ops (nms, roi_align) do not
    load there, and registering their fake implementations fails the import; skip that registration."""
    if "torchvision" not in sys.modules:
        sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision

    return torchvision


def import_transformers() -> Any:
    """transformers, which imports torchvision when it is installed (see import_torchvision)."""
    try:
        import_torchvision()
    except ImportError:
        pass
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def calibrate(model: nn.Module, batch: Callable[[], tuple[torch.Tensor, ...]], head: Any) -> nn.Module:
    """Re-estimate BatchNorm statistics on `batch()` inputs, then scale `head` (a Linear) so the
    largest output over one batch is HEAD_MAX; returns the model in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average over the calibration batches
        model.train()
        with torch.no_grad():
            for _ in range(4):
                model(*batch())
    model.eval()
    if head is not None:
        with torch.no_grad():
            outputs = model(*batch())
            first = outputs[0] if isinstance(outputs, tuple) else outputs
            largest = float(first.abs().max())
            if largest > 0:
                head.weight.mul_(HEAD_MAX / largest)
                if head.bias is not None:
                    head.bias.mul_(HEAD_MAX / largest)
    return model


def _images(size: int, count: int = 16) -> Callable[[], tuple[torch.Tensor, ...]]:
    return lambda: (torch.randn(count, 3, size, size),)


# -- small in-code networks (tests) -------------------------------------------------------------


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeezed: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(scale))))


class InvertedResidual(nn.Module):
    """MobileNetV3's block: 1x1 expansion, depthwise k x k, optional squeeze-excite, 1x1 projection."""

    def __init__(self, inp: int, expanded: int, out: int, kernel: int, stride: int, se: bool, hardswish: bool) -> None:
        super().__init__()
        act: type[nn.Module] = nn.Hardswish if hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if expanded != inp:
            layers += [nn.Conv2d(inp, expanded, 1, bias=False), nn.BatchNorm2d(expanded), act()]
        layers += [
            nn.Conv2d(expanded, expanded, kernel, stride, kernel // 2, groups=expanded, bias=False),
            nn.BatchNorm2d(expanded),
            act(),
        ]
        if se:
            layers.append(SqueezeExcite(expanded, max(8, expanded // 4)))
        layers += [nn.Conv2d(expanded, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and inp == out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3Like(nn.Module):
    """MobileNetV3-Small's shape (hardswish stem, depthwise blocks with squeeze-excite, hardswish
    head) at a reduced depth and width."""

    #: (kernel, expanded, out, squeeze-excite, hardswish, stride)
    BLOCKS = (
        (3, 16, 16, True, False, 2),
        (3, 48, 24, False, False, 2),
        (3, 64, 24, False, False, 1),
        (5, 96, 40, True, True, 2),
        (5, 160, 40, True, True, 1),
        (5, 120, 48, True, True, 1),
    )

    def __init__(self, classes: int = 100) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()]
        inp = 16
        for kernel, expanded, out, se, hardswish, stride in self.BLOCKS:
            layers.append(InvertedResidual(inp, expanded, out, kernel, stride, se, hardswish))
            inp = out
        layers += [nn.Conv2d(inp, 6 * inp, 1, bias=False), nn.BatchNorm2d(6 * inp), nn.Hardswish()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(6 * inp, 256), nn.Hardswish(), nn.Linear(256, classes))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(input), 1)
        return self.classifier(torch.flatten(x, 1))


class DecoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(batch, seq, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        causal = torch.ones(seq, seq, dtype=torch.bool, device=x.device).tril()
        scores = (q @ k.transpose(-1, -2)) / (dim // self.heads) ** 0.5
        scores = scores.masked_fill(~causal, -10000.0)
        x = x + self.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, dim))
        return x + self.mlp(self.norm2(x))


class GPTLike(nn.Module):
    """GPT-2's shape (learned positions, pre-norm causal blocks, tanh GELU, tied output head)."""

    def __init__(self, vocab: int = 500, seq: int = 16, dim: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Embedding(seq, dim)
        self.blocks = nn.ModuleList(DecoderBlock(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        with torch.no_grad():
            self.embed.weight.normal_(0.0, 0.3)  # tied head: logits of O(10), as a trained LM's
            self.position.weight.normal_(0.0, 0.1)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.embed(input_ids) + self.position(positions)
        for block in self.blocks:
            x = block(x)
        return self.norm(x) @ self.embed.weight.t()


def _small_mobilenet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = MobileNetV3Like()
    return calibrate(model, _images(32), model.classifier[-1])


def _small_resnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = zoo.ResNet(width=8, num_classes=100)
    return calibrate(model, _images(32), model.fc)


def _small_bert(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return zoo.TinyEncoder(vocab=500, seq=16, dim=64, heads=4, layers=2, classes=8).eval()


def _small_gpt(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return GPTLike().eval()


def _ids(vocab: int, seq: int) -> Callable[[int], tuple[torch.Tensor, ...]]:
    return lambda n: (torch.randint(0, vocab, (n, seq)),)


def _ids_and_mask(vocab: int, seq: int) -> Callable[[int], tuple[torch.Tensor, ...]]:
    return lambda n: (torch.randint(0, vocab, (n, seq)), torch.ones(n, seq, dtype=torch.int64))


SMALL: dict[str, Architecture] = {
    "mobilenet": Architecture(
        "mobilenet", _small_mobilenet, ("input:float32[N,3,32,32]",), lambda n: (torch.randn(n, 3, 32, 32),)
    ),
    "resnet": Architecture(
        "resnet", _small_resnet, ("input:float32[N,3,32,32]",), lambda n: (torch.randn(n, 3, 32, 32),)
    ),
    "bert": Architecture(
        "bert",
        _small_bert,
        ("input_ids:int64[N,16]{0..499}", "attention_mask:int64[N,16]{0..1}"),
        _ids_and_mask(500, 16),
    ),
    "gpt": Architecture("gpt", _small_gpt, ("input_ids:int64[N,16]{0..499}",), _ids(500, 16)),
}


# -- the real classes (benchmarks) --------------------------------------------------------------


def _mobilenet_v3_small(seed: int) -> nn.Module:
    models = import_torchvision().models
    torch.manual_seed(seed)
    model = models.mobilenet_v3_small()
    return calibrate(model, _images(224), model.classifier[-1])


def _resnet18(seed: int) -> nn.Module:
    models = import_torchvision().models
    torch.manual_seed(seed)
    model = models.resnet18()
    return calibrate(model, _images(224), model.fc)


def _vit(seed: int) -> nn.Module:
    """torchvision's VisionTransformer at ViT-Ti/16's width and depth, on 64x64 images."""
    vision = import_torchvision()
    torch.manual_seed(seed)
    model = vision.models.VisionTransformer(
        image_size=64, patch_size=16, num_layers=12, num_heads=3, hidden_dim=192, mlp_dim=768, num_classes=1000
    )
    with torch.no_grad():  # torchvision zero-initialises the head: give it a trained head's spread
        nn.init.normal_(model.heads.head.weight, std=0.02)
    return calibrate(model, _images(64), model.heads.head)


class _Bert(nn.Module):
    """BertModel's last hidden state and pooled output, from ids and an attention mask.

    The first position ([CLS], which a tokenizer always emits) is always attended: a row whose
    every position is masked has no defined result (torch's own eager and SDPA attention disagree
    on it by O(1), and so does ONNX Runtime), so it is not a question a correctness gate can ask.
    """

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        attention_mask = torch.cat([torch.ones_like(attention_mask[:, :1]), attention_mask[:, 1:]], dim=1)
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask)
        return out.last_hidden_state, out.pooler_output


class _Gpt2(nn.Module):
    """GPT2LMHeadModel's logits, without the key/value cache."""

    def __init__(self, gpt: nn.Module) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.gpt(input_ids=input_ids, use_cache=False).logits


def _bert(seed: int) -> nn.Module:
    """BERT-mini's shape (4 layers, 256 wide, 4 heads) with BERT's vocabulary and exact GELU."""
    transformers = import_transformers()
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024
    )
    return _Bert(transformers.BertModel(config, add_pooling_layer=True)).eval()


def _gpt2(seed: int) -> nn.Module:
    """GPT-2's blocks (tanh GELU, pre-norm, tied head) at 4 layers x 256, a 5000-token vocabulary,
    and an initializer range giving logits of O(10), as a trained LM's."""
    transformers = import_transformers()
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_embd=256,
        n_layer=4,
        n_head=4,
        vocab_size=5000,
        n_positions=128,
        initializer_range=0.1,
        bos_token_id=0,
        eos_token_id=0,
    )
    return _Gpt2(transformers.GPT2LMHeadModel(config)).eval()


REAL: dict[str, Architecture] = {
    "mobilenet_v3_small": Architecture(
        "mobilenet_v3_small",
        _mobilenet_v3_small,
        ("x:float32[N,3,224,224]",),
        lambda n: (torch.randn(n, 3, 224, 224),),
        ("torchvision",),
    ),
    "resnet18": Architecture(
        "resnet18", _resnet18, ("x:float32[N,3,224,224]",), lambda n: (torch.randn(n, 3, 224, 224),), ("torchvision",)
    ),
    "vit": Architecture(
        "vit", _vit, ("x:float32[N,3,64,64]",), lambda n: (torch.randn(n, 3, 64, 64),), ("torchvision",)
    ),
    "bert": Architecture(
        "bert",
        _bert,
        ("input_ids:int64[N,64]{0..30521}", "attention_mask:int64[N,64]{0..1}"),
        _ids_and_mask(30522, 64),
        ("transformers",),
    ),
    "gpt2": Architecture("gpt2", _gpt2, ("input_ids:int64[N,32]{0..4999}",), _ids(5000, 32), ("transformers",)),
}


def write(architecture: Architecture, seed: int, path: Any) -> Any:
    """Build `architecture` for `seed` and save it where `path`'s suffix says (zoo.save), with its sidecar."""
    from pathlib import Path

    path = Path(path)
    model = architecture.build(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fmt = {".pt": "torchscript", ".pt2": "pt2", ".onnx": "onnx", ".pkl": "pickle"}[path.suffix]
        zoo.save(model, architecture.example(2), path, fmt, [s.split(":")[0] for s in architecture.inputs])
    listed = ", ".join(f'"{spec}"' for spec in architecture.inputs)
    path.with_name(path.stem + ".navigator.toml").write_text(f"inputs = [{listed}]\n")
    return path
