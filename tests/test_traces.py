"""--navigator-trace: each runtime's own profiler after its timed windows, as Chrome trace JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

_SPY = """
import os

import torch

from pytest_navigator.runtimes import CallableRunner, RuntimeDefinition
from pytest_navigator.runtimes.torch_runtimes import build_eager


def spy(model, ctx):
    eager = build_eager(model, None)

    def run(sample):
        # one mark per request: "P" while a torch profiler records, "-" otherwise
        with open(os.environ["NAVIGATOR_TEST_SPY"], "a") as log:
            log.write("P" if torch.autograd.profiler._is_profiler_enabled else "-")
        return eager.infer(sample)

    return CallableRunner("spy", run, model.io_spec)


def pytest_navigator_register_runtimes(registry, config):
    registry.register(RuntimeDefinition("spy", spy))
"""
QUICK = (
    "--navigator-examples=2",
    "--navigator-window=10",
    "--navigator-stability=50",
    "--navigator-interference=report",
    "--navigator-batch-sizes=1,2",
    "-k",
    "test_performance",
)


@pytest.fixture
def mlp(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> Path:
    shutil.copy(tiny_models[".pt2"], pytester.path / "mlp.pt2")
    shutil.copy(tiny_models[".pt2"].with_name("mlp.navigator.toml"), pytester.path)
    return pytester.path / "mlp.pt2"


def test_torch_and_onnxruntime_traces_name_real_operators(pytester: pytest.Pytester, mlp: Path) -> None:
    result = pytester.runpytest_subprocess(
        "--navigator-model=mlp.pt2",
        "--navigator-runtimes=torch-cpu,onnxruntime-cpu",
        "--navigator-trace=traces",
        "--navigator-report=run.json",
        *QUICK,
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines_random(["*mlp.pt2 torch-cpu: traces: *bs1.trace.json, *bs2.trace.json"])
    report = json.loads((pytester.path / "run.json").read_text())
    assert report["schema_version"] == 4
    traces = {r["name"]: r["traces"] for r in report["models"][0]["runtimes"] if r["traces"]}
    assert sorted(traces) == ["onnxruntime-cpu", "torch-cpu"]
    for name, operators, top_word in (
        ("torch-cpu", {"aten::linear", "aten::addmm"}, "aten::"),
        ("onnxruntime-cpu", {"Gemm", "MatMul"}, "operator"),
    ):
        assert [Path(p).name for p in traces[name]] == ["bs1.trace.json", "bs2.trace.json"]
        for path in map(Path, traces[name]):
            assert path.parent == pytester.path / "traces" / "mlp.pt2" / name
            data = json.loads(path.read_text())
            events = data["traceEvents"] if isinstance(data, dict) else data
            named = {e.get("name") for e in events} | {(e.get("args") or {}).get("op_name") for e in events}
            assert named & operators, (name, sorted(str(n) for n in named)[:40])
            assert top_word in path.with_name(path.name.replace(".trace.json", ".top.txt")).read_text()


def test_tracing_runs_after_every_timed_window(
    pytester: pytest.Pytester, mlp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = pytester.path / "spy.log"
    monkeypatch.setenv("NAVIGATOR_TEST_SPY", str(log))
    pytester.makeconftest(_SPY)
    result = pytester.runpytest_subprocess(
        "--navigator-model=mlp.pt2", "--navigator-runtimes=spy", "--navigator-trace=traces", *QUICK
    )
    result.assert_outcomes(passed=1)
    marks = log.read_text()
    # timed windows, warm-up and the peak-memory pass first, then 3 traced requests per batch size
    assert marks.endswith("-" + "P" * 6) and marks.count("P") == 6, marks
    assert (pytester.path / "traces" / "mlp.pt2" / "spy" / "bs2.top.txt").is_file()
