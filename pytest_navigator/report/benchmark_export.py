"""A run report in pytest-benchmark's JSON format, for the tools that read it.

`pytest-benchmark compare` (tables, `--csv`, `--histogram`) and github-action-benchmark's
`tool: 'pytest'` read this format. One benchmark per model, runtime and batch size, named
`<model>::<runtime>[bs<N>]`; its stats are seconds per request (one request: one batch), from the
batch size's pooled latencies (measure.summary.latency_distribution); `extra_info` keeps what the
format has no field for: samples/s, the tail percentiles and the verdict.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_navigator.report.fields import cell, shown_columns

if TYPE_CHECKING:
    from pytest_navigator.report.run_report import RunReport

#: The pytest-benchmark JSON layout written (its `version` field; readers check only the keys).
FORMAT_VERSION = "5.1.0"


def machine_id(report: RunReport) -> str:
    """The storage folder name pytest-benchmark files of this machine go under ('Linux-CPython-3.11-64bit'
    style: the OS, then the CPU, so runs of two machines land in two folders)."""
    device = report.device
    system = str(device.get("os", "unknown")).split()[0] or "unknown"
    cpu = re.sub(r"[^A-Za-z0-9]+", "_", str(device["cpu"]["model"])).strip("_") or "cpu"
    return f"{system}-{cpu}"


def to_pytest_benchmark(report: RunReport) -> dict[str, Any]:
    """The whole report as one pytest-benchmark JSON document."""
    device = report.device
    libraries = device.get("libraries", {})
    return {
        "machine_info": {
            "node": device.get("machine", ""),
            "processor": device["cpu"]["model"],
            "machine": device.get("machine", ""),
            "system": str(device.get("os", "")).split()[0] if device.get("os") else "",
            "release": device.get("os", ""),
            "python_implementation": "CPython",
            "python_version": libraries.get("python", ""),
            "cpu": {"brand_raw": device["cpu"]["model"], "count": device["cpu"]["cores"]},
            "gpu": device.get("gpu"),
            "libraries": libraries,
        },
        "commit_info": {},
        "benchmarks": list(_benchmarks(report)),
        "datetime": report.created,
        "version": FORMAT_VERSION,
    }


def write_storage(report: RunReport, folder: Path, name: str = "navigator") -> Path:
    """Write the report into a pytest-benchmark storage folder (`--storage file://FOLDER`): under the
    machine's folder, numbered after the runs already there (0001_navigator.json, 0002_...), as
    pytest-benchmark's own `--benchmark-autosave` numbers them."""
    import json

    target = folder / machine_id(report)
    target.mkdir(parents=True, exist_ok=True)
    numbers = [int(p.name[:4]) for p in target.glob("[0-9][0-9][0-9][0-9]_*.json")]
    path = target / f"{max(numbers, default=0) + 1:04d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.json"
    path.write_text(json.dumps(to_pytest_benchmark(report), indent=2) + "\n", encoding="utf-8")
    return path


def _benchmarks(report: RunReport) -> Iterator[dict[str, Any]]:
    for model, runtimes in report.models():
        for runtime in runtimes:
            profile = runtime.profile
            if not profile:
                continue
            verdicts = {v.batch_size: v for v in runtime.comparisons}
            shown = {header: cell(runtime, name) for name, header in shown_columns([runtime])}
            for batch in profile.batches:
                pooled = batch.latency_distribution
                if not pooled:
                    continue  # an error, or instruction counts: no times to export
                size = batch.batch_size
                verdict = verdicts.get(size)
                latency = batch.latency_ms or {}
                yield {
                    "group": f"{model.name} batch {size}",
                    "name": f"{runtime.runtime}[bs{size}]",
                    "fullname": f"{model.name}::{runtime.runtime}[bs{size}]",
                    "params": {"batch_size": size},
                    "param": f"bs{size}",
                    "extra_info": {
                        "model": model.name,
                        "model_sha256": model.fingerprint,
                        "runtime": runtime.runtime,
                        "device": runtime.device,
                        "hardware": runtime.hardware,
                        "batch_size": size,
                        "samples_per_s": batch.throughput,
                        "p50_ms": latency.get("p50"),
                        "p90_ms": latency.get("p90"),
                        "p95_ms": latency.get("p95"),
                        "p99_ms": latency.get("p99"),
                        "stable": batch.status == "stable",
                        "verdict": None if verdict is None else verdict.verdict.value,
                        "verdict_reason": None if verdict is None else verdict.reason,
                        **shown,
                    },
                    "options": {"timer": "perf_counter", "measurement": profile.mode or None},
                    "stats": _stats(pooled),
                }


def _stats(pooled: Mapping[str, Any]) -> dict[str, Any]:
    """pytest-benchmark's stats fields in seconds, from the pooled latencies in milliseconds."""
    s = {k: pooled[f"{k}_ms"] / 1000 for k in ("min", "max", "mean", "stddev", "median", "q1", "q3", "total")}
    return {
        **s,
        "rounds": pooled["requests"],
        "iterations": 1,
        "iqr": s["q3"] - s["q1"],
        "ld15iqr": pooled["low_fence_ms"] / 1000,
        "hd15iqr": pooled["high_fence_ms"] / 1000,
        "iqr_outliers": pooled["iqr_outliers"],
        "stddev_outliers": pooled["stddev_outliers"],
        "outliers": f"{pooled['stddev_outliers']};{pooled['iqr_outliers']}",
        "ops": 1 / s["mean"] if s["mean"] > 0 else 0.0,
    }
