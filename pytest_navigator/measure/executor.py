"""Where a runtime's measurements run: in this process, or in the worker process the runtime runs in.

Measuring (the profiler's windows and sweep, with an A/B old runner beside it), counting
instructions, tracing and peak memory go through one protocol, Executor. `executor_for` picks the
implementation for a runner, and is the only place that knows a runtime may run in a worker
(runtimes/remote.py). In a worker, the same functions run as here, with the runner the worker
holds: timed requests never cross a process boundary, and the progress a measurement reports
between windows is the worker's heartbeat.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pytest_navigator.check.strategies import profiling_inputs
from pytest_navigator.config import ProfilerConfig, Sample
from pytest_navigator.measure.instructions import count_runner
from pytest_navigator.measure.interference import cpu_monitor
from pytest_navigator.measure.memory import Peak, peak_memory
from pytest_navigator.measure.profiler import BatchProfile, RuntimeProfile, profile_pair, profile_runner
from pytest_navigator.measure.telemetry import gpu_monitor
from pytest_navigator.measure.trace import trace_runner
from pytest_navigator.runtimes.base import Runner
from pytest_navigator.runtimes.remote import WorkerRunner

if TYPE_CHECKING:
    from pytest_navigator.model.spec import IOSpec
    from pytest_navigator.workers.isolation import WorkerState

#: Hears what a measurement is doing (the plugin's progress line).
Progress = Callable[[str], None]


class Executor(Protocol):
    """Runs one runtime's measurements where the runtime runs."""

    @property
    def runtime(self) -> str: ...

    @property
    def isolated(self) -> bool:
        """Whether the runtime runs in a process of its own (a repeated measurement can then take a
        fresh process: runs.py)."""
        ...

    def measure(
        self,
        config: ProfilerConfig,
        sizes: list[int] | None,
        old: Runner | None = None,
        progress: Progress | None = None,
    ) -> tuple[RuntimeProfile, dict[int, BatchProfile]]:
        """The timed profile over `sizes` (None: a sweep), with `old` (the same runtime of the A/B old
        model) measured window by window beside it; the profile, and the old side's by batch size."""
        ...

    def count(self, sizes: Sequence[int], progress: Progress | None = None) -> dict[int, float | str]:
        """Instructions per request at each size, or the error's text (instructions.count_runner: only
        in a process under callgrind)."""
        ...

    def trace(self, sizes: Sequence[int], folder: Path) -> list[str]:
        """Each size traced by the runtime's own profiler into `folder` (trace.py); the files written."""
        ...

    def peak_memory(self, sizes: Sequence[int]) -> dict[int, Peak]:
        """Each size's peak memory in an untimed pass (memory.py), in the runtime's own process."""
        ...


def executor_for(runner: Runner, io_spec: IOSpec) -> Executor:
    """The executor of `runner`, whose requests `io_spec` describes: in its worker process when it runs
    in one (--navigator-isolation=process), else in this process."""
    if isinstance(runner, WorkerRunner):
        return InWorker(runner, io_spec)
    return InProcess(runner, io_spec)


def measure_runner(
    runner: Runner,
    io_spec: IOSpec,
    config: ProfilerConfig,
    sizes: list[int] | None,
    old: Runner | None = None,
    progress: Progress | None = None,
) -> tuple[RuntimeProfile, dict[int, BatchProfile]]:
    """The measurement of one runtime, wherever it runs: profile_runner over `sizes` (None: a sweep),
    with `old` measured window by window beside it (A/B); returns the profile and the old side's
    batch profiles by size."""
    olds: dict[int, BatchProfile] = {}
    measure = None
    if old is not None:

        def measure(size: int) -> BatchProfile:
            new, olds[size] = profile_pair(
                runner, old, profiling_inputs(io_spec, size), size, config, progress=progress
            )
            return new

    profile = profile_runner(
        runner,
        lambda size: profiling_inputs(io_spec, size),
        config,
        sizes,
        monitor=gpu_monitor(runner.device),
        measure=measure,
        progress=progress,
        cpu=cpu_monitor(runner.compute_threads()),
    )
    return profile, olds


@dataclass(frozen=True)
class InProcess:
    """Measurements in this process, with the runner itself (also what runs inside a worker)."""

    runner: Runner
    io_spec: IOSpec

    @property
    def runtime(self) -> str:
        return self.runner.runtime

    @property
    def isolated(self) -> bool:
        return False

    def measure(
        self,
        config: ProfilerConfig,
        sizes: list[int] | None,
        old: Runner | None = None,
        progress: Progress | None = None,
    ) -> tuple[RuntimeProfile, dict[int, BatchProfile]]:
        return measure_runner(self.runner, self.io_spec, config, sizes, old, progress)

    def count(self, sizes: Sequence[int], progress: Progress | None = None) -> dict[int, float | str]:
        return count_runner(self.runner, self.io_spec, sizes, progress)

    def trace(self, sizes: Sequence[int], folder: Path) -> list[str]:
        return trace_runner(self.runner, self._inputs, sizes, folder)

    def peak_memory(self, sizes: Sequence[int]) -> dict[int, Peak]:
        return peak_memory(self.runner, self._inputs, sizes)

    def _inputs(self, size: int) -> list[Sample]:
        return profiling_inputs(self.io_spec, size)


@dataclass(frozen=True)
class InWorker:
    """Measurements in the worker process the runtime runs in: the worker calls this module's functions
    with the runner it keeps (WorkerRunner.key), and the answer comes back."""

    runner: WorkerRunner
    io_spec: IOSpec

    @property
    def runtime(self) -> str:
        return self.runner.runtime

    @property
    def isolated(self) -> bool:
        return True

    def measure(
        self,
        config: ProfilerConfig,
        sizes: list[int] | None,
        old: Runner | None = None,
        progress: Progress | None = None,
    ) -> tuple[RuntimeProfile, dict[int, BatchProfile]]:
        # the old model's build of the runtime is in the same worker (it holds every model's build of it)
        old_key = old.key if isinstance(old, WorkerRunner) else None
        found: tuple[RuntimeProfile, dict[int, BatchProfile]] = self.runner.call(
            _measure_here, self.runner.key, self.io_spec, config, sizes, old_key, what="measure", progress=progress
        )
        return found

    def count(self, sizes: Sequence[int], progress: Progress | None = None) -> dict[int, float | str]:
        found: dict[int, float | str] = self.runner.call(
            _count_here, self.runner.key, self.io_spec, list(sizes), what="count", progress=progress
        )
        return found

    def trace(self, sizes: Sequence[int], folder: Path) -> list[str]:
        found: list[str] = self.runner.call(
            _trace_here, self.runner.key, self.io_spec, list(sizes), folder, what="trace_sizes"
        )
        return found

    def peak_memory(self, sizes: Sequence[int]) -> dict[int, Peak]:
        found: dict[int, Peak] = self.runner.call(
            _peak_memory_here, self.runner.key, self.io_spec, list(sizes), what="peak_memory"
        )
        return found


# -- in the worker: the worker's WorkerState keeps its runners by WorkerRunner.key ---------------------


def _measure_here(
    state: WorkerState,
    key: Any,
    io_spec: IOSpec,
    config: ProfilerConfig,
    sizes: list[int] | None,
    old_key: Any,
) -> tuple[RuntimeProfile, dict[int, BatchProfile]]:
    old = state.kept[old_key] if old_key is not None else None
    return measure_runner(state.kept[key], io_spec, config, sizes, old, state.progress)


def _count_here(state: WorkerState, key: Any, io_spec: IOSpec, sizes: list[int]) -> dict[int, float | str]:
    return InProcess(state.kept[key], io_spec).count(sizes, state.progress)


def _trace_here(state: WorkerState, key: Any, io_spec: IOSpec, sizes: list[int], folder: Path) -> list[str]:
    return InProcess(state.kept[key], io_spec).trace(sizes, folder)


def _peak_memory_here(state: WorkerState, key: Any, io_spec: IOSpec, sizes: list[int]) -> dict[int, Peak]:
    return InProcess(state.kept[key], io_spec).peak_memory(sizes)
