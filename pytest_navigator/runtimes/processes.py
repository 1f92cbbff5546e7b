"""The worker processes of a run's runtimes (--navigator-isolation=process): one per runtime id, which
holds every model's build of it; the builds started ahead in them; and the short-lived processes of
instruction counts and timed runs.

**Builds ahead.** A cold run spends most of its time building, each build on about one core:
AOTInductor compiles MobileNetV3-Small for 34 s, the ONNX export takes 14 s. One after another, as the
tests asked for them, they left a core of a 2-core machine idle. So when the tests are collected, the
plugin starts the build of every selected runtime in its worker (start), at most as many at once as
the machine has cores; the first test waits until every one has ended (settle), and then nothing
else runs beside its check or measurement. Measured on MobileNetV3-Small, cold, 2 cores (medians of 3):
the builds ahead took the run from 91.1 s to 71.7 s (AOTInductor 37.6 s and the export 18.0 s, side
by side). Letting the first check run beside the compilers instead took it to 99.9 s: its float64 truth,
whose OpenMP threads wait on each other when a compiler holds a core, went from 8 s to 60 s (as the
threads that built in issue 18 did to torch-cpu's check, 12 s to 53 s).

A thread per runtime id waits on its worker's pipe for each of its builds, in order; it computes
nothing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from pytest_navigator.errors import RuntimeBuildError, describe_error
from pytest_navigator.runtimes.base import BuildContext, Runner, RuntimeDefinition
from pytest_navigator.workers.isolation import BUILD_TIMEOUT, Timeouts, Worker

#: What a build started ahead ends with: the runner or the build's error, and the build's own seconds.
Outcome = tuple[Runner | RuntimeBuildError, float]


class RuntimeProcesses:
    """The worker processes of a run (see the module docstring). `timeout`: --navigator-timeout;
    `logs`: the folder of the workers' stderr files."""

    def __init__(self, timeout: float | None, logs: Path) -> None:
        self.timeout, self.logs = timeout, logs
        self._workers: dict[str, Worker] = {}
        #: Instruction counts' and timed runs' processes still open (closed after each measurement).
        self._short_lived: list[Worker] = []
        self._waiters: dict[str, ThreadPoolExecutor] = {}
        self._ahead: dict[tuple[Path, str], Future[Outcome]] = {}
        #: Builds ahead running at once: one per core (a build of each runtime is about one core's work).
        self._turns = threading.Semaphore(max(1, _cores()))

    def worker(self, runtime: str) -> Worker:
        """The worker process of a runtime id, started on first use."""
        if runtime not in self._workers:
            self._workers[runtime] = Worker(runtime, Timeouts(self.timeout), self.logs)
        return self._workers[runtime]

    # -- builds ahead ------------------------------------------------------------------------------

    def start(self, definition: RuntimeDefinition, model: Any, context: BuildContext, runtime: str) -> None:
        """Start building `runtime` for `model` in its worker now; take() waits for it."""
        key = (model.path, runtime)
        if key in self._ahead:
            return
        worker = self.worker(runtime)
        if runtime not in self._waiters:
            self._waiters[runtime] = ThreadPoolExecutor(1, thread_name_prefix=f"navigator-build-{runtime}")
        self._ahead[key] = self._waiters[runtime].submit(self._build, worker, definition, model, context, runtime)

    def _build(
        self, worker: Worker, definition: RuntimeDefinition, model: Any, context: BuildContext, runtime: str
    ) -> Outcome:
        with self._turns:
            return build_in(worker, definition, model, context, runtime)

    def take(self, key: tuple[Path, str]) -> Outcome | None:
        """The outcome of the build of `key` (model path, runtime id) started ahead, once it ends; None
        when none was started."""
        future = self._ahead.pop(key, None)
        return None if future is None else future.result()

    def settle(self, progress: Callable[[str], None] = lambda text: None) -> None:
        """Wait for every build started ahead to end (they stay to be taken): no check or measurement
        runs while a compiler shares the machine."""
        pending = [future for future in self._ahead.values() if not future.done()]
        if pending:
            progress(f"waiting for the {len(pending)} runtime build(s) started ahead")
            wait(pending)

    # -- short-lived processes ----------------------------------------------------------------------

    def counting(
        self, definition: RuntimeDefinition, model: Any, context: BuildContext, runtime: str, valgrind: Any, n: int
    ) -> list[Any]:
        """`runtime` built in `n` new processes under callgrind, in parallel (Builds.counting_runners);
        the caller closes them (close_some)."""
        from pytest_navigator.runtimes.remote import WorkerRunner

        self.settle()
        workers = [
            # a request under valgrind takes about 50x (before 3.22, with FMA kernels 1000x) its time
            Worker(
                f"{runtime} under callgrind #{k + 1}", Timeouts(self.timeout, floor=BUILD_TIMEOUT), self.logs, valgrind
            )
            for k in range(n)
        ]
        self._short_lived.extend(workers)
        with ThreadPoolExecutor(max_workers=n) as pool:
            futures = [pool.submit(WorkerRunner.build, w, definition, model, context, runtime) for w in workers]
        try:
            return [future.result() for future in futures]
        except BaseException:
            self.close_some(workers)
            raise

    def fresh(
        self, definition: RuntimeDefinition, built: list[tuple[Any, BuildContext]], runtime: str, label: str
    ) -> tuple[list[Any], Worker]:
        """`runtime` of each (model, context) of `built`, in one new worker (Builds.fresh_runners); the
        caller closes it (close_some)."""
        from pytest_navigator.runtimes.remote import WorkerRunner

        self.settle()
        worker = Worker(f"{runtime} {label}", Timeouts(self.timeout), self.logs)
        self._short_lived.append(worker)
        try:
            return [WorkerRunner.build(worker, definition, model, context, runtime) for model, context in built], worker
        except BaseException:
            self.close_some([worker])
            raise

    def close_some(self, workers: list[Any]) -> None:
        for worker in workers:
            worker.close()
            if worker in self._short_lived:
                self._short_lived.remove(worker)

    def close(self) -> None:
        """Stop every process; a build still running ahead (an interrupted run) is killed, not awaited."""
        for (_, runtime), future in self._ahead.items():
            if not future.done() and runtime in self._workers:
                self._workers[runtime].kill()
        for waiter in self._waiters.values():
            waiter.shutdown(wait=True)
        self._waiters.clear()
        self._ahead.clear()
        workers = [*self._workers.values(), *self._short_lived]
        for worker in workers:
            worker.ask_to_close()
        for worker in workers:
            worker.close()
        self._workers.clear()
        self._short_lived.clear()


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def build_in(worker: Worker, definition: RuntimeDefinition, model: Any, context: BuildContext, runtime: str) -> Outcome:
    """Build `runtime` in `worker` (remote.WorkerRunner.build): the runner or the error any build of it
    raises (Builds.build's words), and the seconds it took."""
    from pytest_navigator.runtimes.remote import WorkerRunner

    started = time.perf_counter()
    try:
        built: Runner | RuntimeBuildError = WorkerRunner.build(worker, definition, model, context, runtime)
    except RuntimeBuildError as error:
        built = error
    except Exception as exc:
        built = RuntimeBuildError(f"building {runtime} for {model.name} failed: {describe_error(exc)}")
    return built, time.perf_counter() - started
