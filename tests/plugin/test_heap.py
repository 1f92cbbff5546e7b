"""A run freezes its heap when its tests are collected (plugin/hooks.py): what it holds by then lives
until it ends, and no garbage collection walks it again. A run inside another's test (pytester's inline
runs) leaves the outer process's heap alone: freezing it would keep every such run's objects forever."""

from __future__ import annotations

import gc
import shutil
from pathlib import Path

import pytest

_RECORD = """
import gc
from pathlib import Path


def pytest_sessionfinish(session):
    Path("frozen.txt").write_text(str(gc.get_freeze_count()))
"""


@pytest.fixture
def run_folder(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> Path:
    shutil.copy(tiny_models[".pt2"], pytester.path / "mlp.pt2")
    shutil.copy(tiny_models[".pt2"].with_name("mlp.navigator.toml"), pytester.path)
    pytester.makeconftest(_RECORD)
    return pytester.path


def test_a_run_freezes_what_it_holds_once_collected(pytester: pytest.Pytester, run_folder: Path) -> None:
    result = pytester.runpytest_subprocess("--navigator-model=mlp.pt2", "--collect-only", "-q")
    assert result.ret == 0, result.stdout.str()
    # torch's modules and the loaded model alone are hundreds of thousands of objects
    assert int((run_folder / "frozen.txt").read_text()) > 10_000


def test_a_run_inside_a_test_leaves_the_outer_heap_alone(pytester: pytest.Pytester, run_folder: Path) -> None:
    for _ in range(2):  # the first run's end leaves no sign of the outer run either
        result = pytester.runpytest("--navigator-model=mlp.pt2", "--collect-only", "-q")
        assert result.ret == 0, result.stdout.str()
        assert int((run_folder / "frozen.txt").read_text()) == 0 == gc.get_freeze_count()
