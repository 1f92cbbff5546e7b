"""Worker processes: a runtime that hangs or crashes fails its own tests, and the rest go on.

A test tool for native inference runtimes meets segfaults, aborts and deadlocks: they are the bugs
it exists to catch. Each runtime of a run (`--navigator-isolation=process`, the plugin's default)
is built and run in its own worker process (runtimes/remote.py). The parent keeps the reference, the
truth and every verdict; it asks the worker to call a function (Worker.call: build, infer, measure)
and waits with a timeout:

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
spawned one would.

This module is plumbing: it knows processes, pipes and timeouts, not runtimes or measurements. A
request names a function by its module and name; the worker imports it and calls it with its
WorkerState (the objects it keeps between requests, and the heartbeat: progress messages restart
the parent's clock) and the request's arguments.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_navigator.errors import NavigatorError, RuntimeCrashError, describe_error
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

    def __init__(self, description: str, navigator: bool = False, kind: str = "") -> None:
        super().__init__(description)
        self.description = description
        self.navigator = navigator
        #: The exception's class name (a caller may raise its own class again).
        self.kind = kind


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
        #: The files of the functions this worker was asked to call: like this module's, their frames
        #: are the worker's machinery, left out of the stderr shown when it dies.
        self._machinery: set[str] = set()

    def call(
        self,
        function: Callable[..., Any],
        *args: Any,
        what: str,
        timeout: float,
        progress: Callable[[str], None] | None = None,
    ) -> Any:
        """`function(state, *args)` in the worker (a module-level function, found there by its module and
        name; `state`: the worker's WorkerState), and its answer. `what` names the request in a hang's
        report ("a build request"). Waits for the answer (the worker's progress messages, passed to
        `progress`, restart the clock); raises RemoteError for an exception raised by the call, and
        RuntimeCrashError when the worker dies or is silent for `timeout` seconds."""
        if self.dead is not None:
            raise self.dead
        module = function.__module__
        self._machinery.add(os.path.join(*module.split(".")) + ".py")
        started = time.perf_counter()
        try:
            self._conn.send(("call", f"{module}:{function.__qualname__}", args, what))
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
                    self.kill()
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
        machinery = (
            "multiprocessing" + os.sep,
            "isolation.py",
            'File "<string>"',
            "Extension modules:",
            *self._machinery,
        )
        kept = [line for line in lines if line.strip() and not any(m in line for m in machinery)]
        return kept[-STDERR_LINES:]

    def _dump_stacks(self) -> None:
        """Ask a hung worker where it is (faulthandler writes every thread's stack to its stderr)."""
        with contextlib.suppress(Exception):
            os.kill(self._process.pid or 0, DUMP_SIGNAL)
            time.sleep(1.0)

    def kill(self) -> None:
        """Kill the worker now, whatever it is doing (a request in flight then fails as a crash)."""
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
            self.kill()
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


# -- the worker side ---------------------------------------------------------------------------------


@dataclass
class WorkerState:
    """What a function called in a worker (Worker.call) gets first: the objects the worker keeps between
    requests (a built runtime, by a key its caller chooses), and the heartbeat: `progress(text)` reaches
    the parent's progress line and restarts its clock."""

    progress: Callable[[str], None]
    kept: dict[Any, Any] = field(default_factory=dict)


def serve(conn: Any, stderr_path: str, environment: dict[str, str] | None = None) -> None:
    """A worker's main loop: answer calls, until "close" or the pipe closes. `environment`: the
    parent's, when the worker was started (a forked worker would otherwise have the fork server's,
    from when the run began)."""
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
    state = WorkerState(lambda text: conn.send(("progress", text)))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "close":
            return
        try:
            _, name, args, _ = message
            answer = _function(name)(state, *args)
        except BaseException as exc:
            conn.send(("error", (describe_error(exc), isinstance(exc, NavigatorError), type(exc).__name__)))
            continue
        conn.send(("ok", answer))


def _function(name: str) -> Callable[..., Any]:
    """The function named "package.module:qualified.name" (Worker.call), imported in this process."""
    module, _, qualified = name.partition(":")
    found: Any = importlib.import_module(module)
    for part in qualified.split("."):
        found = getattr(found, part)
    return found
