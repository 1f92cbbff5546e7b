"""The machine-readable report of a run (--navigator-report=out.json), the one input later tools read.

It is the run's `RunReport` written out (`RunReport.to_dict`), in the shape of the JSON Schema
`report.schema.json` beside this module. schema_version 5 adds each model's baseline update, unused
entries and profile error, each batch size's figures per process and the interference seen, and
each profile's runtime id and interference mode; 4 added each batch size's GPU memory as NVML sees
the runtime's process and TensorRT's engine memory; 3 added each batch size's pooled latency
distribution, each runtime's hardware key and stable measurements as baseline entries, and the best
runtime per model. Values that do not exist (a skipped runtime's profile) are null, never left out,
so readers need no guessing. The navigator CLI (`navigator compare/report/merge/export`) reads this
file back into a RunReport: `load_report` checks it, names what is wrong with it, and reads every
older version (what a version lacked is unknown: null).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_navigator.errors import NavigatorError
from pytest_navigator.report.results import SCHEMA_VERSION
from pytest_navigator.report.run_report import RunReport

if TYPE_CHECKING:
    from pytest_navigator.settings import Settings

#: Versions `load_report` reads (older ones lack the fields compare needs: it says so).
READABLE = (1, 2, 3, 4, 5)
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")

__all__ = [
    "READABLE",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "ReportError",
    "load_report",
    "settings_snapshot",
    "write_report",
]


def settings_snapshot(settings: Settings, limits: Mapping[str, Any], against: Any = None) -> dict[str, Any]:
    """What a reader of the report needs to know of the settings: how it measured and judged."""
    return {
        "profiler": settings.profiler.to_dict(),
        "thresholds": {m: str(limit) for m, limit in limits.items()},
        "normalize": settings.normalize,
        "against": str(against.path) if against is not None else None,
        "against_name": against.name if against is not None else None,
        "update_baselines": settings.update_baselines,
        "latency_budget_ms": settings.latency_budget_ms,
    }


def write_report(report: RunReport, path: Path) -> None:
    """Write a run's report as indented JSON (RunReport.to_dict: report.schema.json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")


class ReportError(NavigatorError):
    """A run report that cannot be read: missing, not JSON, not a report, or from a newer version."""


ACCEPTED = "a run report written by `navigator profile -o PATH` or `pytest --navigator-report=PATH`"


def load_report(path: Path) -> RunReport:
    """A run report read and checked: every problem raises ReportError naming the file and what is
    accepted. Reads every schema version in READABLE: a field newer than the file is unknown (None)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file; give {ACCEPTED}.") from None
    except IsADirectoryError:
        raise ReportError(f"{path} is a folder; give {ACCEPTED}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc}).") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); was it cut short? Give {ACCEPTED}."
        ) from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or not isinstance(data.get("models"), list):
        raise ReportError(
            f"{path}: JSON, but not a pytest-navigator run report (no schema_version and models); give {ACCEPTED}."
        )
    if version > SCHEMA_VERSION:
        raise ReportError(
            f"{path}: report schema_version {version} is newer than this pytest-navigator reads "
            f"({READABLE[0]} to {SCHEMA_VERSION}); upgrade pytest-navigator (pip install -U pytest-navigator)."
        )
    if version not in READABLE:
        raise ReportError(
            f"{path}: report schema_version {version!r} is unknown; this version reads {READABLE[0]} to {SCHEMA_VERSION}."
        )
    try:
        return RunReport.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(
            f"{path}: a run report of schema_version {version}, but its content is malformed "
            f"({type(exc).__name__}: {exc}); give {ACCEPTED}."
        ) from None
