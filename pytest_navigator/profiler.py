"""Throughput and latency of one runner: warm-up, count or time windows until stable, and a batch-size sweep.

Seed 000's ProfilerConfig semantics, with the honesty the anchors lack: every timed request ends
with the runner's `synchronize()`; the first call is reported apart as the cold start; percentiles
come from the pooled raw latencies of the stable windows (never averaged per window); windows the
device flagged as throttled are left out of the stable set; an unstable measurement is a result
carrying every window, not an exception. The clock is injectable, so all of it is unit-tested
with a fake one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pytest_navigator.config import MeasurementMode, ProfilerConfig, Sample
from pytest_navigator.runtimes.base import Runner

#: A monotonic clock in nanoseconds (time.perf_counter_ns).
Clock = Callable[[], int]
#: Called after each window: whether the device was throttled during it (None: unknown).
ThrottleProbe = Callable[[], bool | None]

#: Warm-up ends when this many calls in a row lie within WARMUP_SPREAD of their median ...
WARMUP_CALLS = 3
WARMUP_SPREAD = 0.5
#: ... or after this many calls.
MAX_WARMUP_CALLS = 50
#: Without explicit batch sizes and without a runner limit, the sweep stops here.
SWEEP_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One measurement window: its requests' latencies and the wall time they took together."""

    batch_size: int
    latencies_ms: tuple[float, ...]
    wall_ms: float
    throttled: bool = False

    @property
    def throughput(self) -> float:
        """Samples (rows) per second."""
        return len(self.latencies_ms) * self.batch_size / (self.wall_ms / 1000) if self.wall_ms > 0 else 0.0

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))


@dataclass(frozen=True)
class BatchProfile:
    """Every window measured at one batch size and, when stable, the figures from the stable ones."""

    batch_size: int
    status: str  # "stable", "unstable" or "error"
    cold_start_ms: float | None
    windows: tuple[WindowResult, ...] = ()
    stable_windows: tuple[int, ...] = ()
    error: str | None = None

    @property
    def stable(self) -> bool:
        return self.status == "stable"

    def _pooled(self) -> np.ndarray:
        chosen = [self.windows[i] for i in self.stable_windows] if self.stable else list(self.windows)
        return np.array([ms for w in chosen for ms in w.latencies_ms])

    @property
    def throughput(self) -> float:
        """Samples per second over the stable windows: all their samples over all their wall time."""
        chosen = [self.windows[i] for i in self.stable_windows] if self.stable else list(self.windows)
        wall = sum(w.wall_ms for w in chosen)
        return sum(len(w.latencies_ms) for w in chosen) * self.batch_size / (wall / 1000) if wall > 0 else 0.0

    def percentile(self, q: float) -> float:
        pooled = self._pooled()
        return float(np.percentile(pooled, q)) if pooled.size else float("nan")

    @property
    def latency_ms(self) -> dict[str, float]:
        return {f"p{q}": self.percentile(q) for q in (50, 90, 95, 99)}

    def describe_windows(self) -> str:
        """Every window's throughput and p50, for an unstable result's message."""
        return "; ".join(
            f"#{i + 1}: {w.throughput:.1f}/s p50 {w.p50_ms:.3f} ms{' (throttled)' if w.throttled else ''}"
            for i, w in enumerate(self.windows)
        )


@dataclass(frozen=True)
class RuntimeProfile:
    """One runner's profile over the batch sizes it was measured at, and why the sweep stopped."""

    runtime: str
    batches: tuple[BatchProfile, ...]
    stop_reason: str
    config: ProfilerConfig = field(default_factory=ProfilerConfig)

    @property
    def stable(self) -> bool:
        return all(b.stable for b in self.batches if b.status != "error")

    def best(self) -> BatchProfile | None:
        """The stable batch size with the highest throughput."""
        stable = [b for b in self.batches if b.stable]
        return max(stable, key=lambda b: b.throughput) if stable else None


def warm_up(runner: Runner, inputs: Sequence[Sample], clock: Clock) -> float:
    """Run requests until plan building/compilation is over; return the first call's latency (ms)."""
    latencies = []
    for call in range(MAX_WARMUP_CALLS):
        latencies.append(_timed(runner, inputs[call % len(inputs)], clock))
        recent = latencies[1:][-WARMUP_CALLS:]
        if len(recent) == WARMUP_CALLS:
            middle = float(np.median(recent))
            if all(abs(x - middle) <= WARMUP_SPREAD * middle for x in recent):
                break
    return latencies[0]


def measure_window(
    runner: Runner, inputs: Sequence[Sample], batch_size: int, config: ProfilerConfig, clock: Clock, offset: int = 0
) -> WindowResult:
    """One window: measurement_request_count requests (COUNT_WINDOWS), or requests until
    measurement_interval ms have passed (TIME_WINDOWS); inputs rotate across requests."""
    latencies: list[float] = []
    started = clock()
    limit_ns = config.measurement_interval * 1e6
    while True:
        latencies.append(_timed(runner, inputs[(offset + len(latencies)) % len(inputs)], clock))
        if config.measurement_mode is MeasurementMode.COUNT_WINDOWS:
            if len(latencies) >= config.measurement_request_count:
                break
        elif clock() - started >= limit_ns:
            break
    return WindowResult(batch_size, tuple(latencies), (clock() - started) / 1e6)


def _timed(runner: Runner, sample: Sample, clock: Clock) -> float:
    started = clock()
    runner.infer(sample)
    runner.synchronize()
    return (clock() - started) / 1e6


def stable_set(windows: Sequence[WindowResult], config: ProfilerConfig) -> tuple[int, ...] | None:
    """Indices of the last `stabilization_windows` unthrottled windows when their throughput and their
    p50 latency each lie within stability_percentage of their mean; None when they do not (yet)."""
    usable = [i for i, w in enumerate(windows) if not w.throttled][-config.stabilization_windows :]
    if len(windows) < config.min_trials or len(usable) < config.stabilization_windows:
        return None
    for values in ([windows[i].throughput for i in usable], [windows[i].p50_ms for i in usable]):
        mean = float(np.mean(values))
        if mean <= 0 or any(abs(v - mean) > config.stability_percentage / 100 * mean for v in values):
            return None
    return tuple(usable)


def profile_batch(
    runner: Runner,
    inputs: Sequence[Sample],
    batch_size: int,
    config: ProfilerConfig,
    clock: Clock = time.perf_counter_ns,
    throttled: ThrottleProbe | None = None,
) -> BatchProfile:
    """Warm up, then measure windows until stable or max_trials; a runtime error is a result too."""
    try:
        cold = warm_up(runner, inputs, clock)
        windows: list[WindowResult] = []
        while len(windows) < config.max_trials:
            window = measure_window(runner, inputs, batch_size, config, clock, offset=len(windows))
            if throttled is not None and throttled():
                window = WindowResult(window.batch_size, window.latencies_ms, window.wall_ms, throttled=True)
            windows.append(window)
            chosen = stable_set(windows, config)
            if chosen is not None:
                return BatchProfile(batch_size, "stable", cold, tuple(windows), chosen)
    except Exception as exc:  # out of memory at a large batch ends the sweep there, reported
        return BatchProfile(batch_size, "error", None, error=f"{type(exc).__name__}: {exc}".strip())
    return BatchProfile(batch_size, "unstable", cold, tuple(windows))


def sweep_sizes(max_batch_size: int | None) -> list[int]:
    """Powers of two up to the runner's maximum (or SWEEP_LIMIT)."""
    limit = min(max_batch_size or SWEEP_LIMIT, SWEEP_LIMIT)
    sizes, size = [], 1
    while size <= limit:
        sizes.append(size)
        size *= 2
    return sizes


def profile_runner(
    runner: Runner,
    inputs_for: Callable[[int], Sequence[Sample]],
    config: ProfilerConfig,
    batch_sizes: Sequence[int] | None = None,
    clock: Clock = time.perf_counter_ns,
    throttled: ThrottleProbe | None = None,
) -> RuntimeProfile:
    """Profile each batch size in ascending order. Explicit sizes are all measured; the automatic
    sweep (powers of two) stops once throughput fails to grow by throughput_cutoff_threshold for
    throughput_backoff_limit sizes in a row. An error (e.g. out of memory) ends the sweep there."""
    explicit = batch_sizes is not None
    sizes = sorted(set(batch_sizes)) if batch_sizes is not None else sweep_sizes(runner.max_batch_size)
    profiles: list[BatchProfile] = []
    best, without_gain = 0.0, 0
    for size in sizes:
        profile = profile_batch(runner, inputs_for(size), size, config, clock, throttled)
        profiles.append(profile)
        if profile.status == "error":
            return RuntimeProfile(runner.runtime, tuple(profiles), f"batch size {size} failed: {profile.error}", config)
        if explicit:
            continue
        if profile.throughput > best * (1 + config.throughput_cutoff_threshold):
            without_gain = 0
        else:
            without_gain += 1
        best = max(best, profile.throughput)
        if without_gain >= config.throughput_backoff_limit:
            return RuntimeProfile(
                runner.runtime,
                tuple(profiles),
                f"throughput grew less than {config.throughput_cutoff_threshold:.0%} for {without_gain} batch sizes in a row",
                config,
            )
    reason = "all requested batch sizes measured" if explicit else f"reached the largest batch size ({sizes[-1]})"
    return RuntimeProfile(runner.runtime, tuple(profiles), reason, config)
