"""Old import paths from before the stage folders keep working, with a DeprecationWarning naming the new one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pytest_navigator._moved import FOLDED, MOVED

_IMPORT = """
import importlib, warnings
warnings.simplefilter("error")  # nothing else on the way warns
import pytest_navigator
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    {statement}
print([str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)])
print([w.filename for w in caught])
"""


def _run(statement: str) -> tuple[list[str], list[str]]:
    code = _IMPORT.format(statement=statement)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    messages, files = done.stdout.strip().splitlines()[-2:]
    return eval(messages), eval(files)


@pytest.mark.parametrize(
    ("statement", "new"),
    [
        ("import pytest_navigator.telemetry as m", "pytest_navigator.measure.telemetry"),
        ("from pytest_navigator import runtime_options as m", "pytest_navigator.runtimes.runtime_options"),
        ("from pytest_navigator.cache import ArtifactCache as m", "pytest_navigator.runtimes.cache"),
        ("from pytest_navigator.gate import decide as m", "pytest_navigator.gate.policy.decide"),
    ],
    ids=["telemetry", "runtime_options", "cache", "gate.decide"],
)
def test_an_old_path_imports_the_moved_module_and_warns_where_it_is_used(statement: str, new: str) -> None:
    messages, files = _run(statement)
    assert len(messages) == 1 and new in messages[0] and "moved to" in messages[0]
    assert files == ["<string>"]  # the warning points at the line that used the old path


def test_an_old_module_is_the_new_one_not_a_copy() -> None:
    import warnings

    import pytest_navigator.measure.telemetry as telemetry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import pytest_navigator.telemetry as old
    assert old is telemetry  # one module: patching either patches both


def test_every_moved_path_names_a_module_that_exists() -> None:
    import importlib.util

    for new in [*MOVED.values(), *FOLDED.values()]:
        assert importlib.util.find_spec(f"pytest_navigator.{new}") is not None, new


def test_the_new_paths_warn_nothing() -> None:
    messages, _ = _run(
        "import pytest_navigator.measure.telemetry, pytest_navigator.gate.policy, pytest_navigator.session"
    )
    assert messages == []
