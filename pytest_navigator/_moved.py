"""Import paths of modules that moved into the stage folders (model/, check/, measure/, gate/, report/,
plugin/, runtimes/, workers/): the old path still imports, with a DeprecationWarning naming the new one.

Two kinds: a flat module that became a module in a folder (`pytest_navigator.telemetry` is
`pytest_navigator.measure.telemetry`) is aliased by a finder on `sys.meta_path`; a flat module whose
name is now a folder (`pytest_navigator.gate`, `model`, `report`, `plugin`) answers its old names
through the folder's `__getattr__` (`moved_attribute`).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from types import FrameType, ModuleType
from typing import Any

#: old module (under pytest_navigator) -> where it lives now
MOVED = {
    "hooks": "plugin.hookspecs",
    "items": "plugin.items",
    "fixtures": "plugin.fixtures",
    "devices": "plugin.devices",
    "progress": "plugin.progress",
    "spec": "model.spec",
    "model_profile": "model.profile",
    "builds": "runtimes.builds",
    "runtime_options": "runtimes.runtime_options",
    "cache": "runtimes.cache",
    "fork_servers": "workers.fork_servers",
    "isolation": "workers.isolation",
    "strategies": "check.strategies",
    "user_samples": "check.user_samples",
    "truth": "check.truth",
    "references": "check.references",
    "budget": "check.budget",
    "verify": "check.verify",
    "correctness": "check.correctness",
    "failures": "check.failures",
    "hypothesis_profiles": "check.hypothesis_profiles",
    "profiler": "measure.profiler",
    "interference": "measure.interference",
    "telemetry": "measure.telemetry",
    "memory": "measure.memory",
    "trace": "measure.trace",
    "instructions": "measure.instructions",
    "valgrind": "measure.valgrind",
    "calibration": "measure.calibration",
    "runs": "gate.runs",
    "baselines": "gate.baselines",
    "thresholds": "gate.thresholds",
    "verdicts": "gate.verdicts",
    "selection": "gate.selection",
    "results": "report.results",
    "json_report": "report.json_report",
    "html_report": "report.html",
    "markdown_report": "report.markdown",
    "benchmark_export": "report.benchmark_export",
    "run_compare": "report.compare",
    "run_merge": "report.merge",
    "views": "report.views",
}

#: old module whose name is now a folder -> the module in that folder that holds its names
FOLDED = {"gate": "gate.policy", "model": "model.loader", "report": "report.terminal", "plugin": "plugin.hooks"}


def _warn(old: str, new: str) -> None:
    """Warn at the line that used the old path: the first frame outside the import machinery, this
    module and the folders' `__getattr__`."""
    frame: FrameType | None = sys._getframe(1)
    stacklevel = 2
    while frame is not None and (
        frame.f_code.co_filename.startswith("<frozen importlib")
        or frame.f_code.co_filename == __file__
        or frame.f_code.co_name == "__getattr__"
    ):
        # warnings.warn itself skips the import machinery's frames: count only the others
        stacklevel += not frame.f_code.co_filename.startswith("<frozen importlib")
        frame = frame.f_back
    warnings.warn(
        f"pytest_navigator.{old} moved to pytest_navigator.{new}; import it from there "
        "(the old path will be removed in a later release)",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports `pytest_navigator.<old>` as the module it became, once, with the warning."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        package, _, old = fullname.partition(".")
        if package != "pytest_navigator" or old not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        old = spec.name.partition(".")[2]
        _warn(old, MOVED[old])
        return importlib.import_module(f"pytest_navigator.{MOVED[old]}")

    def exec_module(self, module: ModuleType) -> None:
        """The module it became ran already."""


def install() -> None:
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())


def moved_attribute(folder: str, name: str) -> Any:
    """A name of the old flat module `folder` (now a folder): found in the module that holds it now."""
    target = FOLDED[folder]
    if name.startswith("__") or importlib.util.find_spec(f"pytest_navigator.{folder}.{name}") is not None:
        # a module of the folder (`from pytest_navigator.gate import runs`): the import system loads it
        raise AttributeError(f"module 'pytest_navigator.{folder}' has no attribute {name!r}")
    module = importlib.import_module(f"pytest_navigator.{target}")
    if name.startswith("__") or not hasattr(module, name):
        raise AttributeError(f"module 'pytest_navigator.{folder}' has no attribute {name!r}")
    _warn(f"{folder}.{name}", f"{target}.{name}")
    value = getattr(module, name)
    # kept on the folder: `from pytest_navigator.gate import decide` looks the name up twice
    setattr(sys.modules[f"pytest_navigator.{folder}"], name, value)
    return value
