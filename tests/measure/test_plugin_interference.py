"""A real pytest session on a machine that /proc says is contended, and the progress line.

The runner spins the CPU for each request and says it computes with every core; the session's
conftest makes /proc/stat say that other processes keep every core busy (CPU time rising at one second
per core per second beside the runtime's own, and one task more runnable than there are cores).
Every window is then interfered with, so the measurement cannot be trusted, and the failure must say
so: the evidence, and the runtime option to try. The machine's real load plays no part: a real
neighbour made this test pass or fail by how it was scheduled (harness/bench_detection.py --hog
measures the real thing).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from _pytest._io import TerminalWriter

from pytest_navigator.plugin.progress import ProgressLine

_CONTENDED = """
import os
import time

import pytest

from pytest_navigator.runtimes import CallableRunner, RuntimeDefinition
from pytest_navigator.runtimes.torch_runtimes import build_eager

CORES = len(os.sched_getaffinity(0))


def spinning(model, context):
    eager = build_eager(model, None)

    def run(sample):
        end = time.perf_counter() + 0.002
        while time.perf_counter() < end:
            pass
        return eager.infer(sample)

    runner = CallableRunner("spinning", run, model.io_spec)
    runner.compute_threads = lambda: CORES
    runner.thread_option = "threads"
    return runner


def pytest_navigator_register_runtimes(registry, config):
    registry.register(RuntimeDefinition("spinning", spinning))


@pytest.fixture(scope="session", autouse=True)
def neighbours():
    from pytest_navigator.measure import interference

    def busy(cpus, path="/proc/stat", niced=None):
        own = interference.read_rusage().cpu_s
        return interference.MachineTicks(own + len(cpus) * time.monotonic(), 0.0, len(cpus) + 1)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(interference, "read_proc_stat", busy)
        yield
"""


def test_a_contended_machine_fails_the_measurement_naming_the_interference(
    pytester: pytest.Pytester, tiny_models: dict[str, Path]
) -> None:
    model = pytester.path / "mlp.pt2"
    model.write_bytes(tiny_models[".pt2"].read_bytes())
    pytester.makeconftest(_CONTENDED)
    result = pytester.runpytest(
        f"--navigator-model={model.name}",
        "--navigator-runtimes=spinning",
        "--navigator-batch-sizes=1",
        "--navigator-max-trials=3",
        "--navigator-time-budget=5",
        "--navigator-interference=exclude",  # the default, which the suite's sessions otherwise turn off
        "--navigator-report=report.json",
        "-k",
        "performance",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*spinning on mlp.pt2: the measurement is unstable at batch size 1*",
            "*batch 1 (not stable after * windows*): #1: */s p50 * ms (busy: others used * of * cores, * runnable tasks,*",
            "*machine busy: other processes used * of * cores and * tasks were runnable, in * of * windows;"
            " the runtime computes with * threads*",
            "*hint: the runtime's * threads wait for each other when fewer cores are free; give it the * free core*"
            " with the runtime option threads=* (--navigator-runtime-option=spinning:threads=*), or stop the other jobs.",
            # the performance summary names it too
            "mlp.pt2 spinning batch 1: machine busy: * (left out)",
        ]
    )
    report = json.loads((pytester.path / "report.json").read_text())
    (runtime,) = report["models"][0]["runtimes"]
    windows = runtime["profile"]["batches"][0]["windows"]
    assert windows and all(w["interfered"] and w["cpu"].startswith("others used") for w in windows)


class _Reporter:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _config(tw: TerminalWriter, tty: bool = True, verbosity: int = 0, worker: bool = False) -> SimpleNamespace:
    config = SimpleNamespace(
        pluginmanager=SimpleNamespace(get_plugin=lambda name: _Reporter(tty)),
        get_verbosity=lambda: verbosity,
        get_terminal_writer=lambda: tw,
    )
    if worker:
        config.workerinput = {}
    return config


def test_the_progress_line_updates_in_place_and_gives_pytests_line_back() -> None:
    out = io.StringIO()
    tw = TerminalWriter(out)
    tw.fullwidth = 60
    tw.write("demo/resnet.pt2 ..")
    line = ProgressLine(_config(tw))
    assert line.enabled
    line("torch-cpu batch 4: window 1 of 10, 812.3 samples/s")
    line("too soon: skipped")  # updates closer than MIN_INTERVAL_S are dropped
    line.clear()
    text = out.getvalue()
    assert text.startswith("demo/resnet.pt2 ..\rtorch-cpu batch 4: window 1 of 10, 812.3 samples/s")
    assert "too soon" not in text
    assert text.endswith("\r" + " " * 59 + "\rdemo/resnet.pt2 ..")  # erased, pytest's line restored
    assert tw.width_of_current_line == len("demo/resnet.pt2 ..")  # pytest's own bookkeeping unchanged
    line.clear()  # nothing shown: nothing written
    assert out.getvalue() == text


@pytest.mark.parametrize(
    "where", [{"tty": False}, {"worker": True}, {"verbosity": -2}], ids=["not a tty", "xdist worker", "-qq"]
)
def test_no_progress_line_where_it_would_garble_the_output(where: dict) -> None:
    out = io.StringIO()
    tw = TerminalWriter(out)
    line = ProgressLine(_config(tw, **where))
    line("torch-cpu batch 4: window 1 of 10")
    line.clear()
    assert not line.enabled and out.getvalue() == ""
