"""Two run reports compared as the plugin compares a run with its baseline: same entries, same statistics.

Each report keeps its stable measurements as baseline entries (json_report: runtimes[].measured),
so comparing OLD with NEW is exactly the plugin's check of NEW against a baseline recorded as OLD:
verdicts.compare on the same figures, with the same thresholds. A batch size NEW measured but
could not make stable is INCONCLUSIVE, as in the plugin. Measurements from different hardware are
not comparable: `compare_reports` refuses them unless told to (`allow_hardware_mismatch`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from pytest_navigator.errors import NavigatorError
from pytest_navigator.gate.runs import mde_text
from pytest_navigator.gate.thresholds import Limit
from pytest_navigator.gate.verdicts import Verdict, compare

if TYPE_CHECKING:
    from pytest_navigator.measure.summary import BatchSummary
    from pytest_navigator.report.run_report import RunReport

#: What --fail-on accepts, and the verdicts each fails on.
FAIL_ON = {
    "regressed": {Verdict.REGRESSED},
    "inconclusive": {Verdict.REGRESSED, Verdict.INCONCLUSIVE},
    "never": set(),
}


class CompareError(NavigatorError):
    """Two reports that cannot be compared as given (different hardware, nothing in common)."""


@dataclass(frozen=True)
class Row:
    """One model, runtime and batch size: OLD -> NEW and the verdict."""

    model: str
    runtime: str
    batch_size: int
    hardware: str
    metric: str
    old: float | None
    new: float | None
    #: NEW relative to OLD in the metric's own sense: > 1 means slower (less throughput, more instructions).
    slowdown: float | None
    p_value: float | None
    verdict: str
    reason: str
    #: The hardware of OLD's entry, when it differs (--allow-hardware-mismatch).
    old_hardware: str | None = None
    #: The smallest throughput change the runs could resolve (runs.py): "8.1%", "unknown", "" (counts).
    mde: str = ""

    @property
    def change(self) -> str:
        """'1.08x slower', '1.05x faster', 'same' or '' (nothing to compare with)."""
        if self.slowdown is None:
            return ""
        if abs(self.slowdown - 1) < 0.005:
            return "same"
        return f"{self.slowdown:.2f}x slower" if self.slowdown > 1 else f"{1 / self.slowdown:.2f}x faster"


def compare_reports(
    old: RunReport,
    new: RunReport,
    limits: Mapping[str, Limit],
    *,
    allow_hardware_mismatch: bool = False,
    normalize: bool = False,
) -> tuple[list[Row], list[str]]:
    """Rows for every batch size NEW measured, judged against OLD's entry for the same model (by
    name), runtime and batch size; and notes (what OLD had that NEW did not). Raises CompareError
    when an entry of NEW meets one of OLD measured on other hardware, unless allowed."""
    olds = _entries(old)
    rows: list[Row] = []
    mismatched: list[str] = []
    coarse: set[str] = set()
    for model, runtimes in new.models():
        for runtime in runtimes:
            profile = runtime.profile
            if not profile:
                continue
            measured = {size: (hardware, entry) for (hardware, _, size), entry in runtime.measured.items()}
            for batch in profile.batches:
                size = batch.batch_size
                if batch.status == "error":
                    continue
                current = measured.get(size)
                candidates = olds.get((model.name, runtime.runtime, size), [])
                same = [c for c in candidates if current is not None and _same(c[0], current[0])]
                before = (same or candidates)[0] if candidates else None
                hardware = current[0] if current else runtime.hardware or ""
                if before is not None and current is not None and not _same(before[0], current[0]):
                    mismatched.append(
                        f"{model.name} {runtime.runtime} batch {size}: OLD on {before[0]!r}, NEW on {current[0]!r}"
                    )
                    if not allow_hardware_mismatch:
                        continue
                row = _row(model.name, runtime.runtime, size, hardware, batch, current, before, limits, normalize)
                if before is not None and before[0] != hardware:
                    row = replace(row, old_hardware=before[0])
                    if _same(before[0], hardware):
                        coarse.add(f"{before[0]!r} / {hardware!r}")
                rows.append(row)
    if mismatched and not allow_hardware_mismatch:
        shown = "; ".join(mismatched[:3]) + (f"; and {len(mismatched) - 3} more" if len(mismatched) > 3 else "")
        raise CompareError(
            f"the reports were measured on different hardware ({shown}); speed on one machine says nothing "
            f"about another. Compare runs of one machine, or pass --allow-hardware-mismatch to compare anyway."
        )
    if not rows and new.results.runtimes:
        if not any(r.measured or r.profile for r in new.results.runtimes.values()):
            raise CompareError("NEW has no measurements: was it a correctness-only run (--navigator-no-profile)?")
    seen = {(r.model, r.runtime, r.batch_size) for r in rows}
    notes = [f"in OLD only: {m} {r} batch {s}" for (m, r, s) in olds if (m, r, s) not in seen]
    notes += [
        f"hardware keys {pair}: one is the coarser key of a report from before CPU generations were told apart, "
        "so it may come from another generation"
        for pair in sorted(coarse)
    ]
    return rows, notes


def _same(old: str, new: str) -> bool:
    """One machine: equal keys, or one the coarser form of the other (telemetry.coarse_key)."""
    from pytest_navigator.measure.telemetry import coarse_key

    return old == new or coarse_key(new) == old or coarse_key(old) == new


def _entries(report: RunReport) -> dict[tuple[str, str, int], list[tuple[str, dict[str, Any]]]]:
    """OLD's (hardware, entry) by model name, runtime and batch size; a merged report can hold several
    hardware keys."""
    found: dict[tuple[str, str, int], list[tuple[str, dict[str, Any]]]] = {}
    for model, runtimes in report.models():
        for runtime in runtimes:
            for (hardware, _, size), entry in runtime.measured.items():
                found.setdefault((model.name, runtime.runtime, size), []).append((hardware, entry))
    return found


def _row(
    model: str,
    runtime: str,
    size: int,
    hardware: str,
    batch: BatchSummary,
    current: tuple[str, dict[str, Any]] | None,
    before: tuple[str, dict[str, Any]] | None,
    limits: Mapping[str, Limit],
    normalize: bool,
) -> Row:
    counted = batch.instructions is not None
    metric = "instructions" if counted else "throughput"
    old = _headline(before[1], metric) if before else None
    if current is None:  # measured, never stable: the plugin's INCONCLUSIVE
        now = (batch.instructions or {}).get("per_request") if counted else batch.throughput
        p_value, verdict = None, Verdict.INCONCLUSIVE.value
        reason = f"the measurement is unstable ({batch.reason or 'the measurement is unstable'})"
    else:
        judged = compare(runtime, size, current[1], before[1] if before else None, limits, normalize=normalize)
        now = _headline(current[1], metric)
        p_value = judged.p_values.get(metric, min(judged.p_values.values(), default=None))
        verdict, reason = judged.verdict.value, judged.reason
    mde = "" if current is None or counted else mde_text(judged.mde)
    return Row(
        model, runtime, size, hardware, metric, old, now, _slowdown(metric, old, now), p_value, verdict, reason, mde=mde
    )


def _headline(entry: Mapping[str, Any], metric: str) -> float | None:
    if metric == "instructions":
        return float(entry["instructions"]["per_request"]) if "instructions" in entry else None
    return float(entry["throughput"]) if entry.get("throughput") is not None else None


def _slowdown(metric: str, old: float | None, new: float | None) -> float | None:
    if not old or not new:
        return None
    return new / old if metric == "instructions" else old / new


def failed(rows: Sequence[Row], fail_on: str) -> list[Row]:
    """The rows that fail the comparison under --fail-on."""
    return [r for r in rows if Verdict(r.verdict) in FAIL_ON[fail_on]]


def _number(value: float | None, metric: str) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if metric == "instructions" or value >= 1000 else f"{value:.4g}"


def render(rows: Sequence[Row], notes: Sequence[str], fmt: str, fail_on: str) -> str:
    """The comparison as text (a terminal table), markdown (GitHub) or json."""
    bad = failed(rows, fail_on)
    if fmt == "json":
        payload = {
            "rows": [asdict(r) | {"change": r.change} for r in rows],
            "notes": list(notes),
            "fail_on": fail_on,
            "failed": [f"{r.model} {r.runtime} batch {r.batch_size}" for r in bad],
        }
        return json.dumps(payload, indent=2)
    from tabulate import tabulate

    table = [
        [
            r.model,
            r.runtime,
            r.batch_size,
            "instructions/request" if r.metric == "instructions" else "samples/s",
            f"{_number(r.old, r.metric)} → {_number(r.new, r.metric)}",
            r.change,
            "-" if r.p_value is None else f"{r.p_value:.2g}",
            r.mde or "-",
            r.verdict.upper() if fmt == "text" else f"**{r.verdict}**" if r in bad else r.verdict,
            r.reason,
        ]
        for r in rows
    ]
    headers = ["model", "runtime", "batch", "metric", "old → new", "change", "p", "MDE", "verdict", "reason"]
    if any(r.old_hardware for r in rows):  # --allow-hardware-mismatch: say what was compared with what
        headers.insert(3, "hardware")
        for line, r in zip(table, rows, strict=True):
            line.insert(3, f"{r.old_hardware} → {r.hardware}" if r.old_hardware else r.hardware)
    lines = [tabulate(table, headers, tablefmt="github" if fmt == "markdown" else "simple", disable_numparse=True)]
    lines += ["", *(f"- {n}" if fmt == "markdown" else n for n in notes)] if notes else []
    counts = {v: sum(r.verdict == v for r in rows) for v in dict.fromkeys(r.verdict for r in rows)}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items()) or "nothing compared"
    verdict = (
        f"FAILED ({len(bad)} row{'s' if len(bad) != 1 else ''} {' or '.join(sorted({r.verdict for r in bad}))}; "
        f"--fail-on={fail_on})"
        if bad
        else f"passed (--fail-on={fail_on})"
    )
    lines += ["", f"{summary}: {verdict}"]
    return "\n".join(lines)
