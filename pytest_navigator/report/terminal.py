"""Terminal summaries of a navigator run, as tables (tabulate), read from its RunReport.

tabulate rather than hand-padded columns: it aligns numbers and handles wide cells.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_navigator.gate import runs
from pytest_navigator.report.fields import cell, shown_columns

if TYPE_CHECKING:
    from pytest_navigator.measure.summary import BatchSummary
    from pytest_navigator.report.run_report import RunReport


def runtime_table(report: RunReport) -> str:
    """One row per model and runtime: what happened, the build time and the reason for a skip."""
    from tabulate import tabulate

    rows = []
    extra = shown_columns(report.results.runtimes.values())
    for info, records in report.models():
        for record in records:
            build = "" if record.build_seconds is None else f"{record.build_seconds:.1f}"
            rows.append(
                [
                    info.name,
                    record.runtime,
                    record.device or "?",
                    record.status.value,
                    build,
                    record.cache_summary,
                    record.detail,
                    *(cell(record, name) for name, _ in extra),
                ]
            )
    headers = ["model", "runtime", "device", "status", "build s", "artifacts", "detail", *(h for _, h in extra)]
    return tabulate(rows, headers=headers, tablefmt="simple")


def gpu_memory_line(batch: BatchSummary) -> str:
    """The GPU figures of a batch size's untimed memory pass, '' when none was measured."""
    from pytest_navigator.measure.memory import mib

    figures = [
        (batch.memory("cuda_bytes"), "torch allocator peak"),
        (batch.memory("gpu_process_bytes"), "process holds (NVML)"),
        (batch.memory("engine_bytes"), "engine device memory"),
    ]
    return ", ".join(f"{label} {mib(value)}" for value, label in figures if value is not None)


def performance_summary(report: RunReport) -> str:
    """The device, one row per runtime and batch size, why each sweep stopped, and the best runtimes."""
    from tabulate import tabulate

    facts = report.device
    cpu = facts["cpu"]
    device = f"CPU: {cpu['model']} ({cpu['usable_cores']} of {cpu['cores']} cores usable)"
    gpu = facts.get("gpu")
    if gpu:
        device += f"; GPU: {gpu['count']} x {gpu['names'][0]}, driver {gpu['driver']}, CUDA {gpu['cuda']}"
    libraries = ", ".join(f"{k} {v}" for k, v in facts["libraries"].items() if k != "pytest-navigator")
    rows, stops, best, counted = [], [], [], []
    several = False
    results = report.results
    measured = [(r, r.profile, False) for r in results.runtimes.values() if r.profile is not None]
    measured += [(r, r.against_profile, True) for r in results.runtimes.values() if r.against_profile is not None]
    for record, profile, is_old in measured:
        path, runtime = record.model, record.runtime
        model = results.models[path].name if path in results.models else path.name
        if is_old and report.settings.get("against_name"):
            model = f"{report.settings['against_name']} (A/B old)"
        verdicts = {} if is_old else {c.batch_size: c for c in record.comparisons}
        if profile.tool is not None:  # instruction counts
            name = profile.runtime or runtime
            counted += [_count_row(model, name, batch, verdicts.get(batch.batch_size)) for batch in profile.batches]
            stops.append(f"{model} {name}: {profile.stop_reason}")
            continue
        for batch in profile.batches:
            if batch.status == "error":
                rows.append([model, runtime, batch.batch_size, "error", "", "", "", "", "", "", "", "", "", ""])
                continue
            comparison = verdicts.get(batch.batch_size)
            delta = comparison.delta() if comparison else None
            shown = batch.shown_figures()
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
                    "" if (rss := batch.memory("rss_bytes")) is None else f"{rss / 2**20:.0f}",
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
                    "left out" if profile.interference_mode == "exclude" else "counted: --navigator-interference=report"
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
    lines += _model_profiles(report)
    if best:
        fast = max(best, key=lambda entry: entry[2].shown_figures()["throughput"])
        quick = min(best, key=lambda entry: entry[2].shown_figures()["p50"])
        lines.append(
            f"max throughput: {fast[1]} at batch {fast[2].batch_size} ({fast[2].shown_figures()['throughput']:.1f} "
            f"samples/s); min latency: {quick[1]} at batch {quick[2].batch_size} "
            f"(p50 {quick[2].shown_figures()['p50']:.3f} ms)"
        )
        lines += _best(report)
    lines += _speedups(best)
    return "\n".join(lines)


#: Precisions whose runtimes are shown beside the fp32 runtime of their family.
_REDUCED = {"int8", "fp8", "int4", "fp16", "bf16"}


def fp32_family(runtime: str) -> str:
    """The fp32 runtime a reduced-precision one is made from: 'onnxruntime-int8-dynamic-cpu:per_channel=false'
    -> 'onnxruntime-cpu', 'tensorrt-fp16' -> 'tensorrt'."""
    parts = runtime.partition(":")[0].split("-")
    return "-".join(p for p in parts if p not in _REDUCED and p != "dynamic")


def _speedups(best: list[tuple[str, str, Any]]) -> list[str]:
    """Each reduced-precision runtime's throughput over its fp32 family's, at the batch sizes both measured
    stably in this run (the same process, the same machine state: a ratio, not two absolute figures)."""
    stable = {(model, runtime, batch.batch_size): batch.shown_figures()["throughput"] for model, runtime, batch in best}
    found: dict[tuple[str, str, str], list[str]] = {}
    for (model, runtime, size), throughput in stable.items():
        family = fp32_family(runtime)
        base = stable.get((model, family, size))
        if family != runtime.partition(":")[0] and base:
            found.setdefault((model, runtime, family), []).append(f"{throughput / base:.2f}x at batch {size}")
    return [
        f"{model} {runtime}: speed-up over {family}: {', '.join(ratios)} (throughput, this run)"
        for (model, runtime, family), ratios in found.items()
    ]


def _best(report: RunReport) -> list[str]:
    """Per model, the best runtime as the JSON report and the HTML report name it (selection.best_runtime:
    runtimes that passed, stable measurements, p99 within --navigator-latency-budget when given)."""
    from pytest_navigator.gate.selection import describe

    return [f"{info.name} {describe(info.best)}" for info, _ in report.models()]


def _model_profiles(report: RunReport) -> list[str]:
    """One line per model: its parameters and FLOPs per sample (model_profile.py), or why they are missing."""
    from pytest_navigator.model.profile import ModelProfile

    lines = []
    for info in report.results.models.values():
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
        f"{min(batch.instruction_repeats):,.0f}..{max(batch.instruction_repeats):,.0f}",
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


def baseline_summary(report: RunReport) -> str:
    """After --update-baselines: old -> new per entry written, and why measured runtimes were not
    written. Always: stored entries for this machine that no test of the run used (kept)."""
    from pathlib import Path

    from tabulate import tabulate

    lines = []
    results = report.results
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
    if report.settings.get("update_baselines"):
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
    for path, info in results.models.items():
        unused = results.unused.get(path)
        if unused:
            listed = ", ".join(f"{name} batch {size}" for _, name, size in unused)
            lines.append(
                f"{len(unused)} unused in {Path(info.baseline_file or '').name} "
                f"(kept; no test of this run measured them): {listed}"
            )
    return "\n".join(lines)
