"""The machine-readable report of a run (--navigator-report=out.json), the one input later tools read.

Its shape is the JSON Schema in `report.schema.json` beside this module (schema_version 4: version 3
plus each batch size's GPU memory as NVML sees the runtime's process and TensorRT's engine memory;
3 added each batch size's pooled latency distribution, each runtime's hardware key and stable
measurements as baseline entries, and the best runtime per model): the device fingerprint, the settings, and per model and
runtime what happened, the correctness figures, every measured window, and the verdict per batch
size. Values that do not exist (a skipped runtime's profile) are null, never left out, so readers
need no guessing. The harness CLI (`navigator compare/report/merge/export`) reads this file:
`load_report` checks it and names what is wrong with it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_navigator.errors import NavigatorError

if TYPE_CHECKING:
    from pytest_navigator.check.correctness import CorrectnessReport
    from pytest_navigator.measure.profiler import RuntimeProfile
    from pytest_navigator.session import NavigatorSession

SCHEMA_VERSION = 4
#: Versions `load_report` reads (older ones lack the fields compare needs: it says so).
READABLE = (1, 2, 3, 4)
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")


def build_report(session: NavigatorSession) -> dict[str, Any]:
    """The report of a run: its RunResults, with the device and settings it ran under."""
    from pytest_navigator.gate.selection import best_runtime
    from pytest_navigator.measure.telemetry import fingerprint

    settings, results = session.settings, session.results
    models = []
    for path, info in results.models.items():
        runtimes = []
        for record in results.of_model(path):
            runtimes.append(
                {
                    "name": record.runtime,
                    "device": record.device,
                    "precision": record.precision,
                    "status": record.status.value,
                    "detail": record.detail,
                    "build_seconds": record.build_seconds,
                    "artifacts": list(record.artifacts),
                    "correctness": _correctness(record.correctness),
                    "profile": _profile(record.profile),
                    "against_profile": _profile(record.against_profile),
                    "verdicts": [c.to_dict() for c in record.comparisons],
                    "traces": list(record.traces),
                    "hardware": next(iter({key[0] for key in record.measured}), None),
                    "measured": [
                        {"hardware": key[0], "batch_size": key[2], "entry": entry}
                        for key, entry in sorted(record.measured.items(), key=lambda item: item[0][2])
                    ],
                }
            )
        models.append(
            {
                "name": info.name,
                "path": str(info.path),
                "sha256": info.fingerprint,
                "format": info.format,
                "inputs": info.inputs,
                "baseline_file": str(session.baseline_store.path_for(info.name, info.fingerprint)),
                "profile": info.profile,
                "runtimes": runtimes,
            }
        )
        models[-1]["best"] = best_runtime(models[-1], settings.latency_budget_ms)
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": fingerprint(),
        "settings": {
            "profiler": settings.profiler.to_dict(),
            "thresholds": {m: str(limit) for m, limit in session.limits.items()},
            "normalize": settings.normalize,
            "against": str(session.against_model.path) if session.against_model else None,
            "update_baselines": settings.update_baselines,
            "latency_budget_ms": settings.latency_budget_ms,
        },
        "models": models,
    }


def write_report(report: dict[str, Any], path: Path) -> None:
    """Write a report (build_report's) as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _correctness(report: CorrectnessReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {
        "passed": report.passed,
        "verify": report.verify,
        "samples": report.samples,
        "explicit": report.explicit,
        "generated": report.generated,
        "batch_sizes": list(report.batch_sizes),
        "outputs": [
            {
                "name": o.name,
                "max_abs_error": o.max_abs_error,
                "max_rel_error": o.max_rel_error,
                "budget_ratio": o.budget_ratio,
                "truth": o.truth,
            }
            for o in report.outputs
        ],
        "warnings": list(report.warnings),
        "budget_multiple": report.budget_multiple,
        "truth_note": report.truth_note,
    }


def _profile(profile: RuntimeProfile | None) -> dict[str, Any] | None:
    if profile is None:
        return None
    batches = []
    for batch in profile.batches:
        measured = batch.status != "error" and not batch.instructions
        batches.append(
            {
                "batch_size": batch.batch_size,
                "status": batch.status,
                "error": batch.error,
                "reason": batch.reason,
                "throughput": batch.throughput if measured else None,
                "latency_ms": batch.latency_ms if measured else None,
                "cold_start_ms": batch.cold_start_ms,
                "stable_windows": list(batch.stable_windows),
                "latency_distribution": latency_distribution(batch) if measured else None,
                "peak_memory": (
                    {"rss_scope": batch.rss_scope, **batch.memory}
                    if batch.peak_rss is not None or batch.peak_cuda is not None
                    else None
                ),
                "instructions": (
                    {
                        "per_request": batch.instructions_per_request,
                        "per_sample": batch.instructions_per_request / batch.batch_size,
                        "repeats": list(batch.instructions),
                    }
                    if batch.instructions
                    else None
                ),
                "windows": [
                    {
                        "requests": len(w.latencies_ms),
                        "wall_ms": w.wall_ms,
                        "throughput": w.throughput,
                        "p50_ms": w.p50_ms,
                        "throttled": w.throttled,
                        "device": None if w.device is None else w.device.describe(),
                        "interfered": w.interfered,
                        "cpu": None if w.cpu is None else w.cpu.describe(),
                    }
                    for w in batch.windows
                ],
            }
        )
    return {
        "mode": profile.config.measurement_mode.value,
        "tool": profile.tool,
        "stop_reason": profile.stop_reason,
        "calibration": profile.calibration,
        "batches": batches,
    }


#: Percentiles kept of the pooled latencies: the HdrHistogram plot's x axis is 1/(1-p), so the grid is
#: dense toward the tail; points beyond what the request count supports (1 - 1/requests) are left out.
PERCENTILES = (0.0, 10.0, 25.0, 50.0, 75.0, 80.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.99, 99.999)


def latency_distribution(batch: Any) -> dict[str, Any] | None:
    """The latencies of a batch size's stable windows pooled (all its windows when none is stable):
    count, mean, spread, Tukey's fences (pytest-benchmark's box plot) and percentiles for the HdrHistogram
    plot. Raw latencies are not kept: a fast model's run has hundreds of thousands of them."""
    import numpy as np

    windows = [batch.windows[i] for i in batch.stable_windows] or list(batch.windows)
    values = np.concatenate([np.asarray(w.latencies_ms, dtype=float) for w in windows]) if windows else np.zeros(0)
    if values.size == 0:
        return None
    q1, median, q3 = (float(x) for x in np.percentile(values, [25, 50, 75]))
    iqr, mean, stddev = q3 - q1, float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0
    inside = values[(values >= q1 - 1.5 * iqr) & (values <= q3 + 1.5 * iqr)]
    usable = [p for p in PERCENTILES if p == 0.0 or 1 / (1 - p / 100) <= values.size]
    if 100.0 not in usable:
        usable.append(100.0)
    points = np.percentile(values, usable)
    digits = lambda x: float(f"{x:.6g}")  # noqa: E731 - microsecond resolution at most; smaller JSON
    return {
        "requests": int(values.size),
        "windows": "stable" if batch.stable_windows else "all",
        "mean_ms": digits(mean),
        "stddev_ms": digits(stddev),
        "min_ms": digits(float(values.min())),
        "max_ms": digits(float(values.max())),
        "q1_ms": digits(q1),
        "median_ms": digits(median),
        "q3_ms": digits(q3),
        "low_fence_ms": digits(float(inside.min())),
        "high_fence_ms": digits(float(inside.max())),
        "iqr_outliers": int(values.size - inside.size),
        "stddev_outliers": int(np.count_nonzero(np.abs(values - mean) > stddev)),
        "total_ms": digits(float(values.sum())),
        "percentiles": [[p, digits(float(x))] for p, x in zip(usable, points, strict=True)],
    }


class ReportError(NavigatorError):
    """A run report that cannot be read: missing, not JSON, not a report, or from a newer version."""


ACCEPTED = "a run report written by `navigator profile -o PATH` or `pytest --navigator-report=PATH`"


def load_report(path: Path) -> dict[str, Any]:
    """A run report read and checked: every problem raises ReportError naming the file and what is accepted."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file; give {ACCEPTED}.") from None
    except IsADirectoryError:
        raise ReportError(f"{path} is a folder; give {ACCEPTED}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: cannot be read ({getattr(exc, 'strerror', None) or exc}).") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); was it cut short? Give {ACCEPTED}."
        ) from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if not isinstance(version, int) or isinstance(version, bool) or not isinstance(data.get("models"), list):
        raise ReportError(
            f"{path}: JSON, but not a pytest-navigator run report (no schema_version and models); give {ACCEPTED}."
        )
    if version > SCHEMA_VERSION:
        raise ReportError(
            f"{path}: report schema_version {version} is newer than this pytest-navigator reads "
            f"({READABLE[0]} to {SCHEMA_VERSION}); upgrade pytest-navigator (pip install -U pytest-navigator)."
        )
    if version not in READABLE:
        raise ReportError(
            f"{path}: report schema_version {version!r} is unknown; this version reads {READABLE[0]} to {SCHEMA_VERSION}."
        )
    for model in data["models"]:
        for runtime in model.get("runtimes", ()):
            runtime.setdefault("measured", [])  # versions 1-2 kept no entries: compare says what is missing
            runtime.setdefault("hardware", None)
            for batch in (runtime.get("profile") or {}).get("batches", ()):
                for field in ("gpu_process_bytes", "engine_bytes"):  # new in 4: unknown before
                    (batch.get("peak_memory") or {}).setdefault(field, None)
        model.setdefault("best", None)
    return data
