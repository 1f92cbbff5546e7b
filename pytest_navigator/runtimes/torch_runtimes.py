"""PyTorch runtimes: eager, TorchScript (frozen), torch.compile and AOTInductor, on the CPU and on CUDA.

The runner they share is torch_runner.py's, the torch.compile runtime torch_compile.py's, AOTInductor torch_aoti.py's; a torch
model's inputs bind and its outputs are named by model/torch_io.py. Their names are importable from
here too.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_navigator.config import Format
from pytest_navigator.errors import RuntimeBuildError
from pytest_navigator.model.loader import Model
from pytest_navigator.model.torch_io import bind_tensors, name_outputs
from pytest_navigator.runtimes.base import TORCH_FORMATS, BuildContext, Runner, RuntimeDefinition
from pytest_navigator.runtimes.cache import Mode
from pytest_navigator.runtimes.runtime_options import (
    TorchAOTIConfig,
    TorchCompileConfig,
    TorchConfig,
    TorchScriptConfig,
)
from pytest_navigator.runtimes.torch_aoti import build_aoti, not_exportable
from pytest_navigator.runtimes.torch_compile import CompiledTorchRunner, build_compiled, not_torchscript
from pytest_navigator.runtimes.torch_runner import (
    PreparedTorch,
    TorchRunner,
    batch_of,
    cuda_unavailable,
    module_on,
    torch_flags,
    torch_settings,
)

__all__ = [
    "TORCHSCRIPT_TRACE",
    "CompiledTorchRunner",
    "PreparedTorch",
    "TorchRunner",
    "TracedTorchScriptRunner",
    "bind_tensors",
    "build_compiled",
    "build_eager",
    "build_torchscript",
    "cuda_unavailable",
    "definitions",
    "module_on",
    "name_outputs",
    "torch_settings",
]


def build_eager(model: Model, ctx: BuildContext, device: str = "cpu") -> Runner:
    return TorchRunner(f"torch-{device}", module_on(model, device), model, device, **torch_flags(ctx))


class TracedTorchScriptRunner(TorchRunner):
    """TorchScript traced from a torch model: one frozen plan per input-shape signature (seed 003).

    torch.jit.trace records the shapes it sees as constants (an exported program's reshapes
    become reshape(2, 32, ...)), so a plan traced at one batch size is only valid for it.
    Plans are built on first use of a shape (or preloaded) and kept; `plans` says which exist.
    With an artifact cache, each frozen plan is saved there and a later run loads it instead of
    tracing again.
    """

    def __init__(
        self,
        runtime: str,
        model: Model,
        device: str,
        threads: int = 0,
        tf32: bool = False,
        optimize: bool = True,
        cache: Any = None,
    ) -> None:
        super().__init__(runtime, None, model, device, threads, tf32)
        self.plans: dict[tuple[tuple[int, ...], ...], Any] = {}
        self.plan_build_seconds: dict[tuple[tuple[int, ...], ...], float] = {}
        self._optimize, self._cache = optimize, cache

    def module_for(self, prepared: PreparedTorch) -> Any:
        if prepared.shapes not in self.plans:
            self.plans[prepared.shapes] = self._trace(prepared)
        return self.plans[prepared.shapes]

    def plan_seconds(self, batch_size: int) -> float | None:
        found = [t for shapes, t in self.plan_build_seconds.items() if batch_of(shapes) == batch_size]
        return max(found) if found else None

    @property
    def planned_batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted({b for b in map(batch_of, self.plans) if b is not None}))

    def _trace(self, prepared: PreparedTorch) -> Any:
        started = time.perf_counter()
        if self._cache is None:
            plan = _optimized(self._frozen_trace(prepared), self._optimize)
        else:
            parts = {
                "model": self._model.fingerprint,
                "shapes": [list(shape) for shape in prepared.shapes],
                "device": self.device,
            }
            plan = self._cache.fetch(TORCHSCRIPT_TRACE, self._model, (self, prepared), parts)
        self.plan_build_seconds[prepared.shapes] = time.perf_counter() - started
        return plan

    def _frozen_trace(self, prepared: PreparedTorch) -> Any:
        import torch

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
            return torch.jit.freeze(traced.eval())

    def _save(self, prepared: PreparedTorch, folder: Path) -> tuple[str, dict[str, Any]]:
        """convert: the frozen trace, saved before optimize_for_inference (its fused, prepacked
        weights are layout-specific), which restore applies again."""
        import torch

        frozen = self._frozen_trace(prepared)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.save(frozen, str(folder / "plan.pt"))
        return "plan.pt", {"device": self.device}

    def _load(self, artifact: Path, metadata: dict[str, Any]) -> Any:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.jit.load(str(artifact), map_location=self.device)
        return _optimized(loaded.eval(), self._optimize)


def _convert_trace(
    model: Model, config: tuple[TracedTorchScriptRunner, PreparedTorch], folder: Path
) -> tuple[str, dict[str, Any]]:
    runner, prepared = config
    return runner._save(prepared, folder)


def _restore_trace(
    artifact: Path, config: tuple[TracedTorchScriptRunner, PreparedTorch], metadata: dict[str, Any]
) -> Any:
    return config[0]._load(artifact, metadata)


#: torch model + one input shape -> a frozen TorchScript plan (optimize_for_inference on restore).
TORCHSCRIPT_TRACE: Mode[Any] = Mode("torchscript-trace", _convert_trace, _restore_trace)


def _freeze(module: Any, optimize: bool = True) -> Any:
    """Freeze, then optimize_for_inference where the graph allows it (it does not for every model)."""
    import torch

    return _optimized(torch.jit.freeze(module.eval()), optimize)


def _optimized(frozen: Any, optimize: bool) -> Any:
    import torch

    if not optimize:
        return frozen
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.optimize_for_inference(frozen)
    except Exception:  # optional pass; the frozen module is still a valid runtime
        return frozen


def build_torchscript(model: Model, ctx: BuildContext, device: str = "cpu") -> Runner:
    """A TorchScript file is frozen as is; other torch models are traced, one plan per shape."""
    optimize = getattr(getattr(ctx, "options", None), "optimize_for_inference", True)
    if model.format is not Format.TORCHSCRIPT:
        runner = TracedTorchScriptRunner(
            f"torchscript-{device}",
            model,
            device,
            **torch_flags(ctx),
            optimize=optimize,
            cache=getattr(ctx, "cache", None),
        )
        runner.infer(ctx.example)  # trace now, so a trace error fails the build
        return runner
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TorchRunner(
            f"torchscript-{device}", _freeze(module_on(model, device), optimize), model, device, **torch_flags(ctx)
        )


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
                options=TorchConfig(),
            ),
            RuntimeDefinition(
                f"torchscript-{device}",
                _on(device, build_torchscript),
                TORCH_FORMATS,
                device,
                requirement=requirement,
                description="TorchScript, frozen and optimized for inference",
                options=TorchScriptConfig(),
            ),
            RuntimeDefinition(
                f"torch-compile-{device}",
                _on(device, build_compiled),
                TORCH_FORMATS,
                device,
                requirement=requirement,
                model_check=not_torchscript,
                description="torch.compile (inductor)",
                options=TorchCompileConfig(),
                # an exported program gets AOTInductor instead: the same compiler, built in a fraction
                # of the time and faster (harness/bench_compilers.py; README, what a run costs)
                default_formats=frozenset({Format.TORCH}),
            ),
            RuntimeDefinition(
                f"torch-aoti-{device}",
                _on(device, build_aoti),
                TORCH_FORMATS,
                device,
                requirement=requirement,
                model_check=not_exportable,
                description="AOTInductor: the exported program compiled ahead of time, one package for all batch sizes",
                options=TorchAOTIConfig(),
                # a pickled module is exported first, which may fail: torch.compile covers it by default
                default_formats=frozenset({Format.TORCH_EXPORTEDPROGRAM}),
            ),
        ]
    return found
