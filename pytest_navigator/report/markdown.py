"""The run report as GitHub-flavoured Markdown, for pull-request comments and GitHub's job summary.

Text and tables only: GitHub strips `data:` images, so the plots live in the HTML report. The verdict
rows are built here and shared with html_report, so both views word a verdict the same way.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tabulate import tabulate

from pytest_navigator.gate.runs import mde_text
from pytest_navigator.gate.selection import describe
from pytest_navigator.report.fields import cell, shown_columns

if TYPE_CHECKING:
    from pytest_navigator.check.correctness import CorrectnessReport
    from pytest_navigator.gate.verdicts import Comparison
    from pytest_navigator.measure.summary import ProfileSummary
    from pytest_navigator.report.results import ModelInfo, RuntimeResult
    from pytest_navigator.report.run_report import RunReport

#: The order rows are listed in: what needs a reader's attention first, so a cut keeps it.
SEVERITY = ("regressed", "inconclusive", "improved", "new", "pass")
VERDICT_HEADERS = ("model", "runtime", "batch", "verdict", "throughput old → new", "ratio", "p-value", "MDE", "reason")
ELSEWHERE = "the full report is in the HTML and JSON reports"


@dataclass(frozen=True, slots=True)
class VerdictRow:
    """One verdict as both views print it: plain strings, not yet escaped for either."""

    model: str
    runtime: str
    batch_size: int
    verdict: str
    figures: str
    ratio: str
    p_value: str
    reason: str
    #: The smallest throughput change the runs could resolve (runs.py), "" for counts and older reports.
    mde: str = ""

    def cells(self) -> tuple[str, ...]:
        return (
            self.model,
            self.runtime,
            str(self.batch_size),
            self.verdict,
            self.figures,
            self.ratio,
            self.p_value,
            self.mde or "—",
            self.reason,
        )


def verdict_rows(report: RunReport) -> list[VerdictRow]:
    """Every runtime's verdicts, most severe first (then in the report's order)."""
    rows = []
    for model, runtimes in report.models():
        for runtime in runtimes:
            for verdict in runtime.comparisons:
                rows.append(_verdict_row(model.name, runtime.runtime, verdict))
    return sorted(rows, key=lambda row: SEVERITY.index(row.verdict) if row.verdict in SEVERITY else len(SEVERITY))


def ratio_text(baseline: float | None, current: float | None, higher_is_faster: bool = True) -> str:
    """'1.08x slower' / '1.05x faster' of a current figure against its baseline; '—' without both."""
    if not baseline or not current:
        return "—"
    speedup = current / baseline if higher_is_faster else baseline / current
    factor = max(speedup, 1 / speedup)
    if f"{factor:.2f}" == "1.00":
        return "1.00x (same)"
    return f"{factor:.2f}x {'faster' if speedup > 1 else 'slower'}"


def number(value: float | None, unit: str = "") -> str:
    """Figures at a readable precision: thousands separated, small values to 3 significant digits."""
    if value is None:
        return "—"
    text = f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return f"{text} {unit}".rstrip()


def settings_line(report: RunReport) -> str:
    """The device and the settings that decide a verdict, in one line (both views' headers)."""
    cpu = report.device.get("cpu", {})
    gpu = report.device.get("gpu")
    gpus = ", ".join(gpu["names"]) if gpu and gpu.get("names") else "none"
    settings = report.settings
    thresholds = ", ".join(settings.get("thresholds", {}).values()) or "defaults"
    budget = settings.get("latency_budget_ms")
    return (
        f"Created {report.created}; CPU {cpu.get('model', '?')} ({cpu.get('cores', '?')} cores, "
        f"{cpu.get('usable_cores', '?')} usable); GPU {gpus}; thresholds {thresholds}; "
        f"latency budget {'none' if budget is None else f'{budget:g} ms p99'}"
    )


def render(report: RunReport, limit: int | None = None) -> str:
    """The Markdown report; with `limit` (UTF-8 bytes) it is cut to fit: details blocks go first, from
    the end, then verdict rows, so the header and the most severe verdicts are what stays."""
    header = _header(report)
    rows = [[_cell(c) for c in row.cells()] for row in verdict_rows(report)]
    blocks = [_details(model, runtime) for model, runtimes in report.models() for runtime in runtimes]
    full = _join(header, _table(rows), blocks)
    if limit is None or _size(full) <= limit:
        return full
    table = _table(rows)
    for kept in range(len(blocks) - 1, -1, -1):
        note = f"_{len(blocks) - kept} of {len(blocks)} runtime details left out to fit {limit:,} bytes; {ELSEWHERE}._"
        text = _join(header, table, [*blocks[:kept], note])
        if _size(text) <= limit:
            return text
    # Not even the verdict table fits: keep as many of its rows as do (a binary search; length grows with rows).
    low, high = 0, len(rows)
    while low < high:
        middle = (low + high + 1) // 2
        if _size(_cut_table(header, rows, middle, len(blocks), limit)) <= limit:
            low = middle
        else:
            high = middle - 1
    text = _cut_table(header, rows, low, len(blocks), limit)
    # A header alone over the limit (a tiny limit): cut at a character boundary rather than exceed it.
    return text if _size(text) <= limit else text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _verdict_row(model: str, runtime: str, verdict: Comparison) -> VerdictRow:
    figures = verdict.figures
    # Instruction-count verdicts have no throughput: more instructions per request is the slower side.
    metric = "throughput" if "throughput" in figures else "instructions" if "instructions" in figures else None
    baseline, current, _ = figures[metric] if metric else (None, None, None)
    unit = "/s" if metric == "throughput" else " instr/request" if metric else ""
    if current is None:
        shown = "—"
    else:
        shown = (
            f"{number(baseline)} → {number(current)}{unit}" if baseline is not None else f"new: {number(current)}{unit}"
        )
    return VerdictRow(
        model=model,
        runtime=runtime,
        batch_size=verdict.batch_size,
        verdict=verdict.verdict.value,
        figures=shown,
        ratio=ratio_text(baseline, current, higher_is_faster=metric == "throughput"),
        p_value=", ".join(f"{m} {p:.2g}" for m, p in sorted(verdict.p_values.items())) or "—",
        reason=verdict.reason,
        mde=mde_text(verdict.mde or None),
    )


def _header(report: RunReport) -> str:
    counts = {word: 0 for word in SEVERITY}
    for _, runtimes in report.models():
        for runtime in runtimes:
            for verdict in runtime.comparisons:
                counts[verdict.verdict.value] = counts.get(verdict.verdict.value, 0) + 1
    total = sum(counts.values())
    summary = ", ".join(f"**{n} {word}**" if word == "regressed" else f"{n} {word}" for word, n in counts.items() if n)
    lines = ["# pytest-navigator report", "", _cell(settings_line(report)), ""]
    lines += [f"- **{_cell(m.name)}**: {_cell(describe(m.best))}" for m, _ in report.models()]
    lines += ["", f"{total} verdicts: {summary}." if total else "No verdicts: nothing was compared with a baseline."]
    return "\n".join(lines)


def _details(model: ModelInfo, runtime: RuntimeResult) -> str:
    # A blank line after </summary> lets GitHub render the Markdown (tables) inside the block.
    name, status = _cell(runtime.runtime), _cell(runtime.status.value)
    lines = [f"<details><summary>runtime {name} ({_cell(model.name)}): {status}</summary>", ""]
    build = runtime.build_seconds
    lines.append(
        f"- status: {status}, device {_cell(runtime.device or '—')}, precision "
        f"{_cell(runtime.precision or '—')}, build {'—' if build is None else f'{build:.3g} s'}"
    )
    if runtime.detail:
        lines.append(f"- detail: {_cell(runtime.detail)}")
    lines += [f"- {_cell(header)}: {_cell(cell(runtime, name))}" for name, header in shown_columns([runtime])]
    lines += _correctness_lines(runtime.correctness)
    lines += _profile_lines(runtime.profile)
    lines += ["", f"{_cell(describe(model.best))}", "", "</details>"]
    return "\n".join(lines)


def _correctness_lines(correctness: CorrectnessReport | None) -> list[str]:
    if correctness is None:
        return ["- correctness: not checked"]
    verdict = "passed" if correctness.passed else "**failed**"
    lines = [f"- correctness: {verdict} ({_cell(correctness.verify)}; {correctness.samples} samples)"]
    lines += [f"- warning: {_cell(w)}" for w in correctness.warnings]
    multiple = correctness.budget_multiple
    rows = [
        [
            _cell(o.name),
            f"{o.max_abs_error:.3g}",
            f"{o.max_rel_error:.3g}",
            "—" if o.budget_ratio is None else f"{o.budget_ratio:.3g}",
            "—" if o.budget_ratio is None or not multiple else f"{o.budget_ratio / multiple:.3g}",
            _cell(o.truth or "—"),
        ]
        for o in correctness.outputs
    ]
    if rows:
        headers = ("output", "max abs error", "max rel error", "× rounding", f"of budget ({multiple or '—'}×)", "truth")
        lines += ["", tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True), ""]
    return lines


def _profile_lines(profile: ProfileSummary | None) -> list[str]:
    if profile is None:
        return ["- profile: not measured"]
    lines = [f"- profile: {_cell(profile.mode or 'timed')}; stop reason: {_cell(profile.stop_reason)}"]
    if profile.counted:
        headers: Sequence[str] = ("batch", "status", "instructions/request", "instructions/sample", "reason")
        rows = [
            [b.batch_size, b.status, *_instructions(b.instructions), _cell(b.error or b.reason)]
            for b in profile.batches
        ]
    else:
        headers = ("batch", "status", "throughput /s", "p50 ms", "p99 ms", "windows", "reason")
        rows = [
            [
                b.batch_size,
                b.status,
                number(b.throughput),
                number((b.latency_ms or {}).get("p50")),
                number((b.latency_ms or {}).get("p99")),
                f"{len(b.stable_windows)} stable of {len(b.windows)}",
                _cell(b.error or b.reason),
            ]
            for b in profile.batches
        ]
    if rows:
        lines += ["", tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)]
    return lines


def _instructions(counted: Mapping[str, Any] | None) -> list[str]:
    if not counted:
        return ["—", "—"]
    return [f"{counted['per_request']:,.0f}", f"{counted['per_sample']:,.0f}"]


def _cell(text: object) -> str:
    """A string from the report made safe for a table cell: HTML escaped (GitHub renders HTML in
    Markdown), pipes escaped (they end a cell), newlines flattened (they end a row)."""
    flat = " ".join(str(text).split())
    return html.escape(flat, quote=False).replace("|", "\\|")


def _table(rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return ""
    return tabulate(rows, headers=VERDICT_HEADERS, tablefmt="github", disable_numparse=True)


def _cut_table(header: str, rows: Sequence[Sequence[str]], kept: int, blocks: int, limit: int) -> str:
    parts = [_table(rows[:kept]) if kept else "", f"… {len(rows) - kept} more rows"]
    note = f"_{blocks} of {blocks} runtime details left out to fit {limit:,} bytes; {ELSEWHERE}._"
    return _join(header, "\n".join(p for p in parts if p), [note] if blocks else [])


def _join(header: str, table: str, blocks: Iterable[str]) -> str:
    return "\n\n".join(part for part in (header, table, *blocks) if part) + "\n"


def _size(text: str) -> int:
    return len(text.encode("utf-8"))
