"""Where worker processes come from: multiprocessing's fork server for workers that run runtimes,
and a second fork server running under callgrind for workers that count instructions.

Workers are never forked from pytest's process: a forked child inherits the parent's OpenMP
thread pool in a state that deadlocks at its first parallel region (seen here with torch's CPU
build), and a CUDA context cannot survive a fork. Where the platform has it, they are forked from
a fork server instead: a clean process, started with the run (start_server), that imports torch and
its export machinery once (PRELOAD) and never computes, so it holds no thread pool and no CUDA
context. A worker then starts with those imports done, instead of paying 4 s of them on 2 cores for
every runtime.

Counting workers run under valgrind, where those imports cost 15-25 s a process (valgrind translates
every instruction of them) and the instruction-count gate starts three processes per runtime: 36
for the demo zoo, most of the gate's time (py-spy: 400 of 600 s of the suite's valgrind processes
were imports and torch.export.load). So they fork from a fork server of their own, started once by
the valgrind wrapper with instrumentation off: valgrind follows the fork, each child writes its
dumps under its own pid, and a child forked from a server that only imported is as new a process as
a spawned one (measured: three forked children's counts of one request agree within 0.2%, and with
spawned processes' within 0.3%; one OpenMP thread, as the wrapper sets). A counting worker has the
environment of the server's start (the wrapper's settings over the run's), not of the moment it
starts. NAVIGATOR_WORKER_START=spawn spawns every worker, counting ones included, as before the fork
servers.
"""

from __future__ import annotations

import contextlib
import importlib.util
import multiprocessing
import os
import shlex
import shutil
import sys
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: What the fork servers import once for every worker (those installed): torch and what loading an
#: exported program pulls in (torch.export.load imports dynamo and its deserializer: most of a
#: worker's start).
PRELOAD = (
    "numpy",
    "torch",
    "torch.export",
    "torch._dynamo",
    "torch._export.serde.serialize",
    "pytest_navigator.workers.isolation",
)
#: The counting server also imports ONNX Runtime: under valgrind its import is seconds, paid by every
#: counted onnxruntime-cpu process otherwise.
COUNTING_PRELOAD = (*PRELOAD, "onnxruntime")
#: What layers above asked the fork servers to import too (preload): the code their workers run.
_ALSO_PRELOAD: list[str] = []
#: What layers above asked the plain fork server alone to import last, each with the environment its
#: process starts with (prepare_server).
_SERVER_MODULES: dict[str, dict[str, str]] = {}
#: NAVIGATOR_WORKER_START=spawn: spawn every worker, as before the fork servers (a way out, should a
#: library misbehave in a forked worker).
START_METHOD_VARIABLE = "NAVIGATOR_WORKER_START"

# Process starts that route through multiprocessing's forkserver module-level functions take turns:
# a counting worker's start points them at the counting server for its duration.
_STARTING = threading.RLock()


@dataclass(frozen=True)
class Wrapper:
    """A program that a worker's Python runs under, as values (measure/valgrind.py gives callgrind's):
    the command line before `python`, and the environment it sets. In both, OUT stands for the folder
    the process's output goes to (folder/`name`, for each fork server or spawned worker its own) and
    LOG for its log file."""

    name: str
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()

    OUT = "{out}"
    LOG = "{log}"

    def script(self, folder: Path, log: Path) -> Path:
        """An executable script that runs this Python under the program (multiprocessing starts workers
        with one executable path, not a command line); the output goes to folder/name."""
        out = folder / self.name
        out.mkdir(parents=True, exist_ok=True)

        def filled(text: str) -> str:
            return text.replace(self.OUT, str(out)).replace(self.LOG, str(log))

        assignments = " ".join(f"{k}={shlex.quote(filled(v))}" for k, v in self.env)
        command = " ".join(shlex.quote(part) for part in [*map(filled, self.command), sys.executable])
        script = folder / f"python-under-{self.name}"
        script.write_text(f'#!/bin/sh\nexec env {assignments} {command} "$@"\n')
        script.chmod(0o755)
        return script


def preload(*modules: str) -> None:
    """Have fork servers started from now on import `modules` too: code a layer above runs in every
    worker (runtimes/remote.py), imported once rather than by each worker."""
    _ALSO_PRELOAD.extend(m for m in modules if m not in _ALSO_PRELOAD)


def prepare_server(module: str, environment: Mapping[str, str]) -> None:
    """Have the plain fork server, when it starts from now on, import `module` after everything else,
    with `environment` added to its process's (and to no worker's: they take pytest's): work a layer
    above does once for every worker, such as loading the run's models (model/preloaded.py). A server
    already running is not restarted (a second session in one process): its workers do that work
    themselves, as `module`'s callers must allow. Not the counting servers, whose children must start
    as new processes do: what a server loaded could change the instructions they count."""
    _SERVER_MODULES[module] = dict(environment)


def spawn_only() -> bool:
    return os.environ.get(START_METHOD_VARIABLE, "").strip().lower() == "spawn" or (
        "forkserver" not in multiprocessing.get_all_start_methods()
    )


def _installed(modules: tuple[str, ...]) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m.split(".")[0]) is not None]


def context(forkable: bool = True) -> Any:
    """The fork server's context (with PRELOAD set), or spawn's where there is none, where
    NAVIGATOR_WORKER_START=spawn says so, or for a process that must start another executable."""
    if not forkable or spawn_only():
        return multiprocessing.get_context("spawn")
    forking = multiprocessing.get_context("forkserver")
    forking.set_forkserver_preload(_installed((*PRELOAD, *_ALSO_PRELOAD, *_SERVER_MODULES)))
    return forking


def start_server() -> None:
    """Start the fork server now, so that its imports overlap the run's own start (loading models)
    rather than delaying the first runtime's build. Does nothing where workers are spawned."""
    forking = context(True)
    if forking.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        with _STARTING, no_main_reimport(), _server_environment():
            forkserver.ensure_running()


def start(process: Any, executable: str | None = None) -> None:
    """Start a multiprocessing Process (spawned ones with `executable` instead of this Python); one of
    the fork server's starts the server first where it is not running."""
    forked = getattr(process, "_start_method", None) == "forkserver"
    with _STARTING, no_main_reimport(), _executable(executable), _server_environment(forked):
        process.start()


@contextlib.contextmanager
def _server_environment(server: bool = True) -> Any:
    """The environment prepare_server asked for, while the plain fork server may be started (`server`:
    whether it may be; a spawned process must not get it)."""
    added = {n: v for environment in _SERVER_MODULES.values() for n, v in environment.items()} if server else {}
    saved = {name: os.environ.get(name) for name in added}
    os.environ.update(added)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class CountingServer:
    """A fork server whose process runs under callgrind (instrumentation off), for counting workers.

    `valgrind` (valgrind.Valgrind.wrapper()) says how to start a Python under callgrind; its
    environment (one OpenMP thread, fixed hash seed, the dump folder) is the server's and every child's."""

    def __init__(self, valgrind: Wrapper, preload: tuple[str, ...] | None = None) -> None:
        """`preload`: what the server imports (COUNTING_PRELOAD and what layers above asked for)."""
        from multiprocessing import forkserver

        self.valgrind = valgrind
        self.folder = Path(tempfile.mkdtemp(prefix="navigator-counting-"))
        self._server = forkserver.ForkServer()
        self._server.set_forkserver_preload(
            _installed((*COUNTING_PRELOAD, *_ALSO_PRELOAD) if preload is None else preload)
        )
        self._wrapper = str(valgrind.script(self.folder, self.folder / "valgrind.%p.log"))

    def ensure_running(self) -> None:
        """Start the server's process (it imports COUNTING_PRELOAD before it forks anything; the
        first start waits for that, not this call)."""
        with _STARTING, no_main_reimport(), _executable(self._wrapper):
            self._server.ensure_running()

    def start(self, process: Any) -> None:
        """Start `process` (a forkserver-context Process) as a child of this server."""
        from multiprocessing import forkserver

        self.ensure_running()
        with _STARTING, no_main_reimport():
            saved = forkserver.connect_to_new_process
            forkserver.connect_to_new_process = self._server.connect_to_new_process
            try:
                process.start()
            finally:
                forkserver.connect_to_new_process = saved

    @property
    def pid(self) -> int | None:
        """The server process's pid, once started."""
        return getattr(self._server, "_forkserver_pid", None)

    def stop(self) -> None:
        stop = getattr(self._server, "_stop", None)  # multiprocessing's own (tests use it); private
        if stop is not None:
            with contextlib.suppress(Exception):
                stop()
        shutil.rmtree(self.folder, ignore_errors=True)


_COUNTING: dict[Any, CountingServer] = {}


def counting_server(valgrind: Wrapper) -> CountingServer | None:
    """The counting fork server for this valgrind (started on first use), or None where workers are
    spawned (NAVIGATOR_WORKER_START=spawn, no fork server on the platform)."""
    if spawn_only():
        return None
    with _STARTING:
        if valgrind not in _COUNTING:
            _COUNTING[valgrind] = CountingServer(valgrind)
        return _COUNTING[valgrind]


def start_counting_server(valgrind: Wrapper) -> None:
    """Start the counting server now (valgrind.start_counting_server, where valgrind is found): under
    valgrind its imports take 15-25 s, which then overlap the correctness tests that run before any count."""
    server = counting_server(valgrind)
    if server is not None:
        server.ensure_running()


def stop_counting_servers() -> None:
    """Stop every counting server (the session's end): each holds a Python with torch under valgrind."""
    with _STARTING:
        servers = list(_COUNTING.values())
        _COUNTING.clear()
    for server in servers:
        server.stop()


@contextlib.contextmanager
def _executable(path: str | None) -> Any:
    """Spawn children with `path` instead of this Python (multiprocessing keeps one, module-wide)."""
    if path is None:
        yield
        return
    from multiprocessing import resource_tracker, spawn

    resource_tracker.ensure_running()  # started now, with this Python: it would inherit `path` otherwise
    saved = spawn.get_executable()
    spawn.set_executable(path)
    try:
        yield
    finally:
        spawn.set_executable(saved)


@contextlib.contextmanager
def no_main_reimport() -> Any:
    """Spawn imports the parent's __main__ again in the child (by its module name or its file) to
    find the target; the target here is in this package, and running a user's unguarded script
    again would be wrong. Hide __main__'s name and file while the child is started."""
    main = sys.modules.get("__main__")
    hidden = {
        name: main.__dict__[name] for name in ("__spec__", "__file__") if main is not None and name in main.__dict__
    }
    for name in hidden:
        main.__dict__[name] = None
    try:
        yield
    finally:
        for name, value in hidden.items():
            main.__dict__[name] = value
