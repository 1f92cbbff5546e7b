"""Native TensorRT from the ONNX export: explicit batch, one optimization profile, fp32 or fp16."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from pytest_navigator.config import Sample
from pytest_navigator.errors import RuntimeBuildError
from pytest_navigator.model import Model
from pytest_navigator.runtimes.base import ALL_FORMATS, BuildContext, Runner, RuntimeDefinition
from pytest_navigator.runtimes.onnx_runtimes import export_onnx, exporter_unavailable

WORKSPACE_BYTES = 1 << 30


def tensorrt_unavailable() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return "tensorrt is not installed (pip install 'pytest-navigator[tensorrt]')"
    from pytest_navigator.runtimes.torch_runtimes import cuda_unavailable

    reason = cuda_unavailable()  # device buffers are torch CUDA tensors
    return f"TensorRT {tensorrt.__version__} is installed but {reason}" if reason else None


class TensorRTRunner(Runner):
    """Runs a deserialized engine on torch's current CUDA stream; outputs are copied to the host."""

    def __init__(self, runtime: str, model: Model, engine: Any) -> None:
        import tensorrt as trt

        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self._inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in self._inputs]
        super().__init__(runtime, model.io_spec, outputs, device="cuda")

    def prepare(self, sample: Sample) -> list[tuple[str, Any]]:
        """Inputs uploaded to the GPU before timing: (name, CUDA tensor) in engine order."""
        import torch

        self.check_sample(sample)
        return [(name, torch.from_numpy(np.ascontiguousarray(sample[name])).cuda()) for name in self._inputs]

    def run(self, prepared: list[tuple[str, Any]]) -> dict[str, Any]:
        """Enqueue the engine on torch's current stream; outputs stay on the GPU."""
        import tensorrt as trt
        import torch

        for name, tensor in prepared:
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        results = {}
        for name in self.output_names:
            dtype = torch.from_numpy(trt.nptype(self.engine.get_tensor_dtype(name))(0).reshape(1)).dtype
            out = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, out.data_ptr())
            results[name] = out
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"{self.runtime}: TensorRT execute_async_v3 failed")
        return results

    def infer(self, sample: Sample) -> Sample:
        return {name: out.cpu().numpy() for name, out in self.run(self.prepare(sample)).items()}

    def synchronize(self) -> None:
        import torch

        torch.cuda.current_stream().synchronize()


def build_tensorrt(model: Model, ctx: BuildContext, fp16: bool) -> Runner:
    import tensorrt as trt

    onnx_path = export_onnx(model, ctx)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeBuildError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    sizes = ctx.batch_sizes or (1,)
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        spec = model.io_spec[tensor.name]

        def shape(batch: int, pick: str, spec: Any = spec) -> tuple[int, ...]:
            dims = []
            for axis, dim in enumerate(spec.dims):
                if not dim.dynamic:
                    dims.append(dim.size or 1)
                elif axis == 0:
                    dims.append(batch)
                else:
                    dims.append({"min": dim.min, "opt": dim.max, "max": dim.max}[pick])
            return tuple(dims)

        profile.set_shape(tensor.name, shape(min(sizes), "min"), shape(max(sizes), "opt"), shape(max(sizes), "max"))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeBuildError(f"TensorRT failed to build an engine for {model.name} (see the TensorRT log above)")
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    return TensorRTRunner("tensorrt-fp16" if fp16 else "tensorrt", model, engine)


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
        )
        for name, fp16 in (("tensorrt", False), ("tensorrt-fp16", True))
    ]
