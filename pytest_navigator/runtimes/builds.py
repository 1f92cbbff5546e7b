"""Runtime identity and builds: which runtimes a model gets, their ids and options, the reference, and
every runner built once per run (a build error is remembered and raised again for each of its tests).

Builds does not know the run's results: what it planned and built it tells its `record` callback
(Planned, Building, Built), and the session writes that into them. The batch sizes a build must
serve are batch_sizes.py's policy.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_navigator import options as option_names
from pytest_navigator.config import Format, MeasurementMode, Sample
from pytest_navigator.errors import NavigatorError, RuntimeBuildError, RuntimeNotApplicable, describe_error
from pytest_navigator.model.draws import describe, random_sample
from pytest_navigator.model.loader import Model
from pytest_navigator.runtimes import BuildContext, Registry, Runner, RuntimeDefinition
from pytest_navigator.runtimes.batch_sizes import Sweep, build_sizes, check_sizes, configured_sizes
from pytest_navigator.runtimes.cache import ArtifactCache
from pytest_navigator.runtimes.calibration import calibrated
from pytest_navigator.runtimes.runtime_options import (
    RuntimeOptionError,
    configured_options,
    single_thread,
    split_runtime_id,
    with_options,
)
from pytest_navigator.runtimes.runtime_options import runtime_id as format_runtime_id
from pytest_navigator.settings import Settings

if TYPE_CHECKING:
    from pytest_navigator.runtimes.processes import RuntimeProcesses


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


@dataclass(frozen=True)
class Planned:
    """A runtime chosen for a model (Builds.plan): where it runs, its precision, why it is skipped here
    (None: it runs)."""

    model: Path
    runtime: str
    device: str
    precision: str
    skip_reason: str | None


@dataclass(frozen=True)
class Building:
    """The build of a runtime for a model starts (Builds.runner): its device and precision, None for
    a runtime id the registry does not know."""

    model: Path
    runtime: str
    device: str | None
    precision: str | None


@dataclass(frozen=True)
class Built:
    """The build of a runtime for a model ended: the first line of its error (None: it built), its
    seconds, and what the artifact cache did ("built onnx-export 3.10 s", "restored ...")."""

    model: Path
    runtime: str
    error: str | None
    seconds: float
    artifacts: tuple[str, ...]
    not_applicable: bool = False  # the error is RuntimeNotApplicable: skipped, not failed


#: What Builds tells its `record` callback.
BuildRecord = Planned | Building | Built


class Builds:
    """The runtimes of a run: planned per model, identified with their options, built once.

    `sweep` is the profiler's batch-size sweep (the sizes builds must serve include it); `record`
    hears what was planned and built (the session writes it into the run's results)."""

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        workdir: Path,
        *,
        sweep: Sweep,
        record: Callable[[BuildRecord], None] | None = None,
    ) -> None:
        self.settings, self.registry, self.workdir = settings, registry, workdir
        self.sweep = sweep
        self.record: Callable[[BuildRecord], None] = record or (lambda record: None)
        #: (model, runtime name) -> the samples it calibrates on when given (set by the session and plugin).
        self.user_samples: Callable[[Model, str], Sequence[Sample]] = lambda model, runtime: ()
        self._runners: dict[tuple[Path, str], Runner | RuntimeBuildError] = {}
        self._references: dict[Path, Runner] = {}
        self._examples: dict[Path, Sample] = {}
        self._cache: ArtifactCache | None = None
        #: --navigator-isolation=process: the worker processes (processes.py), made on first use
        self._processes: RuntimeProcesses | None = None
        #: Hears what is being built (the plugin's progress line); builds can take minutes.
        self.progress: Callable[[str], None] = lambda text: None

    # -- identity --------------------------------------------------------------------------------

    def plan(self, model: Model) -> list[RuntimePlan]:
        """The runtimes to test for a model: the selected ones, or the default set for its format."""
        explicit = self.settings.runtimes is not None
        chosen = self.registry.select(self.settings.runtimes)
        plans = [
            RuntimePlan(d, d.unavailable_reason(model), self.runtime_id(d.name))
            for d in chosen
            if explicit or d.in_default_set(model)
        ]
        for plan in plans:
            self.record(
                Planned(model.path, plan.name, plan.definition.device, self.precision(plan.name), plan.skip_reason)
            )
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
        """The built runtime, built on first use; a build error is raised for this and every later request.
        Every build started ahead (build_ahead) ends first: nothing runs beside a compiler."""
        key = (model.path, runtime)
        if self._processes is not None:
            self.processes.settle(self.progress)
        if key not in self._runners:
            known = runtime in self.registry
            self.record(
                Building(
                    model.path,
                    runtime,
                    self.registry.get(runtime).device if known else None,
                    self.precision(runtime) if known else None,
                )
            )
            started = time.perf_counter()
            seen, events, failure, not_applicable = len(self.cache.events), [], None, False
            self.progress(f"building {runtime} for {model.name} (export, compile, or restore from the cache)")
            ahead = self._processes.take(key) if self._processes is not None else None
            try:
                if ahead is not None and isinstance(ahead[0], RuntimeBuildError):
                    raise ahead[0]
                runner = self._runners[key] = ahead[0] if ahead is not None else self.build(model, runtime)
                events = list(getattr(runner, "cache_events", ()))  # built in a worker: its cache's events
            except RuntimeBuildError as error:
                self._runners[key] = error
                failure, not_applicable = str(error).splitlines()[0], isinstance(error, RuntimeNotApplicable)
            seconds = time.perf_counter() - started if ahead is None else ahead[1]  # the build's, not the wait's
            artifacts = tuple(e.summary for e in [*self.cache.events[seen:], *events])
            self.record(Built(model.path, runtime, failure, seconds, artifacts, not_applicable))
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
            context = self.runtime_context(model, runtime)
            if isolated:
                from pytest_navigator.runtimes.remote import WorkerRunner

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

    def runtime_context(self, model: Model, runtime: str) -> BuildContext:
        """What a build of runtime id `runtime` gets: `context`, with the reference's output names, the runtime's
        options (building the reference first) and, if it calibrates, its calibration samples."""
        reference = self.reference(model)
        context = replace(self.context(model, reference.output_names), options=self.options(runtime))
        definition = self.registry.get(runtime)
        return calibrated(context, model, definition.name, self.user_samples) if definition.calibrates else context

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

    # -- batch sizes (batch_sizes.py) ------------------------------------------------------------

    def batch_sizes(self, model: Model) -> tuple[int, ...]:
        """The configured batch sizes the model allows (one random sample at each is checked)."""
        return configured_sizes(model.io_spec, self.settings.batch_sizes)

    def build_batch_sizes(self, model: Model) -> tuple[int, ...]:
        """Every batch size a built runtime will serve this run (batch_sizes.build_sizes)."""
        return build_sizes(model.io_spec, self.batch_sizes(model), self.settings.profiler, self.sweep)

    def check_batch_sizes(self, model: Model) -> None:
        """Refuse up front the batch sizes a model cannot take (batch_sizes.check_sizes)."""
        check_sizes(model, self.settings.profiler)

    # -- worker processes (processes.py) ---------------------------------------------------------

    def build_ahead(self, wanted: Sequence[tuple[Model, str]]) -> None:
        """Start the build of each (model, runtime id) of `wanted` now, each in its runtime's worker
        (processes.py: a cold run's builds then overlap each other and the first checks); runner()
        takes them. Only under --navigator-isolation=process. A build that cannot start (its reference
        fails, say) is left to runner(), which raises its error for its test."""
        if self.settings.isolation != "process":
            return
        for model, runtime in wanted:
            if (model.path, runtime) in self._runners or runtime not in self.registry:
                continue  # built already, or an unknown id whose test says so (the processes skip repeats)
            try:
                context = self.runtime_context(model, runtime)
            except Exception:
                continue
            self.processes.start(self.registry.get(runtime), model, context, runtime)

    def counting_runners(self, model: Model, runtime: str, valgrind: Any, repeats: int) -> list[Any]:
        """`runtime` built in `repeats` (instructions.REPEATS) new processes under callgrind, in parallel. New for
        each runtime: a process that built other runtimes first can count the same requests differently
        (measured: 8% apart for one torch runtime), so a `-k` selection must not change the counts.
        The caller closes them (close_counting)."""
        self.progress(f"building {runtime} for {model.name} in {repeats} processes under callgrind")
        context = self.runtime_context(model, runtime)
        return self.processes.counting(self.registry.get(runtime), model, context, runtime, valgrind, repeats)

    def close_counting(self, workers: list[Any]) -> None:
        self.processes.close_some(workers)

    def fresh_runners(self, models: list[Model], runtime: str, label: str) -> tuple[list[Any], Any]:
        """`runtime` of each of `models` built in one new worker process (a run of a timed measurement:
        runs.py), restored from the artifact cache where it can be; returns the runners and the worker,
        which the caller closes (close_counting)."""
        built = [(model, self.runtime_context(model, runtime)) for model in models]
        return self.processes.fresh(self.registry.get(runtime), built, runtime, label)

    def worker(self, runtime: str) -> Any:
        """The worker process of a runtime id (isolation.Worker), started on first use."""
        return self.processes.worker(runtime)

    @property
    def processes(self) -> RuntimeProcesses:
        """The run's worker processes (processes.RuntimeProcesses), made on first use."""
        if self._processes is None:
            from pytest_navigator.runtimes.processes import RuntimeProcesses

            self._processes = RuntimeProcesses(self.settings.timeout, self.settings.state_dir / "workers")
        return self._processes

    def close(self) -> None:
        if self._processes is not None:
            self._processes.close()
        if "pytest_navigator.workers.fork_servers" in sys.modules:  # a counting run started one
            sys.modules["pytest_navigator.workers.fork_servers"].stop_counting_servers()
        if self._cache is not None:
            self._cache.close()
