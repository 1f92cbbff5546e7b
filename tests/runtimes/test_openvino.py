"""openvino-cpu: OpenVINO's CPU plugin, checked, profiled, cached, traced and gated like any runtime."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from pytest_navigator.errors import RuntimeBuildError
from pytest_navigator.runtimes import default_registry
from pytest_navigator.runtimes.runtime_options import OpenVINOConfig, RuntimeOptionError

NO_OPENVINO = "openvino is not installed (pip install 'pytest-navigator[openvino]')"
needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason=NO_OPENVINO)
#: Short windows and a tolerance no busy machine breaks: these tests are about behaviour, not speed.
QUICK = ("--navigator-window=5", "--navigator-stability=50", "--navigator-max-trials=30")


@pytest.fixture
def mlp(pytester: pytest.Pytester, tiny_models: dict[str, Path], request: pytest.FixtureRequest) -> Path:
    suffix = getattr(request, "param", ".pt2")
    target = pytester.path / f"mlp{suffix}"
    shutil.copy(tiny_models[suffix], target)
    return target


@needs_openvino
@pytest.mark.parametrize("mlp", [".pt2", ".onnx"], indirect=True)
def test_a_torch_and_an_onnx_model_are_checked_and_profiled(pytester: pytest.Pytester, mlp: Path) -> None:
    result = pytester.runpytest(
        f"--navigator-model={mlp.name}", "--navigator-runtimes=openvino-cpu", "--navigator-batch-sizes=1,4", *QUICK
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            f"{mlp.name} *openvino-cpu *cpu *passed *27 samples at batch sizes 1-*, max abs error *",
            "*navigator performance*",
            f"{mlp.name} *openvino-cpu *1 *stable *",
            f"{mlp.name} *openvino-cpu *4 *stable *",
        ]
    )


@needs_openvino
def test_openvino_is_in_the_default_cpu_set_when_installed(pytester: pytest.Pytester, mlp: Path) -> None:
    assert "openvino-cpu" in default_registry().names
    result = pytester.runpytest("--navigator-model=mlp.pt2", "--collect-only", "-q", "-m", "not gpu")
    assert "mlp.pt2::test_correctness[openvino-cpu]" in result.outlines


def test_openvino_is_skipped_with_the_install_command_when_absent(
    pytester: pytest.Pytester, mlp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # importlib.util.find_spec now says: not installed
    result = pytester.runpytest("--navigator-model=mlp.pt2", "--navigator-runtimes=openvino-cpu", "-rs")
    result.assert_outcomes(skipped=2)
    assert f"SKIPPED [2] mlp.pt2: openvino-cpu: {NO_OPENVINO}" in result.stdout.str()


@needs_openvino
def test_options_are_part_of_the_runtime_id_and_throughput_mode_splits_a_batch(
    pytester: pytest.Pytester, mlp: Path
) -> None:
    option = "--navigator-runtime-option=openvino-cpu:performance_hint=THROUGHPUT,inference_num_threads=1"
    ids = pytester.runpytest("--navigator-model=mlp.pt2", "--navigator-runtimes=openvino-cpu", option, "--collect-only")
    assert "test_correctness[openvino-cpu:inference_num_threads=1,performance_hint=THROUGHPUT]" in ids.stdout.str()
    # checked in throughput mode: every sample's batch split over the AsyncInferQueue and put back together
    run = pytester.runpytest(
        "--navigator-model=mlp.pt2", "--navigator-runtimes=openvino-cpu", option, "--navigator-no-profile"
    )
    run.assert_outcomes(passed=1)


def test_an_option_out_of_range_or_unknown_is_a_usage_error() -> None:
    with pytest.raises(RuntimeOptionError, match=r"num_streams=4096 is out of range on this machine; expected 0"):
        OpenVINOConfig(num_streams=4096)
    with pytest.raises(RuntimeOptionError, match=r"inference_precision='fp8' is not accepted; expected f32 \| bf16"):
        OpenVINOConfig(inference_precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(
        RuntimeOptionError, match=r"performance_hint='FAST' is not accepted; expected LATENCY \| THROUGHPUT"
    ):
        OpenVINOConfig(performance_hint="FAST")  # type: ignore[arg-type]


def test_bf16_is_an_option_that_changes_the_precision_it_is_judged_at(tmp_path: Path) -> None:
    from pytest_navigator.runtimes.builds import Builds
    from pytest_navigator.settings import Settings

    builds = Builds(Settings(models=()), default_registry(), tmp_path, sweep=lambda limit: [1])
    assert builds.precision("openvino-cpu") == "fp32"
    assert builds.precision("openvino-cpu:inference_precision=bf16") == "bf16"


@needs_openvino
def test_a_rerun_loads_the_compiled_model_from_the_artifact_cache(pytester: pytest.Pytester, mlp: Path) -> None:
    args = ("--navigator-model=mlp.pt2", "--navigator-runtimes=openvino-cpu", "--navigator-no-profile")
    first = pytester.runpytest(*args)
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*openvino-cpu *passed *built onnx-export*built openvino-compile*"])
    assert list((pytester.path / ".navigator" / "cache" / "openvino").glob("*.blob"))
    second = pytester.runpytest(*args)
    second.assert_outcomes(passed=1)
    second.stdout.fnmatch_lines(["*openvino-cpu *passed *restored onnx-export*restored openvino-compile*"])
    uncached = pytester.runpytest(*args, "--navigator-cache=none")
    uncached.assert_outcomes(passed=1)
    assert "openvino-compile" not in uncached.stdout.str()


@needs_openvino
def test_a_trace_is_a_layer_table_from_openvinos_performance_counters(pytester: pytest.Pytester, mlp: Path) -> None:
    result = pytester.runpytest(
        "--navigator-model=mlp.pt2",
        "--navigator-runtimes=openvino-cpu",
        "--navigator-batch-sizes=2",
        "--navigator-trace=traces",
        *QUICK,
    )
    result.assert_outcomes(passed=2)
    folder = pytester.path / "traces" / "mlp.pt2" / "openvino-cpu"
    table = (folder / "bs2.top.txt").read_text().splitlines()
    assert table[0].split() == ["layer", "calls", "total", "us", "mean", "us", "share"]
    assert any("FullyConnected" in line for line in table[2:])  # the MLP's Linear layers, as OpenVINO ran them
    events = json.loads((folder / "bs2.trace.json").read_text())["traceEvents"]
    layers = [e for e in events if e.get("cat") == "openvino layer"]
    requests = [e for e in events if e.get("cat") == "request"]
    assert len(requests) == 3 and layers and all(e["dur"] >= 0 for e in layers)
    assert {e["args"]["request"] for e in layers} == {1, 2, 3}


def _onnx_with(tmp_path: Path, op: str, domain: str) -> Path:
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node(op, ["x"], ["y"], domain=domain)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(domain, 1)])
    path = tmp_path / f"{op}.onnx"
    save(model, str(path))
    return path


@needs_openvino
def test_an_unsupported_operator_and_an_unreadable_file_are_named(tmp_path: Path) -> None:
    from pytest_navigator.runtimes.openvino_runtimes import read_onnx

    with pytest.raises(RuntimeBuildError) as unsupported:
        read_onnx(_onnx_with(tmp_path, "NoSuchOp", "com.example"), "custom.onnx")
    message = str(unsupported.value)
    assert "openvino-cpu: OpenVINO" in message and "cannot convert custom.onnx" in message
    assert "No conversion rule found for operations: com.example.NoSuchOp" in message
    assert "src/frontends" not in message  # no C++ source locations
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a protobuf" * 8)
    with pytest.raises(
        RuntimeBuildError, match=r"cannot read junk.onnx \(.*junk.onnx\) as ONNX: Model can't be parsed"
    ):
        read_onnx(junk, "junk.onnx")


@needs_openvino
def test_instruction_counts_build_it_single_threaded_and_agree_across_processes(
    pytester: pytest.Pytester, mlp: Path
) -> None:
    from pytest_navigator.measure import instructions, valgrind

    found = valgrind.find()
    if isinstance(found, str):
        pytest.skip(found)
    result = pytester.runpytest_subprocess(
        "--navigator-model=mlp.pt2",
        "--navigator-runtimes=openvino-cpu",
        "--navigator-mode=instructions",
        "--navigator-report=run.json",
    )
    result.assert_outcomes(passed=2)
    runtimes = json.loads((pytester.path / "run.json").read_text())["models"][0]["runtimes"]
    (counted,) = [r for r in runtimes if r["name"].startswith("openvino-cpu")]
    assert counted["name"] == "openvino-cpu:inference_num_threads=1,num_streams=1"  # one compute thread, one stream
    counts = counted["profile"]["batches"][0]["instructions"]["repeats"]
    assert len(counts) == instructions.REPEATS and min(counts) > 1e5
    assert (max(counts) - min(counts)) / min(counts) < 0.02  # separate processes, the same work
