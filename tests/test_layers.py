"""Dependencies point down the stages of a run (docs: DESIGN.md, "Layout"): runtimes/ builds runners
without knowing who checks, measures, judges or reports them, and model/ knows nothing of runtimes.
Imports inside functions and under TYPE_CHECKING count: they are dependencies all the same."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest_navigator

PACKAGE = Path(pytest_navigator.__file__).parent

#: The stages above runtimes/ (the top-level modules session and cli, the folders).
ABOVE_RUNTIMES = ("check", "measure", "gate", "report", "plugin", "session", "cli")
#: ... and above model/.
ABOVE_MODEL = ("runtimes", "workers", *ABOVE_RUNTIMES)


def stage_imports(source: str) -> list[tuple[int, str]]:
    """(line, stage) of every import of the package in `source`: the part after `pytest_navigator.`
    (`from pytest_navigator import session` imports the stage session)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = (
                [node.module]
                if node.module != "pytest_navigator"
                else [f"pytest_navigator.{a.name}" for a in node.names]
            )
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "pytest_navigator" and len(parts) > 1:
                found.append((getattr(node, "lineno", 0), parts[1]))
    return sorted(found)


def imports_from(folder: str, stages: tuple[str, ...]) -> list[str]:
    """`file:line -> stage` for each import of one of `stages` in the package's `folder`."""
    return [
        f"{path.relative_to(PACKAGE)}:{line} -> {stage}"
        for path in sorted((PACKAGE / folder).rglob("*.py"))
        for line, stage in stage_imports(path.read_text())
        if stage in stages
    ]


def test_the_check_sees_imports_inside_functions_and_under_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from pytest_navigator import session\n"
        "if TYPE_CHECKING:\n    from pytest_navigator.report.results import RunResults\n"
        "def f():\n    import pytest_navigator.measure.trace\n"
        "from pytest_navigator.model.spec import IOSpec\n"
    )
    assert stage_imports(source) == [(2, "session"), (4, "report"), (6, "measure"), (7, "model")]


def test_runtimes_import_nothing_from_the_stages_above_them() -> None:
    assert imports_from("runtimes", ABOVE_RUNTIMES) == []


def test_the_model_imports_nothing_from_the_stages_above_it() -> None:
    assert imports_from("model", ABOVE_MODEL) == []
