"""A measurement against its baseline: PASS, REGRESSED, IMPROVED, INCONCLUSIVE or NEW.

REGRESSED needs two things: an effect beyond the threshold (default throughput below 95% of the
baseline, p95 or p99 latency above 110% of it) and statistical significance, so that noise alone
does not fail a build. Timed figures are judged between processes (runs.py): each process the
runtime was measured in gives one figure, and a one-sided t-test on their logs asks whether the new
runs are worse than the limit allows, not whether they differ at all (runs of an unchanged runtime
always differ a little). Every timed verdict carries its minimum detectable effect; one whose MDE is
wider than the limit allows is INCONCLUSIVE rather than PASS. A threshold given as an absolute value
(seed 002's style: `{"throughput": 500.0}` next to `{"throughput": "95%"}`) is tested with a
one-sample t-test of the runs against that value.

The rule before (unit="window": Mann-Whitney between the two runs' block samples) is kept for
harness.bench_detection to measure against: it treats the windows of one process as independent
evidence about the next process, and called 11 of 30 pairs of unchanged runs REGRESSED or IMPROVED.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pytest_navigator import options
from pytest_navigator.gate import runs
from pytest_navigator.gate.thresholds import Limit

#: A slowdown must be this unlikely under "no change" to count.
ALPHA = 0.01
#: Fewer blocks than this on either side cannot support a test.
MIN_BLOCKS = 6
#: A/B: fewer window pairs than this cannot support the paired test (profiler.AB_MIN_PAIRS).
AB_PAIRS = 9
#: What a relative limit's significance test must show: the change is beyond the limit (default), or
#: that there is any change at all ("difference": the rule before, kept to measure against).
SIGNIFICANCE = ("beyond-limit", "difference")
#: What a timed verdict treats as one piece of evidence: a process ("run", the default) or a window's
#: block ("window": the rule before, kept to measure against).
UNITS = ("run", "window")
#: How far the machine's speed may drift when no relative throughput limit sets it (drift_tolerance).
DRIFT_TOLERANCE = 0.05


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
    #: (The throughput verdict itself uses the median block ratio: see _block_ratio.)
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
        shown = ", ".join(f"{m} {runs.describe_mde(v)}" for m, v in self.mde.items())
        behind = "" if self.runs is None else f", {self.runs[0]} runs against {self.runs[1]}"
        return f"smallest change resolved (MDE{behind}): {shown}"


def compare(
    runtime: str,
    batch_size: int,
    current: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    limits: Mapping[str, Limit],
    stable: bool = True,
    normalize: bool = False,
    against: str | None = None,
    significance: str = "beyond-limit",
    unit: str = "run",
) -> Comparison:
    """Judge a current entry (baselines.entry_for) against the stored one; with `normalize`, the
    current figures are first scaled by the calibration workload's baseline/current ratio. With
    `against` (an A/B run: `baseline` is the old model measured in this run, window by window beside
    the new one) the significance test is paired and no normalization applies. `significance`
    (SIGNIFICANCE) says what the test must show: that the change is beyond the limit (the default),
    or only that there is a change ("difference", the rule before; kept for harness.bench_detection).
    `unit` (UNITS): judge between processes ("run", runs.py) or between windows' blocks ("window")."""
    if significance not in SIGNIFICANCE:
        raise ValueError(f"significance={significance!r}: give one of {', '.join(SIGNIFICANCE)}")
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r}: give one of {', '.join(UNITS)}")
    versions = _version_changes(baseline.get("libraries", {}) if baseline else {}, current.get("libraries", {}))
    if "instructions" in current:
        return _judge_counts(runtime, batch_size, current, baseline, limits.get("instructions"), stable, versions)
    limits = {m: limit for m, limit in limits.items() if m != "instructions"}
    raw_ratio = normalized_ratio = None
    if baseline is not None and baseline.get("throughput"):
        raw_ratio = float(current["throughput"]) / float(baseline["throughput"])
        if current.get("calibration") and baseline.get("calibration"):
            factor = float(baseline["calibration"]) / float(current["calibration"])
            normalized_ratio = raw_ratio * factor
            if normalize and against is None:
                current = _scaled(current, factor)
    paired = against is not None
    judge = _judge_runs if unit == "run" else functools.partial(_judge, significance=significance)
    result = judge(runtime, batch_size, current, baseline, limits, stable, versions, paired)
    drift = _drift(current, baseline, limits) if not normalize and not paired and drift_predicts(runtime) else None
    if drift is not None and result.verdict is Verdict.REGRESSED:
        result = _judge_drifted(result, current, baseline, limits, judge, drift)
    else:
        drift = None
    return replace(
        result,
        raw_ratio=raw_ratio,
        normalized_ratio=None if against else normalized_ratio,
        normalized=normalize and normalized_ratio is not None and against is None,
        against=f"A/B against {against}" if against else "baseline",
        calibration_drift=drift,
    )


def drift_tolerance(limits: Mapping[str, Limit]) -> float:
    """How far the machine's speed (the calibration workload's) may move from the baseline's before a
    stored number is no longer comparable: as far as the throughput limit lets the runtime move (5%
    under the default 95%), since a drift that large is indistinguishable from a regression that large."""
    limit = limits.get("throughput")
    return abs(1 - limit.value) if limit is not None and limit.relative else DRIFT_TOLERANCE


#: Runtimes whose speed the calibration workload's was measured to predict, process by process
#: (harness/bench_detection.py: Pearson r of the logs over 34-36 processes each, the calibration
#: measured in the runtime's own process, this project's 2-core VM, 2026-12-03): only their limits
#: widen with the machine's drift. A runtime not listed (another device, another compiler) has not
#: shown that its speed follows the calibration's, and a drift that predicts nothing must not excuse
#: a slowdown.
DRIFT_PREDICTS = {
    "onnxruntime-cpu": "r +0.84 BERT, +0.68 GPT-2, +0.64 to +0.76 MobileNetV3-Small; +0.65 to +0.77 BERT busy",
    "torch-cpu": "r +0.81 BERT",
}


def drift_predicts(runtime: str) -> bool:
    """Whether `runtime` (with or without its options, "onnxruntime-cpu:intra_op_num_threads=1") is one
    whose speed the calibration workload's drift was measured to predict (DRIFT_PREDICTS)."""
    from pytest_navigator.runtimes.runtime_options import split_runtime_id

    return split_runtime_id(runtime)[0] in DRIFT_PREDICTS


def _drift(current: Mapping[str, Any], baseline: Mapping[str, Any] | None, limits: Mapping[str, Limit]) -> float | None:
    """The machine's speed now / at recording, from the calibration workload measured beside each
    profile, when it moved beyond drift_tolerance; None when within it or not measured."""
    if baseline is None or not current.get("calibration") or not baseline.get("calibration"):
        return None
    if not any(limit.relative for limit in limits.values()):
        return None  # absolute limits (an SLA) hold whatever the machine's speed
    speed = float(current["calibration"]) / float(baseline["calibration"])
    return speed if abs(speed - 1) > drift_tolerance(limits) else None


def _judge_drifted(
    regressed: Comparison,
    current: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    limits: Mapping[str, Limit],
    judge: Any,
    speed: float,
) -> Comparison:
    """A regression at the limits, on a machine whose own speed moved by `speed` since the recording:
    the relative limits widen by the square of that drift (a runtime's speed moves with the machine's
    by more than the calibration workload's, and not in proportion: an unchanged MLP moved 65% while
    the calibration moved 23%). Beyond the widened limits it is still a regression; within them the
    drift could explain it, and the verdict is INCONCLUSIVE (the gate warns), never a false alarm."""
    widen = max(speed, 1 / speed) ** 2
    wider = {
        m: replace(limit, value=limit.value / widen if m == "throughput" else limit.value * widen)
        if limit.relative
        else limit
        for m, limit in limits.items()
    }
    runtime, batch_size, versions = regressed.runtime, regressed.batch_size, regressed.version_changes
    found = judge(runtime, batch_size, current, baseline, wider, True, versions, False)
    machine = (
        f"this machine ran the calibration workload at {speed:.2f}x the speed it had when the baseline was recorded"
    )
    drift = f"the drift of a machine that ran the calibration workload at {speed:.2f}x its speed at the recording"
    shown = ", ".join(f"{m}={limit.value:.0%}" for m, limit in wider.items() if limits[m].relative)
    if found.verdict is Verdict.REGRESSED:
        return replace(found, reason=f"{regressed.reason}; beyond even the limits {drift} widens them to ({shown})")
    return replace(
        found,
        verdict=Verdict.INCONCLUSIVE,
        reason=f"beyond the limit, but {machine}: within the limits that drift widens ({shown}), a stored number "
        f"cannot tell a regression from the machine (rerun on a quieter machine, or use {options.AGAINST} or "
        f"{options.MODE}=instructions)",
        mde=regressed.mde,
        unresolved=False,
    )


def _scaled(entry: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """An entry as if measured on a machine `factor` times as fast: throughputs up, latencies down."""
    scaled = dict(entry)
    scaled["throughput"] = entry["throughput"] * factor
    scaled["block_throughputs"] = [x * factor for x in entry.get("block_throughputs", ())]
    scaled["latency_ms"] = {k: v / factor for k, v in entry["latency_ms"].items()}
    scaled["block_p95_ms"] = [x / factor for x in entry.get("block_p95_ms", ())]
    if "runs" in entry:
        scaled["runs"] = [
            {k: v * factor if k == "throughput" else v / factor for k, v in run.items()} for run in entry["runs"]
        ]
    return scaled


def _judge(
    runtime: str,
    batch_size: int,
    current: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    limits: Mapping[str, Limit],
    stable: bool,
    versions: dict[str, tuple[str | None, str | None]],
    paired: bool = False,
    significance: str = "beyond-limit",
) -> Comparison:
    figures: dict[str, tuple[float | None, float, float | None]] = {
        metric: (_figure(baseline, metric) if baseline else None, _figure(current, metric), None) for metric in limits
    }
    if not stable:
        return Comparison(runtime, batch_size, Verdict.INCONCLUSIVE, figures, reason="the measurement is unstable")
    if baseline is None:
        absolute = [m for m, limit in limits.items() if not limit.relative]
        if not absolute:
            return Comparison(runtime, batch_size, Verdict.NEW, figures, reason="no baseline for this hardware")
    if paired and len(current.get("paired_throughputs", ())) < AB_PAIRS:
        return Comparison(
            runtime, batch_size, Verdict.INCONCLUSIVE, figures, reason=f"fewer than {AB_PAIRS} window pairs to compare"
        )
    if len(current.get("block_throughputs", ())) < MIN_BLOCKS or (
        baseline is not None and len(baseline.get("block_throughputs", ())) < MIN_BLOCKS
    ):
        return Comparison(
            runtime, batch_size, Verdict.INCONCLUSIVE, figures, reason=f"fewer than {MIN_BLOCKS} blocks to compare"
        )
    regressed: list[str] = []
    improved: list[str] = []
    notes: list[str] = []
    p_values: dict[str, float] = {}
    level = ALPHA / len(limits)  # Bonferroni: each metric tested is one more chance of a false alarm
    for metric, limit in limits.items():
        base = _figure(baseline, metric) if baseline else None
        bound = limit.bound(base)
        if bound is None:
            continue
        now = _figure(current, metric)
        figures[metric] = (base, now, bound)
        if metric == "throughput" and base is not None:
            # The effect is the median block ratio: one stall in one window cannot make a regression.
            ratio = _block_ratio(current, baseline, paired)
            worse, better = ratio < limit.value, ratio > 1 / limit.value
        else:
            worse = now < bound if metric == "throughput" else now > bound
            better = base is not None and now < base / limit.value
        if not (worse or better):
            continue
        p_worse = _p_value(metric, current, baseline, limit, "worse", paired, significance)
        if worse:
            p_values[metric] = p_worse
            (regressed if p_worse < level else notes).append(metric)
        elif limit.relative and metric == "throughput":
            p_better = _p_value(metric, current, baseline, limit, "better", paired, significance)
            p_values[metric] = p_better
            if p_better < level:
                improved.append(metric)
    if regressed:
        beyond = "significantly beyond" if significance == "beyond-limit" else "beyond"
        tail = "" if significance == "beyond-limit" else " and significant"
        reason = (
            f"{', '.join(regressed)} {beyond} the limit ({', '.join(str(limits[m]) for m in regressed)}){tail} "
            f"(p < {level:.2g}: {ALPHA} over {len(limits)} metrics)"
        )
        return Comparison(runtime, batch_size, Verdict.REGRESSED, figures, p_values, reason, versions)
    if improved:
        return Comparison(
            runtime, batch_size, Verdict.IMPROVED, figures, p_values, "throughput significantly higher", versions
        )
    reason = (
        f"{', '.join(notes)} beyond the limit but not significantly (p >= {level:.2g}): noise cannot be ruled out"
        if notes
        else "within the limits"
    )
    return Comparison(runtime, batch_size, Verdict.PASS, figures, p_values, reason, versions)


def _judge_runs(
    runtime: str,
    batch_size: int,
    current: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    limits: Mapping[str, Limit],
    stable: bool,
    versions: dict[str, tuple[str | None, str | None]],
    paired: bool = False,
) -> Comparison:
    """Timed figures judged between processes (runs.py): REGRESSED when a metric's runs are
    significantly worse than its limit allows; IMPROVED when throughput is significantly better by as
    much; else INCONCLUSIVE when some limit is finer than the runs' spread can resolve (the MDE), and
    PASS only when every limit is resolved and none is passed."""
    figures: dict[str, tuple[float | None, float, float | None]] = {
        metric: (_figure(baseline, metric) if baseline else None, _figure(current, metric), None) for metric in limits
    }
    if not stable:
        return Comparison(runtime, batch_size, Verdict.INCONCLUSIVE, figures, reason="the measurement is unstable")
    if baseline is None and all(limit.relative for limit in limits.values()):
        return Comparison(runtime, batch_size, Verdict.NEW, figures, reason="no baseline for this hardware")
    regressed: list[str] = []
    improved: list[str] = []
    unresolved: list[str] = []
    p_values: dict[str, float] = {}
    mde: dict[str, float] = {}
    level = ALPHA / len(limits)  # Bonferroni: each metric tested is one more chance of a false alarm
    counted = (0, 0)
    recorded = [r.get("counts", {}).get("runs", 0) for r in (baseline or {}).get("recordings") or ()]
    for metric, limit in limits.items():
        base = _figure(baseline, metric) if baseline else None
        bound = limit.bound(base)
        if bound is None:
            continue
        figures[metric] = (base, _figure(current, metric), bound)
        now = runs.figures(current, metric)
        before = runs.figures(baseline, metric) if baseline is not None and (limit.relative or paired) else None
        if paired and before is not None and len(before) != len(now):
            shortest = min(len(before), len(now))  # a process that measured one side only: unpaired
            now, before = now[:shortest], before[:shortest]
        found = runs.judge_metric(
            metric, now, before, limit.value, limit.relative, level, paired and before is not None, recorded
        )
        mde[metric] = found.mde
        counted = max(counted, (found.current_runs, found.baseline_runs))
        if found.p_worse < level:
            p_values[metric] = found.p_worse
            regressed.append(metric)
        elif limit.relative and metric == "throughput" and found.p_better < level:
            p_values[metric] = found.p_better
            improved.append(metric)
        else:
            p_values[metric] = found.p_worse
            if found.mde > runs.allowance(limit.value, limit.relative):
                unresolved.append(metric)
    judged = f"{counted[0]} run{'s' if counted[0] != 1 else ''}" + (
        f" against {counted[1]} recorded" if counted[1] else ""
    )
    judged_runs = Comparison(runtime, batch_size, Verdict.PASS, figures, p_values, "", versions, mde=mde, runs=counted)
    if regressed:
        reason = (
            f"{', '.join(regressed)} significantly beyond the limit ({', '.join(str(limits[m]) for m in regressed)}) "
            f"over {judged} (p < {level:.2g}: {ALPHA} over {len(limits)} metrics)"
        )
        return replace(judged_runs, verdict=Verdict.REGRESSED, reason=reason)
    if improved:
        return replace(judged_runs, verdict=Verdict.IMPROVED, reason=f"throughput significantly higher over {judged}")
    if unresolved:
        reason = _unresolved(unresolved, mde, limits, judged)
        return replace(judged_runs, verdict=Verdict.INCONCLUSIVE, reason=reason, unresolved=True)
    return replace(judged_runs, reason=f"within the limits over {judged}")


def _unresolved(metrics: list[str], mde: Mapping[str, float], limits: Mapping[str, Limit], judged: str) -> str:
    """Why a comparison could not resolve its limits, and what would."""
    if all(math.isinf(mde[m]) for m in metrics):
        spread = f"one run on each side ({judged}): the run-to-run spread is unknown, so no change can be told from it"
    else:
        spread = (
            "this machine's run-to-run spread resolves only "
            + ", ".join(
                f"{m} changes beyond {runs.describe_mde(mde[m])} (the limit allows "
                f"{runs.allowance(limits[m].value, limits[m].relative):.1%})"
                for m in metrics
            )
            + f" over {judged}"
        )
    return (
        f"{spread}; to resolve it: measure in more processes ({options.PROCESSES}), record the baseline again to "
        f"pool more runs, use a quieter or dedicated runner, {options.MODE}=instructions on the CPU, or "
        f"{options.AGAINST} (A/B in one run)"
    )


def _judge_counts(
    runtime: str,
    batch_size: int,
    current: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    limit: Limit | None,
    stable: bool,
    versions: dict[str, tuple[str | None, str | None]],
) -> Comparison:
    """Instruction counts need no significance test, only the repeats' spread: REGRESSED when every
    new repeat is above the limit and above every stored repeat; PASS when every new repeat is within
    the limit; INCONCLUSIVE when the repeats straddle the limit or reach into the stored spread (the
    processes disagree by more than the change); IMPROVED when every new repeat is below every stored
    one and below the stored median / the limit."""
    now = current["instructions"]
    before = baseline.get("instructions") if baseline is not None else None
    if baseline is not None and not isinstance(before, dict):
        before = None  # a timed entry under an instruction key: cannot be compared
    bound = limit.bound(before["per_request"] if before else None) if limit is not None else None
    figures = {"instructions": (before["per_request"] if before else None, float(now["per_request"]), bound)}
    if not stable:
        return Comparison(runtime, batch_size, Verdict.INCONCLUSIVE, figures, reason="the counts are unstable")
    if bound is None:
        return Comparison(runtime, batch_size, Verdict.NEW, figures, reason="no baseline for this hardware")
    spread = f"new {now['min']:,.0f}..{now['max']:,.0f}" + (
        f", stored {before['min']:,.0f}..{before['max']:,.0f}" if before else ""
    )
    if now["min"] > bound and (before is None or now["min"] > before["max"]):
        reason = f"instructions beyond the limit ({limit}) and beyond the repeats' spread ({spread})"
        return Comparison(runtime, batch_size, Verdict.REGRESSED, figures, reason=reason, version_changes=versions)
    if now["max"] > bound:
        reason = f"the repeats straddle the limit ({limit}) or reach into the stored spread ({spread})"
        return Comparison(runtime, batch_size, Verdict.INCONCLUSIVE, figures, reason=reason, version_changes=versions)
    if before and limit is not None and limit.relative:
        if now["max"] < min(before["min"], before["per_request"] / limit.value):
            reason = f"fewer instructions ({spread})"
            return Comparison(runtime, batch_size, Verdict.IMPROVED, figures, reason=reason, version_changes=versions)
    reason = f"within the limits ({spread})"
    return Comparison(runtime, batch_size, Verdict.PASS, figures, reason=reason, version_changes=versions)


def _block_ratio(current: Mapping[str, Any], baseline: Mapping[str, Any] | None, paired: bool) -> float:
    """Throughput now / before from the blocks, robust to a stall: the median of paired block ratios
    (A/B), else the ratio of the block medians."""
    import numpy as np

    name = "paired_throughputs" if paired and "paired_throughputs" in current else "block_throughputs"
    now = np.asarray(current[name], dtype=float)
    before = np.asarray(baseline[name] if baseline else (), dtype=float)
    if not now.size or not before.size:
        return float(current["throughput"]) / float(baseline["throughput"]) if baseline else 1.0
    if paired and now.size == before.size:
        return float(np.exp(np.median(np.log(now) - np.log(before))))
    return float(np.median(now) / np.median(before))


def _figure(entry: Mapping[str, Any] | None, metric: str) -> float:
    assert entry is not None
    return float(entry["throughput"] if metric == "throughput" else entry["latency_ms"][metric])


def _p_value(
    metric: str,
    current: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    limit: Limit,
    direction: str,
    paired: bool = False,
    significance: str = "beyond-limit",
) -> float:
    """One-sided p-value that `current` is worse (or better) than the baseline by more than a relative
    limit allows, or than an absolute limit. Throughput uses block throughputs; latencies the blocks'
    p95 latencies. Paired (A/B: window i of both measured side by side): Wilcoxon signed-rank on the
    log ratios of the window pairs. With significance="difference", the old rule: worse (or better)
    than the baseline at all (the effect alone then had to pass the limit)."""
    from scipy import stats

    field_name = "block_throughputs" if metric == "throughput" else "block_p95_ms"
    if paired and "paired_throughputs" in current:
        field_name = "paired_throughputs" if metric == "throughput" else "paired_p95_ms"
    now = list(current[field_name])
    higher_is_worse = metric != "throughput"
    worse_side = "greater" if higher_is_worse else "less"
    better_side = "less" if higher_is_worse else "greater"
    alternative = worse_side if direction == "worse" else better_side
    if limit.relative and baseline is not None:
        # The baseline moved to the limit: "worse" must mean worse than the limit allows (throughput
        # below 95% of it), "better" better by as much (above 1/0.95 of it). Testing against the
        # baseline itself asks only whether anything changed, and between runs something always does:
        # a 6% drift of an unchanged runtime between processes, with tight blocks on each side, was
        # "significant" (p ~ 1e-5) and 1% past a 95% limit: a false alarm.
        scale = 1.0 if significance == "difference" else limit.value if direction == "worse" else 1 / limit.value
        before = [x * scale for x in baseline[field_name]]
        if paired and len(before) == len(now):
            import numpy as np

            log_ratios = np.log(np.asarray(now)) - np.log(np.asarray(before))
            if not np.any(log_ratios):
                return 1.0
            return float(stats.wilcoxon(log_ratios, alternative=alternative).pvalue)
        return float(stats.mannwhitneyu(now, before, alternative=alternative).pvalue)
    differences = [x - limit.value for x in now]
    if all(d == 0 for d in differences):
        return 1.0
    return float(stats.wilcoxon(differences, alternative=alternative).pvalue)


def _version_changes(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, tuple[str | None, str | None]]:
    return {
        name: (before.get(name), after.get(name))
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name) and name != "pytest-navigator"
    }
