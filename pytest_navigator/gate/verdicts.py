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

This module picks the rule and takes the machine's drift into account; the rules themselves are
judging.py, and the Verdict and Comparison they return comparison.py.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pytest_navigator import options
from pytest_navigator.gate.comparison import Comparison, Verdict
from pytest_navigator.gate.entries import BaselineEntry
from pytest_navigator.gate.judging import (  # noqa: F401 - ALPHA, MIN_BLOCKS and AB_PAIRS importable from here, as before
    AB_PAIRS,
    ALPHA,
    MIN_BLOCKS,
    judge_counts,
    judge_runs,
    judge_windows,
)
from pytest_navigator.gate.thresholds import Limit

#: What a relative limit's significance test must show: the change is beyond the limit (default), or
#: that there is any change at all ("difference": the rule before, kept to measure against).
SIGNIFICANCE = ("beyond-limit", "difference")
#: What a timed verdict treats as one piece of evidence: a process ("run", the default) or a window's
#: block ("window": the rule before, kept to measure against).
UNITS = ("run", "window")
#: How far the machine's speed may drift when no relative throughput limit sets it (drift_tolerance).
DRIFT_TOLERANCE = 0.05


def compare(
    runtime: str,
    batch_size: int,
    current: BaselineEntry | Mapping[str, Any],
    baseline: BaselineEntry | Mapping[str, Any] | None,
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
    `unit` (UNITS): judge between processes ("run", runs.py) or between windows' blocks ("window").
    An entry may also come as its JSON object (a run report's, harness.bench_detection's)."""
    current, baseline = _typed(current), None if baseline is None else _typed(baseline)
    if significance not in SIGNIFICANCE:
        raise ValueError(f"significance={significance!r}: give one of {', '.join(SIGNIFICANCE)}")
    if unit not in UNITS:
        raise ValueError(f"unit={unit!r}: give one of {', '.join(UNITS)}")
    versions = _version_changes((baseline.libraries if baseline else None) or {}, current.libraries or {})
    if current.counted:
        return judge_counts(runtime, batch_size, current, baseline, limits.get("instructions"), stable, versions)
    limits = {m: limit for m, limit in limits.items() if m != "instructions"}
    raw_ratio = normalized_ratio = None
    if baseline is not None and baseline.throughput:
        raw_ratio = current.figure("throughput") / baseline.figure("throughput")
        if current.calibration and baseline.calibration:
            factor = float(baseline.calibration) / float(current.calibration)
            normalized_ratio = raw_ratio * factor
            if normalize and against is None:
                current = _scaled(current, factor)
    paired = against is not None
    judge = judge_runs if unit == "run" else functools.partial(judge_windows, significance=significance)
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


def _drift(current: BaselineEntry, baseline: BaselineEntry | None, limits: Mapping[str, Limit]) -> float | None:
    """The machine's speed now / at recording, from the calibration workload measured beside each
    profile, when it moved beyond drift_tolerance; None when within it or not measured."""
    if baseline is None or not current.calibration or not baseline.calibration:
        return None
    if not any(limit.relative for limit in limits.values()):
        return None  # absolute limits (an SLA) hold whatever the machine's speed
    speed = float(current.calibration) / float(baseline.calibration)
    return speed if abs(speed - 1) > drift_tolerance(limits) else None


def _judge_drifted(
    regressed: Comparison,
    current: BaselineEntry,
    baseline: BaselineEntry | None,
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


def _scaled(entry: BaselineEntry, factor: float) -> BaselineEntry:
    """An entry as if measured on a machine `factor` times as fast: throughputs up, latencies down."""
    runs = entry.runs
    return replace(
        entry,
        throughput=entry.figure("throughput") * factor,
        block_throughputs=tuple(x * factor for x in entry.block_throughputs or ()),
        latency_ms={k: v / factor for k, v in (entry.latency_ms or {}).items()},
        block_p95_ms=tuple(x / factor for x in entry.block_p95_ms or ()),
        runs=None
        if runs is None
        else tuple({k: v * factor if k == "throughput" else v / factor for k, v in run.items()} for run in runs),
    )


def _typed(entry: BaselineEntry | Mapping[str, Any]) -> BaselineEntry:
    return entry if isinstance(entry, BaselineEntry) else BaselineEntry.from_dict(entry)


def _version_changes(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, tuple[str | None, str | None]]:
    return {
        name: (before.get(name), after.get(name))
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name) and name != "pytest-navigator"
    }
