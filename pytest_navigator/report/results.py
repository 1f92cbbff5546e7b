"""What a run found: one typed record per model and runtime, and the run's report built from them.

`RunResults` collects the records while the run goes (each runtime's `RuntimeResult`, each model's
`ModelInfo`); `RunReport` (run_report.py) is the run's record once it is over: the results with the device, the
settings, the baseline updates, the unused entries and the best runtime. Every view reads a
`RunReport`: the terminal summary, the JSON report (`to_dict`, report.schema.json), HTML, Markdown,
the pytest-benchmark export, `navigator compare` and `navigator merge`; the xdist payload is the
same records' serialization. A field added to a record is serialized, merged and shown everywhere:
each type has one `to_dict`, one `from_dict` and one `merge`, and fields a type does not name
travel by their own names (a field that declares `metadata={"column": "header"}` also gets a column
in every runtime table: fields.py).
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_navigator.report.fields import empty, others, plain

if TYPE_CHECKING:
    from pytest_navigator.check.correctness import CorrectnessReport
    from pytest_navigator.gate.verdicts import Comparison
    from pytest_navigator.measure.summary import ProfileSummary
    from pytest_navigator.runtimes.builds import BuildRecord

#: (hardware, runtime, batch size): a baseline entry's key (baselines.Key).
Key = tuple[str, str, int]

#: The xdist payload's format (RunResults.to_json).
FORMAT_VERSION = 2
#: The JSON report's schema (report.schema.json). 5: each model's baseline update, unused entries
#: and profile error; each batch size's per-process figures and interference; a profile's runtime.
SCHEMA_VERSION = 5


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
RANK = {
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
    #: The baseline file its runtimes are judged against (and written to).
    baseline_file: str | None = None
    #: The best runtime (gate.selection.best_runtime), chosen when the report is built.
    best: dict[str, Any] | None = None

    _NAMED = frozenset({"path", "name", "fingerprint", "format", "inputs", "profile", "profile_error"})

    def to_dict(self) -> dict[str, Any]:
        data = {
            "path": str(self.path),
            "name": self.name,
            "sha256": self.fingerprint,
            "format": self.format,
            "inputs": self.inputs,
            "profile": self.profile,
            "profile_error": self.profile_error,
        }
        return data | {f.name: plain(getattr(self, f.name)) for f in others(type(self), set(self._NAMED))}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelInfo:
        extra = {f.name: data[f.name] for f in others(cls, set(cls._NAMED)) if f.name in data}
        return cls(
            Path(data["path"]),
            data["name"],
            data["sha256"],
            data["format"],
            data["inputs"],
            data.get("profile"),
            data.get("profile_error") or "",
            **extra,
        )

    def merge(self, other: ModelInfo) -> None:
        """Another shard's record of the same model: FLOPs of the batch sizes either measured, and every
        field this one lacks."""
        if other.profile is not None:
            if self.profile is None:
                self.profile = other.profile
            else:
                self.profile = {**self.profile, "flops": {**other.profile["flops"], **self.profile["flops"]}}
        for f in others(type(self), {"path", "name", "fingerprint", "format", "inputs", "profile"}):
            if empty(getattr(self, f.name)):
                setattr(self, f.name, getattr(other, f.name))


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
    profile: ProfileSummary | None = None
    #: --navigator-against: the old model's profile, measured window by window beside this one.
    against_profile: ProfileSummary | None = None
    comparisons: list[Comparison] = field(default_factory=list)
    #: Stable measurements as baseline entries, waiting for --update-baselines.
    measured: dict[Key, dict[str, Any]] = field(default_factory=dict)
    #: --navigator-trace: the trace files written for this runtime
    traces: list[str] = field(default_factory=list)

    _NAMED = frozenset(
        {"model", "runtime", "status", "correctness", "profile", "against_profile", "comparisons", "measured"}
    )

    @property
    def cache_summary(self) -> str:
        return "; ".join(self.artifacts)

    @property
    def hardware(self) -> str | None:
        """The hardware key its stable measurements were recorded under (None when none was stable)."""
        return next(iter({key[0] for key in self.measured}), None)

    def to_dict(self) -> dict[str, Any]:
        """The report's runtime object (report.schema.json), also the xdist payload's."""
        data = {
            "name": self.runtime,
            "status": self.status.value,
            "correctness": None if self.correctness is None else correctness_to_dict(self.correctness),
            "profile": None if self.profile is None else self.profile.to_dict(),
            "against_profile": None if self.against_profile is None else self.against_profile.to_dict(),
            "verdicts": [c.to_dict() for c in self.comparisons],
            "hardware": self.hardware,
            "measured": [
                {"hardware": key[0], "batch_size": key[2], "entry": entry}
                for key, entry in sorted(self.measured.items(), key=lambda item: item[0][2])
            ],
        }
        return data | {f.name: plain(getattr(self, f.name)) for f in others(type(self), set(self._NAMED))}

    @classmethod
    def from_dict(cls, model: Path, data: dict[str, Any]) -> RuntimeResult:
        from pytest_navigator.gate.verdicts import Comparison
        from pytest_navigator.measure.summary import ProfileSummary

        runtime = data["name"]
        extra = {f.name: data[f.name] for f in others(cls, set(cls._NAMED)) if f.name in data}
        correctness = data.get("correctness")
        return cls(
            model,
            runtime,
            Status(data["status"]),
            correctness=None if correctness is None else correctness_from_dict(model, runtime, correctness),
            profile=None if data.get("profile") is None else ProfileSummary.from_dict(data["profile"]),
            against_profile=(
                None if data.get("against_profile") is None else ProfileSummary.from_dict(data["against_profile"])
            ),
            comparisons=[Comparison.from_dict(runtime, c) for c in data.get("verdicts") or ()],
            measured={(m["hardware"], runtime, int(m["batch_size"])): m["entry"] for m in data.get("measured") or ()},
            **extra,
        )

    def merge(self, other: RuntimeResult) -> None:
        """Take in another record of the same runtime: the worse status wins (a failure anywhere is
        a failure), and every field the other has and this one lacks is kept."""
        if RANK[other.status] > RANK[self.status]:
            self.status = other.status
            self.detail = other.detail or self.detail
        self.measured = {**other.measured, **self.measured}
        for f in others(type(self), {"model", "runtime", "status", "measured"}):
            if empty(getattr(self, f.name)):
                setattr(self, f.name, getattr(other, f.name))


def correctness_to_dict(report: CorrectnessReport) -> dict[str, Any]:
    """A passed check as the report keeps it: every field, plus the sample count."""
    data = {f.name: plain(getattr(report, f.name)) for f in dataclasses.fields(report)}
    del data["model"], data["runtime"]
    for output in data["outputs"]:  # unknown in a report read from before schema 5: null, not NaN
        if output["max_abs_reference"] != output["max_abs_reference"]:
            output["max_abs_reference"] = None
    return data | {"passed": report.passed, "samples": report.samples}


def correctness_from_dict(model: Path, runtime: str, data: dict[str, Any]) -> CorrectnessReport:
    """correctness_to_dict's object read back; reports before schema 5 lack some output fields."""
    from pytest_navigator.check.correctness import CorrectnessReport, OutputSummary

    outputs = tuple(
        OutputSummary(
            o["name"],
            o["max_abs_error"],
            o.get("max_rel_error", float("nan")),
            o.get("max_abs_reference") if o.get("max_abs_reference") is not None else float("nan"),
            bool(o.get("constant", False)),
            nonfinite=bool(o.get("nonfinite", False)),
            **{f.name: o.get(f.name) for f in dataclasses.fields(OutputSummary) if f.default is None},
        )
        for o in data.get("outputs") or ()
    )
    return CorrectnessReport(
        model=model.name,
        runtime=runtime,
        verify=data.get("verify", ""),
        explicit=int(data.get("explicit", 0)),
        generated=int(data.get("generated", data.get("samples", 0) - data.get("explicit", 0))),
        outputs=outputs,
        batch_sizes=tuple(data.get("batch_sizes") or ()),
        warnings=tuple(data.get("warnings") or ()),
        budget_multiple=data.get("budget_multiple"),
        truth_note=data.get("truth_note") or "",
    )


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
    #: model path -> its baseline entries for this machine that no test of the run compared against
    unused: dict[Path, list[Key]] = field(default_factory=dict)

    def result(self, model: Path, runtime: str) -> RuntimeResult:
        """The record of a runtime of a model, made on first use."""
        key = (model, runtime)
        if key not in self.runtimes:
            self.runtimes[key] = RuntimeResult(model, runtime)
        return self.runtimes[key]

    def record_build(self, record: BuildRecord) -> None:
        """What the builds planned and built (runtimes.builds tells, and does not know the results)."""
        result = self.result(record.model, record.runtime)
        from pytest_navigator.runtimes.builds import Building, Planned

        if isinstance(record, Planned):
            result.device, result.precision = record.device, record.precision
            if record.skip_reason:
                result.status, result.detail = Status.SKIPPED, record.skip_reason
        elif isinstance(record, Building):
            result.device = result.device or record.device
            result.precision = result.precision or record.precision
        else:
            failed = Status.SKIPPED if record.not_applicable else Status.FAILED_BUILD
            result.status, result.detail = (
                (Status.BUILT, result.detail) if record.error is None else (failed, record.error)
            )
            result.build_seconds, result.artifacts = record.seconds, list(record.artifacts)

    def record_check(
        self,
        model: Path,
        runtime: str,
        report: CorrectnessReport | None,
        error: BaseException | None,
        artifacts: Sequence[str] = (),
    ) -> None:
        """A correctness check's end: passed with its report, or failed with the error's first line
        (a runtime that failed to build keeps that status and its reason); `artifacts`: what the check
        restored or computed of the reference's stored outputs and truths."""
        from pytest_navigator.check.checking import correctness_detail

        result = self.result(model, runtime)
        result.artifacts.extend(artifacts)
        if result.status in (Status.FAILED_BUILD, Status.SKIPPED):
            return
        if error is not None:
            result.detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        result.status = Status.PASSED if report else Status.FAILED
        if report:
            result.correctness, result.detail = report, correctness_detail(report)

    def of_model(self, model: Path) -> Iterator[RuntimeResult]:
        return (r for (path, _), r in self.runtimes.items() if path == model)

    def model_dicts(self) -> list[dict[str, Any]]:
        """Each model's report object with its runtimes', its baseline update and unused entries."""
        models = []
        for path, info in self.models.items():
            update = self.baseline_updates.get(path)
            models.append(
                info.to_dict()
                | {
                    "baseline_update": None if update is None else update.to_dict(),
                    "unused": [list(key) for key in self.unused.get(path, [])],
                    "runtimes": [r.to_dict() for r in self.of_model(path)],
                }
            )
        return models

    @classmethod
    def from_model_dicts(cls, models: list[dict[str, Any]]) -> RunResults:
        results = cls()
        for data in models:
            info = ModelInfo.from_dict(data)
            results.models[info.path] = info
            for runtime in data.get("runtimes") or ():
                record = RuntimeResult.from_dict(info.path, runtime)
                results.runtimes[(info.path, record.runtime)] = record
            if data.get("baseline_update") is not None:
                results.baseline_updates[info.path] = BaselineUpdate.from_dict(data["baseline_update"])
            if data.get("unused"):
                results.unused[info.path] = [(k[0], k[1], int(k[2])) for k in data["unused"]]
        return results

    def to_json(self) -> str:
        """What an xdist worker hands the controller: the report's model objects, and the records of
        runtimes whose model this worker did not load (each with its model's path)."""
        orphans = [{"model": str(r.model), **r.to_dict()} for r in self.runtimes.values() if r.model not in self.models]
        return json.dumps({"format": FORMAT_VERSION, "models": self.model_dicts(), "runtimes": orphans})

    @classmethod
    def from_json(cls, text: str) -> RunResults:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise ValueError(f"not pytest-navigator run results of format {FORMAT_VERSION}")
        results = cls.from_model_dicts(data["models"])
        for orphan in data.get("runtimes", ()):
            record = RuntimeResult.from_dict(Path(orphan.pop("model")), orphan)
            results.runtimes[(record.model, record.runtime)] = record
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
        for path, keys in other.unused.items():
            self.unused.setdefault(path, keys)
