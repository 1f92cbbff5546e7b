"""`pytest --help` and a run without --navigator-* options must not pay for torch or onnxruntime."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "onnxruntime", "tensorrt", "onnx")

_CHECK = """
import sys
{setup}
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY:", ",".join(heavy))
"""


def _imported_after(setup: str) -> str:
    code = _CHECK.format(setup=setup, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    return next(line for line in out.stdout.splitlines() if line.startswith("HEAVY:"))


def test_importing_the_plugin_imports_no_ml_library() -> None:
    assert _imported_after("import pytest_navigator, pytest_navigator.plugin.hooks") == "HEAVY: "


def test_pytest_help_imports_no_ml_library() -> None:
    setup = "import io, contextlib, pytest\nwith contextlib.redirect_stdout(io.StringIO()) as help_text:\n    pytest.main(['--help'])\nassert '--navigator-model' in help_text.getvalue()"
    assert _imported_after(setup) == "HEAVY: "


def test_the_check_would_see_an_import() -> None:
    # guards the two tests above against a check that cannot fail
    assert _imported_after("import onnx") == "HEAVY: onnx"


def test_no_module_of_the_package_imports_the_pytest_plugin() -> None:
    """The plugin is the top of the import graph: isolation.py, which every runtime worker process
    runs, imported it for its log filtering and closed an import cycle through eight modules; log
    filtering is logs.py now. Imports inside functions count too."""
    import ast
    from pathlib import Path

    import pytest_navigator

    package = Path(pytest_navigator.__file__).parent
    offenders = []
    for path in sorted(package.rglob("*.py")):
        if path.parent.name == "plugin":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            if any(n == "pytest_navigator.plugin" or n.startswith("pytest_navigator.plugin.") for n in names):
                offenders.append(f"{path.relative_to(package)}:{getattr(node, 'lineno', 0)}")
    assert offenders == []


def test_the_package_has_no_import_cycle() -> None:
    """Dependencies point one way, counting imports inside functions and under TYPE_CHECKING (a
    module importing its own parent package is Python's package machinery, not a cycle)."""
    import ast
    from pathlib import Path

    import pytest_navigator

    package = Path(pytest_navigator.__file__).parent
    modules = {}
    for path in package.rglob("*.py"):
        name = ".".join(("pytest_navigator", *path.relative_to(package).with_suffix("").parts))
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            found: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pytest_navigator"):
                found += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                found += [alias.name for alias in node.names]
            graph[name] |= {t for t in found if t in modules and t != name and not name.startswith(t + ".")}

    def reaches(start: str, goal: str, seen: set[str]) -> list[str] | None:
        for step in sorted(graph[start]):
            if step == goal:
                return [start, step]
            if step not in seen:
                seen.add(step)
                onward = reaches(step, goal, seen)
                if onward:
                    return [start, *onward]
        return None

    cycles = [" -> ".join(cycle) for name in sorted(graph) if (cycle := reaches(name, name, set()))]
    assert cycles == []


def _package() -> Path:
    import pytest_navigator

    return Path(pytest_navigator.__file__).parent


def _imported(path: Path) -> list[tuple[str, int]]:
    """Every module a file imports (names from a module count as submodules too), at any depth:
    inside functions and under TYPE_CHECKING as well."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found += [(node.module, node.lineno), *((f"{node.module}.{a.name}", node.lineno) for a in node.names)]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
    return found


def test_workers_are_plumbing_that_imports_nothing_above_them() -> None:
    """workers/ starts processes, sends requests with timeouts and reports crashes and hangs; what runs
    in a worker (a runtime's build: runtimes/remote.py; a measurement: measure/executor.py) imports
    workers/, never the other way round."""
    package = _package()
    above = ("runtimes", "check", "measure", "gate", "report", "plugin", "session", "cli")
    offenders = [
        f"{path.relative_to(package)}:{line} imports {name}"
        for path in sorted((package / "workers").rglob("*.py"))
        for name, line in _imported(path)
        if name.split(".")[:2] in (["pytest_navigator", folder] for folder in above)
    ]
    assert offenders == []


def _names_worker_runner(source: str) -> list[int]:
    """The lines that name WorkerRunner: an isinstance on it, an import of it, any use."""
    return [
        getattr(node, "lineno", 0)
        for node in ast.walk(ast.parse(source))
        if (isinstance(node, ast.Name) and node.id == "WorkerRunner")
        or (isinstance(node, ast.Attribute) and node.attr == "WorkerRunner")
        or (isinstance(node, ast.alias) and node.name == "WorkerRunner")
    ]


def test_only_measure_and_runtimes_know_that_a_runner_may_run_in_a_worker() -> None:
    """Where a runtime runs is not the caller's business: the session and everything else outside
    measure/ (the executors) and runtimes/ (builds, the worker-backed Runner) go through an Executor,
    and never name WorkerRunner: no isinstance on it, no import of it."""
    package = _package()
    offenders = [
        f"{path.relative_to(package)}:{line}"
        for path in sorted(package.rglob("*.py"))
        if path.parent.name not in ("measure", "runtimes")
        for line in _names_worker_runner(path.read_text())
    ]
    assert offenders == []


def test_the_check_of_worker_runners_would_see_them() -> None:
    # guards the test above against a walk that cannot find what it looks for
    source = (
        "from pytest_navigator.runtimes.remote import WorkerRunner\n"
        "if isinstance(runner, remote.WorkerRunner) or isinstance(old, WorkerRunner):\n    pass\n"
    )
    assert _names_worker_runner(source) == [1, 2, 2]


def test_every_module_holds_one_idea() -> None:
    """DESIGN.md: a module past ~400 lines holds two ideas, so no module of the package is longer; the
    hooks module (plugin/hooks.py) is pytest glue only (at most 250), and the session orchestrates
    and owns no stage's work (at most 300)."""
    package = _package()
    limits = {Path("plugin/hooks.py"): 250, Path("session.py"): 300}
    long = [
        f"{path.relative_to(package)}: {count} lines"
        for path in sorted(package.rglob("*.py"))
        if (count := len(path.read_text().splitlines())) > limits.get(path.relative_to(package), 400)
    ]
    assert long == []


def _stage_imports(path: Path) -> set[str]:
    """Every pytest_navigator module `path` imports, at its top, inside functions or under TYPE_CHECKING."""
    import ast

    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pytest_navigator"):
            found |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("pytest_navigator")}
    return found


def _above(path: Path, folders: tuple[str, ...]) -> list[str]:
    """The modules of `folders` that `path` imports."""
    stage = {f"pytest_navigator.{folder}" for folder in folders}
    return sorted(n for n in _stage_imports(path) if n in stage or n.rpartition(".")[0] in stage)


#: The stage folders, top to bottom (DESIGN.md, Layout): each imports only those below it.
STAGES = ("plugin", "session", "report", "gate", "measure", "check", "runtimes", "workers", "model")


def test_settings_keeps_raw_values_and_imports_no_domain() -> None:
    """Settings keeps the values as given; the thresholds, constraints and runtime options are parsed
    by their own domains (gate/, runtimes/), so settings.py imports none of the stages above it."""
    import pytest_navigator

    package = Path(pytest_navigator.__file__).parent
    assert _above(package / "settings.py", STAGES) == []


def test_model_imports_nothing_above_it() -> None:
    import pytest_navigator

    model = Path(pytest_navigator.__file__).parent / "model"
    above = STAGES[: STAGES.index("model")]
    assert {path.name: _above(path, above) for path in model.glob("*.py")} == {p.name: [] for p in model.glob("*.py")}


def test_the_gate_imports_nothing_from_the_report_or_the_session() -> None:
    """The gate is given values (verdicts, measured entries) and gives values back: the session turns
    them into the run's records and the report reads those."""
    import pytest_navigator

    gate = Path(pytest_navigator.__file__).parent / "gate"
    above = STAGES[: STAGES.index("gate")]
    assert {path.name: _above(path, above) for path in gate.glob("*.py")} == {p.name: [] for p in gate.glob("*.py")}


#: Every module's level, top to bottom (DESIGN.md, "Layout"): a folder's modules, or a top-level module.
LAYERS = (
    ("cli", "__main__"),
    ("plugin",),
    ("session", "loop"),
    ("report",),
    ("gate",),
    ("measure",),
    ("check",),
    ("runtimes",),
    ("workers",),
    ("model",),
    ("settings", "locations"),
    ("options", "config", "errors", "logs", "_moved"),
)


def _layer(module: str) -> int:
    part = module.split(".")[1]
    return next(i for i, names in enumerate(LAYERS) if part in names)


def test_nothing_points_up_between_the_stage_folders() -> None:
    """The whole package's import graph by folder: each module imports only its own level and those
    below, counting imports inside functions and under TYPE_CHECKING. (The package's own __init__ is
    the public facade over every level; a folder's __init__ answers old import paths through _moved.)"""
    package = _package()
    upward = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        if relative == Path("__init__.py"):
            continue
        module = ".".join(("pytest_navigator", *relative.with_suffix("").parts))
        for name in sorted(_stage_imports(path)):
            if name == "pytest_navigator" or name.split(".")[1] not in {n for layer in LAYERS for n in layer}:
                continue
            if _layer(name) < _layer(module):
                upward.append(f"{relative} imports {name}")
    assert upward == []


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    """Guards the test above against a check that cannot fail: a function-level import of the session
    from model/ is found."""
    sample = tmp_path / "probe.py"
    sample.write_text("def f():\n    from pytest_navigator.session import NavigatorSession\n")
    assert "pytest_navigator.session" in _stage_imports(sample)
    assert _layer("pytest_navigator.session") < _layer("pytest_navigator.model.loader")
