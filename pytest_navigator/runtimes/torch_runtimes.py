"""PyTorch runtimes: eager, TorchScript (frozen) and torch.compile, on the CPU and on CUDA."""

from __future__ import annotations

import contextlib
import copy
import functools
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_navigator.config import Format, Sample
from pytest_navigator.errors import RuntimeBuildError
from pytest_navigator.model import Model
from pytest_navigator.runtimes.base import TORCH_FORMATS, BuildContext, Runner, RuntimeDefinition


@dataclass(frozen=True, slots=True)
class PreparedTorch:
    """A request bound to forward's arguments as tensors on the runner's device, with its shape key."""

    args: list[Any]
    kwargs: dict[str, Any]
    shapes: tuple[tuple[int, ...], ...]


class TorchRunner(Runner):
    """Calls a torch module under inference_mode; inputs bind to forward as the model's spec says."""

    def __init__(self, runtime: str, module: Any, model: Model, device: str = "cpu") -> None:
        super().__init__(runtime, model.io_spec, device=device)
        self.module = module
        self._model = model

    def prepare(self, sample: Sample) -> PreparedTorch:
        """Host arrays -> tensors on this runner's device, bound to forward's arguments."""
        self.check_sample(sample)
        args, kwargs = bind_tensors(self._model, sample, self.device)
        return PreparedTorch(args, kwargs, tuple(tuple(sample[n].shape) for n in self.input_spec.names))

    def module_for(self, prepared: PreparedTorch) -> Any:
        """The callable that runs this request (one module here; one plan per shape in subclasses)."""
        return self.module

    def run(self, prepared: PreparedTorch) -> Any:
        import torch

        module = self.module_for(prepared)
        with torch.inference_mode():
            return module(*prepared.args, **prepared.kwargs)

    def infer(self, sample: Sample) -> Sample:
        named = name_outputs(self.run(self.prepare(sample)))
        if not self.output_names:
            self.output_names = tuple(named)
        return named

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)


def bind_tensors(model: Model, sample: Sample, device: str = "cpu") -> tuple[list[Any], dict[str, Any]]:
    """A sample's arrays as tensors on `device`, split into forward's positional and keyword arguments."""
    import torch

    def tensor(name: str) -> Any:
        array = np.ascontiguousarray(sample[name])
        if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: same bits as torch's
            return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16).to(device)
        return torch.from_numpy(array).to(device)

    return [tensor(n) for n in model.positional_inputs], {n: tensor(n) for n in model.keyword_inputs}


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


def module_on(model: Model, device: str) -> Any:
    """The model's torch module on `device`; a copy when moving, since .to() moves in place and
    the CPU reference shares the loaded module."""
    module = model.torch_module()
    if device == "cpu":
        return module
    if model.format is not Format.TORCH_EXPORTEDPROGRAM:  # .module() is already a fresh module
        module = copy.deepcopy(module)
    return module.to(device)


def build_eager(model: Model, ctx: BuildContext, device: str = "cpu") -> Runner:
    return TorchRunner(f"torch-{device}", module_on(model, device), model, device)


class TracedTorchScriptRunner(TorchRunner):
    """TorchScript traced from a torch model: one frozen plan per input-shape signature (seed 003).

    torch.jit.trace records the shapes it sees as constants (an exported program's reshapes
    become reshape(2, 32, ...)), so a plan traced at one batch size is only valid for it.
    Plans are built on first use of a shape and kept; `plans` says which exist.
    """

    def __init__(self, runtime: str, model: Model, device: str) -> None:
        super().__init__(runtime, None, model, device)
        self.plans: dict[tuple[tuple[int, ...], ...], Any] = {}
        self.plan_build_seconds: dict[tuple[tuple[int, ...], ...], float] = {}

    def module_for(self, prepared: PreparedTorch) -> Any:
        if prepared.shapes not in self.plans:
            self.plans[prepared.shapes] = self._trace(prepared)
        return self.plans[prepared.shapes]

    def _trace(self, prepared: PreparedTorch) -> Any:
        import time

        import torch

        started = time.perf_counter()
        source = module_on(self._model, self.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                traced = torch.jit.trace(
                    source, tuple(prepared.args), example_kwarg_inputs=prepared.kwargs or None, check_trace=False
                )
            except Exception as exc:
                raise RuntimeBuildError(
                    f"torch.jit.trace of {self._model.name} failed: {type(exc).__name__}: {exc}"
                ) from exc
            plan = _freeze(traced)
        self.plan_build_seconds[prepared.shapes] = time.perf_counter() - started
        return plan


def _freeze(module: Any) -> Any:
    """Freeze, then optimize_for_inference where the graph allows it (it does not for every model)."""
    import torch

    frozen = torch.jit.freeze(module.eval())
    try:
        return torch.jit.optimize_for_inference(frozen)
    except Exception:  # optional pass; the frozen module is still a valid runtime
        return frozen


def build_torchscript(model: Model, ctx: BuildContext, device: str = "cpu") -> Runner:
    """A TorchScript file is frozen as is; other torch models are traced, one plan per shape."""
    if model.format is not Format.TORCHSCRIPT:
        runner = TracedTorchScriptRunner(f"torchscript-{device}", model, device)
        runner.infer(ctx.example)  # trace now, so a trace error fails the build
        return runner
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TorchRunner(f"torchscript-{device}", _freeze(module_on(model, device)), model, device)


class CompiledTorchRunner(TorchRunner):
    """A torch.compile'd module. Inductor's own use of deprecated torch.jit APIs warns on every
    (re)compile; users cannot act on that, so only that warning is silenced, only here."""

    def run(self, prepared: PreparedTorch) -> Any:
        with _quiet_jit_deprecations():
            return super().run(prepared)


@contextlib.contextmanager
def _quiet_jit_deprecations() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=DeprecationWarning)
        yield


def build_compiled(model: Model, ctx: BuildContext, device: str = "cpu") -> Runner:
    import torch

    with _quiet_jit_deprecations():
        compiled = torch.compile(module_on(model, device), backend="inductor")
    runner = CompiledTorchRunner(f"torch-compile-{device}", compiled, model, device)
    try:  # compile now, so a build error fails this runtime's build and not its first test
        runner.infer(ctx.example)
    except Exception as exc:
        raise RuntimeBuildError(
            f"torch.compile of {model.name} failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from exc
    return runner


def _on(device: str, build: Callable[..., Runner]) -> Callable[[Model, BuildContext], Runner]:
    return functools.partial(build, device=device)


def definitions() -> list[RuntimeDefinition]:
    found = []
    for device in ("cpu", "cuda"):
        requirement = (lambda: None) if device == "cpu" else cuda_unavailable
        found += [
            RuntimeDefinition(
                f"torch-{device}",
                _on(device, build_eager),
                TORCH_FORMATS,
                device,
                requirement=requirement,
                description="PyTorch eager, inference_mode, fp32",
            ),
            RuntimeDefinition(
                f"torchscript-{device}",
                _on(device, build_torchscript),
                TORCH_FORMATS,
                device,
                requirement=requirement,
                description="TorchScript, frozen and optimized for inference",
            ),
            RuntimeDefinition(
                f"torch-compile-{device}",
                _on(device, build_compiled),
                TORCH_FORMATS,
                device,
                requirement=requirement,
                model_check=_not_torchscript,
                description="torch.compile (inductor)",
            ),
        ]
    return found
