"""The run's views beside the JSON report: HTML, Markdown (and GitHub's job summary), pytest-benchmark JSON.

Each reads the one RunReport (NavigatorSession.report, or json_report.load_report), so the plugin and the
harness CLI (`navigator report`, `navigator export`) write the same files from the same data.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_navigator import options

if TYPE_CHECKING:
    from pytest_navigator.report.run_report import RunReport

#: GitHub refuses a job summary step over 1 MiB; the appended text stays under this.
STEP_SUMMARY_LIMIT = 1024 * 1024 - 1024


def write_html(report: RunReport, path: Path) -> None:
    from pytest_navigator.report.html import render

    _write(path, render(report))


def write_markdown(report: RunReport, path: Path) -> None:
    from pytest_navigator.report.markdown import render

    _write(path, render(report))


def write_benchmark_json(report: RunReport, path: Path) -> None:
    import json

    from pytest_navigator.report.benchmark_export import to_pytest_benchmark

    _write(path, json.dumps(to_pytest_benchmark(report), indent=2) + "\n")


def append_step_summary(report: RunReport, environ: Mapping[str, str] = os.environ) -> Path | None:
    """Under GitHub Actions ($GITHUB_STEP_SUMMARY set), append the Markdown report, cut to fit GitHub's
    1 MiB limit (the verdict table first, so a cut drops details, never verdicts). Returns the file."""
    target = environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    from pytest_navigator.report.markdown import render

    text = render(report, limit=STEP_SUMMARY_LIMIT)
    with open(target, "a", encoding="utf-8") as summary:
        summary.write(text if text.endswith("\n") else text + "\n")
    return Path(target)


def write_views(report: RunReport, html: Path | None, markdown: Path | None, benchmark: Path | None) -> list[str]:
    """Every view asked for; returns one line per view that could not be written (the run goes on)."""
    problems = []
    for option, path, write in (
        (options.HTML, html, write_html),
        (options.MARKDOWN, markdown, write_markdown),
        (options.BENCHMARK_JSON, benchmark, write_benchmark_json),
    ):
        if path is None:
            continue
        try:
            write(report, path)
        except OSError as exc:  # checked at the start; a disk can still fill up since
            problems.append(f"{option}={path}: not written ({exc.strerror or exc}).")
    try:
        append_step_summary(report)
    except OSError as exc:
        problems.append(f"$GITHUB_STEP_SUMMARY: not appended to ({exc.strerror or exc}).")
    return problems


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


def write_all(report: RunReport, json_path: Path | None, *views: Path | None) -> list[str]:
    """The JSON report (when asked for) and every view; one line per file that could not be written."""
    from pytest_navigator.report.json_report import write_report

    problems = []
    if json_path is not None:
        try:
            write_report(report, json_path)
        except OSError as exc:  # checked at the start; a disk can still fill up since
            problems.append(f"{options.REPORT}={json_path}: not written ({exc.strerror or exc}).")
    html, markdown, benchmark = views
    return problems + write_views(report, html, markdown, benchmark)
