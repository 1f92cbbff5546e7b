"""PyTorch runtimes: eager, TorchScript (frozen) and torch.compile, on the CPU and on CUDA."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from pytest_navigator.config import Format, Sample
from pytest_navigator.errors import RuntimeBuildError
from pytest_navigator.model import Model
from pytest_navigator.runtimes.base import TORCH_FORMATS, BuildContext, Runner, RuntimeDefinition


class TorchRunner(Runner):
    """Calls a torch module under inference_mode; inputs bind to forward as the model's spec says."""

    def __init__(self, runtime: str, module: Any, model: Model, device: str = "cpu") -> None:
        super().__init__(runtime, model.io_spec, device=device)
        self.module = module
        self._positional = model.positional_inputs
        self._keyword = model.keyword_inputs

    def to_device(self, sample: Sample) -> tuple[list[Any], dict[str, Any]]:
        """Host arrays -> tensors on this runner's device, bound to forward's arguments."""
        import torch

        self.check_sample(sample)

        def tensor(name: str) -> Any:
            return torch.from_numpy(np.ascontiguousarray(sample[name])).to(self.device)

        return [tensor(n) for n in self._positional], {n: tensor(n) for n in self._keyword}

    def infer(self, sample: Sample) -> Sample:
        import torch

        args, kwargs = self.to_device(sample)
        with torch.inference_mode():
            outputs = self.module(*args, **kwargs)
        named = name_outputs(outputs)
        if not self.output_names:
            self.output_names = tuple(named)
        return named

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)


def name_outputs(outputs: Any, prefix: str = "output") -> Sample:
    """Flatten a forward() result into named host arrays: a tensor is 'output', a tuple 'output_0'..,
    a dict keeps its keys."""
    import torch

    if isinstance(outputs, torch.Tensor):
        tensor = outputs.detach()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return {prefix: tensor.cpu().numpy()}
    named: Sample = {}
    if isinstance(outputs, dict):
        for key, value in outputs.items():
            named.update(name_outputs(value, str(key) if prefix == "output" else f"{prefix}.{key}"))
    elif isinstance(outputs, (tuple, list)):
        for index, value in enumerate(outputs):
            named.update(name_outputs(value, f"{prefix}_{index}"))
    elif outputs is not None:
        named[prefix] = np.asarray(outputs)
    return named


def cuda_unavailable() -> str | None:
    """Why torch cannot use CUDA here, or None."""
    import torch

    if not torch.backends.cuda.is_built():
        return f"torch {torch.__version__} is a CPU-only build (no CUDA support compiled in)"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch (torch.cuda.is_available() is False)"
    return None


def _not_torchscript(model: Model) -> str | None:
    if model.format is Format.TORCHSCRIPT:
        return (
            "torch.compile cannot compile a TorchScript module; give the model as a torch.export "
            "archive (.pt2) or a pickled nn.Module to test torch.compile"
        )
    return None


def build_eager(model: Model, ctx: BuildContext, device: str = "cpu") -> Runner:
    module = model.torch_module()
    if device != "cpu":
        module = module.to(device)
    return TorchRunner(f"torch-{device}", module, model, device)


def build_torchscript(model: Model, ctx: BuildContext, device: str = "cpu") -> Runner:
    """Script/trace, freeze, then optimize_for_inference where the graph allows it."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if model.format is Format.TORCHSCRIPT:
            scripted = model.source
        else:
            probe = TorchRunner("trace", model.torch_module(), model)
            args, kwargs = probe.to_device(ctx.example)
            try:
                scripted = torch.jit.trace(probe.module, tuple(args), example_kwarg_inputs=kwargs or None, check_trace=False)
            except Exception as exc:
                raise RuntimeBuildError(f"torch.jit.trace of {model.name} failed: {type(exc).__name__}: {exc}") from exc
        if device != "cpu":
            scripted = scripted.to(device)
        frozen = torch.jit.freeze(scripted.eval())
        try:
            frozen = torch.jit.optimize_for_inference(frozen)
        except Exception:  # noqa: S110 - optional pass; the frozen module is still a valid runtime
            pass
    return TorchRunner(f"torchscript-{device}", frozen, model, device)


def build_compiled(model: Model, ctx: BuildContext, device: str = "cpu") -> Runner:
    import torch

    module = model.torch_module()
    if device != "cpu":
        module = module.to(device)
    compiled = torch.compile(module, backend="inductor")
    runner = TorchRunner(f"torch-compile-{device}", compiled, model, device)
    try:  # compile now, so a build error fails this runtime's build and not its first test
        runner.infer(ctx.example)
    except Exception as exc:
        raise RuntimeBuildError(f"torch.compile of {model.name} failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from exc
    return runner


def _on(device: str, build: Callable[..., Runner]) -> Callable[[Model, BuildContext], Runner]:
    return functools.partial(build, device=device)


def definitions() -> list[RuntimeDefinition]:
    found = []
    for device in ("cpu", "cuda"):
        requirement = (lambda: None) if device == "cpu" else cuda_unavailable
        found += [
            RuntimeDefinition(f"torch-{device}", _on(device, build_eager), TORCH_FORMATS, device, requirement=requirement, description="PyTorch eager, inference_mode, fp32"),
            RuntimeDefinition(f"torchscript-{device}", _on(device, build_torchscript), TORCH_FORMATS, device, requirement=requirement, description="TorchScript, frozen and optimized for inference"),
            RuntimeDefinition(f"torch-compile-{device}", _on(device, build_compiled), TORCH_FORMATS, device, requirement=requirement, model_check=_not_torchscript, description="torch.compile (inductor)"),
        ]
    return found
