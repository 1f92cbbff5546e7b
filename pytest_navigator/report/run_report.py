"""A finished run: its results with the device and settings it ran under (see results.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
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
