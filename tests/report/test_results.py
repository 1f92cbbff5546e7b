"""One results model: RunResults round-trips through JSON, merges shards, and is what xdist hands over.

Plus the gate's policy without pytester, and the promise that a plain pytest run pays nothing for
the plugin (no ML import, no pytest-benchmark folder).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_navigator.check.correctness import CorrectnessReport, OutputSummary
from pytest_navigator.config import ProfilerConfig
from pytest_navigator.gate.policy import GateOutcome, Outcome, decide
from pytest_navigator.gate.verdicts import Comparison, Verdict
from pytest_navigator.measure.profiler import BatchProfile, RuntimeProfile, WindowResult
from pytest_navigator.measure.summary import ProfileSummary
from pytest_navigator.report.results import BaselineUpdate, ModelInfo, RunResults, Status

MODEL = Path("/models/resnet.pt2")


def _profile(runtime: str, stable: bool = True, latency: float = 2.0) -> RuntimeProfile:
    windows = tuple(WindowResult(2, (latency, latency * 1.1, latency * 0.9), 7.5) for _ in range(3))
    batch = BatchProfile(2, "stable" if stable else "unstable", 12.5, windows, (0, 1, 2) if stable else ())
    return RuntimeProfile(runtime, (batch,), "all requested batch sizes measured", ProfilerConfig(), 123.4)


def _comparison(runtime: str, verdict: Verdict, batch: int = 2) -> Comparison:
    return Comparison(
        runtime,
        batch,
        verdict,
        {"throughput": (1000.0, 800.0 if verdict is Verdict.REGRESSED else 1000.0, 950.0)},
        {"throughput": 1e-4},
        "beyond the limit" if verdict is Verdict.REGRESSED else "within the limits",
        {"torch": ("2.12.0", "2.13.0")},
        0.8,
        0.81,
    )


def _results(runtime: str, status: Status) -> RunResults:
    results = RunResults()
    results.models[MODEL] = ModelInfo(MODEL, "resnet.pt2", "ab" * 32, "torch-exportedprogram", "input:float32[N,3]")
    result = results.result(MODEL, runtime)
    result.status, result.detail, result.device, result.precision = status, "27 samples", "cpu", "fp32"
    result.build_seconds, result.artifacts = 1.5, ["built onnx-export 1.20 s"]
    result.correctness = CorrectnessReport(
        "resnet.pt2",
        runtime,
        "error budget (16x the reference's own rounding, fp32)",
        1,
        26,
        (OutputSummary("output", 4.8e-6, 1e-3, 40.0, False, 2.5, "float64 shadow"),),
        (1, 4, 8),
        ("a warning",),
        16.0,
        "",
    )
    result.profile = ProfileSummary.of(_profile(runtime))
    result.comparisons = [_comparison(runtime, Verdict.PASS)]
    result.measured = {("AMD EPYC x2", runtime, 2): {"throughput": 1000.0, "block_throughputs": [1.0, 2.0]}}
    return results


def test_run_results_round_trip_through_json_losslessly() -> None:
    results = _results("onnxruntime-cpu", Status.PASSED)
    results.baseline_updates[MODEL] = BaselineUpdate(
        Path("baselines/resnet-abab.json"), [(("hw", "r", 2), None, {"throughput": 1.0})]
    )
    text = results.to_json()
    again = RunResults.from_json(text)
    assert again == results  # every dataclass compares field by field: the figures every view shows
    assert again.to_json() == text
    record = again.runtimes[(MODEL, "onnxruntime-cpu")]
    assert record.status is Status.PASSED and record.correctness is not None
    assert record.correctness.outputs[0].budget_ratio == 2.5
    window = record.profile.batches[0].windows[0] if record.profile is not None else None
    assert window is not None and (window.requests, window.p50_ms) == (3, 2.0)
    assert record.comparisons[0].version_changes == {"torch": ("2.12.0", "2.13.0")}
    with pytest.raises(ValueError, match="not pytest-navigator run results"):
        RunResults.from_json(json.dumps({"format": 99}))


def test_shards_merge_failures_win_and_figures_are_kept() -> None:
    checked = _results("onnxruntime-cpu", Status.PASSED)  # worker 1 ran the correctness test
    profiled = RunResults()  # worker 2 built the runtime again and profiled it
    other = profiled.result(MODEL, "onnxruntime-cpu")
    other.status, other.profile = Status.BUILT, ProfileSummary.of(_profile("onnxruntime-cpu", latency=5.0))
    failing = _results("torchscript-cpu", Status.FAILED)
    merged = RunResults()
    for shard in (profiled, checked, failing, _results("torchscript-cpu", Status.PASSED)):
        merged.merge(RunResults.from_json(shard.to_json()))
    onnx = merged.runtimes[(MODEL, "onnxruntime-cpu")]
    assert onnx.status is Status.PASSED and onnx.correctness is not None  # passed beats built
    assert onnx.profile is not None and onnx.profile.batches[0].windows[0].p50_ms == 5.0  # first kept
    assert merged.runtimes[(MODEL, "torchscript-cpu")].status is Status.FAILED  # a failure anywhere is a failure
    assert list(merged.models) == [MODEL]


def test_model_profiles_peaks_and_traces_survive_json_and_shards_merge_their_batch_sizes() -> None:
    from dataclasses import replace

    shards = []
    for batch, flops in ((1, 100), (4, 400)):
        shard = RunResults()
        shard.models[MODEL] = ModelInfo(MODEL, "resnet.pt2", "ab" * 32, "pt2", "x", None)
        shard.models[MODEL].profile = {"parameters": 7, "flops": {str(batch): flops}, "counter": "c", "uncounted": []}
        record = shard.result(MODEL, "torch-cpu")
        peaked = replace(
            _profile("torch-cpu").batches[0],
            peak_rss=3 * 2**20,
            rss_scope="since reset",
            peak_cuda=2**20,
            gpu_process=5 * 2**20,
            engine_memory=2**10,
        )
        record.profile = ProfileSummary.of(replace(_profile("torch-cpu"), batches=(peaked,)))
        record.traces = [f"traces/bs{batch}.trace.json"]
        shards.append(shard)
    merged = RunResults()
    for shard in shards:
        merged.merge(RunResults.from_json(shard.to_json()))
    assert merged.models[MODEL].profile == {
        "parameters": 7,
        "flops": {"1": 100, "4": 400},
        "counter": "c",
        "uncounted": [],
    }
    record = merged.runtimes[(MODEL, "torch-cpu")]
    assert record.traces == ["traces/bs1.trace.json"]  # the first shard's, as other figures
    assert record.profile is not None and record.profile.batches[0].memory("rss_bytes") == 3 * 2**20
    assert record.profile.batches[0].peak_memory == {
        "rss_scope": "since reset",
        "rss_bytes": 3 * 2**20,
        "cuda_bytes": 2**20,
        "gpu_process_bytes": 5 * 2**20,
        "engine_bytes": 2**10,
    }
    from pytest_navigator.report.terminal import gpu_memory_line

    assert gpu_memory_line(record.profile.batches[0]) == (
        "torch allocator peak 1.0 MiB, process holds (NVML) 5.0 MiB, engine device memory 0.0 MiB"
    )
    assert gpu_memory_line(ProfileSummary.of(_profile("torch-cpu")).batches[0]) == ""  # a CPU runtime: no line


# -- the gate's policy, without pytest ---------------------------------------------------------------


def test_gate_passes_stable_unregressed_profiles() -> None:
    assert decide("r", "m.pt2", _profile("r"), [_comparison("r", Verdict.PASS)]) == GateOutcome(Outcome.PASS)


def test_gate_fails_a_regression_with_its_figures_unless_updating() -> None:
    regressed = [_comparison("r", Verdict.REGRESSED)]
    outcome = decide("r", "m.pt2", _profile("r"), regressed, judged_against="baselines/m-abc.json")
    assert outcome.outcome is Outcome.FAIL
    assert outcome.message.startswith("r on m.pt2 regressed against baselines/m-abc.json:\nr batch 2: REGRESSED")
    assert "throughput 1000 -> 800 samples/s (-20.0%)" in outcome.message and "--update-baselines" in outcome.message
    assert decide("r", "m.pt2", _profile("r"), regressed, update=True).outcome is Outcome.PASS


def test_gate_on_unstable_measurements_fails_or_warns() -> None:
    unstable = _profile("r", stable=False)
    failed = decide("r", "m.pt2", unstable, [_comparison("r", Verdict.INCONCLUSIVE)])
    assert failed.outcome is Outcome.FAIL and "the measurement is unstable at batch size 2" in failed.message
    warned = decide("r", "m.pt2", unstable, [_comparison("r", Verdict.INCONCLUSIVE)], inconclusive="warn")
    assert warned.outcome is Outcome.WARN and warned.warning.startswith("INCONCLUSIVE: r on m.pt2")


def test_gate_requires_a_baseline_when_asked() -> None:
    new = [_comparison("r", Verdict.NEW)]
    assert decide("r", "m.pt2", _profile("r"), new).outcome is Outcome.PASS
    required = decide("r", "m.pt2", _profile("r"), new, require_baseline=True, hardware="AMD EPYC x2")
    assert required.outcome is Outcome.FAIL
    assert (
        "no baseline for batch size 2 on AMD EPYC x2" in required.message
        and "--navigator-require-baseline" in required.message
    )


# -- xdist: the controller's report carries every worker's findings ----------------------------------

_COPIES = """
from pytest_navigator.runtimes import RuntimeDefinition
from pytest_navigator.runtimes.torch_runtimes import build_eager


def pytest_navigator_register_runtimes(registry, config):
    for index in range(4):
        registry.register(RuntimeDefinition(f"copy-{index}", build_eager))
"""


@pytest.mark.parametrize("workers", [2, 4])
def test_the_xdist_controllers_report_carries_correctness_for_every_runtime(
    pytester: pytest.Pytester, tiny_models: dict[str, Path], workers: int
) -> None:
    pytest.importorskip("xdist")
    shutil.copy(tiny_models[".pt2"], pytester.path / "mlp.pt2")
    shutil.copy(tiny_models[".pt2"].with_name("mlp.navigator.toml"), pytester.path)
    pytester.makeconftest(_COPIES)
    runtimes = ["torch-cpu", *(f"copy-{i}" for i in range(4))]
    result = pytester.runpytest_subprocess(
        "--navigator-model=mlp.pt2",
        f"--navigator-runtimes={','.join(runtimes)}",
        "--navigator-no-profile",
        "--navigator-examples=3",
        "--navigator-report=report.json",
        "-n",
        str(workers),
        "-p",
        "xdist",
    )
    result.assert_outcomes(passed=len(runtimes))
    report = json.loads((pytester.path / "report.json").read_text())
    (model,) = report["models"]
    found = {r["name"]: r for r in model["runtimes"]}
    assert set(found) == set(runtimes)
    for name in runtimes:
        correctness = found[name]["correctness"]
        assert found[name]["status"] == "passed" and correctness is not None, name
        assert correctness["samples"] == 5 and correctness["outputs"][0]["truth"] == "float64 shadow"


# -- a plain pytest run pays nothing -----------------------------------------------------------------


def test_a_plain_run_imports_no_ml_library_and_leaves_no_benchmark_folder(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_plain="""
        import sys

        def test_nothing_heavy():
            assert not {"torch", "onnxruntime", "tensorrt", "onnx"} & set(sys.modules)
        """
    )
    # pytest-benchmark is a dev dependency only: a user's install does not have it (no "benchmark:"
    # header line, no .benchmarks/ folder); in this dev environment, run as a user's would
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:benchmark")
    result.assert_outcomes(passed=1)
    assert not (pytester.path / ".benchmarks").exists() and not (pytester.path / ".navigator").exists()
    from importlib import metadata

    requires = metadata.requires("pytest-navigator") or []
    runtime_requirements = [r for r in requires if "extra ==" not in r]
    assert runtime_requirements and not any(r.startswith("pytest-benchmark") for r in runtime_requirements)


def test_the_report_header_names_what_decides_the_run(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> None:
    shutil.copy(tiny_models[".pt2"], pytester.path / "mlp.pt2")
    shutil.copy(tiny_models[".pt2"].with_name("mlp.navigator.toml"), pytester.path)
    result = pytester.runpytest(
        "--navigator-model=mlp.pt2",
        "--navigator-runtimes=torch-cpu",
        "--navigator-no-profile",
        "--navigator-seed=7",
        "--navigator-cache=none",
        "--hypothesis-profile=navigator-dev",
    )
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["navigator: hypothesis profile 'navigator-dev', run seed 7 (given), cache none, baselines */baselines"]
    )
