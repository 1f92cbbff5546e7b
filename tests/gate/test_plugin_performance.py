"""Generated performance tests in real pytest sessions: options, markers, sweeps, unstable measurements.

Runtimes here do real, known work per request (sleeps), so the assertions are about what was
measured and reported, never about how fast anything was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

_SLEEPING_RUNTIMES = """
import time

from pytest_navigator.runtimes import CallableRunner, RuntimeDefinition
from pytest_navigator.runtimes.torch_runtimes import build_eager

calls = {"wobbly": 0}


def sleeping(model, name, seconds, max_batch=None):
    eager = build_eager(model, None)

    def run(sample):
        batch = next(iter(sample.values())).shape[0]
        if max_batch is not None and batch > max_batch:
            raise MemoryError(f"out of memory at batch {batch}")
        time.sleep(seconds(batch))
        return eager.infer(sample)

    return CallableRunner(name, run, model.io_spec)


def wobbly(batch):
    # 2 ms for one window's worth of requests, 0.2 ms for the next: never stable.
    calls["wobbly"] += 1
    # windows of 5 requests at 20-40 ms last over 100 ms (profiler.MIN_WINDOW_MS), so none grows and
    # consecutive windows hold 1 slow + 4 fast or 4 slow + 1 fast requests: never within 10%
    return 0.04 if (calls["wobbly"] // 5) % 2 else 0.02


def pytest_navigator_register_runtimes(registry, config):
    registry.register(RuntimeDefinition("steady", lambda m, c: sleeping(m, "steady", lambda b: 0.001)))
    registry.register(RuntimeDefinition("wobbly", lambda m, c: sleeping(m, "wobbly", wobbly)))
    registry.register(
        RuntimeDefinition("small-memory", lambda m, c: sleeping(m, "small-memory", lambda b: 0.001, max_batch=2))
    )
"""

#: Short windows and a tolerance no noisy machine breaks: these tests are about behaviour, not speed.
QUICK = ("--navigator-window=5", "--navigator-stability=50", "--navigator-max-trials=30")


@pytest.fixture
def mlp(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> Path:
    """The tiny MLP with a batch axis of at most 4, and the sleeping runtimes registered."""
    target = pytester.path / "mlp.pt2"
    shutil.copy(tiny_models[".pt2"], target)
    (pytester.path / "mlp.navigator.toml").write_text('inputs = ["input:float32[N=1..4,8]"]\n')
    pytester.makeconftest(_SLEEPING_RUNTIMES)
    return target


def test_performance_tests_follow_the_correctness_tests_and_can_be_turned_off(
    pytester: pytest.Pytester, mlp: Path
) -> None:
    ids = ["--navigator-model=mlp.pt2", "--navigator-runtimes=steady,torch-cpu", "--collect-only", "-q"]
    result = pytester.runpytest(*ids)
    assert [line for line in result.outlines if "::" in line] == [
        "mlp.pt2::test_correctness[steady]",
        "mlp.pt2::test_correctness[torch-cpu]",
        "mlp.pt2::test_performance[steady]",
        "mlp.pt2::test_performance[torch-cpu]",
    ]
    off = pytester.runpytest(*ids, "--navigator-no-profile")
    assert [line for line in off.outlines if "::" in line] == [
        "mlp.pt2::test_correctness[steady]",
        "mlp.pt2::test_correctness[torch-cpu]",
    ]
    pytester.makeini("[pytest]\nnavigator_no_profile = true\n")
    assert "mlp.pt2::test_performance[steady]" not in pytester.runpytest(*ids).outlines


def test_without_batch_sizes_the_sweep_doubles_up_to_the_models_maximum(pytester: pytest.Pytester, mlp: Path) -> None:
    # 1 ms per request whatever the batch: throughput doubles with each size, so the sweep goes on to the limit.
    result = pytester.runpytest("--navigator-model=mlp.pt2", "--navigator-runtimes=steady", *QUICK)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "*navigator performance*",
            "CPU: *",
            "mlp.pt2 *steady *1 *stable *",
            "mlp.pt2 *steady *2 *stable *",
            "mlp.pt2 *steady *4 *stable *",
            "mlp.pt2 steady: sweep stopped: reached the largest batch size (4)",
            "max throughput: steady at batch 4 (*); min latency: steady at batch *",
        ]
    )


def test_explicit_batch_sizes_are_measured_as_given(pytester: pytest.Pytester, mlp: Path) -> None:
    result = pytester.runpytest(
        "--navigator-model=mlp.pt2", "--navigator-runtimes=steady", "--navigator-batch-sizes=3", *QUICK
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["mlp.pt2 *steady *3 *stable *", "*sweep stopped: all requested batch sizes measured"])
    assert "mlp.pt2  steady          1" not in result.stdout.str()


def test_an_error_at_a_large_batch_ends_the_sweep_and_is_reported(pytester: pytest.Pytester, mlp: Path) -> None:
    result = pytester.runpytest(
        "--navigator-model=mlp.pt2", "--navigator-runtimes=small-memory", "--navigator-examples=0", *QUICK, "-k", "perf"
    )
    result.assert_outcomes(passed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "mlp.pt2 *small-memory *1 *stable *",
            "mlp.pt2 *small-memory *2 *stable *",
            "mlp.pt2 *small-memory *4 *error",
            "*sweep stopped: batch size 4 failed: MemoryError: out of memory at batch 4",
        ]
    )


def test_an_unstable_measurement_fails_with_every_window_and_a_hint(pytester: pytest.Pytester, mlp: Path) -> None:
    result = pytester.runpytest(
        "--navigator-model=mlp.pt2",
        "--navigator-runtimes=wobbly",
        "--navigator-batch-sizes=1",
        "--navigator-window=5",
        "--navigator-max-trials=6",
        "-k",
        "performance",
    )
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "*wobbly on mlp.pt2: the measurement is unstable at batch size 1: no 3 consecutive windows (throttled"
            " and busy ones left out) had throughput and p50 latency within 10% of their mean.",
            # a window the machine disturbed carries "(busy: ...)" after its figures: how busy is not the test's
            "*batch 1 (not stable after 6 windows (max_trials 6)): #1: *.*/s p50 *.* ms*; #2: *; #3: *; #4: *; #5: *; #6: *",
            "*hint: measure longer windows (--navigator-window=200 in count mode, or --navigator-mode=time*",
            "mlp.pt2 *wobbly *1 *unstable *",
        ]
    )


def test_time_windows_and_the_marker_settings_reach_the_profiler(pytester: pytest.Pytester, mlp: Path) -> None:
    pytester.makepyfile(
        test_mine="""
        import pytest

        @pytest.mark.navigator(window=7, stability=60)
        def test_count_windows_of_seven(navigator_profile):
            profile = navigator_profile("steady", batch_sizes="2")
            assert profile.config.measurement_request_count == 7
            assert profile.config.stability_percentage == 60
            assert [b.batch_size for b in profile.batches] == [2]
            # 7 requests of 1 ms would last 7 ms: windows grow toward 100 ms (profiler.MIN_WINDOW_MS, sized
            # from the warm-up's request time)
            assert all(len(w.latencies_ms) > 7 and w.wall_ms >= 50 for w in profile.batches[0].windows)

        def test_time_windows(navigator_profile):
            profile = navigator_profile("steady", mode="time", window=300, stability=60, batch_sizes=[1])
            windows = profile.batches[0].windows
            assert all(w.wall_ms >= 300 for w in windows)
            assert all(len(w.latencies_ms) < 310 for w in windows)  # each request sleeps 1 ms

        @pytest.mark.navigator(profile=False)
        def test_off(navigator_profile):
            navigator_profile("steady")

        @pytest.mark.navigator(window="many")
        def test_bad_window(navigator_profile):
            navigator_profile("steady")
        """
    )
    result = pytester.runpytest(
        "--navigator-model=mlp.pt2", "--navigator-max-trials=30", "test_mine.py", "-k", "test_mine", "-rs"
    )
    result.assert_outcomes(passed=2, skipped=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_mine.py::test_bad_window: --navigator-window='many': give requests per window (count mode)*",
            "*profiling is off (--navigator-no-profile or navigator(profile=False))*",
        ]
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("--navigator-mode=fast", "--navigator-mode='fast': give 'count' (windows of N requests), 'time'*"),
        # the message names every profiler option given (the suite's sessions also give --navigator-interference)
        ("--navigator-window=-3", "*--navigator-window='-3'*: ProfilerConfig.measurement_request_count=-3*>= 1*"),
        (
            "--navigator-stability=150%",
            "*ProfilerConfig.stability_percentage=150.0 is not accepted; expected*(0, 100]*",
        ),
        (
            "--navigator-max-trials=2",
            "*ProfilerConfig.max_trials=2 is not accepted; expected an integer >= min_trials (3)*",
        ),
    ],
)
def test_bad_profiler_options_stop_the_run_naming_the_option(
    pytester: pytest.Pytester, mlp: Path, option: str, message: str
) -> None:
    result = pytester.runpytest("--navigator-model=mlp.pt2", option)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{message}"])


def test_ini_twins_configure_the_profiler(pytester: pytest.Pytester, mlp: Path) -> None:
    pytester.makeini(
        "[pytest]\nnavigator_mode = time\nnavigator_window = 20\nnavigator_stability = 70\nnavigator_max_trials = 12\n"
    )
    pytester.makepyfile(
        test_mine="""
        from pytest_navigator.config import MeasurementMode

        def test_settings(navigator_profile):
            config = navigator_profile("steady", batch_sizes=[1]).config
            assert config.measurement_mode is MeasurementMode.TIME_WINDOWS and config.measurement_interval == 20
            assert config.stability_percentage == 70 and config.max_trials == 12
        """
    )
    result = pytester.runpytest("--navigator-model=mlp.pt2", "test_mine.py", "-k", "test_mine")
    result.assert_outcomes(passed=1)
