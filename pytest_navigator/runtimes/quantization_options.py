"""The options of the int8 ONNX Runtime runtimes (onnx_quantized.py): the CPU session's, as
OnnxRuntimeConfig has them (threads, graph optimization, the instruction-count settings), and what
changes the quantized model: every one of them is part of the runtime id and of the artifact's key.
Static quantization takes the calibration's options; dynamic quantization has none to take.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from typing import Any, Literal

from pytest_navigator.runtimes.calibration import DEFAULT_CALIBRATION_SAMPLES
from pytest_navigator.runtimes.runtime_options import OnnxRuntimeConfig, RuntimeOptionError


@dataclass(frozen=True)
class _OnnxInt8Options(OnnxRuntimeConfig):
    """What both int8 ONNX Runtime runtimes take: the CPU session's options, and what to quantize."""

    #: A CPU session: there are no device copies to bind.
    io_binding: bool = False
    #: Weights quantized with a scale per output channel (false: one per tensor).
    per_channel: bool = True
    #: Op types left in fp32, joined by "+" (e.g. Conv+Softmax): "," separates options.
    exclude_ops: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "exclude_ops", self._op_types(self.exclude_ops))
        if self.trt_fp16:
            raise RuntimeOptionError(
                f"{self.name()} option trt_fp16=true is not accepted: it applies to onnxruntime-tensorrt; "
                "an int8 CPU runtime accepts trt_fp16=false only."
            )

    def _op_types(self, value: Any) -> str:
        """exclude_ops as one canonical text, so `Softmax+Conv` and `Conv+Softmax` are one runtime id."""
        parts = value if isinstance(value, (list, tuple)) else re.split(r"[+;,\s]+", str(value))
        names = sorted({str(part).strip() for part in parts if str(part).strip()})
        bad = [name for name in names if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name)]
        if bad:
            raise RuntimeOptionError(
                f"{self.name()} option exclude_ops={value!r} is not accepted; expected ONNX op types joined "
                "by '+', e.g. Conv+Softmax."
            )
        return "+".join(names)

    @property
    def excluded(self) -> tuple[str, ...]:
        """exclude_ops as op types."""
        return tuple(self.exclude_ops.split("+")) if self.exclude_ops else ()

    @property
    def precision(self) -> str | None:
        return "int8"


@dataclass(frozen=True)
class OnnxQuantizationConfig(_OnnxInt8Options):
    """ONNX Runtime static int8 quantization (onnxruntime-int8-cpu): weights and activations in int8,
    QuantizeLinear/DequantizeLinear pairs around each quantized op, activation ranges calibrated."""

    NAME: typing.ClassVar[str] = "OnnxQuantization"
    #: How activation ranges are chosen from the calibration data: minmax (ONNX Runtime's default),
    #: entropy or percentile (both clip outliers, from a histogram).
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    #: How many samples to calibrate on: the first of --navigator-samples', else drawn from the spec.
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.calibration_samples < 1:
            raise RuntimeOptionError(
                f"{self.name()} option calibration_samples={self.calibration_samples} is not accepted; expected "
                "an integer >= 1 (the samples activation ranges are measured on)."
            )


@dataclass(frozen=True)
class OnnxDynamicQuantizationConfig(_OnnxInt8Options):
    """ONNX Runtime dynamic int8 quantization (onnxruntime-int8-dynamic-cpu): the weights of MatMul
    and Gemm quantized ahead, their activations at each request (DynamicQuantizeLinear); nothing to
    calibrate, so it takes no calibration options."""

    NAME: typing.ClassVar[str] = "OnnxDynamicQuantization"

    #: The op types it quantizes (a Gemm as the MatMul ONNX Runtime's quantizer turns it into).
    QUANTIZED: typing.ClassVar[tuple[str, ...]] = ("Gemm", "MatMul")

    def __post_init__(self) -> None:
        super().__post_init__()
        others = [op for op in self.excluded if op not in self.QUANTIZED]
        if others or set(self.excluded) == set(self.QUANTIZED):
            raise RuntimeOptionError(
                f"{self.name()} option exclude_ops={self.exclude_ops} is not accepted: dynamic quantization "
                f"quantizes {' and '.join(self.QUANTIZED)} only, so it accepts one of them "
                f"({' | '.join(self.QUANTIZED)}); "
                + (
                    f"{'+'.join(others)} is never quantized here (onnxruntime-int8-cpu quantizes it)."
                    if others
                    else "excluding both leaves nothing to quantize."
                )
            )
