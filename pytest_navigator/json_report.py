"""The machine-readable report of a run (--navigator-report=out.json), the one input later tools read.

Its shape is the JSON Schema in `report.schema.json` beside this module (schema_version 2: version 1 plus the model profile, peak memory and traces): the
device fingerprint, the settings, and per model and runtime what happened, the correctness
figures, every measured window, and the verdict per batch size. Values that do not exist (a
skipped runtime's profile) are null, never left out, so readers need no guessing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_navigator.correctness import CorrectnessReport
    from pytest_navigator.profiler import RuntimeProfile
    from pytest_navigator.session import NavigatorSession

SCHEMA_VERSION = 2
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")


def build_report(session: NavigatorSession) -> dict[str, Any]:
    """The report of a run: its RunResults, with the device and settings it ran under."""
    from pytest_navigator.telemetry import fingerprint

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
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": fingerprint(),
        "settings": {
            "profiler": settings.profiler.to_dict(),
            "thresholds": {m: str(limit) for m, limit in settings.limits.items()},
            "normalize": settings.normalize,
            "against": str(session.against_model.path) if session.against_model else None,
            "update_baselines": settings.update_baselines,
        },
        "models": models,
    }


def write_report(session: NavigatorSession, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_report(session), indent=2, sort_keys=True) + "\n", encoding="utf-8")


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
                "peak_memory": (
                    {"rss_bytes": batch.peak_rss, "rss_scope": batch.rss_scope, "cuda_bytes": batch.peak_cuda}
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
