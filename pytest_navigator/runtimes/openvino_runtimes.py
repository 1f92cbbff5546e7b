"""OpenVINO on the CPU (openvino-cpu): the model's ONNX form compiled for the CPU plugin.

Torch sources go through the ONNX export the ONNX Runtime runtimes use (`onnx_runtimes.export_onnx`,
one cached artifact for both), not `openvino.convert_model`: the export is content-keyed in the
artifact cache, keeps the reference's input and output names and the spec's dynamic axes, and a
rerun reads it instead of tracing the model again in every worker. ONNX sources are read as they
are. The ONNX frontend is called directly (not `Core.read_model`, which tries every frontend and
lets the TensorFlow one print parse errors about an ONNX file).
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pytest_navigator.config import Sample
from pytest_navigator.errors import RuntimeBuildError
from pytest_navigator.model.draws import numpy_dtype
from pytest_navigator.model.loader import Model
from pytest_navigator.runtimes.base import ALL_FORMATS, BuildContext, Runner, RuntimeDefinition
from pytest_navigator.runtimes.onnx_runtimes import export_onnx, exporter_unavailable
from pytest_navigator.runtimes.runtime_options import OpenVINOConfig

RUNTIME = "openvino-cpu"
INSTALL = "pip install 'pytest-navigator[openvino]'"


def openvino_unavailable() -> str | None:
    """Why openvino-cpu cannot run here (the package is absent), without importing it."""
    if importlib.util.find_spec("openvino") is None:
        return f"openvino is not installed ({INSTALL})"
    return None


def _frontend_message(exc: BaseException) -> str:
    """OpenVINO's error without its C++ source locations: 'Model wasn't fully converted. No
    conversion rule found for operations: com.example.NoSuchOp'."""
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [
        line.removeprefix("-- ")
        for line in lines
        if line and not re.match(r"^(Check '.*' failed at|Exception from|FrontEnd API failed with|Summary:)", line)
    ]
    return " ".join(kept) or type(exc).__name__


def read_onnx(path: Path, name: str) -> Any:
    """The ONNX file as an openvino.Model, through the ONNX frontend; a file it cannot parse and an
    operator it has no conversion for are RuntimeBuildErrors naming the model and what failed."""
    import openvino
    from openvino.frontend import FrontEndManager

    frontend = FrontEndManager().load_by_framework("onnx")
    try:
        return frontend.convert(frontend.load(str(path)))
    except Exception as exc:
        message = _frontend_message(exc)
        if "No conversion rule found" in message or "OpConversionFailure" in type(exc).__name__:
            raise RuntimeBuildError(
                f"{RUNTIME}: OpenVINO {openvino.__version__} cannot convert {name} ({path}): {message}. "
                "The operators named have no OpenVINO implementation; leave this runtime out "
                "(--navigator-runtimes) or replace them in the model."
            ) from exc
        raise RuntimeBuildError(
            f"{RUNTIME}: OpenVINO {openvino.__version__} cannot read {name} ({path}) as ONNX: {message}."
        ) from exc


def compile_config(options: OpenVINOConfig, cache_dir: Path | None, profiling: bool = False) -> dict[str, Any]:
    """The CPU plugin's properties for these options."""
    config: dict[str, Any] = {
        "PERFORMANCE_HINT": options.performance_hint,
        "INFERENCE_PRECISION_HINT": options.inference_precision,
        # an fp32 or bf16 runtime: no int8 quantization of activations behind the user's back
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
    }
    if options.num_streams:
        config["NUM_STREAMS"] = options.num_streams
    if options.inference_num_threads:
        config["INFERENCE_NUM_THREADS"] = options.inference_num_threads
    if cache_dir is not None:
        config["CACHE_DIR"] = str(cache_dir)
    if profiling:
        config["PERF_COUNT"] = True
    return config


class OpenVINORunner(Runner):
    """A model compiled by OpenVINO's CPU plugin. Under the LATENCY hint each request is one
    synchronous inference; under THROUGHPUT a request's batch is split into as many parts as the
    compiled model wants requests in flight (OPTIMAL_NUMBER_OF_INFER_REQUESTS), run at once on an
    AsyncInferQueue, so a timed request measures what OpenVINO's throughput mode gives a batch."""

    thread_option = "inference_num_threads"

    def __init__(
        self, runtime: str, model: Model, onnx_path: Path, options: OpenVINOConfig, cache_dir: Path | None = None
    ) -> None:
        import openvino

        self._core = openvino.Core()
        self._options, self._cache_dir, self._onnx_path, self._name = options, cache_dir, onnx_path, model.name
        capabilities = self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
        if options.inference_precision == "bf16" and "BF16" not in capabilities:
            raise RuntimeBuildError(
                f"{runtime}: inference_precision=bf16 needs a CPU with native bf16 (OpenVINO would compute in f32 "
                f"instead, untested); this one offers {', '.join(capabilities)}."
            )
        started = time.perf_counter()
        self.compiled = self._compile(compile_config(options, cache_dir))
        self.compile_seconds = time.perf_counter() - started
        self.loaded_from_cache = _property(self.compiled, "LOADED_FROM_CACHE", False) is True
        inputs = [port.get_any_name() for port in self.compiled.inputs]
        missing = [name for name in inputs if name not in model.io_spec.names]
        if missing:
            raise RuntimeBuildError(
                f"{onnx_path} takes inputs {', '.join(inputs)}, but the model's spec names {', '.join(model.io_spec.names)}."
            )
        super().__init__(runtime, model.io_spec, [port.get_any_name() for port in self.compiled.outputs], "cpu")
        self._inputs = inputs
        self._dtypes = {t.name: numpy_dtype(t.dtype) for t in model.io_spec}
        self._request = self.compiled.create_infer_request()
        self._queue: Any = None
        if options.performance_hint == "THROUGHPUT":
            jobs = int(_property(self.compiled, "OPTIMAL_NUMBER_OF_INFER_REQUESTS", 1) or 1)
            self._queue = openvino.AsyncInferQueue(self.compiled, max(1, jobs))
            self._parts: dict[int, list[Any]] = {}
            self._queue.set_callback(self._collect)

    def _compile(self, config: dict[str, Any]) -> Any:
        ov_model = read_onnx(self._onnx_path, self._name)
        try:
            return self._core.compile_model(ov_model, "CPU", config)
        except Exception as exc:
            raise RuntimeBuildError(
                f"{RUNTIME}: OpenVINO could not compile {self._name} for the CPU: {_frontend_message(exc)}"
            ) from exc

    @property
    def streams(self) -> int:
        return int(_property(self.compiled, "NUM_STREAMS", 1) or 1)

    def compute_threads(self) -> int | None:
        """INFERENCE_NUM_THREADS as compiled (OpenVINO's choice when the option is 0)."""
        threads = _property(self.compiled, "INFERENCE_NUM_THREADS", 0)
        if threads:
            return int(threads)
        from pytest_navigator.runtimes.environment import available_cores

        return len(available_cores())

    def prepare(self, sample: Sample) -> Any:
        self.check_sample(sample)
        return {name: np.ascontiguousarray(sample[name], dtype=self._dtypes[name]) for name in self._inputs}

    def run(self, prepared: Any) -> Any:
        if self._queue is None:
            return self._request.infer(prepared, share_inputs=True, share_outputs=True)
        return self._split(prepared, collect=False)

    def _split(self, prepared: dict[str, np.ndarray], collect: bool) -> list[list[Any]] | None:
        """The batch as parts run at once on the AsyncInferQueue; their outputs when `collect`."""
        batch = len(next(iter(prepared.values())))
        parts = max(1, min(batch, len(self._queue)))
        bounds = np.linspace(0, batch, parts + 1).astype(int)
        self._parts = {}
        for index in range(parts):
            low, high = bounds[index], bounds[index + 1]
            feed = {name: array[low:high] for name, array in prepared.items()}
            self._queue.start_async(feed, (index, collect))
        self._queue.wait_all()
        return [self._parts[index] for index in range(parts)] if collect else None

    def _collect(self, request: Any, userdata: tuple[int, bool]) -> None:
        index, collect = userdata
        if collect:
            self._parts[index] = [np.array(request.get_output_tensor(i).data) for i in range(len(self.output_names))]

    def infer(self, sample: Sample) -> Sample:
        prepared = self.prepare(sample)
        if self._queue is None:
            result = self._request.infer(prepared)
            return {
                name: np.array(result[port])
                for name, port in zip(self.output_names, self.compiled.outputs, strict=True)
            }
        parts = self._split(prepared, collect=True) or []
        return {name: np.concatenate([part[i] for part in parts], axis=0) for i, name in enumerate(self.output_names)}

    def trace(self, samples: Sequence[Sample], path: Path) -> str:
        """--navigator-trace: the requests on a model compiled like this one with PERF_COUNT on; each
        executed layer's time from OpenVINO's performance counters, laid end to end per request."""
        from pytest_navigator.runtimes.profiler_traces import layer_trace

        compiled = self._compile(compile_config(self._options, None, profiling=True))
        request = compiled.create_infer_request()
        requests = []
        for sample in samples:
            request.infer(self.prepare(sample))
            requests.append(
                [
                    (f"{info.node_name} ({info.node_type}, {info.exec_type})", info.real_time.total_seconds() * 1000)
                    for info in request.profiling_info
                    if str(info.status).endswith("EXECUTED") and info.real_time.total_seconds() > 0
                ]
            )
        return layer_trace(
            requests, path, self.runtime, "OpenVINO layers (performance counters; laid end to end)", "openvino layer"
        )


def _property(compiled: Any, name: str, default: Any) -> Any:
    try:
        return compiled.get_property(name)
    except Exception:  # a property this OpenVINO version's CPU plugin does not report
        return default


def build_openvino(model: Model, ctx: BuildContext) -> Runner:
    path = export_onnx(model, ctx)
    options: OpenVINOConfig = ctx.options or OpenVINOConfig()
    cache_dir = None
    if options.model_cache and ctx.cache is not None and ctx.cache.root is not None:
        cache_dir = Path(ctx.cache.root) / "openvino"
        cache_dir.mkdir(parents=True, exist_ok=True)
    runner = OpenVINORunner(RUNTIME, model, path, options, cache_dir)
    if cache_dir is not None:
        action = "restored" if runner.loaded_from_cache else "built"
        ctx.artifacts.note("openvino-compile", action, runner.compile_seconds, "OpenVINO model cache")
    return runner


def definitions() -> list[RuntimeDefinition]:
    return [
        RuntimeDefinition(
            RUNTIME,
            build_openvino,
            ALL_FORMATS,
            "cpu",
            requirement=openvino_unavailable,
            model_check=exporter_unavailable,
            description="OpenVINO, CPU plugin, compiled from the model's ONNX form",
            options=OpenVINOConfig(),
        )
    ]
