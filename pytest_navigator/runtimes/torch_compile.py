"""The torch.compile runtime (inductor), on the CPU and on CUDA: compiled at build time, one graph for
every batch size unless static shapes are asked for.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Iterator
from typing import Any

from pytest_navigator.config import Format, Sample
from pytest_navigator.errors import RuntimeBuildError
from pytest_navigator.model.loader import Model
from pytest_navigator.runtimes.base import BuildContext, Runner
from pytest_navigator.runtimes.runtime_options import TorchCompileConfig
from pytest_navigator.runtimes.torch_runner import PreparedTorch, TorchRunner, batch_of, module_on, torch_settings


def not_torchscript(model: Model) -> str | None:
    """Why torch.compile cannot take this model (a TorchScript module), or None."""
    if model.format is Format.TORCHSCRIPT:
        return (
            "torch.compile cannot compile a TorchScript module; give the model as a torch.export "
            "archive (.pt2) or a pickled nn.Module to test torch.compile"
        )
    return None


class CompiledTorchRunner(TorchRunner):
    """A torch.compile'd module. The first request of each batch size compiles (or, with static
    shapes, recompiles) a plan; its duration is kept as that size's plan build time. Inductor's own
    use of deprecated torch.jit APIs warns on every (re)compile; users cannot act on that, so only
    that warning is silenced, only here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan_build_seconds: dict[int, float] = {}

    def run(self, prepared: PreparedTorch) -> Any:
        batch = batch_of(prepared.shapes)
        if batch is None or batch in self.plan_build_seconds:
            with _quiet_jit_deprecations():
                return super().run(prepared)
        started = time.perf_counter()
        with _quiet_jit_deprecations():
            result = super().run(prepared)
        self.synchronize()
        self.plan_build_seconds[batch] = time.perf_counter() - started
        return result

    def plan_seconds(self, batch_size: int) -> float | None:
        return self.plan_build_seconds.get(batch_size)

    @property
    def planned_batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted(self.plan_build_seconds))


@contextlib.contextmanager
def _quiet_jit_deprecations() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=DeprecationWarning)
        yield


def build_compiled(model: Model, ctx: BuildContext, device: str = "cpu") -> Runner:
    import torch

    options = getattr(ctx, "options", None) or TorchCompileConfig()
    if options.cuda_graphs and device == "cpu":
        raise RuntimeBuildError(f"torch-compile-{device}: cuda_graphs=true needs a CUDA runtime (torch-compile-cuda).")
    settings: dict[str, Any] = {"backend": "inductor", "fullgraph": options.fullgraph}
    if options.cuda_graphs:
        settings["options"] = {"triton.cudagraphs": True}
    elif options.mode != "default":
        settings["mode"] = options.mode
    if options.static_shapes:
        # one plan per batch size: torch recompiles per shape, so allow as many plans as sizes
        settings["dynamic"] = False
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    cache = getattr(ctx, "cache", None)
    if cache is not None:
        from pytest_navigator.runtimes.cache import torch_compile_cache

        torch_compile_cache(cache.root)
    with _quiet_jit_deprecations(), torch_settings(options.threads, options.tf32):
        compiled = torch.compile(module_on(model, device), **settings)
    runner = CompiledTorchRunner(
        f"torch-compile-{device}", compiled, model, device, threads=options.threads, tf32=options.tf32
    )
    from torch._dynamo.utils import counters

    before = dict(counters["inductor"])
    started = time.perf_counter()
    try:  # compile now, so a build error fails this runtime's build and not its first test
        _first_call(runner, model, ctx.example, dynamic_batch=not options.static_shapes)
    except Exception as exc:
        raise RuntimeBuildError(
            f"torch.compile of {model.name} failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        ) from exc
    if cache is not None:  # inductor's FX graph cache: hits mean the compiled kernels were restored
        hits = counters["inductor"]["fxgraph_cache_hit"] - before.get("fxgraph_cache_hit", 0)
        misses = counters["inductor"]["fxgraph_cache_miss"] - before.get("fxgraph_cache_miss", 0)
        action = "restored" if hits and not misses else "built"
        cache.note(
            "torch-compile", action, time.perf_counter() - started, f"inductor cache {hits} hits, {misses} misses"
        )
    return runner


def _first_call(runner: Runner, model: Model, example: Sample, dynamic_batch: bool) -> None:
    """The build's compiling call. With dynamic shapes the example's batch axis is marked dynamic,
    so torch compiles one graph for every batch size now, instead of a static graph for the
    example's size and a dynamic one at the first other size (a second full compile: 14 s of the
    demo ResNet's 42 s on 2 cores). Batch 1 still gets its own graph (torch specializes sizes 0 and
    1). A model whose code fixes the batch size refuses the mark; it is then compiled as before."""
    import torch

    prepared = runner.prepare(example)
    if dynamic_batch:
        names = [*model.positional_inputs, *prepared.kwargs]
        tensors = [*prepared.args, *prepared.kwargs.values()]
        batched = {spec.name for spec in model.io_spec if spec.batch_axis is not None}
        for name, tensor in zip(names, tensors, strict=False):
            if name in batched and isinstance(tensor, torch.Tensor) and tensor.dim() and tensor.shape[0] >= 2:
                torch._dynamo.mark_dynamic(tensor, 0)
        try:
            runner.run(prepared)
            return
        except Exception:
            prepared = runner.prepare(example)
    runner.run(prepared)
