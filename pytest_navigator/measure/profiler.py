"""Throughput and latency of one runner: warm-up, count or time windows until stable, and a batch-size sweep.

Seed 000's ProfilerConfig semantics, with the honesty the anchors lack: every timed request ends
with the runner's `synchronize()`; the first call is reported apart as the cold start; percentiles
come from the pooled raw latencies of the stable windows (never averaged per window); windows the
device flagged as throttled, and windows during which other processes took the runtime's cores
(interference.py), are left out of the stable set; an unstable measurement is a result carrying
every window, not an exception. The clock is injectable, so all of it is unit-tested with a fake
one.

Within a time budget per runtime (ProfilerConfig.time_budget, `--navigator-time-budget`), the
measurement adapts: windows last at least MIN_WINDOW_MS (a window of 50 fast requests is too
short to be stable, or to be judged for interference); a batch size still converging after
max_trials windows gets more, up to EXTRA_TRIALS_FACTOR times as many, while the budget lasts
(the first size: until twice the budget); the sweep stops before a batch size the rest of the
budget cannot pay for. Every batch size says why its measurement ended, and the profile why the
sweep did.

What a measurement found (WindowResult, BatchProfile, RuntimeProfile) is in profiles.py, and when it
is stable (the rule, check_profile) in stability.py; their names still import from here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from pytest_navigator import options
from pytest_navigator.config import MeasurementMode, ProfilerConfig, Sample
from pytest_navigator.measure.interference import CpuMonitor
from pytest_navigator.measure.profiles import BatchProfile, RuntimeProfile, WindowResult
from pytest_navigator.measure.stability import (  # noqa: F401 (PerformanceFailure, check_profile, thread_hint: re-exported)
    PerformanceFailure,
    check_profile,
    converging,
    stable_set,
    thread_hint,
)
from pytest_navigator.measure.telemetry import DeviceReading
from pytest_navigator.measure.trace import RequestRange, request_range
from pytest_navigator.runtimes.base import Runner

#: A monotonic clock in nanoseconds (time.perf_counter_ns).
Clock = Callable[[], int]


class WindowMonitor(Protocol):
    """Reads the device around each window (telemetry.GpuMonitor on NVIDIA GPUs); never during it."""

    def window_started(self) -> None: ...

    def window_ended(self) -> DeviceReading | None: ...


#: Warm-up ends when this many calls in a row lie within WARMUP_SPREAD of their median ...
WARMUP_CALLS = 3
WARMUP_SPREAD = 0.5
#: ... or after this many calls.
MAX_WARMUP_CALLS = 50
#: A window's requests fall into this many consecutive blocks: the samples of significance tests
#: (baselines.blocks).
BLOCKS_PER_WINDOW = 5
#: Without explicit batch sizes and without a runner limit, the sweep stops here.
SWEEP_LIMIT = 1024
#: Count windows get enough requests to last at least this long (time windows: at least this interval).
MIN_WINDOW_MS = 100.0
#: A batch size still converging after max_trials windows may get up to this many times as many.
EXTRA_TRIALS_FACTOR = 3


def warm_up(runner: Runner, prepared: Sequence[Any], clock: Clock) -> float:
    """Run requests until plan building/compilation is over; return the first call's latency (ms)."""
    return _warm_up(runner, prepared, clock)[0]


def _warm_up(runner: Runner, prepared: Sequence[Any], clock: Clock) -> list[float]:
    """warm_up's latencies, the first (cold) one first."""
    latencies: list[float] = []
    for call in range(MAX_WARMUP_CALLS):
        latencies.append(_timed(runner, prepared[call % len(prepared)], clock))
        recent = latencies[1:][-WARMUP_CALLS:]
        if len(recent) == WARMUP_CALLS:
            middle = float(np.median(recent))
            if all(abs(x - middle) <= WARMUP_SPREAD * middle for x in recent):
                break
    return latencies


def grown(config: ProfilerConfig, request_ms: float) -> ProfilerConfig:
    """`config` with windows of at least MIN_WINDOW_MS, for requests taking about `request_ms`."""
    if config.measurement_mode is MeasurementMode.TIME_WINDOWS:
        return replace(config, measurement_interval=max(config.measurement_interval, MIN_WINDOW_MS))
    needed = math.ceil(MIN_WINDOW_MS / max(request_ms, 1e-6))
    return replace(config, measurement_request_count=max(config.measurement_request_count, needed))


def measure_window(
    runner: Runner, prepared: Sequence[Any], batch_size: int, config: ProfilerConfig, clock: Clock, offset: int = 0
) -> WindowResult:
    """One window: measurement_request_count requests (COUNT_WINDOWS), or requests until
    measurement_interval ms have passed (TIME_WINDOWS); prepared inputs rotate across requests."""
    latencies: list[float] = []
    mark = request_range(runner.runtime, batch_size)
    started = clock()
    limit_ns = config.measurement_interval * 1e6
    count_mode = config.measurement_mode is MeasurementMode.COUNT_WINDOWS
    while True:
        latencies.append(_timed(runner, prepared[(offset + len(latencies)) % len(prepared)], clock, mark))
        if count_mode:
            if len(latencies) >= config.measurement_request_count:
                break
        elif clock() - started >= limit_ns:
            break
    return WindowResult(batch_size, tuple(latencies), (clock() - started) / 1e6)


def _timed(runner: Runner, prepared: Any, clock: Clock, mark: RequestRange | None = None) -> float:
    """One request's latency (ms); with `mark` (NVTX), inside a range that opens before the clock
    starts and closes after it stops, so the range costs the measurement nothing."""
    if mark is not None:
        mark.push()
    started = clock()
    runner.run(prepared)
    runner.synchronize()
    elapsed = clock() - started
    if mark is not None:
        mark.pop()
    return elapsed / 1e6


def profile_batch(
    runner: Runner,
    inputs: Sequence[Sample],
    batch_size: int,
    config: ProfilerConfig,
    clock: Clock = time.perf_counter_ns,
    monitor: WindowMonitor | None = None,
    progress: Progress | None = None,
    cpu: CpuMonitor | None = None,
    deadline: int | None = None,
    abandon: bool = False,
) -> BatchProfile:
    """Prepare the inputs, warm up, then measure windows (of at least MIN_WINDOW_MS) until stable or
    max_trials, and past max_trials while converging and before `deadline` (a `clock` value); a
    runtime error (out of memory at a large batch) is a result too. With `abandon`, a size not yet
    stable when the deadline passes is given up ("abandoned": the sweep leaves it out). `progress` hears of each step,
    between timed requests, never during them; so do the monitors (GPU, CPUs)."""
    say = progress or _silent
    try:
        prepared = [runner.prepare(sample) for sample in inputs]
        say(f"{runner.runtime} batch {batch_size}: warming up")
        warm = _warm_up(runner, prepared, clock)
        cold = warm[0]
        plan = runner.plan_seconds(batch_size)
        if plan is not None:  # a per-batch-size plan: its build is this size's cold start
            cold = max(cold, plan * 1000)
        window_config = grown(config, float(np.median(warm[1:] or warm)))
        windows: list[WindowResult] = []
        limit = config.max_trials * EXTRA_TRIALS_FACTOR
        while True:
            if abandon and deadline is not None and clock() >= deadline:
                reason = f"the time budget was spent after {len(windows)} windows, before it was stable"
                return BatchProfile(batch_size, "abandoned", cold, tuple(windows), reason=reason)
            if len(windows) >= config.max_trials:
                if deadline is not None and clock() >= deadline:
                    reason = f"not stable after {len(windows)} windows, and the time budget was spent"
                    break
                if len(windows) >= limit or not converging(windows, config):
                    reason = f"not stable after {len(windows)} windows (max_trials {config.max_trials}" + (
                        f", and {EXTRA_TRIALS_FACTOR}x that while converging)" if len(windows) >= limit else ")"
                    )
                    break
            if monitor is not None:
                monitor.window_started()
            if cpu is not None:
                cpu.window_started()
            window = measure_window(runner, prepared, batch_size, window_config, clock, offset=len(windows))
            if cpu is not None:
                window = replace(window, cpu=cpu.window_ended())
            if monitor is not None:
                window = replace(window, device=monitor.window_ended())
            windows.append(window)
            busy = f" (machine busy{': left out' if window.excluded(config) else ''})" if window.interfered else ""
            say(
                f"{runner.runtime} batch {batch_size}: window {len(windows)} of {config.max_trials}, "
                f"{window.throughput:.1f} samples/s{busy}"
            )
            chosen = stable_set(windows, config)
            if chosen is not None:
                reason = f"stable after {len(windows)} windows"
                return BatchProfile(batch_size, "stable", cold, tuple(windows), chosen, reason=reason)
    except Exception as exc:
        return _failed(batch_size, exc)
    return BatchProfile(batch_size, "unstable", cold, tuple(windows), reason=reason)


#: Hears what a measurement is doing ("torch-cpu batch 4: window 3 of at most 10, 812.3 samples/s").
Progress = Callable[[str], None]


def _silent(text: str) -> None:
    return None


def _failed(batch_size: int, exc: Exception) -> BatchProfile:
    """A runtime error at this batch size (out of memory at a large batch) as a result, not a crash."""
    error = f"{type(exc).__name__}: {exc}".strip()
    return BatchProfile(batch_size, "error", None, error=error, reason=f"failed: {error}")


def sweep_sizes(max_batch_size: int | None) -> list[int]:
    """Powers of two up to the runner's maximum (capped at SWEEP_LIMIT), and the maximum itself;
    [1] for a model without a batch axis (max_batch_size None), where one request is one sample."""
    if max_batch_size is None:
        return [1]
    limit = min(max_batch_size, SWEEP_LIMIT)
    sizes, size = [], 1
    while size <= limit:
        sizes.append(size)
        size *= 2
    return sizes if sizes[-1] == limit else [*sizes, limit]


def profile_runner(
    runner: Runner,
    inputs_for: Callable[[int], Sequence[Sample]],
    config: ProfilerConfig,
    batch_sizes: Sequence[int] | None = None,
    clock: Clock = time.perf_counter_ns,
    monitor: WindowMonitor | None = None,
    measure: Callable[[int], BatchProfile] | None = None,
    progress: Progress | None = None,
    cpu: CpuMonitor | None = None,
) -> RuntimeProfile:
    """Profile each batch size in ascending order. Explicit sizes are all measured; the automatic
    sweep (powers of two) stops once throughput fails to grow by throughput_cutoff_threshold for
    throughput_backoff_limit sizes in a row, or before a size the rest of config.time_budget cannot
    pay for (the last size's time, doubled, as sizes double); a size after the first that is still
    not stable when the budget is spent is left out. An error (e.g. out of memory) ends
    the sweep there. `measure(size)` replaces profile_batch (profile_pair uses it for A/B runs)."""
    explicit = batch_sizes is not None
    sizes = sorted(set(batch_sizes)) if batch_sizes is not None else sweep_sizes(runner.max_batch_size)
    started = clock()
    deadline = started + int(config.time_budget * 1e9) if config.time_budget is not None else None
    profiles: list[BatchProfile] = []
    best, without_gain, last_ns = 0.0, 0, 0

    def result(reason: str) -> RuntimeProfile:
        return RuntimeProfile(runner.runtime, tuple(profiles), reason, config, thread_option=runner.thread_option)

    for size in sizes:
        now = clock()
        if profiles and not explicit and deadline is not None and now + 2 * last_ns > deadline:
            return result(
                f"time budget: {config.time_budget:g} s ({options.TIME_BUDGET}) would be spent before batch size"
                f" {size} is measured ({(now - started) / 1e9:.1f} s used)"
            )
        if measure is not None:
            profile = measure(size)
        else:
            abandon = bool(profiles) and not explicit  # the first size, and explicit ones, are always measured
            # The first size is the runtime's one sure figure: still converging at max_trials, it may
            # take windows until twice the budget, so that a short budget does not make it inconclusive.
            budget = config.time_budget
            until = deadline if profiles or deadline is None or budget is None else deadline + int(budget * 1e9)
            profile = profile_batch(
                runner, inputs_for(size), size, config, clock, monitor, progress, cpu, until, abandon
            )
        last_ns = clock() - now
        if profile.status == "abandoned":
            return result(
                f"time budget: {config.time_budget:g} s ({options.TIME_BUDGET}) spent while batch size {size} was"
                f" measured ({profile.reason}; left out)"
            )
        profiles.append(profile)
        if profile.status == "error":
            return result(f"batch size {size} failed: {profile.error}")
        if explicit:
            continue
        if profile.throughput > best * (1 + config.throughput_cutoff_threshold):
            without_gain = 0
        else:
            without_gain += 1
        best = max(best, profile.throughput)
        if without_gain >= config.throughput_backoff_limit:
            return result(
                f"throughput grew less than {config.throughput_cutoff_threshold:.0%} for {without_gain} batch sizes in a row"
            )
    return result("all requested batch sizes measured" if explicit else f"reached the largest batch size ({sizes[-1]})")


def profile_pair(
    new: Runner,
    old: Runner,
    inputs: Sequence[Sample],
    batch_size: int,
    config: ProfilerConfig,
    clock: Clock = time.perf_counter_ns,
    progress: Progress | None = None,
) -> tuple[BatchProfile, BatchProfile]:
    """A/B: both runners warmed up, then max(AB_MIN_PAIRS, max_trials) windows of each interleaved
    (new, old, new, old, ...) on the same inputs, with an untimed pause between windows; a machine
    drift hits both alike. Window i of one is paired with window i of the other, and every pair
    counts (the figures pool all windows)."""
    try:
        prepared = [[runner.prepare(sample) for sample in inputs] for runner in (new, old)]
        colds = []
        for runner, ready in zip((new, old), prepared, strict=True):
            colds.append(warm_up(runner, ready, clock))
            _settle()
        window_config = _ab_windows(config, (new, old), prepared, clock)
        windows: list[list[WindowResult]] = [[], []]
        pairs = max(AB_MIN_PAIRS, config.max_trials)
        for index in range(pairs):
            for side, runner in enumerate((new, old)):
                windows[side].append(
                    measure_window(runner, prepared[side], batch_size, window_config, clock, offset=len(windows[side]))
                )
                _settle()
            (progress or _silent)(f"{new.runtime} batch {batch_size}: A/B window pair {index + 1} of {pairs}")
    except Exception as exc:
        failed = _failed(batch_size, exc)
        return failed, failed
    every = tuple(range(len(windows[0])))
    return (
        BatchProfile(batch_size, "stable", colds[0], tuple(windows[0]), every),
        BatchProfile(batch_size, "stable", colds[1], tuple(windows[1]), every),
    )


def _ab_windows(
    config: ProfilerConfig, runners: Sequence[Runner], prepared: Sequence[Any], clock: Clock
) -> ProfilerConfig:
    """A/B windows last at least AB_MIN_WINDOW_MS: the untimed pause between windows costs as much
    anyway, and a longer window averages out short noise, which the paired test would otherwise
    see as differences between the two sides. Count windows get more requests (the same number on
    both sides, from the slower side's latency); time windows a longer interval."""
    if config.measurement_mode is MeasurementMode.TIME_WINDOWS:
        return replace(config, measurement_interval=max(config.measurement_interval, AB_MIN_WINDOW_MS))
    slowest = max(
        float(np.median([_timed(runner, ready[i % len(ready)], clock) for i in range(5)]))
        for runner, ready in zip(runners, prepared, strict=True)
    )
    count = math.ceil(AB_MIN_WINDOW_MS / max(slowest, 1e-6))
    return replace(config, measurement_request_count=max(config.measurement_request_count, count))


#: A/B windows last at least this long (ms).
AB_MIN_WINDOW_MS = 300.0
#: An A/B run measures this many window pairs in each of its processes (or max_trials, if larger:
#: 10 by default).
#: The verdict compares the processes' ratios (runs.py), so the pairs of one process only estimate
#: its ratio: 8 pairs of 300 ms windows put it within about 2% on this project's 2-core machine,
#: where the spread between processes is larger. (The rule before tested the 20 window pairs of one
#: process with Wilcoxon, which needs 9 to reach p < 0.0033 at all.) Drift cancels out of each pair,
#: so no per-side stability is waited for.
AB_MIN_PAIRS = 8
#: Pause between A/B windows, untimed. Runtimes whose worker threads stay busy after a request
#: hold the cores the other side needs: on 2 cores, ONNX Runtime CPU measured right after another
#: session ran was 2x slower, and needed about 0.2 s of pause to recover fully.
SETTLE_SECONDS = 0.2


def _settle() -> None:
    time.sleep(SETTLE_SECONDS)
