"""Correctness settings in real pytest sessions: samples files, replay, verify fixture and marker, dataloader."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

_DOUBLING_RUNTIME = """
from pytest_navigator.runtimes import CallableRunner, RuntimeDefinition
from pytest_navigator.runtimes.torch_runtimes import build_eager


def pytest_navigator_register_runtimes(registry, config):
    def build(model, ctx):
        eager = build_eager(model, ctx)
        return CallableRunner("doubling", lambda s: {k: 2 * v for k, v in eager.infer(s).items()}, model.io_spec)

    registry.register(RuntimeDefinition("doubling", build))
"""


@pytest.fixture(autouse=True)
def _correctness_only(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """These sessions test options and correctness; profiling has its own (test_plugin_performance.py).
    (Set after pytester's setup, which clears PYTEST_ADDOPTS.)"""
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{os.environ.get('PYTEST_ADDOPTS', '')} --navigator-no-profile".strip())


@pytest.fixture
def mlp(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> Path:
    target = pytester.path / "mlp.pt2"
    shutil.copy(tiny_models[".pt2"], target)
    return target


def test_a_failure_replays_from_its_saved_sample(pytester: pytest.Pytester, mlp: Path) -> None:
    pytester.makeconftest(_DOUBLING_RUNTIME)
    first = pytester.runpytest("--navigator-model=mlp.pt2", "--navigator-runtimes=doubling")
    first.assert_outcomes(failed=1)
    replay = re.search(r"replay: (pytest .+)", first.stdout.str())
    assert replay, first.stdout.str()
    saved = re.search(r"saved: (\S+)", first.stdout.str())
    assert (
        saved and saved[1].startswith(".navigator/failures/mlp.pt2/doubling-") and (pytester.path / saved[1]).is_file()
    )
    again = pytester.runpytest(*shlex.split(replay[1])[1:])
    again.assert_outcomes(failed=1)
    again.stdout.fnmatch_lines([f"*sample: {saved[1]}: input float32*", "*max abs error*"])
    assert "generated" not in again.stdout.str()  # --navigator-examples=0: only the saved sample


def test_samples_option_errors_are_usage_errors(pytester: pytest.Pytester, mlp: Path) -> None:
    missing = pytester.runpytest("--navigator-model=mlp.pt2", "--navigator-samples=nope.npz")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["*--navigator-samples=*nope.npz: no such file or folder*"])
    np.savez(pytester.path / "wrong.npz", input=np.zeros((2, 7), np.float32))
    wrong = pytester.runpytest("--navigator-model=mlp.pt2", "--navigator-samples=wrong.npz")
    assert wrong.ret == pytest.ExitCode.USAGE_ERROR
    wrong.stderr.fnmatch_lines(["*sample *wrong.npz: input 'input' axis 1 is 7; the model fixes it at 8*"])
    bad_count = pytester.runpytest("--navigator-model=mlp.pt2", "--navigator-examples=many")
    bad_count.stderr.fnmatch_lines(["*--navigator-examples='many': give a whole number >= 0*"])


def test_users_samples_are_checked_on_every_runtime(pytester: pytest.Pytester, mlp: Path) -> None:
    (pytester.path / "data").mkdir()
    for index in range(3):
        np.savez(pytester.path / "data" / f"{index}.npz", input=np.full((2, 8), index, np.float32))
    result = pytester.runpytest(
        "--navigator-model=mlp.pt2",
        "--navigator-runtimes=torch-cpu,onnxruntime-cpu",
        "--navigator-samples=data",
        "--navigator-examples=4",
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        ["*torch-cpu*passed*9 samples (3 given)*", "*onnxruntime-cpu*passed*9 samples (3 given)*"]
    )


def test_verify_fixture_and_marker_choose_the_judge(pytester: pytest.Pytester, mlp: Path) -> None:
    pytester.makeconftest(
        _DOUBLING_RUNTIME
        + """
import pytest
import pytest_navigator


@pytest.fixture
def navigator_verify():
    return pytest_navigator.topk_agreement(k=1)  # doubling keeps every ranking
"""
    )
    pytester.makepyfile(
        test_mine="""
        import pytest
        import pytest_navigator

        @pytest.mark.navigator(verify=pytest_navigator.allclose(atol=1e-3), examples=3)
        def test_values_must_match(navigator_check):
            navigator_check("doubling")

        @pytest.mark.navigator(verify=lambda expected, actual: True, examples=2)
        def test_a_plain_seed_000_function(navigator_check):
            report = navigator_check("doubling")
            assert report.samples == 2 + 2 and report.verify.endswith("<lambda>")

        @pytest.mark.navigator(tolerance=1)
        def test_unknown_setting(navigator_check):
            navigator_check("torch-cpu")
        """
    )
    result = pytester.runpytest("--navigator-model=mlp.pt2", "--navigator-runtimes=doubling", "-v", "test_mine.py")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines_random(
        [
            "*mlp.pt2::test_correctness[[]doubling[]] PASSED*",
            "*test_values_must_match FAILED*",
            "*test_a_plain_seed_000_function PASSED*",
            "*doubling disagrees with the reference (torch-cpu) on mlp.pt2, judged by allclose(atol=0.001, rtol=0.001):*",
            "*the navigator marker has no setting 'tolerance'; it takes verify, examples, strict, allow_nonfinite, agreement, runtime_options, timeout, mode, window, stability, max_trials, time_budget, interference, profile, batch_sizes*",
        ]
    )


_WIDENING_RUNTIME = """
import numpy as np
from pytest_navigator.runtimes import CallableRunner, RuntimeDefinition
from pytest_navigator.runtimes.torch_runtimes import build_eager


def pytest_navigator_register_runtimes(registry, config):
    def build(model, ctx):
        eager = build_eager(model, ctx)
        widen = lambda v: np.concatenate([v, v, v, v[..., :1]], axis=-1)  # 3 classes -> 10
        return CallableRunner("widening", lambda s: {k: widen(v) for k, v in eager.infer(s).items()}, model.io_spec)

    registry.register(RuntimeDefinition("widening", build))
"""


@pytest.mark.parametrize(
    ("verify", "judged_by"),
    [
        (None, "error budget*"),
        ("pytest_navigator.allclose(atol=1e-3)", "allclose(atol=0.001, rtol=0.001)"),
        ("pytest_navigator.topk_agreement(k=1)", "topk_agreement(k=1, min_agreement=1)"),
        ("pytest_navigator.cosine()", "cosine(min_similarity=0.999)"),
        ("lambda expected, actual: True", "<lambda>"),
    ],
    ids=["error-budget", "allclose", "topk", "cosine", "plain-function"],
)
def test_an_output_of_the_wrong_shape_fails_naming_both_shapes(
    pytester: pytest.Pytester, mlp: Path, verify: str | None, judged_by: str
) -> None:
    """Every verdict, the default error budget included, reports the shapes, not numpy's broadcast error."""
    pytester.makeconftest(_WIDENING_RUNTIME)
    pytester.makepyfile(
        test_mine=f"""
        import pytest
        import pytest_navigator

        @pytest.mark.navigator(verify={verify}, examples=2)
        def test_widening(navigator_check):
            navigator_check("widening")
        """
    )
    result = pytester.runpytest(
        "--navigator-model=mlp.pt2", "--navigator-runtimes=widening", "test_mine.py", "-k", "test_widening"
    )
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            f"*CorrectnessFailure: widening disagrees with the reference (torch-cpu) on mlp.pt2, judged by {judged_by}:",
            "*output 'output': shape (1, 10) differs from the reference's (1, 3)",
        ]
    )
    assert "broadcast" not in result.stdout.str()


def test_dataloader_fixture_samples_come_first(pytester: pytest.Pytester, mlp: Path) -> None:
    pytester.makeconftest(
        """
        import numpy as np
        import pytest

        @pytest.fixture
        def navigator_dataloader():
            return [np.ones((2, 8), np.float32), {"input": np.zeros((1, 8), np.float64)}]
        """
    )
    result = pytester.runpytest("--navigator-model=mlp.pt2", "--navigator-runtimes=torch-cpu")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*sample navigator_dataloader[[]1[]]: input 'input' is float64; the model takes float32*astype('float32')*"]
    )


def test_library_debug_logs_do_not_flood_a_failure_report(pytester: pytest.Pytester, mlp: Path) -> None:
    """Under --log-level=DEBUG, a failing check's captured log holds the user's records, not the
    libraries' (the artifact cache's file locks, the exporter's and inductor's steps)."""
    import logging

    from pytest_navigator.logs import LIBRARY_LOGGERS

    for name in LIBRARY_LOGGERS:  # as in a fresh process: pytester runs in this one
        logging.getLogger(name).setLevel(logging.NOTSET)
    pytester.makeconftest(
        """
        import logging
        import pytest

        @pytest.fixture
        def navigator_verify():
            def never(expected, actual):
                logging.getLogger("mine").debug("my own debug line")
                return False
            return never
        """
    )
    result = pytester.runpytest(
        "--navigator-model=mlp.pt2",
        "--navigator-runtimes=onnxruntime-cpu",
        "--navigator-examples=1",
        "--log-level=DEBUG",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Captured log call*", "DEBUG    mine:*my own debug line"])
    noisy = [line for line in result.stdout.lines if line.startswith("DEBUG") and "mine:" not in line]
    assert not noisy, noisy[:5]
