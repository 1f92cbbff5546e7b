"""Terminal summaries of a navigator run, as tables (tabulate)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_navigator.session import NavigatorSession


def runtime_table(session: NavigatorSession) -> str:
    """One row per model and runtime: what happened, the build time and the reason for a skip."""
    from tabulate import tabulate

    rows = []
    for (path, runtime), record in session.records.items():
        model = session.models.get(path)
        device = session.registry.get(runtime).device if runtime in session.registry else "?"
        build = "" if record.build_seconds is None else f"{record.build_seconds:.1f}"
        rows.append([model.name if model else path.name, runtime, device, record.status, build, record.detail])
    return tabulate(rows, headers=["model", "runtime", "device", "status", "build s", "detail"], tablefmt="simple")
