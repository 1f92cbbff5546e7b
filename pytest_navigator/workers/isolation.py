"""Runtimes in worker processes: a runtime that hangs or crashes fails its own tests, and the rest go on.

A test tool for native inference runtimes meets segfaults, aborts and deadlocks: they are the bugs
it exists to catch. Each runtime of a run (`--navigator-isolation=process`, the plugin's default)
is built and run in its own worker process. The parent keeps the reference, the truth and every
verdict; it sends the worker requests (build, infer, profile) and waits with a timeout:

- a worker that dies (a signal, an abort, an exit) is reported with the signal or exit code and
  the last lines of its stderr (the worker's file descriptors 1 and 2 go to a file, so native
  libraries' messages land there too);
- a worker that gives no answer within the timeout (`--navigator-timeout`, else a generous limit
  that grows with the slowest answer seen) is killed and reported as "no answer within N s";
- either way the runtime is dead for the rest of the run: its later tests fail at once with the
  same message, and every other runtime, the summary and the JSON report are unaffected.

Workers are never forked from pytest's process (a forked child inherits its OpenMP thread pool and
CUDA context): they fork from a fork server that imported torch once, or, under valgrind, from one
of their own (fork_servers.py), and take the parent's environment as it is when they start, as a
spawned one would. The runtime's definition travels with cloudpickle, so runtimes registered in a
conftest.py (closures, lambdas) run in workers too.

The profiler's timing loop runs inside the worker, unchanged: timed requests cross no process
boundary. A worker reports progress between windows; that is its heartbeat.
"""

from __future__ import annotations

import contextlib
import functools
import io
import marshal
import math
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_navigator.config import ProfilerConfig, Sample
from pytest_navigator.errors import NavigatorError, RuntimeBuildError, RuntimeCrashError, describe_error
from pytest_navigator.runtimes.base import BuildContext, Runner, RuntimeDefinition
from pytest_navigator.workers import fork_servers

#: Without --navigator-timeout: a build (torch.compile, a TensorRT engine) may take this long ...
BUILD_TIMEOUT = 1800.0
#: ... and any other request at least this long, or this many times the slowest answer so far.
CALL_TIMEOUT = 120.0
TIMEOUT_FACTOR = 100.0
#: With --navigator-timeout=N a build, which compiles, may take this many times N.
BUILD_FACTOR = 10.0
#: Lines of a dead worker's stderr shown in the failure.
STDERR_LINES = 20
#: A hung worker is asked for its threads' stacks with this signal (faulthandler) before it is killed.
DUMP_SIGNAL = signal.SIGUSR1


class RemoteError(Exception):
    """An exception raised in a worker, brought back as its description (describe_error)."""

    def __init__(self, description: str, navigator: bool = False) -> None:
        super().__init__(description)
        self.description = description
        self.navigator = navigator


@dataclass(frozen=True)
class Timeouts:
    """Per-call limits in seconds: `fixed` (--navigator-timeout) for every call, else the defaults."""

    fixed: float | None = None
    #: The least a call may take without --navigator-timeout (processes under valgrind: BUILD_TIMEOUT).
    floor: float = CALL_TIMEOUT

    def build(self) -> float:
        return self.fixed * BUILD_FACTOR if self.fixed is not None else BUILD_TIMEOUT

    def call(self, slowest: float) -> float:
        return self.fixed if self.fixed is not None else max(self.floor, TIMEOUT_FACTOR * slowest)


class Worker:
    """One worker process and the pipe to it. Requests are answered in order; a worker that died or
    timed out stays dead, and every later request raises the same RuntimeCrashError."""

    def __init__(
        self, name: str, timeouts: Timeouts, logs: Path | None = None, valgrind: fork_servers.Wrapper | None = None
    ) -> None:
        """`valgrind` (valgrind.Valgrind.wrapper()): the worker's Python runs under callgrind,
        instrumentation off until the worker turns it on (instructions.count_runner)."""
        self.name, self.timeouts = name, timeouts
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)
        handle, log = tempfile.mkstemp(prefix=f"{_safe(name)}-", suffix=".log", dir=logs)
        os.close(handle)
        self._stderr = Path(log)
        self._folder: Path | None = None  # a spawned counting worker's own dump folder
        self.counted = valgrind is not None
        server = fork_servers.counting_server(valgrind) if valgrind is not None else None
        context = fork_servers.context(forkable=valgrind is None or server is not None)
        self._conn, child = context.Pipe()
        # a worker forked from the plain fork server gets pytest's environment of the moment; a spawned
        # one has it already, and one under valgrind must keep what the wrapper set (one OpenMP thread,
        # fixed hash seed, the dump folder)
        environment = dict(os.environ) if context.get_start_method() == "forkserver" and valgrind is None else None
        self._process = context.Process(
            target=serve, args=(child, str(self._stderr), environment), name=f"navigator-{name}", daemon=True
        )
        if server is not None:
            server.start(self._process)
        elif valgrind is not None:
            self._folder = Path(tempfile.mkdtemp(prefix=f"{_safe(name)}-callgrind-", dir=logs))
            wrapper = valgrind.script(self._folder, self._stderr.with_suffix(".valgrind.log"))
            fork_servers.start(self._process, str(wrapper))
        else:
            fork_servers.start(self._process)
        child.close()
        self._asked_to_close = False
        self.dead: RuntimeCrashError | None = None
        self.slowest = 0.0

    def request(self, message: tuple[Any, ...], timeout: float, progress: Callable[[str], None] | None = None) -> Any:
        """Send `message`, wait for the answer (progress messages restart the clock); raise
        RuntimeCrashError when the worker dies or is silent for `timeout` seconds."""
        if self.dead is not None:
            raise self.dead
        started = time.perf_counter()
        try:
            self._conn.send(message)
            deadline = time.monotonic() + timeout
            while True:
                if self._conn.poll(min(0.2, max(0.0, deadline - time.monotonic()))):
                    kind, payload = self._conn.recv()
                    if kind == "progress":
                        deadline = time.monotonic() + timeout
                        if progress is not None:
                            progress(payload)
                        continue
                    self.slowest = max(self.slowest, time.perf_counter() - started)
                    if kind == "error":
                        raise RemoteError(*payload)
                    return payload
                if not self._process.is_alive():
                    raise EOFError
                if time.monotonic() >= deadline:
                    self._dump_stacks()
                    self._kill()
                    what = message[3] if message[0] == "call" else message[0]
                    article = "an" if what[0] in "aeiou" else "a"
                    raise self._dies(f"gave no answer within {timeout:g} s to {article} {what} request, and was killed")
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            self._process.join(5)
            raise self._dies(_how_it_ended(self._process.exitcode)) from None

    def _dies(self, how: str) -> RuntimeCrashError:
        tail = self.stderr_tail()
        shown = "\n".join(f"    {line}" for line in tail) if tail else "    (nothing)"
        self.dead = RuntimeCrashError(
            f"{self.name} {how}; the runtime is not used for the rest of this run.\n"
            f"  last lines of its stderr ({self._stderr}):\n{shown}"
        )
        return self.dead

    def stderr_tail(self) -> list[str]:
        """The end of the worker's stderr, less the frames of the worker machinery itself."""
        try:
            lines = self._stderr.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        machinery = ("multiprocessing" + os.sep, "isolation.py", 'File "<string>"', "Extension modules:")
        kept = [line for line in lines if line.strip() and not any(m in line for m in machinery)]
        return kept[-STDERR_LINES:]

    def _dump_stacks(self) -> None:
        """Ask a hung worker where it is (faulthandler writes every thread's stack to its stderr)."""
        with contextlib.suppress(Exception):
            os.kill(self._process.pid or 0, DUMP_SIGNAL)
            time.sleep(1.0)

    def _kill(self) -> None:
        with contextlib.suppress(Exception):
            self._process.kill()
        self._process.join(5)

    def ask_to_close(self) -> None:
        """Tell the worker to exit, without waiting: workers closed together exit together (a
        Python with torch takes about a second to exit; close waits for it)."""
        if self.dead is None and not self._asked_to_close and self._process.is_alive():
            with contextlib.suppress(Exception):
                self._conn.send(("close",))
            self._asked_to_close = True

    def close(self) -> None:
        """Stop the worker; its log is kept only when it died (the failure message names it)."""
        if self.dead is None and self._process.is_alive():
            self.ask_to_close()
            # under valgrind, Python's exit takes many seconds, and its final counts are not wanted
            self._process.join(0.5 if self.counted else 5)
        if self._process.is_alive():
            self._kill()
        self._conn.close()
        if self.dead is None:
            self._stderr.unlink(missing_ok=True)
            self._stderr.with_suffix(".valgrind.log").unlink(missing_ok=True)
            if self._folder is not None:
                shutil.rmtree(self._folder, ignore_errors=True)


def _how_it_ended(code: int | None) -> str:
    if code is None:
        return "stopped answering (its pipe closed)"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"crashed: its worker process was killed by signal {-code} ({name})"
    return f"crashed: its worker process exited with code {code}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]


def _definition_bytes(definition: RuntimeDefinition) -> bytes:
    """The definition, pickled by cloudpickle; user code (a conftest.py, a test module) by value, so
    the worker needs neither its path nor its import name."""
    import cloudpickle

    build = definition.build
    while hasattr(build, "func"):  # functools.partial
        build = build.func
    module = sys.modules.get(getattr(build, "__module__", "") or "")
    user_code = module is not None and not _installed(module)
    # cloudpickle's by-value registry is global: the counting workers are built from threads at once,
    # and one thread's unregister must not land in another's dump (it raised "not registered")
    with _PICKLING:
        if user_code:
            cloudpickle.register_pickle_by_value(module)
        try:
            buffer = io.BytesIO()
            _keep_file_names_pickler()(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(definition)
            return buffer.getvalue()
        finally:
            if user_code:
                cloudpickle.unregister_pickle_by_value(module)


_PICKLING = threading.Lock()


def _keep_file_names_pickler() -> type:
    import cloudpickle

    # Cached per cloudpickle module: a class made from a module that has since left sys.modules
    # (pytester's inline runs restore sys.modules, and a later import makes a new module) pickles
    # cloudpickle's own helpers by value, recursing until "excessively deep recursion" (CI, twice).
    return _pickler_from(cloudpickle.Pickler)


@functools.cache
def _pickler_from(base: type) -> type:
    class KeepFileNames(base):
        """cloudpickle, but code objects travel as marshal does them (as in a .pyc): cloudpickle 3 renames
        their file "<dynamic-code>", and a hung or crashed worker's stack would no longer name the
        user's conftest.py. The worker is the same Python, so marshal's format is the same."""

        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, types.CodeType):
                return marshal.loads, (marshal.dumps(obj),)
            return super().reducer_override(obj)

    return KeepFileNames


def _installed(module: Any) -> bool:
    """Whether a module comes from an installed package (imported by name in a worker too)."""
    name = module.__name__.split(".")[0]
    if name in ("pytest_navigator", "harness") or name in sys.stdlib_module_names:
        return True
    path = getattr(module, "__file__", None) or ""
    return "site-packages" in path or "dist-packages" in path


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
            info = worker.request(("build", payload, model, context, runtime), worker.timeouts.build())
        except RemoteError as exc:
            raise RuntimeBuildError(exc.description) from None
        except RuntimeCrashError as exc:
            raise RuntimeBuildError(f"building {runtime} for {model.name}: {exc}") from None
        return cls(worker, runtime, model, info)

    @property
    def max_batch_size(self) -> int | None:
        return self._max_batch_size

    def _call(self, method: str, *args: Any, progress: Callable[[str], None] | None = None) -> Any:
        timeout = self.worker.timeouts.call(self.worker.slowest)
        try:
            return self.worker.request(("call", self.model.path, self.runtime, method, args), timeout, progress)
        except RemoteError as exc:
            if exc.navigator:
                raise NavigatorError(exc.description) from None
            raise

    def infer(self, sample: Sample) -> Sample:
        result: Sample = self._call("infer", sample)
        return result

    def preload(self, samples: Iterable[Sample]) -> None:
        self._call("preload", list(samples))

    def plan_seconds(self, batch_size: int) -> float | None:
        found: float | None = self._call("plan_seconds", batch_size)
        return found

    @property
    def planned_batch_sizes(self) -> tuple[int, ...]:
        return tuple(self._call("planned_batch_sizes"))

    def measure(
        self,
        config: ProfilerConfig,
        sizes: list[int] | None,
        against: WorkerRunner | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> tuple[Any, dict[int, Any]]:
        """profile_measurement in the worker: the timing loop never crosses the process boundary."""
        old = against.model.path if against is not None else None
        found: tuple[Any, dict[int, Any]] = self._call("measure", config, sizes, old, progress=progress)
        return found

    def count(self, sizes: list[int], progress: Callable[[str], None] | None = None) -> dict[int, float | str]:
        """instructions.count_runner in the worker (which runs under callgrind)."""
        found: dict[int, float | str] = self._call("count", sizes, progress=progress)
        return found

    def trace_sizes(self, sizes: list[int], folder: Path) -> list[str]:
        """trace.trace_runner in the worker: the runtime's own profiler, in its own process."""
        found: list[str] = self._call("trace_sizes", sizes, folder)
        return found

    def peak_memory(self, sizes: list[int]) -> dict[int, Any]:
        """memory.peak_memory in the worker: the peak of the runtime's own process."""
        found: dict[int, Any] = self._call("peak_memory", sizes)
        return found

    def prepare(self, sample: Sample) -> Any:
        raise NavigatorError(f"{self.runtime} runs in a worker process: measure it with measure(), not run()")

    def run(self, prepared: Any) -> Any:
        raise NavigatorError(f"{self.runtime} runs in a worker process: measure it with measure(), not run()")


def profile_measurement(
    runner: Runner,
    io_spec: Any,
    config: ProfilerConfig,
    sizes: list[int] | None,
    old: Runner | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[Any, dict[int, Any]]:
    """The measurement of one runtime, wherever it runs: profile_runner over `sizes` (None: a sweep),
    with `old` measured window by window beside it (A/B); returns the profile and the old side's
    batch profiles by size."""
    from pytest_navigator.check.strategies import profiling_inputs
    from pytest_navigator.measure.interference import cpu_monitor
    from pytest_navigator.measure.profiler import BatchProfile, profile_pair, profile_runner
    from pytest_navigator.measure.telemetry import gpu_monitor

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


# -- the worker side ---------------------------------------------------------------------------------


def serve(conn: Any, stderr_path: str, environment: dict[str, str] | None = None) -> None:
    """A worker's main loop: build runners, answer calls, until "close" or the pipe closes.
    `environment`: the parent's, when the worker was started (a forked worker would otherwise have
    the fork server's, from when the run began)."""
    if environment is not None:
        os.environ.clear()
        os.environ.update(environment)
    log = os.open(stderr_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(log, 1)  # native libraries' output too, not only Python's
    os.dup2(log, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    import faulthandler

    faulthandler.enable(file=sys.stderr, all_threads=True)  # a crash's Python stack lands in the log
    faulthandler.register(DUMP_SIGNAL, file=sys.stderr, all_threads=True)  # and a hang's, when asked
    from pytest_navigator.logs import quiet_library_loggers

    quiet_library_loggers()
    runners: dict[tuple[Path, str], tuple[Runner, Any]] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "close":
            return
        try:
            answer = _answer(message, runners, conn)
        except BaseException as exc:
            conn.send(("error", (describe_error(exc), isinstance(exc, NavigatorError))))
            continue
        conn.send(("ok", answer))


def _answer(message: tuple[Any, ...], runners: dict[tuple[Path, str], tuple[Runner, Any]], conn: Any) -> Any:
    kind = message[0]
    if kind == "build":
        _, payload, model, context, runtime = message
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
        runners[model.path, runtime] = (runner, model)
        events = list(context.cache.events[seen:]) if context.cache is not None else []
        return {
            "output_names": runner.output_names,
            "device": runner.device,
            "max_batch_size": runner.max_batch_size,
            "cache_events": events,
        }
    _, path, runtime, method, args = message
    runner, model = runners[path, runtime]
    if method == "measure":
        config, sizes, old_path = args
        old = runners[old_path, runtime][0] if old_path is not None else None
        return profile_measurement(
            runner, model.io_spec, config, sizes, old, lambda text: conn.send(("progress", text))
        )
    if method == "count":
        from pytest_navigator.measure.instructions import count_runner

        return count_runner(runner, model.io_spec, args[0], lambda text: conn.send(("progress", text)))
    if method == "trace_sizes":
        from pytest_navigator.check.strategies import profiling_inputs
        from pytest_navigator.measure.trace import trace_runner

        return trace_runner(runner, lambda size: profiling_inputs(model.io_spec, size), args[0], args[1])
    if method == "peak_memory":
        from pytest_navigator.check.strategies import profiling_inputs
        from pytest_navigator.measure.memory import peak_memory

        return peak_memory(runner, lambda size: profiling_inputs(model.io_spec, size), args[0])
    if method == "planned_batch_sizes":
        return runner.planned_batch_sizes
    found = getattr(runner, method)(*args)
    return found if not (isinstance(found, float) and math.isnan(found)) else None
