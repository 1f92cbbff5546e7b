"""The torch float64 shadow's own pieces (truth.py): its dtype constants, and a faster double-precision
depthwise convolution.

torch has no float64 depthwise kernel on CPU: a convolution with one input channel per group runs as
one small im2col-and-matrix-product per channel (`_slow_conv2d_forward`, 2,497 calls per request of
MobileNetV3-Small, 55% of its shadow's time). Here it is computed instead as the sum, over the
kernel's taps, of the input shifted to each tap times that tap's weight per channel: kh * kw
elementwise multiply-adds over the whole tensor, whatever the channel count.

It computes the same sum in another order. In double precision that moves the result by about 1e-15
of its magnitude (measured: at most 2.6e-15 on MobileNetV3-Small), nine orders of magnitude below the
fp32 rounding the shadow exists to measure (1e-6). Measured on MobileNetV3-Small, 2-core machine,
best of 7: the shadow took 34.5 / 47.5 / 70.0 / 115 ms at batch 1 / 2 / 4 / 8 before, 20.8 / 28.7 /
49.8 / 79.7 ms after.

Only float64 2-D convolutions with one input channel per group (a channel multiplier included) are
taken; every other operation, and any convolution that is not that, runs as it did.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

_ATEN = torch.ops.aten
#: aten.conv2d's arguments after input and weight, where a call leaves them out.
_CONV2D_DEFAULTS: tuple[Any, ...] = (None, 1, 0, 1, 1)


def depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> torch.Tensor:
    """conv2d(x, weight, bias, stride, padding, dilation, groups=x.shape[1]) for weight of shape
    (channels * multiplier, 1, kh, kw), as a sum of shifted inputs times per-channel weights."""
    kh, kw = weight.shape[-2:]
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    height = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    width = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    padded = F.pad(x, (pw, pw, ph, ph))
    multiplier = weight.shape[0] // x.shape[1]
    if multiplier != 1:  # output channel o reads input channel o // multiplier
        padded = padded.repeat_interleave(multiplier, dim=1)
    taps = weight[:, 0]
    out = None
    for i in range(kh):
        for j in range(kw):
            shifted = padded[
                :, :, i * dh : i * dh + sh * (height - 1) + 1 : sh, j * dw : j * dw + sw * (width - 1) + 1 : sw
            ]
            tap = taps[:, i, j].view(1, -1, 1, 1)
            out = shifted * tap if out is None else out.addcmul_(shifted, tap)
    assert out is not None  # a kernel has at least one tap
    return out if bias is None else out.add_(bias.view(1, -1, 1, 1))


def _pair(value: Any) -> tuple[int, int]:
    values = [int(v) for v in (value if isinstance(value, list | tuple) else [value])]
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


def _taken(x: Any, weight: Any, groups: int) -> bool:
    return (
        isinstance(x, torch.Tensor)
        and x.dtype == torch.float64
        and x.dim() == 4
        and x.device.type == "cpu"
        and groups > 1
        and groups == x.shape[1]
        and isinstance(weight, torch.Tensor)
        and weight.dtype == torch.float64
        and weight.dim() == 4
        and weight.shape[1] == 1
        and weight.shape[0] % groups == 0
    )


class DepthwiseInDouble(TorchDispatchMode):
    """In the block, float64 depthwise convolutions run as depthwise_conv2d."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is _ATEN.conv2d.default and not kwargs:
            x, weight, bias, stride, padding, dilation, groups = (*args, *_CONV2D_DEFAULTS[len(args) - 2 :])
            if _taken(x, weight, groups):
                return depthwise_conv2d(x, weight, bias, _pair(stride), _pair(padding), _pair(dilation))
        elif func is _ATEN.convolution.default and not kwargs:
            x, weight, bias, stride, padding, dilation, transposed, _, groups = args
            if not transposed and len(stride) == 2 and _taken(x, weight, groups):
                return depthwise_conv2d(x, weight, bias, _pair(stride), _pair(padding), _pair(dilation))
        return func(*args, **kwargs)


def double_dtype_constants(module: Any) -> None:
    """An exported graph's explicit float32 casts and factory dtypes (`x.to(torch.float32)`) would
    drop the shadow back to single precision: point them at float64."""
    graph = getattr(module, "graph", None)
    if graph is None or not hasattr(graph, "nodes"):
        return
    changed = False
    for node in graph.nodes:
        if node.kwargs.get("dtype") in (torch.float32, torch.float16, torch.bfloat16):
            node.kwargs = {**node.kwargs, "dtype": torch.float64}
            changed = True
    if changed:
        module.recompile()
