"""The best runtime of a model, as Model Navigator selects it, with a latency budget added.

Model Navigator's `select` picks the runtime with the highest throughput among those that passed its
checks; serving teams also have a latency budget, so `--navigator-latency-budget=MS` narrows the
choice to runtime and batch-size pairs whose p99 stays within it. Only stable measurements of
runtimes that passed every test count: an unstable figure or a wrong answer is never "best".
Reads the run report's records, so the plugin, the reports and `navigator report` agree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def best_runtime(runtimes: Iterable[Any], budget_ms: float | None) -> dict[str, Any] | None:
    """The report's `best` object for one model, from its runtimes' records (report.results.RuntimeResult):
    runtime, batch size, its throughput and p99, whether it kept the budget, and why it was chosen;
    runtime None when nothing qualifies (the reason says what came closest); None when no runtime
    measured throughput."""
    measured, rejected = [], []
    for runtime in runtimes:
        if runtime.profile is None:
            continue
        for batch in runtime.profile.batches:
            if batch.throughput is None or not batch.latency_ms:
                continue
            row = (runtime.runtime, batch.batch_size, batch.throughput, batch.latency_ms["p99"])
            if runtime.status == "passed" and batch.status == "stable":
                measured.append(row)
            else:
                rejected.append(row)
    if not measured and not rejected:
        return None
    candidates = [row for row in measured if budget_ms is None or row[3] <= budget_ms]
    if not candidates:
        if not measured:
            reason = "no runtime passed with a stable measurement"
        else:
            name, size, _, p99 = min(measured, key=lambda row: row[3])
            reason = (
                f"no stable measurement keeps p99 within the {budget_ms:g} ms budget "
                f"(lowest: {name} at batch {size}, p99 {p99:.3g} ms)"
            )
        return _best(None, None, None, None, None if budget_ms is None else False, reason)
    name, size, throughput, p99 = max(candidates, key=lambda row: row[2])
    among = f"{len(candidates)} stable measurement{'s' if len(candidates) != 1 else ''} of runtimes that passed"
    reason = (
        f"highest throughput among {among}"
        if budget_ms is None
        else f"highest throughput among {among} with p99 within {budget_ms:g} ms"
    )
    return _best(name, size, throughput, p99, None if budget_ms is None else True, reason)


def _best(
    runtime: str | None,
    batch_size: int | None,
    throughput: float | None,
    p99_ms: float | None,
    within_budget: bool | None,
    reason: str,
) -> dict[str, Any]:
    return {
        "runtime": runtime,
        "batch_size": batch_size,
        "throughput": throughput,
        "p99_ms": p99_ms,
        "within_budget": within_budget,
        "reason": reason,
    }


def describe(best: Mapping[str, Any] | None) -> str:
    """One line for summaries: 'best: onnxruntime-cpu at batch 8, 2,345 samples/s, p99 4.1 ms (...)'."""
    if best is None:
        return "best: none (no throughput was measured)"
    if best["runtime"] is None:
        return f"best: none ({best['reason']})"
    return (
        f"best: {best['runtime']} at batch {best['batch_size']}, {_rate(best['throughput'])} samples/s, "
        f"p99 {best['p99_ms']:.3g} ms ({best['reason']})"
    )


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.4g}"
