"""What a run found: one typed record per model and runtime, the single source every report reads.

The terminal summary, the JSON report, the xdist worker -> controller payload and the baseline
update all read a `RunResults`, so a field added here shows up everywhere. `to_json()` and
`from_json()` are lossless (every window's raw latencies, every verdict's figures), and `merge()`
joins shards: xdist workers on one machine, or runs of a CI matrix.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_navigator.check.correctness import CorrectnessReport
    from pytest_navigator.gate.verdicts import Comparison
    from pytest_navigator.measure.profiler import RuntimeProfile

#: (hardware, runtime, batch size): a baseline entry's key (baselines.Key).
Key = tuple[str, str, int]

FORMAT_VERSION = 1


class Status(enum.StrEnum):
    """What happened to one runtime of one model. A str, so `status == "passed"` reads naturally."""

    PLANNED = "planned"
    BUILT = "built"
    FAILED_BUILD = "failed-build"
    SKIPPED = "skipped"
    PASSED = "passed"
    FAILED = "failed"


#: When two records of one runtime meet (xdist workers, shards), the higher rank wins: a failure
#: anywhere is a failure, a pass beats a runtime that was only built or skipped.
_RANK = {
    Status.PLANNED: 0,
    Status.SKIPPED: 1,
    Status.BUILT: 2,
    Status.PASSED: 3,
    Status.FAILED: 4,
    Status.FAILED_BUILD: 4,
}


@dataclass
class ModelInfo:
    """A tested model as reports name it."""

    path: Path
    name: str
    fingerprint: str
    format: str
    inputs: str
    #: The model's profile (model_profile.ModelProfile.as_json()), once a performance test computed it.
    profile: dict[str, Any] | None = None
    #: Why the profile could not be computed.
    profile_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "name": self.name,
            "sha256": self.fingerprint,
            "format": self.format,
            "inputs": self.inputs,
            "profile": self.profile,
            "profile_error": self.profile_error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        return cls(
            Path(data["path"]),
            data["name"],
            data["sha256"],
            data["format"],
            data["inputs"],
            data.get("profile"),
            data.get("profile_error", ""),
        )

    def merge(self, other: ModelInfo) -> None:
        """Another shard's record of the same model: FLOPs of the batch sizes either measured."""
        self.profile_error = self.profile_error or other.profile_error
        if other.profile is None:
            return
        if self.profile is None:
            self.profile = other.profile
        else:
            self.profile = {**self.profile, "flops": {**other.profile["flops"], **self.profile["flops"]}}


@dataclass
class RuntimeResult:
    """Everything one runtime of one model did this run."""

    model: Path
    runtime: str
    status: Status = Status.PLANNED
    detail: str = ""
    device: str | None = None
    precision: str | None = None
    build_seconds: float | None = None
    #: What the build did with cached artifacts: "restored onnx-export 0.02 s", "built tensorrt-engine 41 s".
    artifacts: list[str] = field(default_factory=list)
    correctness: CorrectnessReport | None = None
    profile: RuntimeProfile | None = None
    #: --navigator-against: the old model's profile, measured window by window beside this one.
    against_profile: RuntimeProfile | None = None
    comparisons: list[Comparison] = field(default_factory=list)
    #: Stable measurements as baseline entries, waiting for --update-baselines.
    measured: dict[Key, dict[str, Any]] = field(default_factory=dict)
    #: --navigator-trace: the trace files written for this runtime
    traces: list[str] = field(default_factory=list)

    @property
    def cache_summary(self) -> str:
        return "; ".join(self.artifacts)

    def to_dict(self) -> dict[str, Any]:
        from pytest_navigator.measure.profile_json import profile_to_dict

        return {
            "model": str(self.model),
            "runtime": self.runtime,
            "status": self.status.value,
            "detail": self.detail,
            "device": self.device,
            "precision": self.precision,
            "build_seconds": self.build_seconds,
            "artifacts": list(self.artifacts),
            "correctness": None if self.correctness is None else self.correctness.to_dict(),
            "profile": None if self.profile is None else profile_to_dict(self.profile),
            "against_profile": None if self.against_profile is None else profile_to_dict(self.against_profile),
            "comparisons": [c.to_dict() for c in self.comparisons],
            "measured": [[list(key), entry] for key, entry in self.measured.items()],
            "traces": list(self.traces),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeResult:
        from pytest_navigator.check.correctness import CorrectnessReport
        from pytest_navigator.gate.verdicts import Comparison
        from pytest_navigator.measure.profile_json import profile_from_dict

        runtime = data["runtime"]
        return cls(
            Path(data["model"]),
            runtime,
            Status(data["status"]),
            data["detail"],
            data["device"],
            data["precision"],
            data["build_seconds"],
            list(data["artifacts"]),
            None if data["correctness"] is None else CorrectnessReport.from_dict(data["correctness"]),
            None if data["profile"] is None else profile_from_dict(data["profile"]),
            None if data["against_profile"] is None else profile_from_dict(data["against_profile"]),
            [Comparison.from_dict(runtime, c) for c in data["comparisons"]],
            {(key[0], key[1], int(key[2])): entry for key, entry in data["measured"]},
            list(data.get("traces", [])),
        )

    def merge(self, other: RuntimeResult) -> None:
        """Take in another record of the same runtime: the worse status wins (a failure anywhere is
        a failure), and every figure the other has and this one lacks is kept."""
        if _RANK[other.status] > _RANK[self.status]:
            self.status = other.status
            self.detail = other.detail or self.detail
        elif not self.detail:
            self.detail = other.detail
        self.device = self.device or other.device
        self.precision = self.precision or other.precision
        self.build_seconds = self.build_seconds if self.build_seconds is not None else other.build_seconds
        self.artifacts = self.artifacts or other.artifacts
        self.correctness = self.correctness or other.correctness
        self.profile = self.profile or other.profile
        self.against_profile = self.against_profile or other.against_profile
        self.comparisons = self.comparisons or other.comparisons
        self.measured = {**other.measured, **self.measured}
        self.traces = self.traces or other.traces


@dataclass
class BaselineUpdate:
    """What --update-baselines did to one model's file: the rows written, or why nothing was."""

    path: Path | None
    #: (key, old entry or None, new entry)
    changes: list[tuple[Key, dict[str, Any] | None, dict[str, Any]]] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": None if self.path is None else str(self.path),
            "changes": [[list(key), old, new] for key, old, new in self.changes],
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaselineUpdate:
        changes = [((k[0], k[1], int(k[2])), old, new) for k, old, new in data["changes"]]
        return cls(None if data["path"] is None else Path(data["path"]), changes, data["error"])


@dataclass
class RunResults:
    """Every model and runtime of a run, by (model path, runtime id), in the order they were met."""

    models: dict[Path, ModelInfo] = field(default_factory=dict)
    runtimes: dict[tuple[Path, str], RuntimeResult] = field(default_factory=dict)
    #: model path -> what --update-baselines did (controller only)
    baseline_updates: dict[Path, BaselineUpdate] = field(default_factory=dict)

    def result(self, model: Path, runtime: str) -> RuntimeResult:
        """The record of a runtime of a model, made on first use."""
        key = (model, runtime)
        if key not in self.runtimes:
            self.runtimes[key] = RuntimeResult(model, runtime)
        return self.runtimes[key]

    def of_model(self, model: Path) -> Iterator[RuntimeResult]:
        return (r for (path, _), r in self.runtimes.items() if path == model)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT_VERSION,
                "models": [m.to_dict() for m in self.models.values()],
                "runtimes": [r.to_dict() for r in self.runtimes.values()],
                "baseline_updates": [[str(p), u.to_dict()] for p, u in self.baseline_updates.items()],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> RunResults:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise ValueError(f"not pytest-navigator run results of format {FORMAT_VERSION}")
        results = cls()
        for model in data["models"]:
            info = ModelInfo.from_dict(model)
            results.models[info.path] = info
        for record in data["runtimes"]:
            result = RuntimeResult.from_dict(record)
            results.runtimes[(result.model, result.runtime)] = result
        for path, update in data["baseline_updates"]:
            results.baseline_updates[Path(path)] = BaselineUpdate.from_dict(update)
        return results

    def merge(self, other: RunResults) -> None:
        """Take in another shard of the same run (an xdist worker's): records of one runtime merge
        (RuntimeResult.merge), new ones are added."""
        for path, info in other.models.items():
            if path in self.models:
                self.models[path].merge(info)
            else:
                self.models[path] = info
        for key, result in other.runtimes.items():
            if key in self.runtimes:
                self.runtimes[key].merge(result)
            else:
                self.runtimes[key] = result
        for path, update in other.baseline_updates.items():
            self.baseline_updates.setdefault(path, update)
