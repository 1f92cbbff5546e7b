"""The harness scripts run (their figures are reported, never asserted: timings are noisy here)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness import bench_samples
from pytest_navigator.runtimes.environment import available_cores


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
    bench_overhead.main(["--rounds", "1", "--targets-us", "100", "--window", "5", "--isolated"])
    out = capsys.readouterr().out
    assert "profiler bookkeeping: " in out and "us per request" in out
    assert "~100 us request, in-process (tanh over float32[" in out and "(target >= 0.97: " in out
    assert "~100 us request, profiler in a worker process (tanh over float32[" in out


def test_bench_detection_judges_each_run_with_every_gate(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Processes' measurements (here in this process, as each child would take them): a recording of
    two, then a group of three judged by every gate; 2 ms of busy work on a request of tens of
    microseconds is caught by each of them, and the calibration correlation is computed."""
    from harness.bench_detection import GATES, _entry, calibration_line, judge_group, one_process, record
    from pytest_navigator.config import ProfilerConfig
    from pytest_navigator.measure import profiler

    # short A/B windows and pauses: the tiny model keeps no thread pool busy, and the 2 ms is far beyond noise
    monkeypatch.setattr(profiler, "SETTLE_SECONDS", 0.02)
    monkeypatch.setattr(profiler, "AB_MIN_WINDOW_MS", 50.0)

    # no luck needed when busy; short windows: the slowed condition's requests take 2 ms
    lenient = ProfilerConfig(stability_percentage=60, max_trials=8, interference="report", measurement_request_count=10)
    where = (tiny_models[".onnx"], tmp_path / "baselines", tmp_path / "cache", "onnxruntime-cpu")
    recorded = [one_process(*where, {"unchanged": 0.0}, config=lenient, pairs=False) for _ in range(2)]
    recording = _entry(recorded, "unchanged")
    assert recording is not None
    stored, pooled = record(None, recording)
    assert not pooled and len(stored["runs"]) == 2
    judged = [one_process(*where, {"+2ms": 0.002}, config=lenient) for _ in range(3)]
    mean = recorded[-1]["conditions"]["unchanged"]["mean_ms"]
    slowed = judge_group(stored, mean, judged, "+2ms")
    assert set(GATES) <= set(slowed)
    for gate in GATES:
        assert set(slowed[gate]) == {"regressed"}, (gate, slowed)
    assert slowed["mde stored"] > 0 and slowed["mde A/B"] > 0
    assert calibration_line(recorded * 2).startswith("calibration vs throughput over 4 processes: Pearson r ")


def test_bench_walltime_repeats_each_figure_and_reports_the_median(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Each repeat of a cold run gets a new empty cache, its warm run the cold run's; the median of
    the repeats is what is compared with the target (the pytest runs are stood in for)."""
    from harness import bench_walltime

    calls: list[tuple[str, str]] = []
    times = iter([80.0, 70.0, 100.0, 50.0, 95.0, 40.0])

    def fake_run(
        model: Path, cache: Path, workdir: Path, with_hog: bool, ci: bool, python: str
    ) -> tuple[float, str, list[str]]:
        calls.append((model.name, cache.name))
        assert ci and python == "/usr/bin/python3"
        return next(times), "8 passed", []

    monkeypatch.setattr(bench_walltime, "run", fake_run)
    cores = len(available_cores())
    readings = iter([(0.0, 0.0), (5.0, 0.425 * cores)])  # before, after: 8.5% of every core's 5 s stolen
    monkeypatch.setattr(bench_walltime, "cpu_times", lambda: next(readings))
    monkeypatch.setattr(
        bench_walltime, "make_models", lambda folder, which: {"demo": folder / "d.pt2", "mobilenet": folder / "m.pt2"}
    )
    bench_walltime.main(["--repeat", "2", "--keep", str(tmp_path), "--ci", "--python", "/usr/bin/python3"])
    assert calls == [
        ("d.pt2", "cache-demo-0"),
        ("m.pt2", "cache-mobilenet-0"),
        ("m.pt2", "cache-mobilenet-0"),  # warm: the cold run's cache
        ("d.pt2", "cache-demo-1"),
        ("m.pt2", "cache-mobilenet-1"),
        ("m.pt2", "cache-mobilenet-1"),
    ]
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"machine: {bench_walltime.machine()}"
    assert out.splitlines()[-1] == "steal: 8.5% of the machine's CPU time over the series"
    assert "median demo              65.0 s of 80.0, 50.0 (target 60 s: missed)" in out
    assert "median mobilenet cold    82.5 s of 70.0, 95.0 (target 80 s: missed)" in out
    assert "median mobilenet warm    70.0 s of 100.0, 40.0 (target 30 s: missed)" in out


def test_bench_walltime_names_the_machine_and_what_its_hypervisor_stole(tmp_path: Path) -> None:
    """A figure is only comparable with one taken on the same kind of machine: the bench names the CPU
    as a baseline does, and the share of CPU time stolen over the series, from /proc/stat."""
    from harness.bench_walltime import cpu_times, machine, steal_line
    from pytest_navigator.measure.telemetry import cpu_model

    named = machine()
    assert named.startswith(f"{cpu_model()} x") and named.endswith(")")
    tick = os.sysconf("SC_CLK_TCK")
    stat = tmp_path / "stat"  # the CPUs this process may run on, each with 0.5 s of steal
    stat.write_text("".join(f"cpu{c} 100 0 50 800 10 0 5 {tick // 2} 0 0\n" for c in available_cores()))
    wall, stolen = cpu_times(str(stat)) or (0.0, 0.0)
    assert wall > 0 and stolen == pytest.approx(0.5 * len(available_cores()))
    assert cpu_times(str(tmp_path / "absent")) is None
    assert steal_line((0.0, 0.4), (5.0, 1.25), 2) == "steal: 8.5% of the machine's CPU time over the series"
    assert steal_line((5.0, 0.4), (5.0, 0.4), 2) == "steal: no CPU time passed"
    assert steal_line(None, (5.0, 1.25), 2) == "steal: not known here (no /proc/stat)"


def test_bench_detection_names_the_architectures_it_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    from harness import bench_detection

    with pytest.raises(SystemExit):
        bench_detection.main(["--architecture", "alexnet"])
    err = capsys.readouterr().err
    assert "--architecture: unknown alexnet; accepted: resnet, mobilenet_v3_small, resnet18, vit, bert, gpt2" in err


def test_bench_walltime_says_where_each_run_went() -> None:
    """Each run's line is followed by its phases, read from the run's own output: outside pytest's session,
    the truths computed or restored, each build made or restored (a slower machine slows every one)."""
    from harness.bench_walltime import phases

    output = "\n".join(
        [
            "m.pt2  torch-cpu        cpu  passed   0.3  restored truth 0.01 s (2 of 26 samples); "
            "computed truth 7.91 s (24 of 26 samples)  27 samples at batch sizes 1-8",
            "m.pt2  torch-aoti-cpu   cpu  passed  51.1  built torch-aoti 51.01 s                 27 samples",
            "m.pt2  onnxruntime-cpu  cpu  passed   0.2  restored onnx-export 0.01 s              27 samples",
            "======== 8 passed, 16 skipped in 26.50s ========",
        ]
    )
    assert phases(output, 34.5) == (
        "outside the session 8.0 s; restored truth 0.01 s (2 samples); computed truth 7.91 s (24 samples); "
        "builds: torch-aoti 51.01 s (built), onnx-export 0.01 s (restored)"
    )
    assert phases("pytest died", 3.0) == "no session time"


def test_bench_truth_threads_times_the_same_truths_on_two_threads_and_one(
    tiny_models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Each round computes the truths of the same samples under each setting; the one-thread setting
    is torch's OpenMP limit, put back after it (the figures are reported, never asserted)."""
    import torch

    from harness import bench_truth_threads

    threads = torch.get_num_threads()
    with bench_truth_threads.settings()["one thread"]():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == threads
    rounds = list(bench_truth_threads.measure(tiny_models[".pt2"], samples=3, rounds=2))
    assert [name for name, _, _ in rounds] == ["two threads", "one thread"] * 2
    assert all(wall > 0 and cpu >= 0 for _, wall, cpu in rounds)
    bench_truth_threads.main(["--model", str(tiny_models[".pt2"]), "--samples", "2", "--rounds", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"truths of 2 samples of {tiny_models['.pt2'].name} (batch 1-8), no other load started:"
    assert [line.split()[0:2] for line in lines[1:]] == [["two", "threads"], ["one", "thread"]]
    with pytest.raises(SystemExit):
        bench_truth_threads.main(["--architecture", "alexnet"])
    assert "--architecture: unknown alexnet; accepted: mobilenet_v3_small" in capsys.readouterr().err
