"""Runtime options and the artifact cache in real pytest sessions: ids, baseline keys, errors, restores."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

QUICK = ("--navigator-window=10", "--navigator-stability=50", "--navigator-max-trials=30", "--navigator-batch-sizes=1")


@pytest.fixture
def mlp(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> Path:
    target = pytester.path / "mlp.onnx"
    shutil.copy(tiny_models[".onnx"], target)
    shutil.copy(tiny_models[".onnx"].with_name("mlp.navigator.toml"), pytester.path)
    return target


def test_options_are_part_of_the_test_id_and_the_baseline_key(pytester: pytest.Pytester, mlp: Path) -> None:
    one_thread = "--navigator-runtime-option=onnxruntime-cpu:intra_op_num_threads=1,allow_spinning=false"
    recorded = pytester.runpytest(
        "--navigator-model=mlp.onnx", "--navigator-runtimes=onnxruntime-cpu", "--navigator-examples=2",
        *QUICK, one_thread, "--update-baselines", "-v",
    )  # fmt: skip
    recorded.assert_outcomes(passed=2)
    recorded.stdout.fnmatch_lines(
        [
            "mlp.onnx::test_correctness[[]onnxruntime-cpu:allow_spinning=false,intra_op_num_threads=1] PASSED*",
            "mlp.onnx::test_performance[[]onnxruntime-cpu:allow_spinning=false,intra_op_num_threads=1] PASSED*",
        ]
    )
    (path,) = (pytester.path / "baselines").glob("mlp-*.json")
    ((_, runtimes),) = json.loads(path.read_text())["entries"].items()
    assert list(runtimes) == ["onnxruntime-cpu:allow_spinning=false,intra_op_num_threads=1"]

    # the default options are another runtime: not compared with the one-thread entry
    default = pytester.runpytest(
        "--navigator-model=mlp.onnx", "--navigator-runtimes=onnxruntime-cpu", "--navigator-examples=2", *QUICK
    )
    default.assert_outcomes(passed=2)
    default.stdout.fnmatch_lines(["mlp.onnx *onnxruntime-cpu *1 *stable * new"])


def test_ini_options_and_the_command_line_merge(pytester: pytest.Pytester, mlp: Path) -> None:
    pytester.makeini(
        "[pytest]\nnavigator_runtime_options =\n    onnxruntime-cpu:intra_op_num_threads=2\n"
        "    onnxruntime-cpu:graph_optimization_level=basic\n"
    )
    result = pytester.runpytest(
        "--navigator-model=mlp.onnx", "--navigator-runtimes=onnxruntime-cpu", "--navigator-examples=2",
        "--navigator-no-profile", "--navigator-runtime-option=onnxruntime-cpu:intra_op_num_threads=1", "-v",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*test_correctness[[]onnxruntime-cpu:graph_optimization_level=basic,intra_op_num_threads=1] PASSED*"]
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "onnxruntime-cpu:threads=1",
            "*--navigator-runtime-option: onnxruntime-cpu has no option 'threads'; its options (OnnxRuntimeConfig): "
            "intra_op_num_threads (integer >= 0, default 0); *",
        ),
        (
            "onnxruntime-cpu:allow_spinning=sometimes",
            "*allow_spinning='sometimes' is not accepted; expected true | false*",
        ),
        ("onnxruntime-gpu:intra_op_num_threads=1", "*unknown runtime 'onnxruntime-gpu'; known runtimes: torch-cpu,*"),
        ("onnxruntime-cpu", "*--navigator-runtime-option='onnxruntime-cpu' is not RUNTIME:OPTION=VALUE*"),
    ],
)
def test_bad_options_stop_the_run_with_what_is_accepted(
    pytester: pytest.Pytester, mlp: Path, option: str, message: str
) -> None:
    result = pytester.runpytest("--navigator-model=mlp.onnx", f"--navigator-runtime-option={option}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_marker_sets_options_for_the_runner_fixture(pytester: pytest.Pytester, mlp: Path) -> None:
    pytester.makepyfile(
        test_mine="""
        import pytest

        @pytest.mark.navigator(runtime_options={"onnxruntime-cpu": {"intra_op_num_threads": 1}})
        def test_threads(navigator_runner):
            assert navigator_runner.runtime == "onnxruntime-cpu:intra_op_num_threads=1"
            assert navigator_runner.session.get_session_options().intra_op_num_threads == 1
        """
    )
    result = pytester.runpytest(
        "--navigator-model=mlp.onnx", "--navigator-runtimes=onnxruntime-cpu", "--navigator-no-profile",
        "--navigator-examples=1", "test_mine.py", "-v",
    )  # fmt: skip
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["test_mine.py::test_threads[[]mlp.onnx-onnxruntime-cpu:intra_op_num_threads=1] PASSED*"]
    )


def test_a_rerun_restores_artifacts_and_rebuild_builds_them_again(
    pytester: pytest.Pytester, tiny_models: dict[str, Path]
) -> None:
    shutil.copy(tiny_models[".pt2"], pytester.path / "mlp.pt2")
    shutil.copy(tiny_models[".pt2"].with_name("mlp.navigator.toml"), pytester.path)
    args = ("--navigator-model=mlp.pt2", "--navigator-runtimes=onnxruntime-cpu", "--navigator-no-profile",
            "--navigator-examples=2")  # fmt: skip
    cold = pytester.runpytest(*args)
    cold.assert_outcomes(passed=1)
    cold.stdout.fnmatch_lines(["mlp.pt2 *onnxruntime-cpu *cpu *passed * built onnx-export *"])
    assert list((pytester.path / ".navigator" / "cache" / "onnx-export").glob("*/model.onnx"))
    warm = pytester.runpytest(*args)
    warm.stdout.fnmatch_lines(["mlp.pt2 *onnxruntime-cpu *cpu *passed * restored onnx-export *"])
    rebuilt = pytester.runpytest(*args, "--navigator-rebuild")
    rebuilt.stdout.fnmatch_lines(
        ["mlp.pt2 *onnxruntime-cpu *cpu *passed * rebuilt onnx-export * (--navigator-rebuild)*"]
    )
    elsewhere = pytester.runpytest(*args, "--navigator-cache=elsewhere")
    elsewhere.stdout.fnmatch_lines(["* built onnx-export *"])
    assert list((pytester.path / "elsewhere" / "onnx-export").glob("*/model.onnx"))
