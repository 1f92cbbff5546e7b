"""How one measurement is judged against one baseline, by the rule a verdict uses: between processes
(the run rule: runs.py's t-tests and minimum detectable effect), between the windows' blocks (the
rule before, kept to measure against: rank tests of block figures, the median block ratio), or, for
instruction counts, by the spread of the repeats. verdicts.compare picks the rule and handles the
machine's drift; each rule here returns the Comparison.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace

from pytest_navigator import options
from pytest_navigator.gate.comparison import Comparison, Verdict
from pytest_navigator.gate.entries import BaselineEntry
from pytest_navigator.gate.runs import allowance, describe_mde, judge_metric
from pytest_navigator.gate.runs import figures as run_figures
from pytest_navigator.gate.thresholds import Limit

#: A slowdown must be this unlikely under "no change" to count.
ALPHA = 0.01
#: Fewer blocks than this on either side cannot support a test.
MIN_BLOCKS = 6
#: A/B: fewer window pairs than this cannot support the paired test (profiler.AB_MIN_PAIRS).
AB_PAIRS = 9


def judge_windows(
    runtime: str,
    batch_size: int,
    current: BaselineEntry,
    baseline: BaselineEntry | None,
    limits: Mapping[str, Limit],
    stable: bool,
    versions: dict[str, tuple[str | None, str | None]],
    paired: bool = False,
    significance: str = "beyond-limit",
) -> Comparison:
    """The rule before (unit="window"): the blocks of one process's windows against the baseline's,
    as if independent samples. REGRESSED when a metric is beyond its limit (throughput: the median
    block ratio) and significantly worse (_p_value); IMPROVED when throughput is significantly better
    by as much; else PASS, naming any metric beyond the limit that noise cannot be ruled out for."""
    figures: dict[str, tuple[float | None, float, float | None]] = {
        metric: (baseline.figure(metric) if baseline else None, current.figure(metric), None) for metric in limits
    }
    if not stable:
        return Comparison(runtime, batch_size, Verdict.INCONCLUSIVE, figures, reason="the measurement is unstable")
    if baseline is None:
        absolute = [m for m, limit in limits.items() if not limit.relative]
        if not absolute:
            return Comparison(runtime, batch_size, Verdict.NEW, figures, reason="no baseline for this hardware")
    if paired and len(current.paired_throughputs or ()) < AB_PAIRS:
        return Comparison(
            runtime, batch_size, Verdict.INCONCLUSIVE, figures, reason=f"fewer than {AB_PAIRS} window pairs to compare"
        )
    if len(current.block_throughputs or ()) < MIN_BLOCKS or (
        baseline is not None and len(baseline.block_throughputs or ()) < MIN_BLOCKS
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
        base = baseline.figure(metric) if baseline else None
        bound = limit.bound(base)
        if bound is None:
            continue
        now = current.figure(metric)
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


def judge_runs(
    runtime: str,
    batch_size: int,
    current: BaselineEntry,
    baseline: BaselineEntry | None,
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
        metric: (baseline.figure(metric) if baseline else None, current.figure(metric), None) for metric in limits
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
    recorded = baseline.recorded_runs if baseline is not None else []
    for metric, limit in limits.items():
        base = baseline.figure(metric) if baseline else None
        bound = limit.bound(base)
        if bound is None:
            continue
        figures[metric] = (base, current.figure(metric), bound)
        now = run_figures(current, metric)
        before = run_figures(baseline, metric) if baseline is not None and (limit.relative or paired) else None
        if paired and before is not None and len(before) != len(now):
            shortest = min(len(before), len(now))  # a process that measured one side only: unpaired
            now, before = now[:shortest], before[:shortest]
        found = judge_metric(
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
            if found.mde > allowance(limit.value, limit.relative):
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
                f"{m} changes beyond {describe_mde(mde[m])} (the limit allows "
                f"{allowance(limits[m].value, limits[m].relative):.1%})"
                for m in metrics
            )
            + f" over {judged}"
        )
    return (
        f"{spread}; to resolve it: measure in more processes ({options.PROCESSES}), record the baseline again to "
        f"pool more runs, use a quieter or dedicated runner, {options.MODE}=instructions on the CPU, or "
        f"{options.AGAINST} (A/B in one run)"
    )


def judge_counts(
    runtime: str,
    batch_size: int,
    current: BaselineEntry,
    baseline: BaselineEntry | None,
    limit: Limit | None,
    stable: bool,
    versions: dict[str, tuple[str | None, str | None]],
) -> Comparison:
    """Instruction counts need no significance test, only the repeats' spread: REGRESSED when every
    new repeat is above the limit and above every stored repeat; PASS when every new repeat is within
    the limit; INCONCLUSIVE when the repeats straddle the limit or reach into the stored spread (the
    processes disagree by more than the change); IMPROVED when every new repeat is below every stored
    one and below the stored median / the limit."""
    now = current.instructions
    assert now is not None
    before = baseline.instructions if baseline is not None else None  # a timed entry has none: not compared
    bound = limit.bound(before.per_request if before else None) if limit is not None else None
    figures = {"instructions": (before.per_request if before else None, float(now.per_request), bound)}
    if not stable:
        return Comparison(runtime, batch_size, Verdict.INCONCLUSIVE, figures, reason="the counts are unstable")
    if bound is None:
        return Comparison(runtime, batch_size, Verdict.NEW, figures, reason="no baseline for this hardware")
    spread = f"new {now.min:,.0f}..{now.max:,.0f}" + (
        f", stored {before.min:,.0f}..{before.max:,.0f}" if before else ""
    )
    if now.min > bound and (before is None or now.min > before.max):
        reason = f"instructions beyond the limit ({limit}) and beyond the repeats' spread ({spread})"
        return Comparison(runtime, batch_size, Verdict.REGRESSED, figures, reason=reason, version_changes=versions)
    if now.max > bound:
        reason = f"the repeats straddle the limit ({limit}) or reach into the stored spread ({spread})"
        return Comparison(runtime, batch_size, Verdict.INCONCLUSIVE, figures, reason=reason, version_changes=versions)
    if before and limit is not None and limit.relative:
        if now.max < min(before.min, before.per_request / limit.value):
            reason = f"fewer instructions ({spread})"
            return Comparison(runtime, batch_size, Verdict.IMPROVED, figures, reason=reason, version_changes=versions)
    reason = f"within the limits ({spread})"
    return Comparison(runtime, batch_size, Verdict.PASS, figures, reason=reason, version_changes=versions)


def _block_ratio(current: BaselineEntry, baseline: BaselineEntry | None, paired: bool) -> float:
    """Throughput now / before from the blocks, robust to a stall: the median of paired block ratios
    (A/B), else the ratio of the block medians."""
    import numpy as np

    pairs = paired and current.paired_throughputs is not None
    now = np.asarray(_samples(current, "throughput", pairs), dtype=float)
    before = np.asarray(_samples(baseline, "throughput", pairs) if baseline else (), dtype=float)
    if not now.size or not before.size:
        return current.figure("throughput") / baseline.figure("throughput") if baseline else 1.0
    if paired and now.size == before.size:
        return float(np.exp(np.median(np.log(now) - np.log(before))))
    return float(np.median(now) / np.median(before))


def _samples(entry: BaselineEntry, metric: str, pairs: bool) -> tuple[float, ...]:
    """What the window rule tests a metric on: the blocks' throughputs or p95 latencies, or, in an A/B
    run whose entries have them (`pairs`), every window pair's."""
    if pairs:
        found = entry.paired_throughputs if metric == "throughput" else entry.paired_p95_ms
    else:
        found = entry.block_throughputs if metric == "throughput" else entry.block_p95_ms
    return found or ()


def _p_value(
    metric: str,
    current: BaselineEntry,
    baseline: BaselineEntry | None,
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

    pairs = paired and current.paired_throughputs is not None
    now = list(_samples(current, metric, pairs))
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
        before = [x * scale for x in _samples(baseline, metric, pairs)]
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
