"""A verdict and the comparison behind it: what a measurement judged against its baseline came to,
with its figures, p-values and minimum detectable effects (verdicts.compare makes them)."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_navigator.gate.runs import describe_mde


class Verdict(enum.StrEnum):
    """A comparison's outcome. A str enum: equal by value, so verdicts made by a module imported twice
    (pytester's in-process runs re-import what a run imported) still compare equal."""

    PASS = "pass"
    REGRESSED = "regressed"
    IMPROVED = "improved"
    INCONCLUSIVE = "inconclusive"
    NEW = "new"


@dataclass(frozen=True)
class Comparison:
    """The verdict for one runtime at one batch size, with the figures behind it."""

    runtime: str
    batch_size: int
    verdict: Verdict
    #: metric -> (baseline, current, bound); baseline None for NEW
    figures: dict[str, tuple[float | None, float, float | None]] = field(default_factory=dict)
    p_values: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    version_changes: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    #: Throughput now / baseline, as measured and divided by the calibration workload's ratio.
    #: (The throughput verdict itself uses the median block ratio: see judging._block_ratio.)
    raw_ratio: float | None = None
    normalized_ratio: float | None = None
    #: Whether the verdict was judged on calibration-normalized figures (--navigator-normalize).
    normalized: bool = False
    #: "baseline" or "A/B against OLD": what the verdict compared with.
    against: str = "baseline"
    #: The machine's speed now / at recording (calibration workload), when it moved too far to judge.
    calibration_drift: float | None = None
    #: Per metric: the smallest relative change this comparison could detect (runs.py; inf: unknown).
    mde: dict[str, float] = field(default_factory=dict)
    #: Processes behind the figures: (now, in the baseline); None for a count or the window rule.
    runs: tuple[int, int] | None = None
    #: INCONCLUSIVE because this machine's run-to-run spread cannot resolve the limit (the gate warns).
    unresolved: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the report's verdict object (report.schema.json)."""
        return {
            "batch_size": self.batch_size,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "against": self.against,
            "raw_ratio": self.raw_ratio,
            "normalized_ratio": self.normalized_ratio,
            "normalized": self.normalized,
            "figures": {
                metric: {"baseline": baseline, "current": current, "limit": limit}
                for metric, (baseline, current, limit) in self.figures.items()
            },
            "p_values": dict(self.p_values),
            "version_changes": {k: list(v) for k, v in self.version_changes.items()},
            "calibration_drift": self.calibration_drift,
            "mde": {m: None if math.isinf(v) else v for m, v in self.mde.items()},
            "runs": None if self.runs is None else list(self.runs),
            "unresolved": self.unresolved,
        }

    @classmethod
    def from_dict(cls, runtime: str, data: Mapping[str, Any]) -> Comparison:
        return cls(
            runtime,
            data["batch_size"],
            Verdict(data["verdict"]),
            {m: (f["baseline"], f["current"], f["limit"]) for m, f in data["figures"].items()},
            dict(data["p_values"]),
            data["reason"],
            {k: (v[0], v[1]) for k, v in data["version_changes"].items()},
            data["raw_ratio"],
            data["normalized_ratio"],
            data["normalized"],
            data["against"],
            data.get("calibration_drift"),
            {m: math.inf if v is None else v for m, v in (data.get("mde") or {}).items()},
            None if data.get("runs") is None else (data["runs"][0], data["runs"][1]),
            bool(data.get("unresolved", False)),
        )

    def delta(self, metric: str = "throughput") -> float | None:
        """Relative change of a metric against the baseline (+0.05 = 5% higher)."""
        baseline, current, _ = self.figures.get(metric, (None, 0.0, None))
        return None if not baseline else current / baseline - 1

    def describe(self) -> str:
        parts = []
        for metric, (baseline, current, bound) in self.figures.items():
            unit = {"throughput": "samples/s", "instructions": "instructions per request"}.get(metric, "ms")
            number = "{:,.0f}" if metric == "instructions" else "{:.4g}"
            change = "" if not baseline else f" ({current / baseline - 1:+.1%})"
            limit = "" if bound is None else f", limit {number.format(bound)}"
            was = "" if baseline is None else f"{number.format(baseline)} -> "
            p = f", p={self.p_values[metric]:.2g}" if metric in self.p_values else ""
            parts.append(f"{metric} {was}{number.format(current)} {unit}{change}{limit}{p}")
        versions = "; ".join(f"{k} {a or '-'} -> {b or '-'}" for k, (a, b) in self.version_changes.items())
        lines = [f"{self.runtime} batch {self.batch_size}: {self.verdict.value.upper()}: {self.reason}"]
        if self.normalized:
            lines[0] += " (figures normalized by the calibration workload)"
        lines += [f"  {p}" for p in parts]
        if self.raw_ratio is not None:
            normalized = (
                "" if self.normalized_ratio is None else f", calibration-normalized {self.normalized_ratio:.3f}"
            )
            lines.append(f"  throughput ratio vs {self.against}: raw {self.raw_ratio:.3f}{normalized}")
        if self.mde:
            lines.append(f"  {self.resolution()}")
        if versions:
            lines.append(f"  versions changed since the baseline: {versions}")
        return "\n".join(lines)

    def resolution(self) -> str:
        """'smallest change resolved (MDE, 3 runs against 6): throughput 8.1%, p95 12%': what this
        comparison could have detected ("" when not judged between runs)."""
        if not self.mde:
            return ""
        shown = ", ".join(f"{m} {describe_mde(v)}" for m, v in self.mde.items())
        behind = "" if self.runs is None else f", {self.runs[0]} runs against {self.runs[1]}"
        return f"smallest change resolved (MDE{behind}): {shown}"
