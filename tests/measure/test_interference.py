"""CPU interference, window growth and the time budget, with a fake clock, a fake /proc and a fake rusage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_navigator.config import ProfilerConfig, ProfilerConfigError, Sample
from pytest_navigator.measure.interference import (
    CpuMonitor,
    CpuReading,
    MachineTicks,
    ProcessTimes,
    read_proc_stat,
    summarize,
)
from pytest_navigator.measure.profiler import (
    EXTRA_TRIALS_FACTOR,
    MIN_WINDOW_MS,
    PerformanceFailure,
    check_profile,
    profile_batch,
    profile_runner,
    stable_set,
)
from pytest_navigator.model.spec import parse_io_spec
from pytest_navigator.runtimes.base import Runner

SPEC = parse_io_spec(["x:float32[N,4]"], "test")


class FakeMachine:
    """A 2-core machine on a fake clock (ns). Each request of the runner advances the clock by its
    latency; while `others` cores' worth of other processes run, /proc/stat's busy time grows by
    theirs too, and our own CPU time by `threads` x latency x `share` (what the runtime got)."""

    def __init__(self, threads: int = 2, cores: int = 2) -> None:
        self.now = 0
        self.threads, self.cores = threads, cores
        self.busy_s = self.own_s = 0.0
        self.switches = 0
        self.others = 0.0  # cores used by other processes right now
        self.runnable = 1

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: float) -> None:
        seconds = ms / 1000
        self.now += int(ms * 1e6)
        share = min(1.0, max(self.cores - self.others, 0.5) / self.threads)
        own = self.threads * seconds * share
        self.own_s += own
        self.busy_s += own + self.others * seconds
        if self.others:
            self.switches += int(200 * seconds)

    def machine(self) -> MachineTicks:
        return MachineTicks(self.busy_s, 0.0, self.runnable)

    def process(self) -> ProcessTimes:
        return ProcessTimes(self.own_s, self.switches)

    def wall(self) -> float:
        return self.now / 1e9

    def monitor(self) -> CpuMonitor:
        return CpuMonitor(self.threads, self.cores, self.machine, self.process, self.wall)


class MachineRunner(Runner):
    """A runner whose requests take latency_ms(call, machine) on the fake machine."""

    thread_option = "threads"

    def __init__(self, machine: FakeMachine, latency_ms: Any, max_batch: int | None = None) -> None:
        super().__init__("scripted", SPEC)
        self.machine, self.latency_ms, self.calls, self._max = machine, latency_ms, 0, max_batch

    @property
    def max_batch_size(self) -> int | None:
        return self._max

    def infer(self, sample: Sample) -> Sample:
        self.machine.advance(self.latency_ms(self.calls, self.machine, sample["x"].shape[0]))
        self.calls += 1
        return {"y": sample["x"]}


def _inputs(batch: int = 1) -> list[Sample]:
    return [{"x": np.full((batch, 4), i, np.float32)} for i in range(4)]


def test_proc_stat_is_read_for_this_process_cpus_only(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  900 0 300 5000 0 0 0 10 0 0\n"
        "cpu0 100 0 50 2000 0 5 5 4 0 0\n"
        "cpu1 200 10 40 2000 0 0 0 6 0 0\n"
        "cpu2 600 0 210 1000 0 0 0 0 0 0\n"
        "intr 12345\nprocs_running 3\nprocs_blocked 0\n"
    )
    ticks = read_proc_stat([0, 1], str(stat), niced=False)
    import os

    hz = os.sysconf("SC_CLK_TCK")
    assert ticks is not None
    assert ticks.busy_s == pytest.approx((100 + 50 + 5 + 5 + 200 + 40) / hz)  # cpu2 is not ours, nice yields
    niced = read_proc_stat([0, 1], str(stat), niced=True)  # a niced process's own time is in the nice column
    assert niced is not None and niced.busy_s == pytest.approx((100 + 50 + 5 + 5 + 200 + 10 + 40) / hz)
    assert ticks.steal_s == pytest.approx(10 / hz) and ticks.runnable == 3
    assert read_proc_stat([0], str(tmp_path / "missing")) is None


def test_a_window_is_interfered_with_when_others_take_the_runtimes_cores() -> None:
    busy = CpuReading(2, 2, 0.1, 0.12, 0.13, 0.0, 25, 3.0)
    assert busy.interfered and busy.others_cores == pytest.approx(1.3)
    assert busy.describe() == (
        "others used 1.3 of 2 cores, 3.0 runnable tasks, 250 involuntary switches/s,"
        " the runtime got 0.60 of its 2 threads' time"
    )
    # the same neighbour beside a 1-thread runtime leaves it its core: not interference
    assert not CpuReading(2, 1, 0.1, 0.1, 0.1, 0.0, 0, 2.0).interfered
    # a quiet machine (kernel threads, tick granularity) is not interference
    assert not CpuReading(2, 2, 0.1, 0.2, 0.02, 0.0, 0, 2.0).interfered
    # steal (a hypervisor's other guests) is
    assert CpuReading(2, 1, 0.1, 0.1, 0.0, 0.02, 0, 1.0).interfered


def test_interfered_windows_are_flagged_left_out_and_named() -> None:
    """Windows 2 and 4 run beside a neighbour on one core: they are slow, flagged and skipped; the
    quiet windows alone are the stable set, so the neighbour's slowness never reaches the figures."""
    machine = FakeMachine(threads=2)
    window_requests = 100  # 1 ms requests: 100 ms windows

    def latency(call: int, m: FakeMachine, batch: int) -> float:
        window = max(call - 4, 0) // window_requests  # after 4 warm-up calls
        m.others = 1.0 if window in (1, 3) else 0.0
        return 8.0 if m.others else 1.0

    runner = MachineRunner(machine, latency)
    config = ProfilerConfig(measurement_request_count=window_requests)
    profile = profile_batch(runner, _inputs(), 1, config, machine, cpu=machine.monitor())
    assert profile.status == "stable"
    flagged = [i for i, w in enumerate(profile.windows) if w.interfered]
    assert flagged == [1, 3]
    assert profile.stable_windows == (0, 2, 4)
    assert profile.throughput == pytest.approx(1000.0)  # the quiet windows' figure
    assert profile.interference.startswith("machine busy: other processes used 1.0 of 2 cores")
    assert "in 2 of 5 windows; the runtime computes with 2 threads" in profile.interference
    assert "(busy: others used 1.0 of 2 cores" in profile.describe_windows()


def test_interference_report_names_busy_windows_but_counts_them() -> None:
    machine = FakeMachine(threads=2)

    def latency(call: int, m: FakeMachine, batch: int) -> float:
        m.others = 1.0
        return 1.0

    config = ProfilerConfig(interference="report")
    profile = profile_batch(MachineRunner(machine, latency), _inputs(), 1, config, machine, cpu=machine.monitor())
    assert profile.stable and profile.stable_windows == (0, 1, 2)
    assert all(w.interfered for w in profile.windows) and profile.interference.startswith("machine busy")
    with pytest.raises(ProfilerConfigError, match="interference"):
        ProfilerConfig(interference="ignore")


def test_a_machine_busy_throughout_fails_naming_the_interference_with_a_thread_hint() -> None:
    machine = FakeMachine(threads=2)

    def latency(call: int, m: FakeMachine, batch: int) -> float:
        m.others, m.runnable = 1.0, 3
        return 1.0 + (call % 7) * 0.05

    runner = MachineRunner(machine, latency, max_batch=1)
    config = ProfilerConfig(max_trials=5, time_budget=None)
    profile = profile_runner(runner, lambda size: _inputs(size), config, clock=machine, cpu=machine.monitor())
    batch = profile.batches[0]
    assert batch.status == "unstable" and all(w.interfered for w in batch.windows)
    with pytest.raises(PerformanceFailure) as failure:
        check_profile(profile, "m.pt2")
    message = str(failure.value)
    assert "machine busy: other processes used 1.0 of 2 cores and 3.0 tasks were runnable" in message
    assert f"in {len(batch.windows)} of {len(batch.windows)} windows; the runtime computes with 2 threads" in message
    assert "runtime option threads=1 (--navigator-runtime-option=scripted:threads=1)" in message


def test_short_windows_grow_to_the_minimum_length() -> None:
    machine = FakeMachine(threads=1)
    runner = MachineRunner(machine, lambda call, m, b: 0.25)
    profile = profile_batch(runner, _inputs(), 1, ProfilerConfig(), machine)
    assert profile.stable
    assert all(len(w.latencies_ms) == MIN_WINDOW_MS / 0.25 for w in profile.windows)  # not 50
    assert all(w.wall_ms >= MIN_WINDOW_MS for w in profile.windows)
    # windows long enough already keep the configured count
    slow = MachineRunner(FakeMachine(threads=1), lambda call, m, b: 5.0)
    profile = profile_batch(slow, _inputs(), 1, ProfilerConfig(), slow.machine)
    assert all(len(w.latencies_ms) == 50 for w in profile.windows)


def test_a_converging_measurement_gets_more_windows_and_the_rule_still_decides() -> None:
    """Throughput swings 20% between windows for 12 windows, then settles: seed 000's rule (last 3
    within 10%) is not met by max_trials (10), but the measurement is close (within 2x) and gets more
    windows; it ends stable on the first 3 settled windows, chosen by the same rule."""
    machine = FakeMachine(threads=1)

    def latency(call: int, m: FakeMachine, batch: int) -> float:
        window = max(call - 4, 0) // 100
        return (1.0 if window % 2 == 0 else 1.25) if window < 12 else 1.0

    profile = profile_batch(MachineRunner(machine, latency), _inputs(), 1, ProfilerConfig(), machine)
    assert profile.status == "stable" and len(profile.windows) == 15
    assert profile.stable_windows == (12, 13, 14)
    assert profile.reason == "stable after 15 windows"
    assert stable_set(profile.windows[:10], ProfilerConfig()) is None  # the rule, unchanged


def test_a_measurement_far_from_stable_stops_at_max_trials_and_says_so() -> None:
    machine = FakeMachine(threads=1)

    def latency(call: int, m: FakeMachine, batch: int) -> float:
        return 1.0 if (max(call - 4, 0) // 100) % 2 == 0 else 2.0

    profile = profile_batch(MachineRunner(machine, latency), _inputs(), 1, ProfilerConfig(), machine)
    assert profile.status == "unstable" and len(profile.windows) == 10
    assert profile.reason == "not stable after 10 windows (max_trials 10)"


def test_the_time_budget_stops_extra_windows_and_the_sweep_with_the_reason() -> None:
    # extra windows: converging forever (20% swings), but the budget is spent
    machine = FakeMachine(threads=1)

    def swinging(call: int, m: FakeMachine, batch: int) -> float:
        return 1.0 if (max(call - 4, 0) // 100) % 2 == 0 else 1.25

    config = ProfilerConfig(time_budget=1.5)
    profile = profile_runner(MachineRunner(machine, swinging, max_batch=1), lambda s: _inputs(s), config, clock=machine)
    batch = profile.batches[0]
    assert batch.status == "unstable" and 10 <= len(batch.windows) < 10 * EXTRA_TRIALS_FACTOR
    assert batch.reason == f"not stable after {len(batch.windows)} windows, and the time budget was spent"
    assert 2.5 < machine.now / 1e9 <= 3.0 + 0.5  # the first size: windows until twice the budget, not past it

    # the sweep: throughput keeps growing, larger sizes cost more; the budget stops it before a size it
    # cannot pay for
    machine = FakeMachine(threads=1)
    runner = MachineRunner(machine, lambda call, m, b: 1.0 + 0.02 * b, max_batch=1024)
    profile = profile_runner(runner, lambda s: _inputs(s), ProfilerConfig(time_budget=3.0), clock=machine)
    sizes = [b.batch_size for b in profile.batches]
    assert sizes[0] == 1 and sizes[-1] < 1024 and all(b.stable for b in profile.batches)
    assert profile.stop_reason.startswith(
        f"time budget: 3 s (--navigator-time-budget) would be spent before batch size {sizes[-1] * 2} is measured"
    )
    assert machine.now / 1e9 <= 3.0
    # without a budget the same sweep goes on to the runner's largest batch
    machine = FakeMachine(threads=1)
    runner = MachineRunner(machine, lambda call, m, b: 1.0 + 0.02 * b, max_batch=1024)
    profile = profile_runner(runner, lambda s: _inputs(s), ProfilerConfig(time_budget=None), clock=machine)
    assert profile.stop_reason == "reached the largest batch size (1024)"
    assert profile.batches[-1].batch_size > sizes[-1]


def test_summaries_name_nothing_on_a_quiet_machine() -> None:
    assert summarize([CpuReading(2, 2, 0.1, 0.2, 0.0, 0.0, 0, 2.0)]) == ""


def test_a_sweep_size_not_stable_when_the_budget_runs_out_is_left_out() -> None:
    """Batch 1 is steady; from batch 2 on, windows swing 2x: the budget ends batch 2 and the sweep
    keeps only batch 1, saying why; the first size is never given up."""
    machine = FakeMachine(threads=1)

    def latency(call: int, m: FakeMachine, batch: int) -> float:
        return 1.0 if batch == 1 or (m.now // 100_000_000) % 2 else 2.0

    runner = MachineRunner(machine, latency, max_batch=8)
    profile = profile_runner(runner, lambda s: _inputs(s), ProfilerConfig(time_budget=1.0), clock=machine)
    assert [b.batch_size for b in profile.batches] == [1] and profile.batches[0].stable
    assert profile.stop_reason.startswith(
        "time budget: 1 s (--navigator-time-budget) spent while batch size 2 was measured (the time budget was spent"
    )
    assert profile.stop_reason.endswith("before it was stable; left out)")
    check_profile(profile, "m.pt2")  # what was measured passes: the budget is not a failure
