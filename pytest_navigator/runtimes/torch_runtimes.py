"""PyTorch runtimes: eager, TorchScript (frozen) and torch.compile, on the CPU and on CUDA."""

from __future__ import annotations

import contextlib
import copy
import functools
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pytest_navigator.config import Format, Sample
from pytest_navigator.errors import ModelOutputError, RuntimeBuildError
from pytest_navigator.model.loader import Model
from pytest_navigator.model.tensors import bind_tensors
from pytest_navigator.runtimes.base import TORCH_FORMATS, BuildContext, Runner, RuntimeDefinition
from pytest_navigator.runtimes.cache import Mode
from pytest_navigator.runtimes.options import TorchCompileConfig, TorchConfig, TorchScriptConfig


@dataclass(frozen=True, slots=True)
class PreparedTorch:
    """A request bound to forward's arguments as tensors on the runner's device, with its shape key."""

    args: list[Any]
    kwargs: dict[str, Any]
    shapes: tuple[tuple[int, ...], ...]


class TorchRunner(Runner):
    """Calls a torch module under inference_mode; inputs bind to forward as the model's spec says.
    `threads` and `tf32` (runtime options) hold only while this runner runs: torch's settings are
    process-wide, and the reference and other runtimes keep theirs."""

    def __init__(
        self, runtime: str, module: Any, model: Model, device: str = "cpu", threads: int = 0, tf32: bool = False
    ) -> None:
        super().__init__(runtime, model.io_spec, device=device)
        self.module = module
        self._model = model
        self.threads, self.tf32 = threads, tf32
        self.thread_option = "threads" if device == "cpu" else None

    def compute_threads(self) -> int | None:
        """The `threads` option, else torch's intra-op pool; on a GPU, the one thread that launches kernels."""
        if self.device != "cpu":
            return 1
        import torch

        return self.threads or torch.get_num_threads()

    def prepare(self, sample: Sample) -> PreparedTorch:
        """Host arrays -> tensors on this runner's device, bound to forward's arguments; on CUDA the
        upload has finished when this returns, so no timed request waits for it."""
        self.check_sample(sample)
        args, kwargs = bind_tensors(self._model, sample, self.device)
        if self.stream is not None:
            import torch

            torch.cuda.current_stream(self.device).synchronize()
        return PreparedTorch(args, kwargs, tuple(tuple(sample[n].shape) for n in self.input_spec.names))

    @functools.cached_property
    def stream(self) -> Any:
        """This runner's own CUDA stream (None on the CPU): its work is queued there and
        synchronize() waits for that stream only, not for other runtimes' work on the device."""
        if not self.device.startswith("cuda"):
            return None
        import torch

        return torch.cuda.Stream(device=self.device)

    def module_for(self, prepared: PreparedTorch) -> Any:
        """The callable that runs this request (one module here; one plan per shape in subclasses)."""
        return self.module

    def run(self, prepared: PreparedTorch) -> Any:
        import torch

        on_stream = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with on_stream, torch_settings(self.threads, self.tf32):
            module = self.module_for(prepared)
            with torch.inference_mode():
                return module(*prepared.args, **prepared.kwargs)

    def infer(self, sample: Sample) -> Sample:
        outputs = self.run(self.prepare(sample))
        self.synchronize()  # the host copies below run on the default stream
        named = name_outputs(outputs)
        if not self.output_names:
            self.output_names = tuple(named)
        return named

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()


@contextlib.contextmanager
def torch_settings(threads: int = 0, tf32: bool = False) -> Iterator[None]:
    """torch's intra-op thread count and TF32 switches set for the block, restored after it."""
    import torch

    if not threads and not tf32:
        yield
        return
    saved = torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if threads:
        torch.set_num_threads(threads)
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1], saved[2]


def _flags(ctx: BuildContext) -> dict[str, Any]:
    """The torch settings every torch runtime's options carry (none for a runtime built without options)."""
    options = getattr(ctx, "options", None)
    return {"threads": getattr(options, "threads", 0), "tf32": getattr(options, "tf32", False)}


def name_outputs(outputs: Any, prefix: str = "output") -> Sample:
    """Flatten a forward() result into named host arrays: a tensor is 'output', a tuple 'output_0'..,
    a dict keeps its keys. Numbers count as 0-d tensors; None inside a tuple or dict (an absent
    optional output) is left out; anything else is a ModelOutputError naming the output."""
    import torch

    if outputs is None and prefix == "output":
        raise ModelOutputError(
            "the model returned None: there is no output to check; forward() must return a tensor, or a tuple, "
            "list or dict of tensors"
        )
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
    elif isinstance(outputs, (bool, int, float, np.ndarray, np.number, np.bool_)):
        named[prefix] = np.asarray(outputs)
    elif outputs is not None:
        shown = repr(outputs)
        raise ModelOutputError(
            f"the model's output {prefix!r} is a {type(outputs).__name__} ({shown[:40]}{'...' if len(shown) > 40 else ''}), "
            "not a tensor; forward() must return a tensor, or a tuple, list or dict of tensors"
        )
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
    return TorchRunner(f"torch-{device}", module_on(model, device), model, device, **_flags(ctx))


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
        found = [t for shapes, t in self.plan_build_seconds.items() if _batch_of(shapes) == batch_size]
        return max(found) if found else None

    @property
    def planned_batch_sizes(self) -> tuple[int, ...]:
        return tuple(sorted({b for b in map(_batch_of, self.plans) if b is not None}))

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


def _batch_of(shapes: tuple[tuple[int, ...], ...]) -> int | None:
    """The batch size of a shape signature: the first input's first dimension."""
    return shapes[0][0] if shapes and shapes[0] else None


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
            f"torchscript-{device}", model, device, **_flags(ctx), optimize=optimize, cache=getattr(ctx, "cache", None)
        )
        runner.infer(ctx.example)  # trace now, so a trace error fails the build
        return runner
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TorchRunner(
            f"torchscript-{device}", _freeze(module_on(model, device), optimize), model, device, **_flags(ctx)
        )


class CompiledTorchRunner(TorchRunner):
    """A torch.compile'd module. The first request of each batch size compiles (or, with static
    shapes, recompiles) a plan; its duration is kept as that size's plan build time. Inductor's own
    use of deprecated torch.jit APIs warns on every (re)compile; users cannot act on that, so only
    that warning is silenced, only here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan_build_seconds: dict[int, float] = {}

    def run(self, prepared: PreparedTorch) -> Any:
        batch = _batch_of(prepared.shapes)
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
                model_check=_not_torchscript,
                description="torch.compile (inductor)",
                options=TorchCompileConfig(),
            ),
        ]
    return found
