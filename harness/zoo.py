"""Demo models defined in code (no model hub here), calibrated, written as TorchScript/.pt2/ONNX/pickle.

python -m harness.zoo resnet --out demo/resnet.pt2
python -m harness.zoo transformer --out demo/encoder.onnx
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMATS = ("torchscript", "pt2", "onnx", "pickle")
_SUFFIX_FORMAT = {
    ".pt": "torchscript",
    ".ts": "torchscript",
    ".pt2": "pt2",
    ".onnx": "onnx",
    ".pkl": "pickle",
    ".pth": "pickle",
}


class BasicBlock(nn.Module):
    def __init__(self, inp: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.down: nn.Module = nn.Identity()
        if stride != 1 or inp != out:
            self.down = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.down(x))


class ResNet(nn.Module):
    """ResNet-18's shape (stem, 4 stages of 2 basic blocks, pool, fc) at a reduced width."""

    def __init__(self, width: int = 16, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
        )
        stages: list[nn.Module] = []
        inp = width
        for index, out in enumerate((width, width * 2, width * 4, width * 8)):
            stride = 1 if index == 0 else 2
            stages += [BasicBlock(inp, out, stride), BasicBlock(out, out, 1)]
            inp = out
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(input))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, seq, dim = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(batch, seq, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / (dim // self.heads) ** 0.5 + bias
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, dim)
        x = x + self.proj(attended)
        return x + self.ff(self.norm2(x))


class TinyEncoder(nn.Module):
    """A transformer encoder over int64 token ids with a 0/1 attention mask; a padded batch is fine.

    The mask enters as a finite additive bias (not -inf), so a row with every token masked
    still gives finite outputs.
    """

    def __init__(
        self, vocab: int = 1000, seq: int = 32, dim: int = 64, heads: int = 4, layers: int = 2, classes: int = 4
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.position = nn.Parameter(torch.randn(1, seq, dim) * 0.1)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, 2 * dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mask = attention_mask.to(torch.float32)
        bias = ((1.0 - mask) * -10000.0)[:, None, None, :]
        x = self.embed(input_ids) + self.position
        for layer in self.layers:
            x = layer(x, bias)
        x = self.norm(x)
        pooled = (x * mask[:, :, None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return self.head(pooled), pooled


class MLP(nn.Module):
    def __init__(self, features: int = 64, hidden: int = 128, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes)
        )

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.net(input)


@dataclass(frozen=True)
class DemoModel:
    """A zoo entry: how to build it, its input spec strings and an example input factory."""

    build: Callable[[], nn.Module]
    inputs: tuple[str, ...]
    example: Callable[[int], tuple[torch.Tensor, ...]]


def _resnet() -> nn.Module:
    model = ResNet()
    _calibrate_batchnorm(model, lambda: (torch.randn(16, 3, 224, 224),))
    return model


#: Significant bits kept of each calibrated BatchNorm statistic (float32 keeps 24).
STATISTIC_BITS = 16


def _calibrate_batchnorm(model: nn.Module, batch: Callable[[], tuple[torch.Tensor, ...]], steps: int = 4) -> None:
    """Give BatchNorm real running statistics, so eval-mode activations stay O(1), not ~1e-9 or 1e9.

    The statistics must not depend on the CPU that computes them: the committed baselines (baselines/)
    are keyed by the model file's hash. In float32, oneDNN and ATen pick AVX-512 or AVX2 kernels by
    CPU, whose sums round differently, and the file's bytes differed between the two kinds of machine.
    So the calibration runs in float64 (where the kernels differ in the 16th digit, not the 7th), and
    each statistic is rounded to STATISTIC_BITS significant bits: a flip needs a value within 1e-15 of a
    rounding boundary 2^-16 apart. tests/test_zoo.py proves it with AVX2 kernels forced."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average over the calibration batches
    model.double().train()
    with torch.no_grad():
        for _ in range(steps):
            model(*(x.double() if x.is_floating_point() else x for x in batch()))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                for statistic in (module.running_mean, module.running_var):
                    assert statistic is not None
                    mantissa, exponent = torch.frexp(statistic)
                    statistic.copy_(torch.ldexp(torch.round(mantissa * 2**STATISTIC_BITS), exponent - STATISTIC_BITS))
    model.float().eval()


ZOO: dict[str, DemoModel] = {
    "resnet": DemoModel(_resnet, ("input:float32[N,3,224,224]",), lambda n: (torch.randn(n, 3, 224, 224),)),
    "transformer": DemoModel(
        TinyEncoder,
        ("input_ids:int64[N,32]{0..999}", "attention_mask:int64[N,32]{0..1}"),
        lambda n: (torch.randint(0, 1000, (n, 32)), torch.ones(n, 32, dtype=torch.int64)),
    ),
    "mlp": DemoModel(MLP, ("input:float32[N,64]",), lambda n: (torch.randn(n, 64),)),
}


def build(name: str, seed: int = 0) -> nn.Module:
    """The named demo model, deterministic for a seed, in eval mode."""
    torch.manual_seed(seed)
    return ZOO[name].build().eval()


def save(model: nn.Module, example: tuple[Any, ...], out: Path, fmt: str, input_names: list[str]) -> None:
    """Write `model` as TorchScript, a .pt2 archive, ONNX (dynamic batch) or a pickle."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(model, example), str(out))
        elif fmt == "pt2":
            torch.export.save(_without_stack_traces(export(model, example, input_names)), str(out))
        elif fmt == "onnx":
            from pytest_navigator.runtimes.torch_runtimes import name_outputs

            with torch.inference_mode():
                output_names = list(name_outputs(model(*example)))
            torch.onnx.export(
                export(model, example, input_names),
                example,
                str(out),
                dynamo=True,
                external_data=False,
                verbose=False,
                output_names=output_names,
            )
        elif fmt == "pickle":
            torch.save(model, str(out))
        else:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def _without_stack_traces(program: Any) -> Any:
    """`program` without the source locations torch.export records per node: they hold the absolute
    path of the torch install, so the same model written from another environment (a tox env, a CI
    venv) would be another file, and its committed baselines (baselines/) would never apply."""
    for module in program.graph_module.modules():
        graph = getattr(module, "graph", None)
        for node in graph.nodes if graph is not None else ():
            node.meta.pop("stack_trace", None)
    return program


def export(model: nn.Module, example: tuple[Any, ...], input_names: list[str]) -> Any:
    """torch.export with a dynamic batch axis on every input."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    shapes = {name: {0: batch} for name in input_names}
    return torch.export.export(model, example, dynamic_shapes=shapes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.zoo", description="Write a demo model file.")
    parser.add_argument("model", choices=sorted(ZOO))
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="Output path; the suffix picks the format (.pt TorchScript, .pt2, .onnx, .pkl).",
    )
    parser.add_argument("--format", choices=FORMATS, help="Override the format the suffix implies.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-sidecar", action="store_true", help="Do not write <stem>.navigator.toml with the input spec."
    )
    args = parser.parse_args(argv)
    fmt = args.format or _SUFFIX_FORMAT.get(args.out.suffix)
    if fmt is None:
        parser.error(
            f"--out {args.out}: cannot tell the format from suffix {args.out.suffix!r}; use one of {', '.join(_SUFFIX_FORMAT)} or --format"
        )
    demo = ZOO[args.model]
    model = build(args.model, args.seed)
    names = [spec.split(":", 1)[0] for spec in demo.inputs]
    save(model, demo.example(2), args.out, fmt, names)
    if not args.no_sidecar:
        sidecar = args.out.with_name(args.out.stem + ".navigator.toml")
        listed = ",\n".join(f'    "{spec}"' for spec in demo.inputs)
        sidecar.write_text(
            f"# Input spec of {args.out.name} ({args.model} demo model), read by pytest-navigator.\ninputs = [\n{listed},\n]\n"
        )
    print(f"wrote {args.out} ({args.model}, {fmt})")
    return 0


if __name__ == "__main__":
    # Run the importable module's main, so pickles name harness.zoo.ResNet, not __main__.ResNet.
    from harness.zoo import main as _main

    sys.exit(_main())
