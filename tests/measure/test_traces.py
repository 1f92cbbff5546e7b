"""--navigator-trace: each runtime's own profiler after its timed windows, as Chrome trace JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

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
    assert report["schema_version"] == 5
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


class _FakeTensor:
    def __init__(self, batch: int) -> None:
        self.shape = (batch, 4)

    def dim(self) -> int:
        return 2


class _FakeContext:
    """An IExecutionContext as TensorRT's Python binding has it: a settable profiler, enqueue_emits_profile,
    report_to_profiler() (which hands the last enqueue's layer times to the profiler)."""

    def __init__(self, log: list[str]) -> None:
        self.log, self.enqueue_emits_profile, self.profile_index = log, True, 0
        self.profiler: Any = None

    def set_optimization_profile_async(self, index: int, stream: int) -> None:
        self.profile_index = index

    def report_to_profiler(self) -> None:
        self.log.append("report")
        for name, ms in (("/fc1/MatMul + /relu/Relu", 0.25), ("/fc2/Gemm", 0.125)):
            self.profiler.report_layer_time(f"{name} [profile {self.profile_index}]", ms)


def test_tensorrt_traces_layers_from_an_iprofiler_and_tells_its_engine_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TensorRTRunner.trace and device_memory_bytes against a stand-in for the tensorrt binding
    (no TensorRT or GPU here): the profiler sits on a context of its own per batch size, is read
    after the stream is done, and its reports become a Chrome trace and a table by layer."""
    import sys
    import types

    from pytest_navigator.runtimes.tensorrt_runtimes import TensorRTRunner

    class IProfiler:
        def __init__(self) -> None:
            pass

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(IProfiler=IProfiler))
    log: list[str] = []
    contexts: list[_FakeContext] = []

    def new_context() -> _FakeContext:
        contexts.append(_FakeContext(log))
        return contexts[-1]

    runner = object.__new__(TensorRTRunner)
    runner.runtime = "tensorrt"
    runner.profiles = {4: 2}  # batch 4 has a profile of its own; batch 1 is served by profile 0
    runner.stream = types.SimpleNamespace(cuda_stream=0)  # type: ignore[assignment]
    runner.engine = types.SimpleNamespace(
        create_execution_context=new_context, get_device_memory_size_for_profile_v2=lambda i: 1000 + i
    )
    runner.prepare = lambda sample: [("x", _FakeTensor(sample))]  # type: ignore[method-assign, arg-type]
    runner._enqueue = lambda context, prepared: log.append(f"enqueue bs{prepared[0][1].shape[0]}")  # type: ignore[method-assign, assignment, return-value]
    runner.synchronize = lambda: log.append("sync")  # type: ignore[method-assign]
    top = runner.trace([1, 1, 4], tmp_path / "bs.trace.json")  # type: ignore[list-item]
    assert log == ["enqueue bs1", "sync", "report"] * 2 + ["enqueue bs4", "sync", "report"]
    assert len(contexts) == 2 and all(not c.enqueue_emits_profile for c in contexts)
    events = json.loads((tmp_path / "bs.trace.json").read_text())["traceEvents"]
    requests = [e for e in events if e.get("cat") == "request"]
    layers = [e for e in events if e.get("cat") == "tensorrt layer"]
    assert [e["name"] for e in requests] == [f"navigator/tensorrt/request {i}" for i in (1, 2, 3)]
    assert [(e["name"], e["dur"]) for e in layers[:2]] == [
        ("/fc1/MatMul + /relu/Relu [profile 0]", 250.0),
        ("/fc2/Gemm [profile 0]", 125.0),
    ]
    assert layers[-1]["name"] == "/fc2/Gemm [profile 2]"  # batch 4 ran on its own profile
    # laid end to end inside their request
    assert layers[1]["ts"] == layers[0]["ts"] + 250.0 and requests[0]["dur"] == 375.0
    lines = top.splitlines()
    assert lines[0].split() == ["layer", "calls", "total", "us", "mean", "us", "share"]
    # the slowest layer first: 2 of the 3 requests ran on profile 0, 2 x 250 us of 1125 us in all
    assert lines[2].split() == ["/fc1/MatMul", "+", "/relu/Relu", "[profile", "0]", "2", "500", "250", "44.4%"]
    assert runner.device_memory_bytes(4) == 1002 and runner.device_memory_bytes(1) == 1000
    runner.engine = types.SimpleNamespace(device_memory_size=512)  # an older binding: the engine's maximum
    assert runner.device_memory_bytes(4) == 512
    runner.engine = types.SimpleNamespace()
    assert runner.device_memory_bytes(1) is None
