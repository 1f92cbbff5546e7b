"""The harness scripts run (their figures are reported, never asserted: timings are noisy here)."""

from __future__ import annotations

import pytest

from harness import bench_samples


def test_bench_samples_generates_what_it_reports(capsys: pytest.CaptureFixture[str]) -> None:
    seconds, elements = bench_samples.time_generation((1, 3, 8, 8), examples=4, run_seed=0)
    assert elements == 4 * 3 * 8 * 8 and seconds > 0
    bench_samples.main(["--examples", "3", "--shape", "2,4", "--repeats", "2"])
    assert "3 samples of float32[2, 4] per run, 2 runs" in capsys.readouterr().out
