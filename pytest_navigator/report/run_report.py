"""A finished run: its results with the device and settings it ran under (see results.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_navigator.report.results import SCHEMA_VERSION, ModelInfo, RunResults, RuntimeResult


@dataclass
class RunReport:
    """A finished run: its results, the device and settings it ran under, built once after the
    baseline update. Every view reads it; `to_dict` is the JSON report."""

    results: RunResults
    #: telemetry.fingerprint(): CPU, GPU, OS, library versions
    device: dict[str, Any]
    #: The settings a reader needs to judge the figures (profiler config, thresholds, ...).
    settings: dict[str, Any]
    created: str
    #: `navigator merge`: the source, creation time, device and settings of each shard.
    shards: list[dict[str, Any]] = field(default_factory=list)

    def models(self) -> list[tuple[ModelInfo, list[RuntimeResult]]]:
        """Each model with its runtimes' records, in the order the run met them."""
        return [(info, list(self.results.of_model(path))) for path, info in self.results.models.items()]

    @property
    def latency_budget_ms(self) -> float | None:
        return self.settings.get("latency_budget_ms")

    def to_dict(self) -> dict[str, Any]:
        data = {
            "schema_version": SCHEMA_VERSION,
            "created": self.created,
            "device": self.device,
            "settings": self.settings,
            "models": self.results.model_dicts(),
        }
        if self.shards:
            data["shards"] = self.shards
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunReport:
        """A report's JSON read back (json_report.load_report checks the file and its version first)."""
        return cls(
            RunResults.from_model_dicts(data["models"]),
            dict(data.get("device") or {}),
            dict(data.get("settings") or {}),
            data.get("created") or "",
            list(data.get("shards") or ()),
        )


def build_report(
    results: RunResults, settings: dict[str, Any], registry: Any, baseline_file: Callable[[str, str], Path]
) -> RunReport:
    """The report of a finished run: each record's device (a skipped runtime's from the registry), each
    model's baseline file and best runtime (gate.selection), the device it ran on, now."""
    from datetime import UTC, datetime

    from pytest_navigator.gate.selection import best_runtime
    from pytest_navigator.measure.telemetry import fingerprint

    for record in results.runtimes.values():
        if record.device is None and record.runtime in registry:
            record.device = registry.get(record.runtime).device
    for path, info in results.models.items():
        info.baseline_file = str(baseline_file(info.name, info.fingerprint))
        info.best = best_runtime(results.of_model(path), settings.get("latency_budget_ms"))
    return RunReport(results, fingerprint(), settings, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
