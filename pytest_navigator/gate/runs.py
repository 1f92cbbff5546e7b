"""Timed verdicts with the run as the unit of evidence: one figure per process, judged between processes.

The windows of one process are not independent samples of what the next process will measure:
thread placement, memory layout, the hypervisor and the CPU's frequency differ from process to
process, and stay put within one. A test over one process's windows against another's treats that
difference as the effect (pseudo-replication): two runs of an unchanged model on this project's
2-core machine came out "1.49x slower, p=1.7e-06". So a runtime is measured in several fresh
processes (`--navigator-processes`), each process contributes one figure per metric (its
throughput, its p50/p95/p99 latency), and the verdict compares those figures:

- against a stored baseline: a pooled two-sample t-test on the logs of the figures, the baseline's
  side being every process of its recordings (baselines.pool keeps a bounded history); the null
  hypothesis is "the change is within the limit" (the baseline moved to the limit), as before;
- A/B (`--navigator-against`): each process measured both models interleaved; a one-sample t-test
  on the per-process log ratios;
- an absolute limit (an SLA): a one-sample t-test of the figures against the value.

Logs, because run-to-run speed varies by a factor (a slower process is slower in proportion). A
t-test, not Mann-Whitney: with 3 figures against 3, no rank test can reach p < 0.01 (its smallest
p is 1/20), and the spread of whole processes is what the t-test's variance estimates.

Every judgement reports its minimum detectable effect (MDE): the smallest change the spread seen
lets the test detect at the chosen confidence with 80% power. When that is wider than the limit
allows, the machine cannot resolve the limit: the verdict is INCONCLUSIVE with the MDE and what
would resolve it, never a PASS that claims what it cannot know. A change beyond the limit that the
test still finds significant is REGRESSED (or IMPROVED) whatever the MDE.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_navigator.gate.entries import BaselineEntry

#: The per-process figures a timed entry keeps (entries.BaselineEntry.runs).
FIGURES = ("throughput", "p50", "p95", "p99")
#: Power the MDE is computed for: a change of the MDE is detected in 4 of 5 runs.
POWER = 0.8
#: The smallest relative spread assumed between processes: figures that agree exactly (a synthetic
#: entry, rounding) must not make any difference infinitely significant.
SPREAD_FLOOR = 0.002


@dataclass(frozen=True)
class RunTest:
    """One metric judged between processes."""

    #: Current over baseline (or over the limit's value), from the means of the log figures.
    ratio: float
    #: One-sided p-values that the change is worse (better) than the limit allows.
    p_worse: float
    p_better: float
    #: The smallest relative change this test detects at `level` with POWER (0.12 = 12%); inf when
    #: nothing estimates the spread (one run on each side).
    mde: float
    #: Figures behind it: processes now, processes in the baseline (0 for an absolute limit), df.
    current_runs: int
    baseline_runs: int
    df: int


def figures(entry: BaselineEntry, metric: str) -> list[float]:
    """The per-process figures of `metric` in a timed entry; an entry from before runs were kept
    (or one process) gives its one headline figure."""
    if entry.runs:
        return [float(r[_field(metric)]) for r in entry.runs if r.get(_field(metric))]
    return [entry.figure(metric)]


def _field(metric: str) -> str:
    return "throughput" if metric == "throughput" else metric


def judge_metric(
    metric: str,
    current: Sequence[float],
    baseline: Sequence[float] | None,
    limit_value: float,
    relative: bool,
    level: float,
    paired: bool = False,
    recordings: Sequence[int] | None = None,
) -> RunTest:
    """Judge `metric` between processes. `current`/`baseline`: per-process figures (paired: index i of
    both from process i). `limit_value`: the relative limit (0.95: throughput at least 95% of the
    baseline; 1.10: latency at most 110%) or the absolute value. Worse means lower throughput, higher
    latency."""
    import numpy as np
    from scipy import stats

    now = np.log(np.asarray(current, dtype=float))
    if paired:
        assert baseline is not None and len(baseline) == len(current)
        values = now - np.log(np.asarray(baseline, dtype=float))
        shift, n, df = float(values.mean()), len(values), len(values) - 1
        spread = float(values.std(ddof=1)) if n > 1 else math.nan
        scale = 1 / math.sqrt(n)
    elif relative:
        assert baseline is not None
        before = np.log(np.asarray(baseline, dtype=float))
        shift = float(now.mean() - before.mean())
        df = len(now) + len(before) - 2
        squares = float(((now - now.mean()) ** 2).sum() + ((before - before.mean()) ** 2).sum())
        spread = math.sqrt(squares / df) if df > 0 else math.nan
        scale = math.sqrt(1 / len(now) + 1 / len(before))
        drift = _between_recordings(before, recordings, spread)
        if drift > 0 and not math.isnan(spread):
            # a run group of today shares today's machine as each recording shared its day's: the
            # recordings' own spread around each other is one more term of the difference's error
            total = max(spread, SPREAD_FLOOR) ** 2 * scale**2 + drift * (1 + 1 / len(recordings or ()))
            spread, scale = math.sqrt(total), 1.0
    else:
        shift, df = float(now.mean() - math.log(limit_value)), len(now) - 1
        spread = float(now.std(ddof=1)) if len(now) > 1 else math.nan
        scale = 1 / math.sqrt(len(now))
    runs_before = 0 if baseline is None or not (relative or paired) else len(baseline)
    ratio = math.exp(shift)
    if df < 1 or math.isnan(spread):
        return RunTest(ratio, 1.0, 1.0, math.inf, len(current), runs_before, max(df, 0))
    error = max(spread, SPREAD_FLOOR) * scale
    higher_is_worse = metric != "throughput"
    bound = math.log(limit_value) if relative or paired else 0.0
    # worse: past the limit in the metric's bad direction; better: as far past in the good one
    worse_t = (shift - bound) / error
    better_t = (shift + bound) / error if relative or paired else worse_t
    if higher_is_worse:
        p_worse, p_better = float(stats.t.sf(worse_t, df)), float(stats.t.cdf(better_t, df))
    else:
        p_worse, p_better = float(stats.t.cdf(worse_t, df)), float(stats.t.sf(better_t, df))
    margin = (float(stats.t.ppf(1 - level, df)) + float(stats.t.ppf(POWER, df))) * error
    return RunTest(ratio, p_worse, p_better, math.expm1(margin), len(current), runs_before, df)


def _between_recordings(before: Any, recordings: Sequence[int] | None, within: float) -> float:
    """The variance of the recordings' mean log figures beyond what the spread of runs within them
    explains (0 with fewer than two recordings, or counts that do not add up to the runs)."""
    import numpy as np

    if not recordings or len(recordings) < 2 or sum(recordings) != len(before) or math.isnan(within):
        return 0.0
    edges = np.cumsum([0, *recordings])
    means = [float(before[a:b].mean()) for a, b in itertools.pairwise(edges) if b > a]
    if len(means) < 2:
        return 0.0
    typical = len(before) / len(means)
    return max(0.0, float(np.var(means, ddof=1)) - within**2 / typical)


def allowance(limit_value: float, relative: bool) -> float:
    """How far a metric may move before it is past a relative limit (0.95 or 1.10 -> about 5% or
    10%, on the log scale the test uses); an absolute limit: a 5% margin around the value."""
    return math.expm1(abs(math.log(limit_value))) if relative else 0.05


def describe_mde(mde: float) -> str:
    return "unknown (one run on each side)" if math.isinf(mde) else f"{mde:.1%}"


def mde_text(mde: Mapping[str, float | None] | None) -> str:
    """A timed verdict's MDE as the views show it: throughput's, then the latencies' ("8.1% (p95
    12%, p99 40%)"); "unknown" where one run on each side left it unknown; "" for a count or an
    older report."""
    if not mde or "throughput" not in mde:
        return ""

    def shown(value: float | None) -> str:
        return "unknown" if value is None or math.isinf(value) else f"{value:.1%}" if value < 10 else f"{value:.0%}"

    others = ", ".join(f"{m} {shown(v)}" for m, v in mde.items() if m != "throughput")
    return shown(mde["throughput"]) + (f" ({others})" if others and shown(mde["throughput"]) != "unknown" else "")
