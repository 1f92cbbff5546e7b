"""Builds started ahead (runtimes/processes.py): when the tests are collected, every selected runtime
starts building in its worker, side by side; no check or measurement runs until every one has ended.

The runtimes below prove both by the files their builds leave: two builds that each wait for the
other's file can only both finish when they run at once, and a runtime whose requests refuse to run
before a slow build's file exists fails when anything runs beside a build."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

_AHEAD = """
import os
import time
from pathlib import Path

from pytest_navigator.runtimes import CallableRunner, RuntimeDefinition
from pytest_navigator.runtimes.torch_runtimes import build_eager

MARKS = Path(os.environ["AHEAD_MARKS"])
WAIT = float(os.environ.get("AHEAD_WAIT", "60"))


def wait_for(name, seconds):
    deadline = time.monotonic() + seconds
    while not (MARKS / name).exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def runtime(name, waits_for=None, then_sleeps=0.0):
    def build(model, ctx):
        (MARKS / f"{name}.started").touch()
        if waits_for is not None and not wait_for(f"{waits_for}.started", WAIT):
            raise RuntimeError(f"{name} was built alone: {waits_for} did not start building beside it")
        time.sleep(then_sleeps)
        eager = build_eager(model, ctx)
        (MARKS / f"{name}.built").touch()

        def infer(sample):
            if not (MARKS / "slow.built").exists():
                raise RuntimeError(f"{name} ran a request while slow was still building")
            return eager.infer(sample)

        return CallableRunner(name, infer, model.io_spec)

    return RuntimeDefinition(name, build)


def never_ends(model, ctx):
    (MARKS / "never.pid").write_text(str(os.getpid()))
    time.sleep(600)


def pytest_navigator_register_runtimes(registry, config):
    registry.register(RuntimeDefinition("never", never_ends))
    registry.register(runtime("left", waits_for="right"))
    registry.register(runtime("right", waits_for="left"))
    registry.register(runtime("slow", waits_for="left", then_sleeps=1.5))
"""


@pytest.fixture
def ahead(pytester: pytest.Pytester, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(tiny_models[".pt2"], pytester.path / "mlp.pt2")
    shutil.copy(tiny_models[".pt2"].with_name("mlp.navigator.toml"), pytester.path)
    pytester.makeconftest(_AHEAD)
    marks = pytester.path / "marks"
    marks.mkdir()
    monkeypatch.setenv("AHEAD_MARKS", str(marks))
    return marks


@pytest.mark.isolated
def test_builds_run_side_by_side_and_nothing_runs_beside_them(pytester: pytest.Pytester, ahead: Path) -> None:
    result = pytester.runpytest_subprocess(
        "--navigator-model=mlp.pt2",
        "--navigator-runtimes=left,right,slow",
        "--navigator-examples=3",
        "--navigator-batch-sizes=1",
        "--navigator-window=5",
        "--navigator-max-trials=10",
        "--navigator-inconclusive=warn",
        "--navigator-report=report.json",
    )
    result.assert_outcomes(passed=6)
    assert {p.name for p in ahead.iterdir()} == {
        f"{n}.{s}" for n in ("left", "right", "slow") for s in ("started", "built")
    }
    report = json.loads((pytester.path / "report.json").read_text())
    runtimes = {r["name"]: r for r in report["models"][0]["runtimes"]}
    # the table gives each build's own time, not the time its test waited for the others
    assert runtimes["slow"]["build_seconds"] >= 1.5 > runtimes["left"]["build_seconds"], runtimes


@pytest.mark.isolated
def test_only_the_selected_runtimes_are_built_ahead(
    pytester: pytest.Pytester, ahead: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # -k leaves right's and slow's tests out: they are not built, and left, built alone, says so
    monkeypatch.setenv("AHEAD_WAIT", "2")
    result = pytester.runpytest_subprocess(
        "--navigator-model=mlp.pt2", "--navigator-runtimes=left,right,slow", "--navigator-no-profile", "-k", "left"
    )
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(["*left was built alone: right did not start building beside it*"])
    assert sorted(p.name for p in ahead.iterdir()) == ["left.started"]


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True
    return "\nState:\tZ" in status  # a zombie has exited; its parent has not reaped it yet


@pytest.mark.isolated
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_interrupted_run_kills_the_builds_it_started_ahead(pytester: pytest.Pytester, ahead: Path) -> None:
    command = [sys.executable, "-m", "pytest", "--navigator-model=mlp.pt2", "--navigator-runtimes=never"]
    process = subprocess.Popen(
        [*command, "--navigator-no-profile"], cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        for _ in range(1200):  # the build has started when its pid is written (at most a minute)
            if (ahead / "never.pid").exists() or process.poll() is not None:
                break
            time.sleep(0.05)
        assert (ahead / "never.pid").exists(), process.communicate()[0].decode()
        process.send_signal(signal.SIGINT)  # Ctrl-C while the first test waits for the builds ahead
        output = process.communicate(timeout=120)[0].decode()  # not the build's 600 s
    finally:
        process.kill()
    assert "KeyboardInterrupt" in output, output
    pid = int((ahead / "never.pid").read_text())
    for _ in range(200):
        if _gone(pid):
            break
        time.sleep(0.05)
    assert _gone(pid), f"the worker building 'never' (pid {pid}) outlived the run"
