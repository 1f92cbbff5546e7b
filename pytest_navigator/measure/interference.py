"""Other work on the CPUs during a measurement window: the CPU counterpart of a throttled GPU window.

A runtime computing with N threads needs N cores to itself. On a shared machine (a CI runner with
other jobs, a laptop compiling) other processes take some of them, and a multi-threaded runtime
then waits at every barrier for a descheduled thread: a 2-thread OpenMP runtime on 2 cores with
one busy went from p50 0.6 ms to 192 ms in some windows and not others. Such a window measures
the neighbour, not the runtime, so it is flagged and kept out of the stable set, as nvbench keeps
out throttled GPU windows.

For each window a `CpuMonitor` reads, before and after (never during), from the kernel:

- the CPU time the other processes used on the CPUs this process may run on (`/proc/stat`, busy
  time of those CPUs less this process's own CPU time from `getrusage`), and steal time (a
  hypervisor running another guest on our virtual CPU);
- the runnable tasks on the machine (`procs_running`, at the window's two ends);
- this process's involuntary context switches (`getrusage`) and its CPU time against the wall
  time times the runtime's threads.

A window is interfered with when the other processes used more than the cores the runtime leaves
free (cores - threads) by over OTHERS_SLACK cores, or steal took over STEAL_LIMIT of the CPUs.
Processes running at a lower priority (`nice`, counted apart by the kernel) yield the CPU to ours
and are not counted, unless this process is niced itself (its own time is then counted there). A
runner that does not say how many threads it computes with counts as one.
The other figures are evidence in the message. `/proc/stat` counts in clock ticks (10 ms), so a
window shorter than about 100 ms cannot be judged well; the profiler's windows last at least that
long (profiler.MIN_WINDOW_MS). Where `/proc/stat` does not exist (macOS, Windows) no window is
judged, and nothing fails for it.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pytest_navigator.runtimes.environment import available_cores

#: Other processes may use this many cores beyond those the runtime leaves free (tick granularity,
#: kernel threads) before a window counts as interfered with.
OTHERS_SLACK = 0.3
#: ... or steal may take this fraction of the CPUs.
STEAL_LIMIT = 0.05


@dataclass(frozen=True, slots=True)
class MachineTicks:
    """Cumulative counters of the CPUs this process may run on (`/proc/stat`), in seconds."""

    busy_s: float
    steal_s: float
    runnable: int


@dataclass(frozen=True, slots=True)
class ProcessTimes:
    """Cumulative counters of this process (`getrusage(RUSAGE_SELF)`: every thread)."""

    cpu_s: float
    involuntary_switches: int


@dataclass(frozen=True, slots=True)
class CpuReading:
    """The CPUs over one window, as the runtime's process saw them."""

    cores: int
    threads: int
    wall_s: float
    own_cpu_s: float
    others_cpu_s: float
    steal_s: float
    involuntary_switches: int
    runnable: float

    @property
    def others_cores(self) -> float:
        """Cores' worth of CPU time the other processes used during the window."""
        return self.others_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def steal_fraction(self) -> float:
        return self.steal_s / (self.wall_s * self.cores) if self.wall_s > 0 and self.cores else 0.0

    @property
    def interfered(self) -> bool:
        spare = max(0, self.cores - self.threads)
        return self.others_cores > spare + OTHERS_SLACK or self.steal_fraction > STEAL_LIMIT

    def describe(self) -> str:
        """ "others used 1.3 of 2 cores, 3.0 runnable tasks, 41 involuntary switches/s, the runtime got 0.62 of 2 threads' time"."""
        parts = [f"others used {self.others_cores:.1f} of {self.cores} cores", f"{self.runnable:.1f} runnable tasks"]
        if self.steal_fraction > 0.005:
            parts.append(f"steal {self.steal_fraction:.0%}")
        if self.wall_s > 0:
            parts.append(f"{self.involuntary_switches / self.wall_s:.0f} involuntary switches/s")
            parts.append(
                f"the runtime got {self.own_cpu_s / (self.wall_s * self.threads):.2f} of its {self.threads} threads' time"
            )
        return ", ".join(parts)


def read_proc_stat(cpus: Sequence[int], path: str = "/proc/stat", niced: bool | None = None) -> MachineTicks | None:
    """Busy and steal seconds summed over `cpus`, and procs_running; None where there is no /proc/stat.
    Busy time leaves out niced processes' time unless `niced` (default: whether this process is niced)."""
    if niced is None:
        niced = _niced()
    try:
        with open(path, encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    wanted = {f"cpu{c}" for c in cpus}
    busy = steal = 0.0
    runnable = 0
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        if fields[0] in wanted:
            # user nice system idle iowait irq softirq steal guest guest_nice (guest is inside user)
            values = [int(v) for v in fields[1:]] + [0] * 10
            busy += values[0] + values[2] + values[5] + values[6] + (values[1] if niced else 0)
            steal += values[7]
        elif fields[0] == "procs_running":
            runnable = int(fields[1])
    return MachineTicks(busy / tick, steal / tick, runnable)


def _niced() -> bool:
    try:
        return os.getpriority(os.PRIO_PROCESS, 0) > 0
    except (AttributeError, OSError):
        return False


def read_rusage() -> ProcessTimes:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return ProcessTimes(usage.ru_utime + usage.ru_stime, usage.ru_nivcsw)


class CpuMonitor:
    """Reads the CPUs around each window (profiler.profile_batch calls it between windows, never
    during one). The sources are injectable: unit tests give a fake /proc and rusage."""

    def __init__(
        self,
        threads: int,
        cores: int,
        machine: Callable[[], MachineTicks | None],
        process: Callable[[], ProcessTimes] = read_rusage,
        wall: Callable[[], float] | None = None,
    ) -> None:
        self.threads, self.cores = max(1, threads), max(1, cores)
        self._machine, self._process = machine, process
        self._wall = wall or time.monotonic
        self._start: tuple[float, MachineTicks, ProcessTimes] | None = None

    def window_started(self) -> None:
        machine = self._machine()
        self._start = None if machine is None else (self._wall(), machine, self._process())

    def window_ended(self) -> CpuReading | None:
        if self._start is None:
            return None
        wall0, machine0, own0 = self._start
        machine, own, wall = self._machine(), self._process(), self._wall()
        if machine is None:
            return None
        own_cpu = own.cpu_s - own0.cpu_s
        return CpuReading(
            cores=self.cores,
            threads=self.threads,
            wall_s=wall - wall0,
            own_cpu_s=own_cpu,
            others_cpu_s=max(0.0, machine.busy_s - machine0.busy_s - own_cpu),
            steal_s=machine.steal_s - machine0.steal_s,
            involuntary_switches=own.involuntary_switches - own0.involuntary_switches,
            runnable=(machine.runnable + machine0.runnable) / 2,
        )


def cpu_monitor(threads: int | None) -> CpuMonitor | None:
    """A monitor of this machine's CPUs for a runtime computing with `threads` (None: unknown, one);
    None where /proc/stat cannot be read."""
    cpus = available_cores()
    niced = _niced()
    if read_proc_stat(cpus, niced=niced) is None:
        return None
    return CpuMonitor(threads or 1, len(cpus), lambda: read_proc_stat(cpus, niced=niced))


def summarize(readings: Sequence[CpuReading]) -> str:
    """The evidence over a batch size's interfered windows: "machine busy: others used 1.3 of 2
    cores (mean), 3.1 runnable tasks, in 7 of 10 windows; the runtime computes with 2 threads"."""
    flagged = [r for r in readings if r.interfered]
    if not flagged:
        return ""
    n = len(flagged)
    others = sum(r.others_cores for r in flagged) / n
    runnable = sum(r.runnable for r in flagged) / n
    steal = sum(r.steal_fraction for r in flagged) / n
    first = flagged[0]
    text = (
        f"machine busy: other processes used {others:.1f} of {first.cores} cores and {runnable:.1f} tasks were"
        f" runnable, in {n} of {len(readings)} windows"
    )
    if steal > 0.005:
        text += f" (steal {steal:.0%})"
    return text + f"; the runtime computes with {first.threads} thread{'s' if first.threads != 1 else ''}"


def free_cores(readings: Sequence[CpuReading]) -> int:
    """Cores left free by the other processes over the interfered windows (at least 1)."""
    flagged = [r for r in readings if r.interfered] or list(readings)
    if not flagged:
        return 1
    others = sum(r.others_cores for r in flagged) / len(flagged)
    return max(1, int(flagged[0].cores - others + 0.25))
