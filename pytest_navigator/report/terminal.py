"""Terminal summaries of a navigator run, as tables (tabulate), read from its RunResults.

tabulate rather than hand-padded columns: it aligns numbers and handles wide cells.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

from pytest_navigator.gate import runs

if TYPE_CHECKING:
    from pytest_navigator.measure.profiler import BatchProfile
    from pytest_navigator.session import NavigatorSession


def runtime_table(session: NavigatorSession) -> str:
    """One row per model and runtime: what happened, the build time and the reason for a skip."""
    from tabulate import tabulate

    rows = []
    results = session.results
    for (path, runtime), record in results.runtimes.items():
        model = results.models.get(path)
        device = record.device or (session.registry.get(runtime).device if runtime in session.registry else "?")
        build = "" if record.build_seconds is None else f"{record.build_seconds:.1f}"
        rows.append(
            [
                model.name if model else path.name,
                runtime,
                device,
                record.status.value,
                build,
                record.cache_summary,
                record.detail,
            ]
        )
    return tabulate(
        rows, headers=["model", "runtime", "device", "status", "build s", "artifacts", "detail"], tablefmt="simple"
    )


def gpu_memory_line(batch: BatchProfile) -> str:
    """The GPU figures of a batch size's untimed memory pass, '' when none was measured."""
    from pytest_navigator.measure.memory import mib

    figures = [
        (batch.peak_cuda, "torch allocator peak"),
        (batch.gpu_process, "process holds (NVML)"),
        (batch.engine_memory, "engine device memory"),
    ]
    return ", ".join(f"{label} {mib(value)}" for value, label in figures if value is not None)


def performance_summary(session: NavigatorSession) -> str:
    """The device, one row per runtime and batch size, why each sweep stopped, and the best runtimes."""
    from tabulate import tabulate

    from pytest_navigator.measure.telemetry import fingerprint

    facts = fingerprint()
    cpu = facts["cpu"]
    device = f"CPU: {cpu['model']} ({cpu['usable_cores']} of {cpu['cores']} cores usable)"
    gpu = facts.get("gpu")
    if gpu:
        device += f"; GPU: {gpu['count']} x {gpu['names'][0]}, driver {gpu['driver']}, CUDA {gpu['cuda']}"
    libraries = ", ".join(f"{k} {v}" for k, v in facts["libraries"].items() if k != "pytest-navigator")
    rows, stops, best, counted = [], [], [], []
    several = False
    results = session.results
    measured = [(r, r.profile, False) for r in results.runtimes.values() if r.profile is not None]
    measured += [(r, r.against_profile, True) for r in results.runtimes.values() if r.against_profile is not None]
    for record, profile, is_old in measured:
        path, runtime = record.model, record.runtime
        model = results.models[path].name if path in results.models else path.name
        if is_old and session.against_model is not None:
            model = f"{session.against_model.name} (A/B old)"
        verdicts = {} if is_old else {c.batch_size: c for c in record.comparisons}
        if profile.tool is not None:  # instruction counts
            counted += [
                _count_row(model, profile.runtime, batch, verdicts.get(batch.batch_size)) for batch in profile.batches
            ]
            stops.append(f"{model} {profile.runtime}: {profile.stop_reason}")
            continue
        for batch in profile.batches:
            if batch.status == "error":
                rows.append([model, runtime, batch.batch_size, "error", "", "", "", "", "", "", "", "", "", ""])
                continue
            comparison = verdicts.get(batch.batch_size)
            delta = comparison.delta() if comparison else None
            shown = shown_figures(batch)
            used = len(batch.stable_windows) if batch.stable else len(batch.windows)
            several = several or len(batch.runs) > 1
            rows.append(
                [
                    model,
                    runtime,
                    batch.batch_size,
                    batch.status,
                    f"{shown['throughput']:.1f}",
                    f"{shown['p50']:.3f}",
                    f"{shown['p95']:.3f}",
                    f"{shown['p99']:.3f}",
                    f"{batch.cold_start_ms:.1f}" if batch.cold_start_ms is not None else "",
                    f"{batch.peak_rss / 2**20:.0f}" if batch.peak_rss is not None else "",
                    f"{used}/{len(batch.windows)}",
                    max(1, len(batch.runs)),
                    "" if delta is None else f"{delta:+.1%}",
                    comparison.verdict.value if comparison else "",
                    runs.mde_text(comparison.mde if comparison else None),
                ]
            )
            if batch.stable and not is_old:
                best.append((model, runtime, batch))
            if gpu_memory := gpu_memory_line(batch):
                stops.append(f"{model} {runtime} batch {batch.batch_size}: GPU memory: {gpu_memory}")
            if batch.interference:
                kept = (
                    "left out"
                    if profile.config.interference == "exclude"
                    else "counted: --navigator-interference=report"
                )
                stops.append(f"{model} {runtime} batch {batch.batch_size}: {batch.interference} ({kept})")
        stops.append(f"{model} {runtime}: sweep stopped: {profile.stop_reason}")
        if record.traces and not is_old:
            stops.append(f"{model} {runtime}: traces: {', '.join(record.traces)}")
    table = tabulate(
        rows,
        headers=[
            "model",
            "runtime",
            "batch",
            "status",
            "samples/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "cold ms",
            "peak RSS MiB",
            "windows",
            "runs",
            "vs baseline",
            "verdict",
            "MDE",
        ],
        tablefmt="simple",
        disable_numparse=True,
        colalign=(
            "left",
            "left",
            "right",
            "left",
            "right",
            "right",
            "right",
            "right",
            "right",
            "right",
            "right",
            "right",
            "right",
            "left",
            "right",
        ),
    )
    lines = [device, libraries, ""]
    if rows:
        lines += [table, ""]
    if counted:
        lines += [
            tabulate(
                counted,
                headers=[
                    "model",
                    "runtime",
                    "batch",
                    "status",
                    "instructions/request",
                    "per sample",
                    "repeats min..max",
                    "vs baseline",
                    "verdict",
                ],
                tablefmt="simple",
                disable_numparse=True,
                colalign=("left", "left", "right", "left", "right", "right", "right", "right", "left"),
            ),
            "",
        ]
    if several:
        lines.append(
            "samples/s and p50-p99 of a batch size measured in several runs (fresh processes): the median over the "
            "runs, as its baseline entry stores it; windows: those of the first run"
        )
    lines += stops
    lines += _model_profiles(session)
    if best:
        fast = max(best, key=lambda entry: shown_figures(entry[2])["throughput"])
        quick = min(best, key=lambda entry: shown_figures(entry[2])["p50"])
        lines.append(
            f"max throughput: {fast[1]} at batch {fast[2].batch_size} ({shown_figures(fast[2])['throughput']:.1f} "
            f"samples/s); min latency: {quick[1]} at batch {quick[2].batch_size} "
            f"(p50 {shown_figures(quick[2])['p50']:.3f} ms)"
        )
        lines += _best(session)
    return "\n".join(lines)


def shown_figures(batch: BatchProfile) -> dict[str, float]:
    """What the summary shows for a batch size: the median over the runs (processes) it was measured
    in, which is what its baseline entry stores and its verdict compares (runs.py); with one run,
    that run's figures."""
    if len(batch.runs) > 1:
        return {name: statistics.median(run[name] for run in batch.runs) for name in runs.FIGURES}
    return batch.figures()


def _best(session: NavigatorSession) -> list[str]:
    """Per model, the best runtime as the JSON report and the HTML report name it (selection.best_runtime:
    runtimes that passed, stable measurements, p99 within --navigator-latency-budget when given)."""
    from pytest_navigator.gate.selection import describe
    from pytest_navigator.report.json_report import build_report

    return [f"{model['name']} {describe(model['best'])}" for model in build_report(session)["models"]]


def _model_profiles(session: NavigatorSession) -> list[str]:
    """One line per model: its parameters and FLOPs per sample (model_profile.py), or why they are missing."""
    from pytest_navigator.model.profile import ModelProfile

    lines = []
    for info in session.results.models.values():
        if info.profile is not None:
            lines.append(f"{info.name} model profile: {ModelProfile.from_json(info.profile).describe()}")
        elif info.profile_error:
            lines.append(f"{info.name} model profile: not computed: {info.profile_error}")
    return lines


def _count_row(model: str, runtime: str, batch: Any, comparison: Any) -> list[Any]:
    if batch.status == "error":
        return [model, runtime, batch.batch_size, "error", batch.error or "", "", "", "", ""]
    delta = comparison.delta("instructions") if comparison else None
    median = batch.instructions_per_request
    return [
        model,
        runtime,
        batch.batch_size,
        batch.status,
        f"{median:,.0f}",
        f"{median / batch.batch_size:,.0f}",
        f"{min(batch.instructions):,.0f}..{max(batch.instructions):,.0f}",
        "" if delta is None else f"{delta:+.2%}",
        comparison.verdict.value if comparison else "",
    ]


def _headline(entry: dict[str, Any] | None) -> float | None:
    """An entry's figure in the update table: throughput, or instructions per request."""
    if not entry:
        return None
    counts = entry.get("instructions")
    return float(counts["per_request"]) if isinstance(counts, dict) else entry.get("throughput")


def _number(value: float | None, entry: dict[str, Any]) -> str:
    """Samples/s to 0.1; instructions (per request, marked) whole."""
    if value is None:
        return ""
    return f"{value:,.0f} instr" if "instructions" in entry else f"{value:.1f}"


def baseline_summary(session: NavigatorSession) -> str:
    """After --update-baselines: old -> new per entry written, and why measured runtimes were not
    written. Always: stored entries for this machine that no test of the run used (kept)."""
    from tabulate import tabulate

    lines = []
    results = session.results
    for outcome in results.baseline_updates.values():
        if outcome.error is not None:
            lines.append(f"not updated: {outcome.error}")
            continue
        written, changes = outcome.path, outcome.changes
        rows = []
        for (hardware, runtime, size), old, new in changes:
            before, after = _headline(old), _headline(new)
            delta = "new" if not before or after is None else f"{after / before - 1:+.1%}"
            pooled = len(new.get("recordings", ())) or 1
            rows.append([runtime, size, _number(before, new), _number(after, new), delta, pooled, hardware])
        lines.append(f"updated {written} ({len(changes)} entries):")
        lines.append(
            tabulate(
                rows,
                headers=["runtime", "batch", "old samples/s", "new samples/s", "delta", "recordings", "hardware"],
                tablefmt="simple",
                disable_numparse=True,
            )
        )
    if session.settings.update_baselines:
        for record in results.runtimes.values():
            path, runtime, profile = record.model, record.runtime, record.profile
            if profile is None:
                continue
            if record.status != "passed":
                why = (
                    "correctness was not checked in this run"
                    if record.status == "built"
                    else f"correctness {record.status}"
                )
                lines.append(f"not written: {path.name} {runtime}: {why}")
            for batch in profile.batches:
                if batch.status == "unstable":
                    lines.append(f"not written: {path.name} {runtime} batch {batch.batch_size}: unstable")
    for model in session.models.values():
        unused = session.unused_baselines(model)
        if unused:
            listed = ", ".join(f"{name} batch {size}" for _, name, size in unused)
            lines.append(
                f"{len(unused)} unused in {session.baseline_store.path_for(model.name, model.fingerprint).name} "
                f"(kept; no test of this run measured them): {listed}"
            )
    return "\n".join(lines)
