"""The suite's own leftover-process check (tests/leftover_processes.py): a run whose tests leave a
process behind fails, naming it, and the process is killed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

_LEAKY = """
import subprocess, sys

def test_leaks_a_child():
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)  # leaked child"])

def test_leaks_a_detached_grandchild():
    # the child exits at once: its own child is re-parented, out of pytest's process tree
    code = "import os, time\\nif os.fork() == 0:\\n    time.sleep(600)  # leaked grandchild\\n"
    subprocess.run([sys.executable, "-c", code], check=True)

def test_waits_for_its_child():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
"""


def _state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return stat[stat.rindex(")") + 2]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="the check reads /proc (Linux)")
@pytest.mark.parametrize("xdist", [[], ["-p", "xdist", "-n", "2"]], ids=["one process", "xdist workers"])
def test_a_process_left_behind_fails_the_run_naming_it_and_is_killed(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, xdist: list[str]
) -> None:
    """Under xdist the workers find them and the controller fails the run (the suite runs that way)."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    pytester.makepyfile(test_leaky=_LEAKY)
    result = pytester.runpytest_subprocess("-p", "leftover_processes", *xdist)
    result.assert_outcomes(passed=3)  # every test passed; the run did not
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*processes left behind*",
            "2 process(es) started during this run were still alive at its end (killed now; the run fails):",
        ]
    )
    result.stdout.fnmatch_lines_random(["  pid *: *time.sleep(600) # leaked child*", "  pid *: *leaked grandchild*"])
    pids = [int(p) for p in re.findall(r"^  pid (\d+): ", result.stdout.str(), re.MULTILINE)]
    assert len(pids) == 2 and all(_state(pid) in ("gone", "Z") for pid in pids)


def test_a_run_that_leaves_nothing_behind_passes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    pytester.makepyfile(
        test_clean="import subprocess, sys\n\ndef test_waits():\n    subprocess.run([sys.executable, '-c', 'pass'], check=True)\n"
    )
    result = pytester.runpytest_subprocess("-p", "leftover_processes")
    assert result.ret == pytest.ExitCode.OK
    assert "processes left behind" not in result.stdout.str()
