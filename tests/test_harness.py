"""The harness scripts run (their figures are reported, never asserted: timings are noisy here)."""

from __future__ import annotations

import pytest

from harness import bench_samples


def test_bench_samples_generates_what_it_reports(capsys: pytest.CaptureFixture[str]) -> None:
    seconds, elements = bench_samples.time_generation((1, 3, 8, 8), examples=4, run_seed=0)
    assert elements == 4 * 3 * 8 * 8 and seconds > 0
    bench_samples.main(["--examples", "3", "--shape", "2,4", "--repeats", "2"])
    assert "3 samples of float32[2, 4] per run, 2 runs" in capsys.readouterr().out


def test_bench_overhead_compares_profiler_and_bare_loop(capsys: pytest.CaptureFixture[str]) -> None:
    from harness import bench_overhead
    from pytest_navigator.config import ProfilerConfig

    found = bench_overhead.compare(
        50, rounds=2, config=ProfilerConfig(measurement_request_count=5, stability_percentage=100)
    )
    assert found["batch"] >= 1 and found["profiler"] > 0 and found["bare"] > 0
    assert found["ratio_min"] <= found["ratio"] <= found["ratio_max"]
    bench_overhead.main(["--rounds", "1", "--targets-us", "100", "--window", "5"])
    out = capsys.readouterr().out
    assert "profiler bookkeeping: " in out and "us per request" in out
    assert "~100 us request (tanh over float32[" in out and "(target >= 0.97: " in out
