"""A stored baseline entry as a typed value (BaselineEntry): one runtime's measurement at one batch
size on one hardware key, timed figures or instruction counts, with how it was measured.

entry_for makes one from a measured profile. A baseline file's entries are checked once, when the
file is read (entry_problem, in the words users have always seen), and written back exactly as they
were read (to_dict), fields this version does not know included: a file round-trips byte for byte.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pytest_navigator.measure.profiler import BLOCKS_PER_WINDOW, BatchProfile, RuntimeProfile

#: Significant digits kept in the file: stable diffs, no float noise.
DIGITS = 6


@dataclass(frozen=True)
class InstructionCounts:
    """Instructions per request counted in separate processes: their median, min, max and each."""

    per_request: float
    min: float
    max: float
    per_sample: float | None = None
    #: each process's count, in the order counted
    repeats: tuple[int, ...] | None = None
    #: what the typed fields do not hold (a field this version does not know, one stored as null),
    #: kept as read
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InstructionCounts:
        per_sample, repeats = data.get("per_sample"), data.get("repeats")
        typed = {"per_request", "min", "max"}
        typed |= {"per_sample"} if isinstance(per_sample, (int, float)) else set()
        typed |= {"repeats"} if isinstance(repeats, list) else set()
        return cls(
            data["per_request"],
            data["min"],
            data["max"],
            per_sample if isinstance(per_sample, (int, float)) else None,
            tuple(repeats) if isinstance(repeats, list) else None,
            {name: copy.deepcopy(value) for name, value in data.items() if name not in typed},
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"per_request": self.per_request, "min": self.min, "max": self.max}
        if self.per_sample is not None:
            data["per_sample"] = self.per_sample
        if self.repeats is not None:
            data["repeats"] = list(self.repeats)
        return copy.deepcopy(dict(self.extra)) | data


@dataclass(frozen=True)
class BaselineEntry:
    """One stored measurement. Timed: the headline figures (the median run's), each run's, and the
    samples of blocks and windows; counted: `instructions`. Lists are tuples; nested objects
    (latencies, libraries, each run's figures) are mappings to read, never to change. A field is None
    where the entry has none (an entry from before runs were kept has no `runs`)."""

    #: samples/s; None for instruction counts
    throughput: float | None = None
    #: p50, p90, p95 and p99 in ms
    latency_ms: Mapping[str, float] | None = None
    #: each process's figures (runs.FIGURES)
    runs: tuple[Mapping[str, float], ...] | None = None
    window_throughputs: tuple[float, ...] | None = None
    block_throughputs: tuple[float, ...] | None = None
    block_p95_ms: tuple[float, ...] | None = None
    #: an A/B run's two sides only: each window's throughput and p95, paired by index (policy.paired_entry)
    paired_throughputs: tuple[float, ...] | None = None
    paired_p95_ms: tuple[float, ...] | None = None
    #: the calibration workload's score beside the profile
    calibration: float | None = None
    cold_start_ms: float | None = None
    #: the recordings pooled into this entry (baselines.pool), oldest first
    recordings: tuple[Mapping[str, Any], ...] | None = None
    instructions: InstructionCounts | None = None
    date: str | None = None
    libraries: Mapping[str, str] | None = None
    precision: str | None = None
    profiler: Mapping[str, Any] | None = None
    #: peak memory in bytes by kind (rss_bytes, cuda_bytes, gpu_process_bytes, engine_bytes)
    peak_memory: Mapping[str, Any] | None = None
    #: the model's figures at this batch size ({"flops", "parameters"}), once its profile was computed
    model: Mapping[str, Any] | None = None
    #: what the typed fields do not hold (a field this version does not know, one stored as null or
    #: as another kind of value), kept as read so that to_dict writes it back
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def counted(self) -> bool:
        """Instruction counts, not timed figures."""
        return self.instructions is not None

    @property
    def peak_rss(self) -> float | None:
        return (self.peak_memory or {}).get("rss_bytes")

    @property
    def recorded_runs(self) -> list[int]:
        """How many runs each pooled recording holds: the baseline side's days (runs.judge_metric)."""
        return [r.get("counts", {}).get("runs", 0) for r in self.recordings or ()]

    def figure(self, metric: str) -> float:
        """The headline figure of a metric: throughput (samples/s) or a latency percentile (ms)."""
        if metric == "throughput":
            return float(self.throughput)  # type: ignore[arg-type]
        return float((self.latency_ms or {})[metric])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BaselineEntry:
        """The entry whose JSON object is `data`, taken as it is: whether it can be judged against is
        entry_problem's to say, which a baseline file asks once, when it is read."""
        values: dict[str, Any] = {}
        for name, value in data.items():
            kind = _KINDS.get(name)
            if kind is not None and isinstance(value, kind):
                values[name] = _typed(name, value)
        extra = {name: copy.deepcopy(value) for name, value in data.items() if name not in values}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The entry's JSON object: exactly the one it was read from, or that entry_for made."""
        data = {f.name: _plain(getattr(self, f.name)) for f in _FIELDS if getattr(self, f.name) is not None}
        return copy.deepcopy(dict(self.extra)) | data


_FIELDS = tuple(f for f in fields(BaselineEntry) if f.name != "extra")
_ARRAYS = {
    "runs",
    "window_throughputs",
    "block_throughputs",
    "block_p95_ms",
    "paired_throughputs",
    "paired_p95_ms",
    "recordings",
}
_OBJECTS = {"latency_ms", "instructions", "libraries", "profiler", "peak_memory", "model"}
#: The JSON kind each field holds: an array (a tuple here), an object (a mapping), a number or text.
_KINDS: dict[str, type | tuple[type, ...]] = {
    f.name: list if f.name in _ARRAYS else dict if f.name in _OBJECTS else (int, float, str) for f in _FIELDS
}


def _typed(name: str, value: Any) -> Any:
    if name == "instructions":
        return InstructionCounts.from_dict(value)
    if isinstance(value, list):
        return tuple(copy.deepcopy(value))
    return copy.deepcopy(value)


def _plain(value: Any) -> Any:
    """A field as JSON: tuples as lists, instruction counts as their object; a copy, never shared."""
    if isinstance(value, InstructionCounts):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


def rounded(value: Any) -> Any:
    """`value` with every float in it kept to DIGITS significant digits: stable diffs, no float noise."""
    if isinstance(value, float):
        return float(f"{value:.{DIGITS}g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return value


def blocks(batch: BatchProfile) -> tuple[list[float], list[float]]:
    """Throughput (samples/s) and p95 latency (ms) of each block of the stable windows' requests
    (BLOCKS_PER_WINDOW per window: 3 windows give 15 samples per side, where 3 window values alone
    could never reach p < 0.05)."""
    throughputs, p95s = [], []
    for index in batch.stable_windows:
        window = batch.windows[index]
        for chunk in np.array_split(np.asarray(window.latencies_ms), BLOCKS_PER_WINDOW):
            if chunk.size and chunk.sum() > 0:
                throughputs.append(float(chunk.size * window.batch_size / (chunk.sum() / 1000)))
                p95s.append(float(np.percentile(chunk, 95)))
    return throughputs, p95s


def entry_for(batch: BatchProfile, profile: RuntimeProfile, facts: Mapping[str, Any], precision: str) -> BaselineEntry:
    """What is stored for one stable batch-size measurement (instruction counts: instruction_entry)."""
    if batch.instructions:
        return instruction_entry(batch, facts, precision)
    throughputs, p95s = blocks(batch)
    memory = {k: v for k, v in batch.memory.items() if v is not None} if batch.peak_rss is not None else None
    runs = [dict(r) for r in batch.runs] or [batch.figures()]
    headline: dict[str, Any] = {"throughput": batch.throughput, "latency_ms": batch.latency_ms}
    if len(runs) > 1:  # the figures of the median run, not of whichever process measured first
        headline = {
            "throughput": float(np.median([r["throughput"] for r in runs])),
            "latency_ms": {k: float(np.median([r[k] for r in runs])) for k in ("p50", "p95", "p99")}
            | {"p90": batch.latency_ms["p90"]},
        }
    return BaselineEntry.from_dict(
        rounded(
            {
                **({"peak_memory": memory} if memory else {}),
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "libraries": dict(facts.get("libraries", {})),
                "precision": precision,
                "profiler": profile.config.to_dict(),
                **headline,
                "runs": runs,
                "cold_start_ms": batch.cold_start_ms,
                "calibration": profile.calibration,
                "window_throughputs": [batch.windows[i].throughput for i in batch.stable_windows],
                "block_throughputs": throughputs,
                "block_p95_ms": p95s,
            }
        )
    )


def instruction_entry(batch: BatchProfile, facts: Mapping[str, Any], precision: str) -> BaselineEntry:
    """Instructions per request counted in separate processes: their median, min, max and each (whole
    numbers: exact, and stable in a diff)."""
    from pytest_navigator.measure import instructions

    counts = sorted(round(c) for c in batch.instructions)
    median = round(batch.instructions_per_request)
    return BaselineEntry.from_dict(
        rounded(
            {
                "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "libraries": dict(facts.get("libraries", {})),
                "precision": precision,
                "profiler": {
                    "measurement_mode": "instructions",
                    "processes": len(counts),
                    "requests": instructions.REQUESTS,
                },
                "instructions": {
                    "per_request": median,
                    "per_sample": median / batch.batch_size,
                    "min": counts[0],
                    "max": counts[-1],
                    "repeats": counts,
                },
            }
        )
    )


def _finite(value: Any, minimum: float, strict: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value > minimum if strict else value >= minimum


def entry_problem(entry: Any) -> str | None:
    """Why a stored entry cannot be judged against (a missing field, a wrong type, a number out of
    range: throughputs must be positive, latencies finite and not negative), or None."""
    if not isinstance(entry, dict):
        return f"is a {type(entry).__name__}, not an object"
    if "instructions" in entry:
        counts = entry["instructions"]
        if not isinstance(counts, dict):
            return "field 'instructions' is not an object"
        for name in ("per_request", "min", "max"):
            if not _finite(counts.get(name), 0.0, strict=True):
                return f"field 'instructions.{name}' is {counts.get(name)!r}; a count is a positive number"
        if counts["min"] > counts["per_request"] or counts["per_request"] > counts["max"]:
            return "field 'instructions' has per_request outside min..max"
        return None
    if "throughput" not in entry:
        return "has no field 'throughput'"
    if not _finite(entry["throughput"], 0.0, strict=True):
        return f"field 'throughput' is {entry['throughput']!r}; a throughput is a positive number (samples/s)"
    latency = entry.get("latency_ms")
    if not isinstance(latency, dict):
        return "has no field 'latency_ms'" if latency is None else "field 'latency_ms' is not an object"
    for name in ("p50", "p90", "p95", "p99"):
        if name not in latency:
            return f"field 'latency_ms' has no {name!r}"
        if not _finite(latency[name], 0.0, strict=False):
            return f"field 'latency_ms.{name}' is {latency[name]!r}; a latency is a finite number of ms >= 0"
    for name, strict in (("block_throughputs", True), ("window_throughputs", True), ("block_p95_ms", False)):
        values = entry.get(name, [])
        if not isinstance(values, list):
            return f"field {name!r} is not a list"
        bad = [v for v in values if not _finite(v, 0.0, strict)]
        if bad:
            return f"field {name!r} holds {bad[0]!r}; every value must be a {'positive' if strict else 'finite'} number"
    runs = entry.get("runs", [])
    if not isinstance(runs, list):
        return "field 'runs' is not a list"
    for number, run in enumerate(runs, 1):
        if not isinstance(run, dict):
            return f"field 'runs' holds {run!r} as run {number}; each run is an object of its figures"
        if not _finite(run.get("throughput"), 0.0, strict=True):
            return f"run {number} of field 'runs' has throughput {run.get('throughput')!r}; a throughput is a positive number"
        for name in ("p50", "p95", "p99"):
            if not _finite(run.get(name), 0.0, strict=False):
                return f"run {number} of field 'runs' has {name} {run.get(name)!r}; a latency is a finite number of ms >= 0"
    calibration = entry.get("calibration")
    if calibration is not None and not _finite(calibration, 0.0, strict=True):
        return f"field 'calibration' is {calibration!r}; a calibration score is a positive number or null"
    for name in ("libraries", "profiler"):
        if name in entry and not isinstance(entry[name], dict):
            return f"field {name!r} is not an object"
    return None


@dataclass(frozen=True)
class MalformedEntry:
    """A stored entry that cannot be judged against (`problem`: entry_problem's words): never used for
    a verdict, and kept as read, so that writing its file leaves it as it was until it is replaced."""

    data: Any
    problem: str

    def to_dict(self) -> Any:
        return copy.deepcopy(self.data)


def read_entry(data: Any) -> BaselineEntry | MalformedEntry:
    """A baseline file's entry, checked once, when the file is read."""
    problem = entry_problem(data)
    return BaselineEntry.from_dict(data) if problem is None else MalformedEntry(copy.deepcopy(data), problem)
