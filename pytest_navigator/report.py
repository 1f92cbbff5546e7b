"""Terminal summaries of a navigator run, as tables (tabulate)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_navigator.session import NavigatorSession


def runtime_table(session: NavigatorSession) -> str:
    """One row per model and runtime: what happened, the build time and the reason for a skip."""
    from tabulate import tabulate

    rows = []
    for (path, runtime), record in session.records.items():
        model = session.models.get(path)
        device = session.registry.get(runtime).device if runtime in session.registry else "?"
        build = "" if record.build_seconds is None else f"{record.build_seconds:.1f}"
        rows.append([model.name if model else path.name, runtime, device, record.status, build, record.detail])
    return tabulate(rows, headers=["model", "runtime", "device", "status", "build s", "detail"], tablefmt="simple")


def performance_summary(session: NavigatorSession) -> str:
    """The device, one row per runtime and batch size, why each sweep stopped, and the best runtimes."""
    from tabulate import tabulate

    from pytest_navigator.telemetry import fingerprint

    facts = fingerprint()
    cpu = facts["cpu"]
    device = f"CPU: {cpu['model']} ({cpu['usable_cores']} of {cpu['cores']} cores usable)"
    gpu = facts.get("gpu")
    if gpu:
        device += f"; GPU: {gpu['count']} x {gpu['names'][0]}, driver {gpu['driver']}, CUDA {gpu['cuda']}"
    libraries = ", ".join(f"{k} {v}" for k, v in facts["libraries"].items() if k != "pytest-navigator")
    rows, stops, best = [], [], []
    for (path, runtime), profile in session.profiles.items():
        model = session.models[path].name if path in session.models else path.name
        for batch in profile.batches:
            if batch.status == "error":
                rows.append([model, runtime, batch.batch_size, "error", "", "", "", "", "", ""])
                continue
            latency = batch.latency_ms
            used = len(batch.stable_windows) if batch.stable else len(batch.windows)
            rows.append(
                [
                    model,
                    runtime,
                    batch.batch_size,
                    batch.status,
                    f"{batch.throughput:.1f}",
                    f"{latency['p50']:.3f}",
                    f"{latency['p95']:.3f}",
                    f"{latency['p99']:.3f}",
                    f"{batch.cold_start_ms:.1f}" if batch.cold_start_ms is not None else "",
                    f"{used}/{len(batch.windows)}",
                ]
            )
            if batch.stable:
                best.append((model, runtime, batch))
        stops.append(f"{model} {runtime}: sweep stopped: {profile.stop_reason}")
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
            "windows",
        ],
        tablefmt="simple",
        disable_numparse=True,
        colalign=("left", "left", "right", "left", "right", "right", "right", "right", "right", "right"),
    )
    lines = [device, libraries, "", table, "", *stops]
    if best:
        fast = max(best, key=lambda entry: entry[2].throughput)
        quick = min(best, key=lambda entry: entry[2].percentile(50))
        lines.append(
            f"max throughput: {fast[1]} at batch {fast[2].batch_size} ({fast[2].throughput:.1f} samples/s); "
            f"min latency: {quick[1]} at batch {quick[2].batch_size} (p50 {quick[2].percentile(50):.3f} ms)"
        )
    return "\n".join(lines)
