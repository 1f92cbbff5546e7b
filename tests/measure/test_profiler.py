"""The profiler with a scripted runner and a fake clock: windows, stability, percentiles, sweep, errors."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from pytest_navigator.config import MeasurementMode, ProfilerConfig, Sample
from pytest_navigator.measure.profiler import (
    BatchProfile,
    WindowResult,
    measure_window,
    profile_batch,
    profile_runner,
    stable_set,
    sweep_sizes,
)
from pytest_navigator.measure.telemetry import DeviceReading
from pytest_navigator.model.spec import parse_io_spec
from pytest_navigator.runtimes.base import Runner

SPEC = parse_io_spec(["x:float32[N,4]"], "test")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


class ScriptedRunner(Runner):
    """Each request 'takes' latency_ms(batch, call) on the fake clock; synchronize is counted."""

    def __init__(self, clock: FakeClock, latency_ms: Callable[[int, int], float], max_batch: int | None = None) -> None:
        super().__init__("scripted", SPEC)
        self.clock, self.latency_ms, self.calls, self.syncs = clock, latency_ms, 0, 0
        self.seen: list[Any] = []
        self._max = max_batch

    @property
    def max_batch_size(self) -> int | None:
        return self._max

    def infer(self, sample: Sample) -> Sample:
        batch = sample["x"].shape[0]
        self.seen.append(float(sample["x"][0, 0]))
        self.clock.now += int(self.latency_ms(batch, self.calls) * 1e6)
        self.calls += 1
        return {"y": sample["x"]}

    def synchronize(self) -> None:
        self.syncs += 1


class ScriptedMonitor:
    """Reports the given (SM clock, reasons) after each window, of a GPU whose maximum is 1980 MHz."""

    def __init__(self, readings: Sequence[tuple[int, tuple[str, ...]]]) -> None:
        self.readings, self.started = iter(readings), 0

    def window_started(self) -> None:
        self.started += 1

    def window_ended(self) -> DeviceReading:
        clock, reasons = next(self.readings)
        return DeviceReading(clock, 1980, 60, reasons)


def _inputs(batch: int, count: int = 4) -> list[Sample]:
    return [{"x": np.full((batch, 4), i, np.float32)} for i in range(count)]


def test_count_windows_time_every_request_and_rotate_distinct_inputs() -> None:
    clock = FakeClock()
    runner = ScriptedRunner(clock, lambda b, i: 2.0)
    window = measure_window(runner, _inputs(2), 2, ProfilerConfig(measurement_request_count=6), clock)
    assert window.latencies_ms == (2.0,) * 6 and window.wall_ms == 12.0
    assert window.throughput == pytest.approx(6 * 2 / 0.012)
    assert runner.syncs == 6  # every timed request ends with synchronize()
    assert runner.seen == [0, 1, 2, 3, 0, 1]  # real distinct samples, rotated


def test_time_windows_run_until_the_interval_passed() -> None:
    clock = FakeClock()
    runner = ScriptedRunner(clock, lambda b, i: 3.0)
    config = ProfilerConfig(measurement_mode=MeasurementMode.TIME_WINDOWS, measurement_interval=10)
    window = measure_window(runner, _inputs(1), 1, config, clock)
    assert len(window.latencies_ms) == 4 and window.wall_ms == 12.0


def test_a_steady_runner_is_stable_after_min_trials_with_cold_start_apart() -> None:
    clock = FakeClock()
    runner = ScriptedRunner(clock, lambda b, i: 500.0 if i == 0 else 1.0)  # first call compiles
    profile = profile_batch(runner, _inputs(1), 1, ProfilerConfig(measurement_request_count=10), clock)
    assert profile.status == "stable" and len(profile.windows) == 3 and profile.stable_windows == (0, 1, 2)
    assert profile.cold_start_ms == 500.0
    assert all(ms == 1.0 for w in profile.windows for ms in w.latencies_ms)  # compilation never timed
    assert profile.throughput == pytest.approx(1000.0)


def test_an_unsteady_runner_is_unstable_after_max_trials_with_every_window() -> None:
    clock = FakeClock()
    calls_per_window = 100  # 100 ms and more: windows no shorter than MIN_WINDOW_MS keep their count

    def latency(batch: int, call: int) -> float:
        window = max(call - 4, 0) // calls_per_window  # after 4 warm-up calls
        return 1.0 if window % 2 == 0 else 2.0

    runner = ScriptedRunner(clock, latency)
    config = ProfilerConfig(measurement_request_count=calls_per_window, max_trials=6)
    profile = profile_batch(runner, _inputs(1), 1, config, clock)
    assert profile.status == "unstable" and len(profile.windows) == 6
    assert "#1: 1000.0/s p50 1.000 ms; #2: 500.0/s p50 2.000 ms" in profile.describe_windows()


def test_percentiles_pool_the_raw_latencies_of_the_stable_windows() -> None:
    clock = FakeClock()
    # 4 warm-up calls, then windows of 10 requests whose latencies are 1..10 ms in every window
    runner = ScriptedRunner(clock, lambda b, i: 5.0 if i < 4 else float((i - 4) % 10 + 1))
    profile = profile_batch(runner, _inputs(1), 1, ProfilerConfig(measurement_request_count=10), clock)
    pooled = np.tile(np.arange(1, 11, dtype=float), 3)
    assert profile.latency_ms == {f"p{q}": pytest.approx(float(np.percentile(pooled, q))) for q in (50, 90, 95, 99)}
    # pooled, not an average of per-window percentiles: one slow request in one window shows in p99
    from pytest_navigator.measure.profiler import BatchProfile, WindowResult

    spiky = BatchProfile(
        1, "stable", 1.0, (WindowResult(1, (1.0,) * 99 + (50.0,), 100.0), WindowResult(1, (1.0,) * 100, 100.0)), (0, 1)
    )
    assert spiky.percentile(99) == pytest.approx(float(np.percentile([1.0] * 199 + [50.0], 99)))
    assert spiky.percentile(50) == 1.0 and spiky.throughput == pytest.approx(1000.0)


def test_throttled_windows_are_left_out_of_the_stable_set() -> None:
    clock = FakeClock()
    runner = ScriptedRunner(clock, lambda b, i: 1.0)
    monitor = ScriptedMonitor([(1980, ()), (1980, ("hw_thermal_slowdown",)), (1980, ()), (1980, ())])
    profile = profile_batch(runner, _inputs(1), 1, ProfilerConfig(measurement_request_count=5), clock, monitor)
    assert profile.status == "stable" and profile.windows[1].throttled and profile.stable_windows == (0, 2, 3)
    assert monitor.started == 4  # read around every window


def test_a_window_with_the_sm_clock_below_three_quarters_of_its_maximum_is_throttled() -> None:
    clock = FakeClock()
    runner = ScriptedRunner(clock, lambda b, i: 1.0)
    monitor = ScriptedMonitor([(1400, ())] * 3 + [(1980, ("sw_power_cap",))] * 3)
    profile = profile_batch(runner, _inputs(1), 1, ProfilerConfig(measurement_request_count=5), clock, monitor)
    assert [w.throttled for w in profile.windows] == [True, True, True, False, False, False]
    assert profile.stable_windows == (3, 4, 5)
    assert "(throttled: SM 1400/1980 MHz" in profile.describe_windows()


def test_stability_needs_throughput_and_p50_both_within_the_percentage() -> None:
    from pytest_navigator.measure.profiler import WindowResult

    config = ProfilerConfig(stability_percentage=10)
    same = [WindowResult(1, (1.0, 1.0), 2.0)] * 3
    assert stable_set(same, config) == (0, 1, 2)
    # same throughput (wall time), but the median latency moved by 50%: not stable
    shifted = [*same[:2], WindowResult(1, (1.5, 1.5), 2.0)]
    assert stable_set(shifted, config) is None
    assert stable_set(same[:2], config) is None  # fewer than min_trials


def _throughput_plateau(batch: int, call: int) -> float:
    """Latency grows with the batch: throughput doubles up to 8 rows, then stays flat."""
    return 1.0 if batch <= 8 else batch / 8


def test_the_sweep_stops_when_throughput_stops_growing_for_backoff_sizes() -> None:
    clock = FakeClock()
    runner = ScriptedRunner(clock, _throughput_plateau, max_batch=1024)
    config = ProfilerConfig(measurement_request_count=5, throughput_backoff_limit=2)
    profile = profile_runner(runner, _inputs, config, clock=clock)
    assert [b.batch_size for b in profile.batches] == [1, 2, 4, 8, 16, 32]
    assert "grew less than 5% for 2 batch sizes in a row" in profile.stop_reason
    best = profile.best()
    assert best is not None and best.throughput == pytest.approx(8000.0)
    explicit = profile_runner(
        ScriptedRunner(clock, _throughput_plateau), _inputs, config, batch_sizes=[64, 1, 16], clock=clock
    )
    assert [b.batch_size for b in explicit.batches] == [1, 16, 64]  # explicit sizes: all of them, ascending


def test_out_of_memory_ends_the_sweep_and_is_reported() -> None:
    clock = FakeClock()

    def latency(batch: int, call: int) -> float:
        if batch >= 16:
            raise MemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return 1.0

    profile = profile_runner(
        ScriptedRunner(clock, latency, max_batch=1024),
        _inputs,
        ProfilerConfig(measurement_request_count=3),
        clock=clock,
    )
    assert [(b.batch_size, b.status) for b in profile.batches] == [
        (1, "stable"),
        (2, "stable"),
        (4, "stable"),
        (8, "stable"),
        (16, "error"),
    ]
    assert profile.stop_reason == "batch size 16 failed: MemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"


def test_sweep_sizes_are_powers_of_two_up_to_the_limit() -> None:
    assert sweep_sizes(20) == [1, 2, 4, 8, 16, 20]  # the declared maximum is a size users run at
    assert sweep_sizes(16) == [1, 2, 4, 8, 16]
    assert sweep_sizes(5000)[-1] == 1024
    assert sweep_sizes(None) == [1]  # no batch axis: one request is one sample


def test_inputs_are_prepared_once_per_batch_size_and_never_timed() -> None:
    clock = FakeClock()

    class SlowUpload(ScriptedRunner):
        prepared = 0

        def prepare(self, sample: Sample) -> Sample:
            self.prepared += 1
            self.clock.now += 10**9  # a second of host-to-device copying, outside the timer
            return sample

    runner = SlowUpload(clock, lambda b, i: 1.0)
    profile = profile_batch(runner, _inputs(1, count=4), 1, ProfilerConfig(measurement_request_count=5), clock)
    assert runner.prepared == 4 and profile.cold_start_ms == 1.0
    assert all(ms == 1.0 for w in profile.windows for ms in w.latencies_ms)


def test_ab_windows_alternate_and_pair_by_index(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_navigator.measure import profiler
    from pytest_navigator.measure.profiler import profile_pair

    monkeypatch.setattr(profiler, "SETTLE_SECONDS", 0.0)
    monkeypatch.setattr(profiler, "AB_MIN_WINDOW_MS", 0.0)  # windows of exactly the configured 4 requests
    clock = FakeClock()
    order: list[str] = []

    class Named(ScriptedRunner):
        def __init__(self, name: str, ms: float) -> None:
            super().__init__(clock, lambda b, i: ms)
            self.name = name

        def infer(self, sample: Sample) -> Sample:
            order.append(self.name)
            return super().infer(sample)

    new, old = Named("new", 2.0), Named("old", 1.0)
    config = ProfilerConfig(measurement_request_count=4, max_trials=3)  # fewer than AB_MIN_PAIRS
    first, second = profile_pair(new, old, _inputs(1), 1, config, clock)
    assert first.status == second.status == "stable"
    assert len(first.windows) == len(second.windows) == profiler.AB_MIN_PAIRS
    assert first.stable_windows == second.stable_windows == tuple(range(profiler.AB_MIN_PAIRS))
    assert first.throughput == pytest.approx(500.0) and second.throughput == pytest.approx(1000.0)
    assert order[-24::4] == ["new", "old"] * 3  # the last 6 windows of 4 requests: new, old, new, ...
    assert order[-24:-20] == ["new"] * 4


def test_ab_windows_last_long_enough_to_average_out_short_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_navigator.config import MeasurementMode
    from pytest_navigator.measure import profiler
    from pytest_navigator.measure.profiler import profile_pair

    monkeypatch.setattr(profiler, "SETTLE_SECONDS", 0.0)
    monkeypatch.setattr(profiler, "AB_MIN_WINDOW_MS", 20.0)
    clock = FakeClock()
    new, old = ScriptedRunner(clock, lambda b, i: 2.0), ScriptedRunner(clock, lambda b, i: 1.0)
    first, second = profile_pair(new, old, _inputs(1), 1, ProfilerConfig(measurement_request_count=4), clock)
    # 20 ms at the slower side's 2 ms per request: 10 requests a window, on both sides alike
    assert {len(w.latencies_ms) for w in first.windows + second.windows} == {10}
    timed = ProfilerConfig(measurement_mode=MeasurementMode.TIME_WINDOWS, measurement_interval=5.0)
    first, second = profile_pair(new, old, _inputs(1), 1, timed, clock)
    assert min(w.wall_ms for w in first.windows + second.windows) >= 20.0


def test_profiles_survive_the_trip_from_an_xdist_worker() -> None:
    """What a worker hands the controller is the profile's summary (every figure a view shows)."""
    import json

    from pytest_navigator.measure.summary import ProfileSummary

    clock = FakeClock()
    monitor = ScriptedMonitor([(1980, ())] * 2 + [(1200, ("hw_slowdown",))] + [(1980, ())] * 10)
    profile = profile_runner(
        ScriptedRunner(clock, lambda b, i: 1.0 + b, max_batch=2), _inputs, ProfilerConfig(measurement_request_count=3),
        clock=clock, monitor=monitor,
    )  # fmt: skip
    summary = ProfileSummary.of(profile)
    back = ProfileSummary.from_dict(json.loads(json.dumps(summary.to_dict())))
    assert back == summary and back.batches[0].windows[2].throttled
    assert back.batches[0].throughput == profile.batches[0].throughput


class _RecordingDomain:
    """nvtx.get_domain's object, recording each push and pop with the fake clock's time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.events: list[tuple[str, str, int]] = []

    def get_event_attributes(self, message: str) -> str:
        return message

    def push_range(self, attributes: str) -> None:
        self.events.append(("push", attributes, self.clock.now))

    def pop_range(self) -> None:
        self.events.append(("pop", "", self.clock.now))


def test_with_nvtx_every_timed_request_runs_in_a_range_named_after_runtime_and_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import types

    from pytest_navigator.measure import trace

    clock = FakeClock()
    domain = _RecordingDomain(clock)
    module = types.ModuleType("nvtx")
    module.get_domain = lambda name: domain if name == "navigator" else None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "nvtx", module)
    trace._nvtx_domain.cache_clear()
    try:
        runner = ScriptedRunner(clock, lambda b, i: 2.0)
        window = measure_window(runner, _inputs(4), 4, ProfilerConfig(measurement_request_count=5), clock)
    finally:
        trace._nvtx_domain.cache_clear()
    assert len(window.latencies_ms) == 5
    # one range per timed request, named navigator/<runtime>/bs<N>, around its whole latency
    assert [e[:2] for e in domain.events] == [("push", "navigator/scripted/bs4"), ("pop", "")] * 5
    spans = [(domain.events[i][2], domain.events[i + 1][2]) for i in range(0, 10, 2)]
    assert [(end - start) / 1e6 for start, end in spans] == list(window.latencies_ms)


def test_without_nvtx_no_range_and_with_the_real_package_the_calls_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_navigator.measure import trace

    monkeypatch.setitem(sys.modules, "nvtx", None)  # None makes `import nvtx` fail
    trace._nvtx_domain.cache_clear()
    assert trace.request_range("torch-cpu", 1) is None
    monkeypatch.delitem(sys.modules, "nvtx")
    trace._nvtx_domain.cache_clear()
    try:
        pytest.importorskip("nvtx", reason="the nvtx package is not installed (pip install nvtx)")
        mark = trace.request_range("torch-cpu", 8)
        assert mark is not None
        clock = FakeClock()
        window = measure_window(ScriptedRunner(clock, lambda b, i: 1.0), _inputs(8), 8, ProfilerConfig(), clock)
        assert len(window.latencies_ms) == ProfilerConfig().measurement_request_count  # no tool attached: no-ops
    finally:
        trace._nvtx_domain.cache_clear()


def test_the_summary_shows_the_median_of_the_runs_a_batch_size_was_measured_in() -> None:
    """A batch size measured in 3 processes: the summary shows the median run, as its baseline entry
    stores it and its verdict compares it, not the first process's own figures."""
    from pytest_navigator.measure.summary import BatchSummary

    def shown_figures(batch: BatchProfile) -> dict[str, float]:
        return BatchSummary.of(batch).shown_figures()

    window = WindowResult(2, (10.0,) * 10, 100.0)  # this process: 200 samples/s, p50 10 ms
    first = BatchProfile(2, "stable", 5.0, (window,) * 3, (0, 1, 2))
    assert shown_figures(first) == first.figures()
    runs = (
        first.figures(),
        {"throughput": 300.0, "p50": 6.0, "p95": 7.0, "p99": 8.0},
        {"throughput": 250.0, "p50": 8.0, "p95": 9.0, "p99": 12.0},
    )
    measured = dataclasses.replace(first, runs=runs)
    assert shown_figures(measured) == {"throughput": 250.0, "p50": 8.0, "p95": 9.0, "p99": 10.0}  # each the median
