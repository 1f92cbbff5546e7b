"""Faults a runtime can really have, injected into a copy of a torch model: what a correctness
gate must catch. Each returns a faulty copy; the model passed in is left as it is.

- a weight tensor scaled by 1 + epsilon (a conversion that rounds or fuses weights wrongly);
- every GELU swapped for its tanh approximation, or the reverse (a fused kernel's approximation);
- one layer computed in fp16 (a precision flag leaking into an fp32 engine).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
from torch import nn


def _copy(model: nn.Module) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return copy.deepcopy(model).eval()


def _middle(items: list[tuple[str, nn.Module]]) -> tuple[str, nn.Module]:
    if not items:
        raise ValueError("the model has no layer this fault applies to")
    return items[len(items) // 2]


def _weighted_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Linear and convolution layers in definition order (embeddings and norms excluded), leaving out
    those whose weight their parent reads directly instead of calling them (MultiheadAttention's
    out_proj), which a wrapper could not stand in for."""
    inside_attention = {
        f"{name}.{child}" if name else child
        for name, module in model.named_modules()
        if isinstance(module, nn.MultiheadAttention)
        for child, _ in module.named_children()
    }
    return [
        (n, m)
        for n, m in model.named_modules()
        if (isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) or type(m).__name__ == "Conv1D")
        and n not in inside_attention
    ]


def scaled_weight(model: nn.Module, epsilon: float) -> tuple[nn.Module, str]:
    """The middle weighted layer's weight multiplied by (1 + epsilon); returns the copy and the layer's name."""
    faulty = _copy(model)
    name, layer = _middle(_weighted_layers(faulty))
    weight: torch.Tensor = getattr(layer, "weight")  # noqa: B009 - typed as a Tensor, not a Module
    with torch.no_grad():
        weight.mul_(1 + epsilon)
    return faulty, name


def _is_gelu(module: nn.Module) -> bool | None:
    """True: exact GELU; False: its tanh approximation; None: not a GELU."""
    if isinstance(module, nn.GELU):
        return module.approximate == "none"
    kind = type(module).__name__
    if kind in ("GELUActivation",):
        return True
    if kind in ("NewGELUActivation", "GELUTanh", "FastGELUActivation", "GELUPytorchTanh", "PytorchGELUTanh"):
        return False
    return None


def swapped_gelu(model: nn.Module) -> tuple[nn.Module, str]:
    """Every GELU module replaced by its close cousin (exact <-> tanh approximation)."""
    faulty = _copy(model)
    swapped = 0
    for parent in list(faulty.modules()):
        for child_name, child in list(parent.named_children()):
            exact = _is_gelu(child)
            if exact is not None:
                setattr(parent, child_name, nn.GELU(approximate="tanh" if exact else "none"))
                swapped += 1
    if not swapped:
        raise ValueError("the model has no GELU module to swap")
    return faulty, f"{swapped} GELU modules"


class _HalfLayer(nn.Module):
    """Runs the wrapped layer in float16 and hands float32 on: one layer's precision gone wrong."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.half()).to(x.dtype)


def half_layer(model: nn.Module) -> tuple[nn.Module, str]:
    """The middle weighted layer computed in fp16."""
    faulty = _copy(model)
    name, layer = _middle(_weighted_layers(faulty))
    parent_name, _, child = name.rpartition(".")
    parent = faulty.get_submodule(parent_name) if parent_name else faulty
    setattr(parent, child, _HalfLayer(layer))
    return faulty, name


#: The faults the correctness benchmark injects: name -> (model -> (faulty copy, where)).
FAULTS: dict[str, Callable[[nn.Module], tuple[nn.Module, str]]] = {
    "weight x(1+1e-2)": lambda m: scaled_weight(m, 1e-2),
    "weight x(1+1e-3)": lambda m: scaled_weight(m, 1e-3),
    "GELU <-> tanh GELU": swapped_gelu,
    "one layer in fp16": half_layer,
}
