"""ONNX export of torch models and the ONNX Runtime runtimes (CPU, CUDA and TensorRT providers)."""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pytest_navigator.config import Format, Sample
from pytest_navigator.errors import RuntimeBuildError, first_line
from pytest_navigator.model.draws import numpy_dtype
from pytest_navigator.model.loader import Model
from pytest_navigator.model.torch_io import bind_tensors, export_dynamic
from pytest_navigator.runtimes.base import ALL_FORMATS, BuildContext, Runner, RuntimeDefinition
from pytest_navigator.runtimes.cache import Mode
from pytest_navigator.runtimes.runtime_options import OnnxRuntimeConfig

OPSET = 18
PROVIDERS = {
    "onnxruntime-cpu": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporters print progress and warn about torchvision ops; keep a test run's output clean."""
    loggers = [
        logging.getLogger(name) for name in ("torch.onnx", "torch.onnx._internal.exporter._registration", "onnxscript")
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def export_onnx(model: Model, ctx: BuildContext) -> Path:
    """The model as an ONNX file in ctx.workdir (the file itself for ONNX models).

    Dynamic axes stay dynamic; inputs and outputs keep the reference's names, so outputs can be
    compared name by name. ExportedPrograms and modules go through the dynamo exporter;
    TorchScript, which it cannot trace, through the TorchScript-based one.
    """
    if model.format is Format.ONNX:
        return model.path
    return ctx.artifacts.fetch(ONNX_EXPORT, model, ctx, export_identity(model, ctx))


def export_identity(model: Model, ctx: BuildContext) -> dict[str, Any]:
    """What decides the ONNX form of `model` (the export's cache key parts; an ONNX model's content),
    for artifacts built from it (a quantized model) to hold in their own keys."""
    if model.format is Format.ONNX:
        return {"model": model.fingerprint, "format": model.format.value}
    return {
        "model": model.fingerprint,
        "format": model.format.value,
        "spec": str(model.io_spec),
        "outputs": list(ctx.output_names),
        "opset": OPSET,
    }


def _convert_onnx(model: Model, ctx: BuildContext, folder: Path) -> tuple[str, dict[str, Any]]:
    _export(model, ctx, folder / "model.onnx")
    return "model.onnx", {"opset": OPSET}


def _restore_onnx(artifact: Path, ctx: BuildContext, metadata: dict[str, Any]) -> Path:
    return artifact


#: torch model -> ONNX file (the dynamo exporter, or the TorchScript one for TorchScript models).
ONNX_EXPORT: Mode[Path] = Mode("onnx-export", _convert_onnx, _restore_onnx)


def _export(model: Model, ctx: BuildContext, path: Path) -> None:
    import torch

    args, kwargs = bind_tensors(model, ctx.example)
    output_names = list(ctx.output_names) or None
    try:
        with _quiet_exporter():
            if model.format is Format.TORCHSCRIPT:
                dynamic_axes = {
                    t.name: {i: f"{t.name}_{i}" for i, d in enumerate(t.dims) if d.dynamic} for t in model.io_spec
                }
                for name in output_names or []:
                    dynamic_axes[name] = {0: "N"}
                torch.onnx.export(
                    model.source,
                    (*args, kwargs) if kwargs else tuple(args),
                    str(path),
                    dynamo=False,
                    input_names=list(model.positional_inputs) + list(model.keyword_inputs),
                    output_names=output_names,
                    dynamic_axes=dynamic_axes,
                    opset_version=OPSET,
                )
            else:
                program = (
                    model.source
                    if model.format is Format.TORCH_EXPORTEDPROGRAM
                    else export_dynamic(model.source, model, args, kwargs)
                )
                torch.onnx.export(
                    program,
                    tuple(args),
                    str(path),
                    kwargs=kwargs or None,
                    dynamo=True,
                    external_data=False,
                    output_names=output_names,
                    verbose=False,
                    opset_version=OPSET,
                )
    except Exception as exc:
        raise RuntimeBuildError(
            f"exporting {model.name} to ONNX failed: {type(exc).__name__}: {first_line(exc)}"
        ) from exc


class OnnxRuntimeRunner(Runner):
    """An onnxruntime InferenceSession on one execution provider, refusing a silent CPU fallback.

    With IO binding (the GPU providers' default), inputs are bound as OrtValues on the session's
    device before timing and outputs stay there, so a timed request copies nothing to or from the host.
    """

    def __init__(
        self,
        runtime: str,
        model: Model,
        onnx_path: Path,
        provider: str,
        optimize: bool = True,
        device: str = "cpu",
        options: OnnxRuntimeConfig | None = None,
        provider_options: dict[str, Any] | None = None,
    ) -> None:
        import onnxruntime  # noqa: F401 - missing onnxruntime fails here, not as a load error below

        config = options or OnnxRuntimeConfig(
            graph_optimization_level="all" if optimize else "disable", io_binding=False
        )
        chosen: Any = (provider, provider_options) if provider_options else provider
        providers = [chosen] if provider == "CPUExecutionProvider" else [chosen, "CPUExecutionProvider"]
        self._onnx_path, self._providers, self._config = str(onnx_path), providers, config
        try:
            self.session = self._session()
        except Exception as exc:
            raise RuntimeBuildError(
                f"onnxruntime could not load {onnx_path}: {type(exc).__name__}: {first_line(exc)}"
            ) from exc
        active = self.session.get_providers()
        if provider not in active:
            raise RuntimeBuildError(
                f"{runtime}: ONNX Runtime did not activate {provider} (active: {', '.join(active)}); "
                "it would silently run on the CPU instead, so this runtime is not tested."
            )
        inputs = [i.name for i in self.session.get_inputs()]
        missing = [name for name in inputs if name not in model.io_spec.names]
        if missing:
            raise RuntimeBuildError(
                f"{onnx_path} takes inputs {', '.join(inputs)}, but the model's spec names {', '.join(model.io_spec.names)}."
            )
        super().__init__(runtime, model.io_spec, [o.name for o in self.session.get_outputs()], device)
        self._inputs = inputs
        self._threads = config.intra_op_num_threads
        self.thread_option = "intra_op_num_threads" if device == "cpu" else None
        self._dtypes = {t.name: numpy_dtype(t.dtype) for t in model.io_spec}
        self.io_binding = config.io_binding
        self._ort_device = "cuda" if device.startswith("cuda") else "cpu"
        self._last_binding: Any = None

    def _session(self, adjust: Any = None) -> Any:
        """An InferenceSession of this runtime's file, providers and options (`adjust(options)` first)."""
        import onnxruntime as ort

        config = self._config
        options = ort.SessionOptions()
        options.graph_optimization_level = _LEVELS[config.graph_optimization_level](ort)
        options.intra_op_num_threads = config.intra_op_num_threads
        options.inter_op_num_threads = config.inter_op_num_threads
        options.execution_mode = (
            ort.ExecutionMode.ORT_PARALLEL if config.execution_mode == "parallel" else ort.ExecutionMode.ORT_SEQUENTIAL
        )
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if config.allow_spinning else "0")
        options.log_severity_level = 3
        if adjust is not None:
            adjust(options)
        return ort.InferenceSession(self._onnx_path, options, providers=self._providers)

    def trace(self, samples: Sequence[Sample], path: Path) -> str:
        """--navigator-trace: the requests on a session built like this one with ONNX Runtime's profiler on."""
        from pytest_navigator.runtimes.profiler_traces import onnxruntime_trace

        feeds = [
            {name: np.ascontiguousarray(s[name], dtype=self._dtypes[name]) for name in self._inputs} for s in samples
        ]
        return onnxruntime_trace(self._session, feeds, path)

    def compute_threads(self) -> int | None:
        """intra_op_num_threads, else ONNX Runtime's default (a thread per core); on a GPU, one."""
        if self.device != "cpu":
            return 1
        from pytest_navigator.runtimes.environment import available_cores

        return self._threads or len(available_cores())

    def prepare(self, sample: Sample) -> Any:
        """The feed: contiguous arrays of the session's input dtypes; with IO binding, a binding of
        those inputs as OrtValues on the device and of the outputs to the device, made before timing."""
        self.check_sample(sample)
        feed = {name: np.ascontiguousarray(sample[name], dtype=self._dtypes[name]) for name in self._inputs}
        if not self.io_binding:
            return feed
        import onnxruntime as ort

        bound = BoundFeed(
            {name: ort.OrtValue.ortvalue_from_numpy(array, self._ort_device, 0) for name, array in feed.items()}
        )
        bound.binding = self.session.io_binding()
        for name, value in bound.items():
            bound.binding.bind_ortvalue_input(name, value)
        for name in self.output_names:
            bound.binding.bind_output(name, self._ort_device)
        return bound

    def run(self, prepared: Any) -> Any:
        if not self.io_binding:
            return self.session.run(None, prepared)
        self.session.run_with_iobinding(prepared.binding)
        self._last_binding = prepared.binding
        return prepared.binding

    def synchronize(self) -> None:
        if self._last_binding is not None and self._ort_device != "cpu":
            self._last_binding.synchronize_outputs()

    def infer(self, sample: Sample) -> Sample:
        result = self.run(self.prepare(sample))
        outputs = result.copy_outputs_to_cpu() if self.io_binding else result
        return dict(zip(self.output_names, outputs, strict=True))


class BoundFeed(dict[str, Any]):
    """IO binding's prepared request: the input OrtValues by name, and the binding made of them."""

    binding: Any = None


_LEVELS = {
    "disable": lambda ort: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": lambda ort: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def onnxruntime_unavailable(provider: str) -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        extra = "onnx" if provider == "CPUExecutionProvider" else "gpu"
        return f"onnxruntime is not installed (pip install 'pytest-navigator[{extra}]')"
    available = ort.get_available_providers()
    if provider not in available:
        return f"onnxruntime {ort.__version__} has no {provider} (available: {', '.join(available)}); install onnxruntime-gpu (the 'gpu' extra)"
    if provider != "CPUExecutionProvider":
        return _no_gpu()
    return None


def _no_gpu() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
    except Exception:
        from pytest_navigator.runtimes.torch_runner import cuda_unavailable

        return cuda_unavailable()
    return None if count else "no NVIDIA GPU found (NVML counts 0 devices)"


def exporter_unavailable(model: Model) -> str | None:
    """Torch sources need the onnx package, and the dynamo exporter needs onnxscript. Found, not
    imported: importing them costs this process a second per run and only the build uses them."""
    if model.format is Format.ONNX:
        return None
    if importlib.util.find_spec("onnx") is None:
        return (
            "the onnx package is not installed (pip install 'pytest-navigator[onnx]'), so the model cannot be exported"
        )
    if model.format is not Format.TORCHSCRIPT and importlib.util.find_spec("onnxscript") is None:
        return "onnxscript is not installed (pip install 'pytest-navigator[onnx]'); torch's ONNX exporter needs it"
    return None


def build_onnxruntime(model: Model, ctx: BuildContext, runtime: str) -> Runner:
    path = export_onnx(model, ctx)
    device = "cpu" if runtime == "onnxruntime-cpu" else "cuda"
    options: OnnxRuntimeConfig = ctx.options or _DEFAULTS[runtime]
    provider_options: dict[str, Any] = {}
    if runtime == "onnxruntime-tensorrt":
        provider_options = {"trt_fp16_enable": options.trt_fp16, "trt_max_workspace_size": options.trt_workspace_bytes}
        if ctx.cache is not None and ctx.cache.root is not None:  # TensorRT EP engines live in the artifact cache
            engines = ctx.cache.root / "onnxruntime-tensorrt"
            engines.mkdir(parents=True, exist_ok=True)
            provider_options |= {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(engines)}
    return OnnxRuntimeRunner(runtime, model, path, PROVIDERS[runtime], True, device, options, provider_options)


def build_reference(model: Model, ctx: BuildContext) -> Runner:
    """For an ONNX source: onnxruntime-cpu with every graph optimization off."""
    return OnnxRuntimeRunner("onnxruntime-cpu-reference", model, model.path, "CPUExecutionProvider", optimize=False)


#: Each ONNX Runtime runtime's default options: IO binding where a device copy is at stake.
_DEFAULTS = {
    "onnxruntime-cpu": OnnxRuntimeConfig(io_binding=False),
    "onnxruntime-cuda": OnnxRuntimeConfig(),
    "onnxruntime-tensorrt": OnnxRuntimeConfig(),
}


def definitions() -> list[RuntimeDefinition]:
    return [
        RuntimeDefinition(
            runtime,
            functools.partial(build_onnxruntime, runtime=runtime),
            ALL_FORMATS,
            "cpu" if runtime == "onnxruntime-cpu" else "cuda",
            requirement=functools.partial(onnxruntime_unavailable, provider),
            model_check=exporter_unavailable,
            description=f"ONNX Runtime, {provider}, graph optimization level ALL",
            options=_DEFAULTS[runtime],
        )
        for runtime, provider in PROVIDERS.items()
    ]
