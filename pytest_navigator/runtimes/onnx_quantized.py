"""The int8 ONNX Runtime runtimes on the CPU, quantized from the ONNX export the other ONNX runtimes
use and run by OnnxRuntimeRunner. Opt-in: a run tests them when --navigator-runtimes names them.

- onnxruntime-int8-cpu: static quantization (quantize_static) in the QDQ format, the one ONNX
  Runtime's CPU kernels fuse into integer ops; weights per channel by default; activation ranges
  calibrated on BuildContext.calibration (the users' samples, else drawn: calibration.py).
- onnxruntime-int8-dynamic-cpu: dynamic quantization (quantize_dynamic) of MatMul and Gemm, the
  usual choice for transformers: weights quantized ahead, activations at each request, nothing to
  calibrate.

Both start from quant_pre_process (shape inference and graph optimization), as ONNX Runtime
recommends. The quantized model is an artifact (cache.py) keyed by the export's identity, the
options that change it, the integer types chosen for this CPU, the quantizer's version and the
calibration data's digest, so a second build restores it instead of quantizing again.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import logging
import platform
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_navigator.config import Sample
from pytest_navigator.errors import RuntimeBuildError, RuntimeNotApplicable, describe_error
from pytest_navigator.model.draws import numpy_dtype
from pytest_navigator.model.loader import Model
from pytest_navigator.runtimes.base import ALL_FORMATS, BuildContext, Runner, RuntimeDefinition
from pytest_navigator.runtimes.cache import Mode
from pytest_navigator.runtimes.calibration import calibration_digest, calibration_samples
from pytest_navigator.runtimes.onnx_runtimes import (
    OnnxRuntimeRunner,
    export_identity,
    export_onnx,
    exporter_unavailable,
    onnxruntime_unavailable,
)
from pytest_navigator.runtimes.quantization_options import OnnxDynamicQuantizationConfig, OnnxQuantizationConfig

STATIC, DYNAMIC = "onnxruntime-int8-cpu", "onnxruntime-int8-dynamic-cpu"
#: The files of a cache entry: the quantized model, and the fp32 model it was quantized from (the
#: export after quant_pre_process, whose tensor names the quantized graph keeps: diagnose compares them).
QUANTIZED, FP32 = "model.int8.onnx", "model.fp32.onnx"

#: calibration_method -> onnxruntime.quantization.CalibrationMethod. MinMax is the default: it is
#: quantize_static's own default and what ONNX Runtime's quantization guide and examples calibrate
#: CNNs with, it needs no histogram (so it is cheap and exact on few samples), and it never clips a
#: value the calibration saw. Entropy and Percentile clip outliers, which helps activations with
#: long tails (some transformers) at the price of saturating the rare large value.
CALIBRATION_METHODS = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
#: What dynamic quantization quantizes. ONNX Runtime's dynamic quantizer turns every Gemm into a
#: MatMul (and an Add) first and quantizes those into MatMulInteger, so "MatMul" covers both.
DYNAMIC_OPS = ("MatMul", "Gemm")
#: The ops whose presence shows that something was quantized.
QUANTIZED_OPS = {STATIC: ("DequantizeLinear",), DYNAMIC: ("MatMulInteger", "ConvInteger")}


def integer_types() -> dict[str, Any]:
    """The activation and weight types, and reduce_range, that quantize_static's guidance ("Choosing
    parameters for CPU inference") gives for this CPU: on x86 uint8 activations and int8 weights,
    with 7-bit weights (reduce_range) where the CPU lacks VNNI, whose u8 x s8 products otherwise
    saturate their 16-bit sums; on ARM int8 activations. Part of the artifact's key."""
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "i386", "x86"):
        return {"activations": "QUInt8", "weights": "QInt8", "reduce_range": not _has_vnni()}
    return {"activations": "QInt8", "weights": "QInt8", "reduce_range": False}


def _has_vnni() -> bool:
    """Whether the CPU has VNNI (AVX512-VNNI or AVX-VNNI); False where its flags cannot be read."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_vnni|avx_vnni)\b", flags) is not None


@dataclass(frozen=True)
class _Job:
    """What quantizing one export takes (the cache's `config` for QUANTIZE)."""

    runtime: str
    source: Path
    options: OnnxQuantizationConfig | OnnxDynamicQuantizationConfig
    calibration: tuple[Sample, ...]
    types: dict[str, Any]


class QuantizedOnnxRunner(OnnxRuntimeRunner):
    """An int8 model in an ONNX Runtime CPU session, which can say where its error enters."""

    def __init__(self, runtime: str, model: Model, quantized: Path, fp32: Path, options: Any) -> None:
        super().__init__(runtime, model, quantized, "CPUExecutionProvider", True, "cpu", options)
        self.quantized_path, self.fp32_path = quantized, fp32

    def diagnose(self, samples: Sequence[Sample]) -> list[str]:
        """Layer by layer, where the quantized graph departs from the fp32 one on these samples."""
        from pytest_navigator.runtimes.quantized_layers import diagnose

        found: list[str] = diagnose(self.fp32_path, self.quantized_path, samples)
        return found


def build_quantized(model: Model, ctx: BuildContext, runtime: str) -> Runner:
    """`runtime` (STATIC or DYNAMIC) of `model`: its ONNX export quantized, or restored from the cache."""
    dynamic = runtime == DYNAMIC
    options = ctx.options or (OnnxDynamicQuantizationConfig() if dynamic else OnnxQuantizationConfig())
    source = export_onnx(model, ctx)
    calibration: tuple[Sample, ...] = ()
    settings: dict[str, Any] = {"per_channel": options.per_channel, "exclude_ops": options.exclude_ops}
    if isinstance(options, OnnxQuantizationConfig):
        # A BuildContext made by hand (a user's own test) has none: the run's draw, as Builds would give.
        count = options.calibration_samples
        calibration = ctx.calibration or calibration_samples(model.io_spec, ctx.batch_sizes, count)
        settings |= {"calibration_method": options.calibration_method, "calibration_samples": count}
    types = integer_types()
    parts = {
        "export": export_identity(model, ctx),
        "quantization": "dynamic" if dynamic else "static",
        "options": settings,
        "types": types,
        "quantizer": _quantizer_version(),
        "calibration": calibration_digest(calibration) if not dynamic else None,
    }
    job = _Job(runtime, source, options, calibration, types)
    quantized, fp32 = ctx.artifacts.fetch(QUANTIZE_DYNAMIC if dynamic else QUANTIZE_STATIC, model, job, parts)
    return QuantizedOnnxRunner(runtime, model, quantized, fp32, options)


def _quantizer_version() -> str:
    """The onnxruntime that quantizes (its package's version is in every key too, as onnxruntime or
    onnxruntime-gpu; this is the module this process imports)."""
    import onnxruntime

    return str(onnxruntime.__version__)


def _convert(model: Model, job: _Job, folder: Path) -> tuple[str, dict[str, Any]]:
    """quant_pre_process the export into FP32, then quantize it into QUANTIZED."""
    import onnx
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32, quantized = folder / FP32, folder / QUANTIZED
    options, types = job.options, job.types
    try:
        with _quiet_quantizer():
            quant_pre_process(str(job.source), str(fp32))
            excluded = _name_nodes(fp32, set(options.excluded), job.runtime == DYNAMIC)
            if job.runtime == DYNAMIC:
                q.quantize_dynamic(
                    str(fp32),
                    str(quantized),
                    op_types_to_quantize=list(DYNAMIC_OPS),
                    per_channel=options.per_channel,
                    reduce_range=types["reduce_range"],
                    weight_type=q.QuantType[types["weights"]],
                    nodes_to_exclude=excluded,
                )
            else:
                assert isinstance(options, OnnxQuantizationConfig)
                q.quantize_static(
                    str(fp32),
                    str(quantized),
                    _Feeds(fp32, job.calibration, model),
                    quant_format=q.QuantFormat.QDQ,
                    per_channel=options.per_channel,
                    reduce_range=types["reduce_range"],
                    activation_type=q.QuantType[types["activations"]],
                    weight_type=q.QuantType[types["weights"]],
                    nodes_to_exclude=excluded,
                    calibrate_method=q.CalibrationMethod[CALIBRATION_METHODS[options.calibration_method]],
                )
    except Exception as exc:
        raise RuntimeBuildError(
            f"{job.runtime}: ONNX Runtime could not quantize the ONNX form of {model.name}: {describe_error(exc)}"
        ) from exc
    ops = [node.op_type for node in onnx.load(str(quantized), load_external_data=False).graph.node]
    count = sum(ops.count(op) for op in QUANTIZED_OPS[job.runtime])
    if not count:
        what = "MatMul and Gemm with constant weights" if job.runtime == DYNAMIC else "the ops it supports"
        left = f" outside exclude_ops={options.exclude_ops}" if options.exclude_ops else ""
        raise RuntimeNotApplicable(f"{job.runtime} quantizes {what}, and {model.name} has none{left}")
    return QUANTIZED, {"quantized_ops": count, "calibration_samples": len(job.calibration)}


def _restore(artifact: Path, job: _Job, metadata: dict[str, Any]) -> tuple[Path, Path]:
    return artifact, artifact.with_name(FP32)


#: An ONNX export -> its int8 form (and the pre-processed fp32 model it was quantized from).
QUANTIZE_STATIC: Mode[tuple[Path, Path]] = Mode("onnx-int8-static", _convert, _restore)
QUANTIZE_DYNAMIC: Mode[tuple[Path, Path]] = Mode("onnx-int8-dynamic", _convert, _restore)


def _name_nodes(path: Path, op_types: set[str], dynamic: bool) -> list[str]:
    """Name the model's unnamed nodes (the quantizer excludes nodes by name), saving it again if any
    were; return the names of the nodes of `op_types`. A Gemm that dynamic quantization excludes is
    named twice: as itself and as the MatMul the quantizer turns it into (`<name>_MatMul`)."""
    import onnx

    proto = onnx.load(str(path))
    unnamed = [node for node in proto.graph.node if not node.name]
    for index, node in enumerate(unnamed):
        node.name = f"{node.op_type}_navigator_{index}"
    if unnamed:
        onnx.save(proto, str(path))
    names = [node.name for node in proto.graph.node if node.op_type in op_types]
    if dynamic and "Gemm" in op_types:
        names += [f"{node.name}_MatMul" for node in proto.graph.node if node.op_type == "Gemm"]
    return names


class _Feeds:
    """A CalibrationDataReader over the calibration samples: each a feed of the model's inputs in
    their dtypes (ONNX Runtime recognizes a reader by its get_next)."""

    def __init__(self, path: Path, samples: Sequence[Sample], model: Model) -> None:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        constants = {tensor.name for tensor in graph.initializer}
        names = [i.name for i in graph.input if i.name not in constants]
        dtypes = {spec.name: numpy_dtype(spec.dtype) for spec in model.io_spec}
        self._feeds = [
            {name: np.ascontiguousarray(sample[name], dtype=dtypes.get(name)) for name in names} for sample in samples
        ]
        self._next = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._next, None)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(self._feeds[start_index:end_index])


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer prints its histograms' progress and logs through the root logger ("Please
    consider to run pre-processing", done already); keep a test run's output clean."""
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(disabled)


def quantizer_unavailable() -> str | None:
    """onnxruntime (with its CPU provider), and the onnx package its quantizer works on."""
    missing = onnxruntime_unavailable("CPUExecutionProvider")
    if missing is None and importlib.util.find_spec("onnx") is None:
        return "the onnx package is not installed (pip install 'pytest-navigator[onnx]'); ONNX Runtime's quantizer needs it"
    return missing


def definitions() -> list[RuntimeDefinition]:
    described = {
        STATIC: "ONNX Runtime on the CPU, int8 by static quantization of the ONNX export: QDQ format, weights per "
        "channel, activation ranges calibrated (MinMax) on the users' samples or samples drawn from the spec",
        DYNAMIC: "ONNX Runtime on the CPU, int8 by dynamic quantization of the ONNX export's MatMul and Gemm "
        "(weights quantized ahead, activations at each request), the usual choice for transformers",
    }
    return [
        RuntimeDefinition(
            runtime,
            functools.partial(build_quantized, runtime=runtime),
            ALL_FORMATS,
            "cpu",
            precision="int8",
            requirement=quantizer_unavailable,
            model_check=exporter_unavailable,
            description=description,
            options=OnnxDynamicQuantizationConfig() if runtime == DYNAMIC else OnnxQuantizationConfig(),
            default_formats=frozenset(),  # opt-in: tested when --navigator-runtimes names it
            calibrates=runtime == STATIC,
        )
        for runtime, description in described.items()
    ]
