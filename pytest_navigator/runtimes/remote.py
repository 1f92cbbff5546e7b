"""A Runner backed by a worker process (--navigator-isolation=process): the runtime is built and run
in its own worker (workers/isolation.py), and this process holds a proxy that forwards its calls.

A runtime that hangs or crashes then fails only its own tests. The runtime's definition travels with
cloudpickle (workers/pickling.py), so runtimes registered in a conftest.py (closures, lambdas) run in
workers too. Measurements do not go through the proxy request by request: measure/executor.py runs
them inside the worker, with the runner it holds, so timed requests cross no process boundary.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_navigator.config import Sample
from pytest_navigator.errors import (
    NavigatorError,
    RuntimeBuildError,
    RuntimeCrashError,
    RuntimeNotApplicable,
    describe_error,
)
from pytest_navigator.runtimes.base import BuildContext, Runner, RuntimeDefinition
from pytest_navigator.workers import fork_servers, pickling
from pytest_navigator.workers.isolation import RemoteError, Worker, WorkerState

if TYPE_CHECKING:
    from pytest_navigator.model.loader import Model

# the fork servers import this module once, rather than every worker on its first build
fork_servers.preload(__name__)


class WorkerRunner(Runner):
    """A runtime built and run in its own worker process (see the module docstring)."""

    def __init__(self, worker: Worker, runtime: str, model: Any, info: dict[str, Any]) -> None:
        super().__init__(runtime, model.io_spec, info["output_names"], info["device"])
        self.worker, self.model = worker, model
        self._max_batch_size = info["max_batch_size"]
        self.cache_events: list[Any] = info["cache_events"]

    @classmethod
    def build(
        cls,
        worker: Worker,
        definition: RuntimeDefinition,
        model: Any,
        context: BuildContext,
        runtime: str,
    ) -> WorkerRunner:
        """Build `runtime` in `worker` (which may already hold another model's build of it)."""
        try:
            payload = _definition_bytes(definition)
        except Exception as exc:
            raise RuntimeBuildError(
                f"{runtime} cannot be sent to a worker process ({describe_error(exc)}); run it in-process with "
                "--navigator-isolation=none, or register a build function that pickles"
            ) from exc
        try:
            info = worker.call(
                _build_here, payload, model, context, runtime, what="build", timeout=worker.timeouts.build()
            )
        except RemoteError as exc:
            error = RuntimeNotApplicable if exc.kind == RuntimeNotApplicable.__name__ else RuntimeBuildError
            raise error(exc.description) from None
        except RuntimeCrashError as exc:
            raise RuntimeBuildError(f"building {runtime} for {model.name}: {exc}") from None
        return cls(worker, runtime, model, info)

    @property
    def key(self) -> tuple[Any, str]:
        """What the worker keeps the built runner under (WorkerState.kept)."""
        return self.model.path, self.runtime

    def call(
        self, function: Callable[..., Any], *args: Any, what: str, progress: Callable[[str], None] | None = None
    ) -> Any:
        """`function(state, *args)` in this runtime's worker (Worker.call), which finds the runner in
        state.kept[self.key]; an error the runtime raised there comes back as NavigatorError when it was
        one (a message for the user), else as isolation.RemoteError."""
        timeout = self.worker.timeouts.call(self.worker.slowest)
        try:
            return self.worker.call(function, *args, what=what, timeout=timeout, progress=progress)
        except RemoteError as exc:
            if exc.navigator:
                raise NavigatorError(exc.description) from None
            raise

    @property
    def max_batch_size(self) -> int | None:
        return self._max_batch_size

    def _method(self, method: str, *args: Any) -> Any:
        return self.call(_method_here, self.key, method, args, what=method)

    def infer(self, sample: Sample) -> Sample:
        result: Sample = self._method("infer", sample)
        return result

    def preload(self, samples: Iterable[Sample]) -> None:
        self._method("preload", list(samples))

    def plan_seconds(self, batch_size: int) -> float | None:
        found: float | None = self._method("plan_seconds", batch_size)
        return found

    @property
    def planned_batch_sizes(self) -> tuple[int, ...]:
        return tuple(self._method("planned_batch_sizes"))

    def diagnose(self, samples: Sequence[Sample]) -> list[str]:
        found: list[str] = self._method("diagnose", list(samples))
        return found

    def prepare(self, sample: Sample) -> Any:
        raise NavigatorError(f"{self.runtime} runs in a worker process: measure it with measure(), not run()")

    def run(self, prepared: Any) -> Any:
        raise NavigatorError(f"{self.runtime} runs in a worker process: measure it with measure(), not run()")


def start_fork_server(models: Iterable[Path] = ()) -> None:
    """Start the fork server that workers fork from now (fork_servers.start_server), with this module
    among its imports, so that they overlap the run's own start (loading models); the server loads
    `models` too (model/preloaded.py), and its workers take them loaded instead of reading the files."""
    from pytest_navigator.model import preloaded

    fork_servers.prepare_server(preloaded.__name__, preloaded.request(models))
    fork_servers.start_server()


def start_counting_server(valgrind: fork_servers.Wrapper) -> None:
    """Start the fork server that counting workers fork from now, under `valgrind`
    (fork_servers.start_counting_server), with this module among its imports."""
    fork_servers.start_counting_server(valgrind)


def _definition_bytes(definition: RuntimeDefinition) -> bytes:
    """The definition, pickled with its build function's module by value when it is user code."""
    build = definition.build
    while hasattr(build, "func"):  # functools.partial
        build = build.func
    return pickling.dumps(definition, build)


# -- in the worker -----------------------------------------------------------------------------------


def _build_here(
    state: WorkerState, payload: bytes, model: Model, context: BuildContext, runtime: str
) -> dict[str, Any]:
    """Build the runtime, keep the runner (WorkerRunner.key), and answer what the proxy needs to know."""
    definition: RuntimeDefinition = pickle.loads(payload)
    seen = len(context.cache.events) if context.cache is not None else 0
    try:
        runner = definition.build(model, context)
    except RuntimeBuildError:
        raise
    except Exception as exc:
        raise RuntimeBuildError(f"building {runtime} for {model.name} failed: {describe_error(exc)}") from exc
    if not isinstance(runner, Runner):
        raise RuntimeBuildError(f"{runtime}: build returned {runner!r}, not a pytest_navigator.runtimes.Runner")
    runner.runtime = runtime
    state.kept[model.path, runtime] = runner
    events = list(context.cache.events[seen:]) if context.cache is not None else []
    return {
        "output_names": runner.output_names,
        "device": runner.device,
        "max_batch_size": runner.max_batch_size,
        "cache_events": events,
    }


def _method_here(state: WorkerState, key: tuple[Any, str], method: str, args: tuple[Any, ...]) -> Any:
    """A method of the runner kept under `key`; nan comes back as None (plan_seconds)."""
    runner = state.kept[key]
    if method == "planned_batch_sizes":
        return runner.planned_batch_sizes
    found = getattr(runner, method)(*args)
    return found if not (isinstance(found, float) and math.isnan(found)) else None
