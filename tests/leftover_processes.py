"""A pytest plugin for this repo's own suite: the run fails when a process it started is still alive
at its end (fork servers, runtime workers, processes under valgrind, CPU hogs).

A process a test leaves behind costs every later test memory and CPU (a fork server holds about
300 MB; a hog makes later timings lie), and on a CI runner it outlives the job. So at the end of the
session, after every fixture's teardown, this looks for descendants of pytest's process and fails
the run naming them (pid and command line), then kills them so that the machine is clean either way.

Descendants are found in /proc (Linux; elsewhere the check says it did not run). A process that
detached (its parent exited, so it was re-parented) would escape a walk of the process tree, so
pytest's process makes itself a child subreaper first (prctl PR_SET_CHILD_SUBREAPER): orphans of
its descendants become its own children, and are found too.

Long-lived helpers that this process owns by design, multiprocessing's fork server and resource
tracker, are not counted; they are stopped after the check, as interpreter exit would stop them."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

#: Seconds a process that is already on its way out (asked to close, killed) gets to disappear.
GRACE = 5.0
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Leftover:
    pid: int
    command: str

    def __str__(self) -> str:
        return f"pid {self.pid}: {self.command}"


def become_subreaper() -> bool:
    """Adopt the orphans of this process's descendants (Linux only); whether it worked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _parents() -> dict[int, int]:
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses; it ends at the last ')'
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":  # a zombie has exited; only its parent's wait is missing
            found[int(entry.name)] = int(fields[1])
    return found


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "(exited)"
    return " ".join(raw.decode(errors="replace").replace("\0", " ").split())[:300] or "(no command line)"


def descendants(root: int | None = None) -> list[Leftover]:
    """The living descendants of `root` (this process), oldest first."""
    root = os.getpid() if root is None else root
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found: list[int] = []
    pending = list(children.get(root, []))
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return [Leftover(pid, _command(pid)) for pid in sorted(found)]


def _reap() -> None:
    """Collect exited children (and adopted orphans) so they stop being zombies."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def _helpers() -> list[tuple[int, object]]:
    """multiprocessing's fork server and resource tracker of this process: (pid, the object)."""
    found = []
    for module, attribute, pid in (
        ("multiprocessing.forkserver", "_forkserver", "_forkserver_pid"),
        ("multiprocessing.resource_tracker", "_resource_tracker", "_pid"),
    ):
        helper = getattr(sys.modules.get(module), attribute, None)
        if getattr(helper, pid, None):
            found.append((getattr(helper, pid), helper))
    return found


def leftovers(grace: float = GRACE) -> list[Leftover]:
    """What is still alive after `grace` seconds for it to exit, besides this process's own fork server
    and resource tracker; those are then stopped, as interpreter exit would stop them (a fork server
    lives until the last worker forked from it has exited: stopped first, it would wait for ever)."""
    helpers = _helpers()
    own = {pid for pid, _ in helpers}
    deadline = time.monotonic() + grace
    while True:
        _reap()
        alive = [p for p in descendants() if p.pid not in own]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if alive:
        kill(alive)
    for _, helper in helpers:
        stop = getattr(helper, "_stop", None)
        if stop is not None:
            with contextlib.suppress(Exception):
                stop()
    _reap()
    return alive


def kill(processes: list[Leftover]) -> None:
    for process in processes:
        with contextlib.suppress(OSError):
            os.kill(process.pid, signal.SIGKILL)
    time.sleep(0.2)
    _reap()


class LeftoverProcesses:
    """Checks at the session's very end. In an xdist worker, what it found goes to the controller
    (workeroutput), whose plugin fails the run: a worker's own exit status does not reach it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.controller = bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")
        self.subreaper = False if self.controller else become_subreaper()
        self.found: list[str] = []

    @pytest.hookimpl(trylast=True)  # after every other sessionfinish: fixtures torn down, runs closed
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        # an xdist controller's own children are its workers, which end after this; they check themselves
        if not self.controller:
            self.found += [str(p) for p in leftovers()]
            workeroutput = getattr(self.config, "workeroutput", None)
            if workeroutput is not None:
                name = self.config.workerinput.get("workerid", "worker")  # type: ignore[attr-defined]
                workeroutput["leftover_processes"] = [f"{line} (xdist {name})" for line in self.found]
        if self.found:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: object, error: object) -> None:
        self.found += getattr(node, "workeroutput", {}).get("leftover_processes", [])

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.found:
            terminalreporter.section("processes left behind", red=True, bold=True)
            terminalreporter.line(
                f"{len(self.found)} process(es) started during this run were still alive at its end "
                "(killed now; the run fails):"
            )
            for line in self.found:
                terminalreporter.line(f"  {line}")


def pytest_configure(config: pytest.Config) -> None:
    if Path("/proc/self/stat").exists():
        config.pluginmanager.register(LeftoverProcesses(config), "leftover-processes")
