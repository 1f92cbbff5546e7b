"""Native TensorRT from the ONNX export: explicit batch, one optimization profile, fp32 or fp16."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_navigator.config import Sample
from pytest_navigator.errors import RuntimeBuildError
from pytest_navigator.model.loader import Model
from pytest_navigator.runtimes.base import ALL_FORMATS, BuildContext, Runner, RuntimeDefinition
from pytest_navigator.runtimes.cache import Mode
from pytest_navigator.runtimes.onnx_runtimes import export_onnx, exporter_unavailable
from pytest_navigator.runtimes.runtime_options import TensorRTConfig


def tensorrt_unavailable() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return "tensorrt is not installed (pip install 'pytest-navigator[tensorrt]')"
    from pytest_navigator.runtimes.torch_runner import cuda_unavailable

    reason = cuda_unavailable()  # device buffers are torch CUDA tensors
    return f"TensorRT {tensorrt.__version__} is installed but {reason}" if reason else None


class TensorRTRunner(Runner):
    """Runs a deserialized engine on its own CUDA stream; outputs stay on the GPU until read.

    An engine built with one optimization profile per batch size (seed 003's per-batch plans)
    keeps one execution context per profile, created on first use of its size."""

    def __init__(
        self, runtime: str, model: Model, engine: Any, profiles: tuple[int, ...] = (), build_seconds: float = 0.0
    ) -> None:
        import tensorrt as trt

        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in self._inputs]
        super().__init__(runtime, model.io_spec, outputs, device="cuda")
        #: batch size -> optimization profile index, when the engine has one profile per size (profile 0
        #: covers every size and serves the others)
        self.profiles = {size: index + 1 for index, size in enumerate(profiles)}
        self._contexts: dict[int, Any] = {}
        self._build_seconds = build_seconds
        import torch

        #: This runner's own stream: engines are enqueued there and synchronize() waits for it only.
        self.stream = torch.cuda.Stream()

    def plan_seconds(self, batch_size: int) -> float | None:
        return self._build_seconds if batch_size in self.profiles else None

    @property
    def planned_batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self.profiles))

    def _context_for(self, batch_size: int) -> Any:

        if batch_size not in self.profiles:
            return self.context
        if batch_size not in self._contexts:
            context = self.engine.create_execution_context()
            context.set_optimization_profile_async(self.profiles[batch_size], self.stream.cuda_stream)
            self._contexts[batch_size] = context
        return self._contexts[batch_size]

    def prepare(self, sample: Sample) -> list[tuple[str, Any]]:
        """Inputs uploaded to the GPU before timing: (name, CUDA tensor) in engine order."""
        import torch

        self.check_sample(sample)
        uploaded = [(name, torch.from_numpy(np.ascontiguousarray(sample[name])).cuda()) for name in self._inputs]
        torch.cuda.current_stream().synchronize()  # uploaded before any timing starts
        return uploaded

    def run(self, prepared: list[tuple[str, Any]]) -> dict[str, Any]:
        """Enqueue the engine on this runner's stream; outputs stay on the GPU."""
        return self._enqueue(self._context_for(_batch_of(prepared)), prepared)

    def _enqueue(self, context: Any, prepared: list[tuple[str, Any]]) -> dict[str, Any]:
        import tensorrt as trt
        import torch

        for name, tensor in prepared:
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, tensor.data_ptr())
        results = {}
        with torch.cuda.stream(self.stream):  # outputs belong to this stream's allocations
            for name in self.output_names:
                dtype = torch.from_numpy(trt.nptype(self.engine.get_tensor_dtype(name))(0).reshape(1)).dtype
                out = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
                context.set_tensor_address(name, out.data_ptr())
                results[name] = out
        if not context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"{self.runtime}: TensorRT execute_async_v3 failed")
        return results

    def infer(self, sample: Sample) -> Sample:
        outputs = self.run(self.prepare(sample))
        self.synchronize()
        return {name: out.cpu().numpy() for name, out in outputs.items()}

    def synchronize(self) -> None:
        self.stream.synchronize()

    def device_memory_bytes(self, batch_size: int) -> int | None:
        """The engine's device memory (activations, scratch) for the optimization profile serving
        `batch_size` (TensorRT 10.1+ tells it per profile), else for the largest profile."""
        index = self.profiles.get(batch_size, 0)
        for name in ("get_device_memory_size_for_profile_v2", "get_device_memory_size_for_profile"):
            getter = getattr(self.engine, name, None)
            if callable(getter):
                try:
                    return int(getter(index))
                except Exception:  # an older binding's signature: fall back to the engine's maximum
                    break
        for name in ("device_memory_size_v2", "device_memory_size"):
            value = getattr(self.engine, name, None)
            if isinstance(value, int):
                return value
        return None

    def trace(self, samples: Sequence[Sample], path: Path) -> str:
        """Each sample once under an IProfiler on a context of its own (the timed contexts never
        carry one), its layer times read after the stream is done; written by trace.layer_trace."""
        import tensorrt as trt

        from pytest_navigator.runtimes.profiler_traces import layer_trace

        class LayerTimes(trt.IProfiler):
            def __init__(self) -> None:
                trt.IProfiler.__init__(self)
                self.layers: list[tuple[str, float]] = []

            def report_layer_time(self, layer_name: str, ms: float) -> None:
                self.layers.append((str(layer_name), float(ms)))

        recorder = LayerTimes()
        contexts: dict[int, Any] = {}
        requests = []
        for sample in samples:
            prepared = self.prepare(sample)
            batch = _batch_of(prepared)
            if batch not in contexts:
                context = self.engine.create_execution_context()
                if batch in self.profiles:
                    context.set_optimization_profile_async(self.profiles[batch], self.stream.cuda_stream)
                context.profiler = recorder
                context.enqueue_emits_profile = False  # reported below, once the stream is done
                contexts[batch] = context
            self._enqueue(contexts[batch], prepared)
            self.synchronize()
            recorder.layers = []
            contexts[batch].report_to_profiler()
            requests.append(recorder.layers)
        return layer_trace(requests, path, self.runtime)


def _batch_of(prepared: list[tuple[str, Any]]) -> int:
    return int(prepared[0][1].shape[0]) if prepared and prepared[0][1].dim() else 1


def _shape(spec: Any, batch: int, pick: str) -> tuple[int, ...]:
    """One input's shape at `batch` with its other dynamic axes at their min or max."""
    dims = []
    for axis, dim in enumerate(spec.dims):
        if not dim.dynamic:
            dims.append(dim.size or 1)
        elif axis == 0:
            dims.append(batch)
        else:
            dims.append(dim.min if pick == "min" else dim.max)
    return tuple(dims)


def serialize_engine(model: Model, onnx_path: Path, options: TensorRTConfig, sizes: tuple[int, ...]) -> bytes:
    """Build a serialized engine from the ONNX export: explicit batch, the options' precision, TF32,
    workspace and optimization level, and one profile covering `sizes` (or one profile per size)."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeBuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    # layers keep their ONNX node names, for --navigator-trace's IProfiler (metadata only)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    config.builder_optimization_level = options.builder_optimization_level
    if options.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if not options.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    # profile 0 covers every size (the fallback); with profile_per_batch_size, profile i+1 is tuned for sizes[i]
    ranges = [(min(sizes), max(sizes), max(sizes))]
    if options.profile_per_batch_size:
        ranges += [(size, size, size) for size in sizes]
    for low, opt, high in ranges:
        profile = builder.create_optimization_profile()
        for index in range(network.num_inputs):
            tensor = network.get_input(index)
            spec = model.io_spec[tensor.name]
            profile.set_shape(
                tensor.name, _shape(spec, low, "min"), _shape(spec, opt, "max"), _shape(spec, high, "max")
            )
        config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeBuildError(f"TensorRT failed to build an engine for {model.name} (see the TensorRT log above)")
    return bytes(serialized)


@dataclass(frozen=True)
class EngineConfig:
    """What an engine is built with: the runtime's options, the batch sizes its profiles cover, the ONNX file."""

    options: TensorRTConfig
    sizes: tuple[int, ...]
    onnx_path: Path


def _convert_engine(model: Model, config: EngineConfig, folder: Path) -> tuple[str, dict[str, Any]]:
    import tensorrt as trt

    (folder / "engine.plan").write_bytes(serialize_engine(model, config.onnx_path, config.options, config.sizes))
    return "engine.plan", {"sizes": list(config.sizes), "tensorrt": trt.__version__}


def _restore_engine(artifact: Path, config: EngineConfig, metadata: dict[str, Any]) -> Any:
    import tensorrt as trt

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(artifact.read_bytes())
    if engine is None:
        raise RuntimeBuildError(f"TensorRT could not deserialize {artifact}")
    return engine


#: ONNX file -> serialized TensorRT engine (restore deserializes it for this GPU).
TENSORRT_ENGINE: Mode[Any] = Mode("tensorrt-engine", _convert_engine, _restore_engine)


def build_tensorrt(model: Model, ctx: BuildContext, fp16: bool) -> Runner:
    """The engine from the artifact cache (keyed by model, options, sizes, GPU and TensorRT version),
    built and stored on a miss."""
    import time

    from pytest_navigator.runtimes.environment import gpu_facts

    options: TensorRTConfig = ctx.options or TensorRTConfig(fp16=fp16)
    sizes = ctx.batch_sizes or (1,)
    onnx_path = export_onnx(model, ctx)
    started = time.perf_counter()

    parts = {
        "model": model.fingerprint,
        "options": options.to_dict(),
        "sizes": list(sizes),
        "gpus": gpu_facts(),
        "profiling_verbosity": "detailed",
    }
    engine = ctx.artifacts.fetch(TENSORRT_ENGINE, model, EngineConfig(options, sizes, onnx_path), parts)
    name = "tensorrt-fp16" if fp16 else "tensorrt"
    profiles = sizes if options.profile_per_batch_size else ()
    return TensorRTRunner(name, model, engine, profiles, time.perf_counter() - started)


def definitions() -> list[RuntimeDefinition]:
    return [
        RuntimeDefinition(
            name,
            functools.partial(build_tensorrt, fp16=fp16),
            ALL_FORMATS,
            "cuda",
            precision="fp16" if fp16 else "fp32",
            requirement=tensorrt_unavailable,
            model_check=exporter_unavailable,
            description=f"native TensorRT engine, {'fp16' if fp16 else 'fp32'}",
            options=TensorRTConfig(fp16=fp16),
        )
        for name, fp16 in (("tensorrt", False), ("tensorrt-fp16", True))
    ]
