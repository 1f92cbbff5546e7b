"""Runtime identity and builds: which runtimes a model gets, their ids and options, the reference, and
every runner built once per run (a build error is remembered and raised again for each of its tests).

Also the batch-size policy that builds must know in advance: the sizes generated samples range
over, the configured ones, and the profiler's (a TensorRT profile or a traced plan sized for fewer
would fail the sizes it was not built for).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from pytest_navigator import options as option_names
from pytest_navigator.check.strategies import describe, random_sample
from pytest_navigator.config import Format, MeasurementMode, Sample
from pytest_navigator.errors import NavigatorError, RuntimeBuildError, describe_error
from pytest_navigator.model.loader import Model
from pytest_navigator.report.results import RunResults, Status
from pytest_navigator.runtimes import BuildContext, Registry, Runner, RuntimeDefinition
from pytest_navigator.runtimes.cache import ArtifactCache
from pytest_navigator.runtimes.options import (
    RuntimeOptionError,
    configured_options,
    single_thread,
    split_runtime_id,
    with_options,
)
from pytest_navigator.runtimes.options import runtime_id as format_runtime_id
from pytest_navigator.settings import Settings


@dataclass(frozen=True)
class RuntimePlan:
    """A runtime chosen for a model, with the reason it is skipped here (None: it runs)."""

    definition: RuntimeDefinition
    skip_reason: str | None

    #: The runtime id: its name, plus the options that differ from its defaults.
    runtime_id: str = ""

    @property
    def name(self) -> str:
        return self.runtime_id or self.definition.name


class Builds:
    """The runtimes of a run: planned per model, identified with their options, built once."""

    def __init__(self, settings: Settings, registry: Registry, results: RunResults, workdir: Path) -> None:
        self.settings, self.registry, self.results, self.workdir = settings, registry, results, workdir
        self._runners: dict[tuple[Path, str], Runner | RuntimeBuildError] = {}
        self._references: dict[Path, Runner] = {}
        self._examples: dict[Path, Sample] = {}
        self._cache: ArtifactCache | None = None
        #: --navigator-isolation=process: each runtime id's worker process (it holds every model's build of it)
        self._workers: dict[str, Any] = {}
        #: --navigator-mode=instructions: the processes under callgrind still open (closed after each count)
        self._counting: list[Any] = []
        #: Hears what is being built (the plugin's progress line); builds can take minutes.
        self.progress: Callable[[str], None] = lambda text: None

    # -- identity --------------------------------------------------------------------------------

    def plan(self, model: Model) -> list[RuntimePlan]:
        """The runtimes to test for a model: the selected ones, or every one its format can use."""
        explicit = self.settings.runtimes is not None
        chosen = self.registry.select(self.settings.runtimes)
        plans = [
            RuntimePlan(d, d.unavailable_reason(model), self.runtime_id(d.name))
            for d in chosen
            if explicit or d.applies_to(model)
        ]
        for plan in plans:
            result = self.results.result(model.path, plan.name)
            result.device, result.precision = plan.definition.device, self.precision(plan.name)
            if plan.skip_reason:
                result.status, result.detail = Status.SKIPPED, plan.skip_reason
        return plans

    def runtime_id(
        self, name: str, overrides: Mapping[str, Any] | None = None, where: str = "", counted: bool | None = None
    ) -> str:
        """The id of runtime `name` with this run's options (--navigator-runtime-option, ini) updated
        by `overrides` (a marker's): `name` or `name:key=value,...`. Counted (instruction mode, the
        run's unless given), a CPU runtime starts from one thread and no spinning. Bad options raise
        RuntimeOptionError."""
        where = where or option_names.RUNTIME_OPTION
        if name not in self.registry:
            raise RuntimeOptionError(
                f"{where}: unknown runtime {name!r}; known runtimes: {', '.join(self.registry.names)}."
            )
        definition = self.registry.get(name)
        if counted is None:
            profiler = self.settings.profiler
            counted = profiler.run_profiling and profiler.measurement_mode is MeasurementMode.INSTRUCTIONS
        values = single_thread(definition.options) if counted and definition.device == "cpu" else {}
        values.update(configured_options(self.settings).get(definition.name, {}))
        values.update(overrides or {})
        if definition.options is None:
            if values:
                raise RuntimeOptionError(
                    f"{where}: {definition.name} takes no options (got {', '.join(sorted(values))})."
                )
            return definition.name
        configured = with_options(definition.options, values, where, definition.name)
        return format_runtime_id(definition.name, configured, definition.options)

    def options(self, runtime: str) -> Any:
        """The options config of a runtime id (None for runtimes that take none)."""
        definition = self.registry.get(runtime)
        if definition.options is None:
            return None
        return with_options(definition.options, split_runtime_id(runtime)[1], runtime, definition.name)

    def precision(self, runtime: str) -> str:
        """fp32/tf32/fp16/...: the definition's, or what its options turn on (their `precision`: fp16,
        bf16; TF32 on a CUDA device, where matmuls and convolutions then round their inputs to 10
        mantissa bits)."""
        if runtime not in self.registry:
            return "fp32"
        configured = self.options(runtime)
        definition = self.registry.get(runtime)
        chosen = getattr(configured, "precision", None)  # a user's own options class may have none
        if chosen is not None:
            return str(chosen)
        if (
            getattr(configured, "tf32", False)
            and definition.device.startswith("cuda")
            and definition.precision == "fp32"
        ):
            return "tf32"
        return definition.precision

    # -- building --------------------------------------------------------------------------------

    def reference(self, model: Model) -> Runner:
        """The runner every runtime is checked against: torch eager fp32, or unoptimized ORT for ONNX."""
        if model.path not in self._references:
            builder: Callable[[Model, BuildContext], Runner]
            if model.format is Format.ONNX:
                from pytest_navigator.runtimes.onnx_runtimes import build_reference as builder
            else:
                from pytest_navigator.runtimes.torch_runtimes import build_eager as builder
            try:
                runner = builder(model, self.context(model, ()))
            except NavigatorError:
                raise
            except Exception as exc:
                raise RuntimeBuildError(
                    f"building the reference of {model.name} failed: {describe_error(exc)}"
                ) from exc
            example = self.example(model)
            try:
                runner.infer(example)
            except Exception as exc:
                raise RuntimeBuildError(
                    f"the reference ({runner.runtime}) of {model.name} raised {describe_error(exc)} on a request "
                    f"of {describe(example)}: the model itself fails, so none of its runtimes can be checked."
                ) from exc
            self._references[model.path] = runner
        return self._references[model.path]

    def runner(self, model: Model, runtime: str) -> Runner:
        """The built runtime, built on first use; a build error is raised for this and every later request."""
        key = (model.path, runtime)
        if key not in self._runners:
            result = self.results.result(model.path, runtime)
            if runtime in self.registry:
                result.device = result.device or self.registry.get(runtime).device
                result.precision = result.precision or self.precision(runtime)
            started = time.perf_counter()
            seen = len(self.cache.events)
            events = []
            self.progress(f"building {runtime} for {model.name} (export, compile, or restore from the cache)")
            try:
                runner = self._runners[key] = self.build(model, runtime)
                events = list(getattr(runner, "cache_events", ()))  # built in a worker: its cache's events
                result.status = Status.BUILT
            except RuntimeBuildError as error:
                self._runners[key] = error
                result.status, result.detail = Status.FAILED_BUILD, str(error).splitlines()[0]
            result.build_seconds = time.perf_counter() - started
            result.artifacts = [
                f"{e.action} {e.mode} {e.seconds:.2f} s" + (f" ({e.detail})" if e.detail else "")
                for e in [*self.cache.events[seen:], *events]
            ]
        found = self._runners[key]
        if isinstance(found, RuntimeBuildError):
            raise found
        return found

    def build(self, model: Model, runtime: str, isolated: bool | None = None) -> Runner:
        """A new instance of a runtime (not remembered: `runner` builds the run's one), in its worker
        process under --navigator-isolation=process. Any error is a RuntimeBuildError naming the
        runtime and the model."""
        isolated = self.settings.isolation == "process" if isolated is None else isolated
        try:
            reference = self.reference(model)
            context = replace(self.context(model, reference.output_names), options=self.options(runtime))
            if isolated:
                from pytest_navigator.workers.isolation import WorkerRunner

                return WorkerRunner.build(self.worker(runtime), self.registry.get(runtime), model, context, runtime)
            built = self.registry.get(runtime).build(model, context)
            if not isinstance(built, Runner):
                raise RuntimeBuildError(f"{runtime}: build returned {built!r}, not a pytest_navigator.runtimes.Runner")
        except RuntimeBuildError:
            raise
        except Exception as exc:
            raise RuntimeBuildError(f"building {runtime} for {model.name} failed: {describe_error(exc)}") from exc
        built.runtime = runtime
        return built

    def context(self, model: Model, output_names: tuple[str, ...]) -> BuildContext:
        """What a build of `model` gets: a folder, the example request, the batch sizes, the cache."""
        return BuildContext(
            self.workdir, self.example(model), output_names, self.build_batch_sizes(model), cache=self.cache
        )

    @property
    def cache(self) -> ArtifactCache:
        """The run's artifact cache (--navigator-cache; a throwaway folder with 'none')."""
        if self._cache is None:
            self._cache = ArtifactCache(self.settings.cache_dir, self.settings.rebuild)
        return self._cache

    def example(self, model: Model) -> Sample:
        """The request builds trace, compile and export with (batch 2 where allowed), made once per model."""
        if model.path not in self._examples:
            limit = model.io_spec.max_batch_size
            size = 2 if limit is None or limit >= 2 else 1
            self._examples[model.path] = random_sample(model.io_spec, size, np.random.default_rng(7919))
        return self._examples[model.path]

    # -- batch sizes -----------------------------------------------------------------------------

    def batch_sizes(self, model: Model) -> tuple[int, ...]:
        """The configured batch sizes the model allows (one random sample at each is checked)."""
        limit = model.io_spec.max_batch_size
        if limit is None:
            return (1,) if any(t.batch_axis is not None for t in model.io_spec) else ()
        return tuple(b for b in self.settings.batch_sizes if b <= limit) or (min(self.settings.batch_sizes[0], limit),)

    def build_batch_sizes(self, model: Model) -> tuple[int, ...]:
        """Every batch size a built runtime will serve this run: the generated samples' range ends, the
        configured sizes, and the profiler's (explicit, else its sweep). TensorRT's optimization
        profile covers them all; per-size plans are built for them."""
        from pytest_navigator.check.strategies import batch_bounds
        from pytest_navigator.measure.profiler import sweep_sizes

        sizes = set(self.batch_sizes(model))
        bounds = batch_bounds(model.io_spec, sizes)
        if bounds is not None:
            sizes |= set(bounds)
        profiler = self.settings.profiler
        if profiler.run_profiling:
            explicit = [b for b in profiler.batch_sizes or () if b is not None]
            limit = model.io_spec.max_batch_size
            sizes |= {b for b in explicit if limit is None or b <= limit} if explicit else set(sweep_sizes(limit))
        return tuple(sorted(sizes))

    def check_batch_sizes(self, model: Model) -> None:
        """Refuse up front the batch sizes a model cannot take: above the largest batch its spec
        declares, or whose inputs alone need more memory than this machine has available."""
        from pytest_navigator.settings import OptionError

        # --navigator-batch-sizes sets the profiler's sizes too; the default sizes are capped quietly
        requested = {b for b in self.settings.profiler.batch_sizes or () if b is not None}
        if not requested or all(t.batch_axis is None for t in model.io_spec):
            return
        option = f"{option_names.BATCH_SIZES}={','.join(map(str, sorted(requested)))}"
        limit = model.io_spec.max_batch_size
        above = sorted(b for b in requested if limit is not None and b > limit)
        if above:
            raise OptionError(
                f"{option}: batch size {', '.join(map(str, above))} is above the largest batch {model.name} "
                f"takes ({limit}, from its input spec {model.io_spec}); give sizes up to {limit}."
            )
        per_sample = sample_bytes(model)
        available = available_memory()
        largest = max(requested)
        if available is not None and per_sample * largest > available:
            raise OptionError(
                f"{option}: batch size {largest} needs at least {_size(per_sample * largest)} for its inputs alone "
                f"({_size(per_sample)} per sample of {model.name}); this machine has {_size(available)} available."
            )

    # -- instruction counts (instructions.py) -----------------------------------------------------

    def counting_runners(self, model: Model, runtime: str, valgrind: Any) -> list[Any]:
        """`runtime` built in instructions.REPEATS new processes under callgrind, in parallel. New for
        each runtime: a process that built other runtimes first can count the same requests differently
        (measured: 8% apart for one torch runtime), so a `-k` selection must not change the counts.
        The caller closes them (close_counting)."""
        from concurrent.futures import ThreadPoolExecutor

        from pytest_navigator.measure.instructions import REPEATS
        from pytest_navigator.workers.isolation import BUILD_TIMEOUT, Timeouts, Worker, WorkerRunner

        self.progress(f"building {runtime} for {model.name} in {REPEATS} processes under callgrind")
        reference = self.reference(model)
        context = replace(self.context(model, reference.output_names), options=self.options(runtime))
        definition = self.registry.get(runtime)
        workers = [
            Worker(
                f"{runtime} under callgrind #{n + 1}",
                # a request under valgrind takes about 50x (before 3.22, with FMA kernels 1000x) its time
                Timeouts(self.settings.timeout, floor=BUILD_TIMEOUT),
                self.settings.state_dir / "workers",
                valgrind=valgrind,
            )
            for n in range(REPEATS)
        ]
        self._counting.extend(workers)
        with ThreadPoolExecutor(max_workers=REPEATS) as pool:
            futures = [pool.submit(WorkerRunner.build, w, definition, model, context, runtime) for w in workers]
        try:
            return [future.result() for future in futures]
        except BaseException:
            self.close_counting(workers)
            raise

    def close_counting(self, workers: list[Any]) -> None:
        for worker in workers:
            worker.close()
            if worker in self._counting:
                self._counting.remove(worker)

    def fresh_runners(self, models: list[Model], runtime: str, label: str) -> tuple[list[Any], Any]:
        """`runtime` of each of `models` built in one new worker process (a run of a timed measurement:
        runs.py), restored from the artifact cache where it can be; returns the runners and the worker,
        which the caller closes (close_counting)."""
        from pytest_navigator.workers.isolation import Timeouts, Worker, WorkerRunner

        worker = Worker(f"{runtime} {label}", Timeouts(self.settings.timeout), self.settings.state_dir / "workers")
        self._counting.append(worker)
        try:
            built = []
            for model in models:
                reference = self.reference(model)
                context = replace(self.context(model, reference.output_names), options=self.options(runtime))
                built.append(WorkerRunner.build(worker, self.registry.get(runtime), model, context, runtime))
        except BaseException:
            self.close_counting([worker])
            raise
        return built, worker

    def worker(self, runtime: str) -> Any:
        """The worker process of a runtime id (isolation.Worker), started on first use."""
        if runtime not in self._workers:
            from pytest_navigator.workers.isolation import Timeouts, Worker

            self._workers[runtime] = Worker(
                runtime, Timeouts(self.settings.timeout), self.settings.state_dir / "workers"
            )
        return self._workers[runtime]

    def close(self) -> None:
        workers = [*self._workers.values(), *self._counting]
        for worker in workers:
            worker.ask_to_close()
        for worker in workers:
            worker.close()
        self._workers.clear()
        self._counting.clear()
        if "pytest_navigator.workers.fork_servers" in sys.modules:  # a counting run started one
            sys.modules["pytest_navigator.workers.fork_servers"].stop_counting_servers()
        if self._cache is not None:
            self._cache.close()


def sample_bytes(model: Model) -> int:
    """The bytes of one sample's inputs (dynamic non-batch axes at their smallest): a lower bound."""
    from pytest_navigator.check.strategies import numpy_dtype

    total = 0
    for spec in model.io_spec:
        elements = 1
        for axis, dim in enumerate(spec.dims):
            if axis == 0 and spec.batch_axis is not None:
                continue
            elements *= dim.size if dim.size is not None else dim.min
        total += elements * numpy_dtype(spec.dtype).itemsize
    return total


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"
