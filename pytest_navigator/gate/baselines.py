"""Stored baselines: one human-diffable JSON file per model, keyed by hardware, runtime and batch size.

A file is `<model stem>-<first 12 hex of its sha256>.json` under the baselines folder, with a
schema version. Writes happen under a `filelock` lock and re-read the file first, so concurrent
writers (xdist workers, parallel CI jobs) merge rather than lose entries; the new content goes to
a temporary file renamed over the old one, so a reader never sees half a file. A file that is
corrupt or has a newer schema is never overwritten: BaselineError names it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pytest_navigator import options
from pytest_navigator.errors import NavigatorError
from pytest_navigator.measure.profiler import BLOCKS_PER_WINDOW, BatchProfile, RuntimeProfile

SCHEMA_VERSION = 1
#: Significant digits kept in the file: stable diffs, no float noise.
DIGITS = 6


class BaselineError(NavigatorError):
    """A baseline file that cannot be read or must not be written."""


#: (hardware, runtime, batch size) -> entry
Key = tuple[str, str, int]


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{DIGITS}g}")
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v) for v in value]
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


def entry_for(batch: BatchProfile, profile: RuntimeProfile, facts: Mapping[str, Any], precision: str) -> dict[str, Any]:
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
    return _round(
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


def instruction_entry(batch: BatchProfile, facts: Mapping[str, Any], precision: str) -> dict[str, Any]:
    """Instructions per request counted in separate processes: their median, min, max and each (whole
    numbers: exact, and stable in a diff)."""
    from pytest_navigator.measure import instructions

    counts = sorted(round(c) for c in batch.instructions)
    median = round(batch.instructions_per_request)
    return _round(
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


#: An update that confirms the stored speed (no significant change, same library versions, profiler
#: settings and precision) pools its measurement with the stored ones, up to this many recordings:
#: one recording is one moment of a machine that drifts between runs, several are its usual range,
#: and the runs of all of them are the baseline side of a timed verdict (runs.py). An update that
#: changes the speed significantly, or anything else, starts the pool again; one that does not (an
#: outlier within the spread) joins it, and the medians keep it from moving the baseline.
POOL_SIZE = 5
#: Recordings older than this are stale: the next update drops them (the machine, its neighbours,
#: its firmware move on; a library or driver upgrade already starts a new pool).
STALE_DAYS = 90
#: The sample lists that pool (concatenated in recording order).
POOLED = ("runs", "window_throughputs", "block_throughputs", "block_p95_ms")


def poolable(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether `new` measures the same thing as `old` the same way (the time budget decides how far a
    sweep goes, not how a batch size is measured: it does not count)."""
    if old is None or "instructions" in old or "instructions" in new:
        return False  # counts do not drift: an unchanged count keeps its entry (BaselineStore.update)

    def how(entry: Mapping[str, Any]) -> tuple[Any, ...]:
        profiler = {k: v for k, v in (entry.get("profiler") or {}).items() if k not in ("time_budget", "interference")}
        return entry.get("libraries"), profiler, entry.get("precision")

    return how(old) == how(new)


def pool(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """`new` pooled with `old`'s recordings (the oldest dropped beyond POOL_SIZE, and any older than
    STALE_DAYS): runs and samples concatenated, throughput, latencies and calibration the median over
    the recordings."""
    stored = list(old.get("recordings") or [_recording(old)])
    stale = 0  # recordings are in the order they were made: the stale ones lead
    while stale < len(stored) and _stale(stored[stale], new.get("date")):
        stale += 1
    recordings = [*stored[stale:], _recording(new)]
    excess = max(0, len(recordings) - POOL_SIZE)
    dropped, kept = stored[:stale] + recordings[:excess], recordings[excess:]
    merged = dict(new)
    for name in POOLED:
        skip = sum(r["counts"].get(name, 0) for r in dropped)
        earlier = list(old.get(name, ())) if name != "runs" or "runs" in old else [_old_run(old)]
        merged[name] = earlier[skip:] + list(new.get(name, ()))
    merged["recordings"] = kept
    merged["throughput"] = float(np.median([r["throughput"] for r in kept]))
    merged["latency_ms"] = {k: float(np.median([r["latency_ms"][k] for r in kept])) for k in new["latency_ms"]}
    scores = [r["calibration"] for r in kept if r.get("calibration")]
    merged["calibration"] = float(np.median(scores)) if scores else None
    return _round(merged)


def _recording(entry: Mapping[str, Any]) -> dict[str, Any]:
    counts = {name: len(entry.get(name, ())) for name in POOLED}
    counts["runs"] = len(entry.get("runs") or [None])  # an entry from before runs were kept: one run
    return {
        "date": entry.get("date"),
        "throughput": entry["throughput"],
        "latency_ms": dict(entry["latency_ms"]),
        "calibration": entry.get("calibration"),
        "counts": counts,
    }


def _old_run(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The one run an entry from before runs were kept stands for: its headline figures."""
    latency = entry["latency_ms"]
    return {"throughput": entry["throughput"], "p50": latency["p50"], "p95": latency["p95"], "p99": latency["p99"]}


def _stale(recording: Mapping[str, Any], now: str | None) -> bool:
    """Whether a recording is older than STALE_DAYS at `now` (an ISO date; undated: never stale)."""
    if not recording.get("date") or not now:
        return False
    try:
        age = datetime.fromisoformat(now.replace("Z", "+00:00")) - datetime.fromisoformat(
            recording["date"].replace("Z", "+00:00")
        )
    except ValueError:
        return False
    return age.days > STALE_DAYS


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


@dataclass
class BaselineFile:
    """One model's baselines: entries[hardware][runtime][str(batch)] -> entry."""

    path: Path
    model: dict[str, str]
    entries: dict[str, dict[str, dict[str, dict[str, Any]]]]

    def get(self, key: Key) -> dict[str, Any] | None:
        """The stored entry for `key`, None when there is none; BaselineError for an entry that is
        there but malformed (it is never used for a verdict)."""
        hardware, runtime, batch = key
        entry = self.entries.get(hardware, {}).get(runtime, {}).get(str(batch))
        if entry is None:
            return None
        problem = entry_problem(entry)
        if problem is not None:
            raise BaselineError(
                f"{self.path}: the entry for {runtime} at batch size {batch} on {hardware} {problem}. It is not "
                f"used for a verdict; fix or delete it in the file, or record it again with {options.UPDATE_BASELINES}."
            )
        return entry

    def lookup(self, key: Key) -> tuple[dict[str, Any] | None, str]:
        """The entry for `key` and the hardware key it was found under: `key`'s own, else (a file
        written before CPU generations were part of the key) its coarser form, "AMD EPYC x2"."""
        from pytest_navigator.measure.telemetry import coarse_key

        entry = self.get(key)
        coarse = coarse_key(key[0])
        if entry is None and coarse is not None:
            found = self.get((coarse, key[1], key[2]))
            if found is not None:
                return found, coarse
        return entry, key[0]

    def runtime_entries(self, hardware: str, runtime: str) -> dict[str, Any]:
        """A runtime's entries by batch size on `hardware`, else under its coarser key (lookup)."""
        from pytest_navigator.measure.telemetry import coarse_key

        found = self.entries.get(hardware, {}).get(runtime, {})
        coarse = coarse_key(hardware)
        return found or (self.entries.get(coarse, {}).get(runtime, {}) if coarse else {})

    def keys(self) -> Iterator[Key]:
        for hardware, runtimes in self.entries.items():
            for runtime, batches in runtimes.items():
                for batch in batches:
                    yield hardware, runtime, int(batch)

    def put(self, key: Key, entry: dict[str, Any]) -> None:
        hardware, runtime, batch = key
        self.entries.setdefault(hardware, {}).setdefault(runtime, {})[str(batch)] = entry

    def dumps(self) -> str:
        data = {"schema": SCHEMA_VERSION, "model": self.model, "entries": self.entries}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


class BaselineStore:
    """The baselines folder: read a model's file, write measured entries into it safely."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path_for(self, model_name: str, fingerprint: str) -> Path:
        return self.directory / f"{Path(model_name).stem}-{fingerprint[:12]}.json"

    def load(self, model_name: str, fingerprint: str) -> BaselineFile:
        """The model's baselines; an empty file object when none is stored yet."""
        path = self.path_for(model_name, fingerprint)
        if not path.exists():
            return BaselineFile(path, {"name": model_name, "sha256": fingerprint}, {})
        return _parse(path)

    def update(
        self,
        model_name: str,
        fingerprint: str,
        entries: Mapping[Key, dict[str, Any]],
        pool_keys: frozenset[Key] | set[Key] = frozenset(),
    ) -> list[tuple[Key, Any, Any]]:
        """Write `entries` into the model's file, keeping every other entry; returns (key, old, new) rows.
        Entries under `pool_keys` (measurements that confirmed the stored speed) are pooled with the
        stored recordings where poolable. Locked and atomic: concurrent updaters merge; a corrupt or
        newer-schema file raises, untouched."""
        from filelock import FileLock

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(model_name, fingerprint)
        with FileLock(str(path) + ".lock", timeout=120):
            stored = self.load(model_name, fingerprint)  # re-read under the lock: others may have written
            changes = []
            for key, entry in sorted(entries.items()):
                try:
                    old = stored.get(key)
                except BaselineError:  # a malformed entry is replaced, never pooled with
                    old = None
                if key in pool_keys and old is not None and "instructions" in entry and _same_setup(old, entry):
                    written = old  # an unchanged count: the file stays byte-identical
                elif key in pool_keys and old is not None and poolable(old, entry):
                    written = pool(old, entry)
                else:
                    written = entry
                changes.append((key, old, written))
                stored.put(key, written)
            _write_atomically(path, stored.dumps())
        return changes


def _same_setup(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return all(old.get(k) == new.get(k) for k in ("libraries", "precision", "profiler"))


def _parse(path: Path) -> BaselineFile:
    accepted = f"a pytest-navigator baseline file (schema {SCHEMA_VERSION}) written by --update-baselines"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BaselineError(
            f"{path}: cannot read the baseline file ({type(exc).__name__}: {exc}); expected {accepted}. "
            "It is left as it is: fix or delete it, then run with --update-baselines."
        ) from None
    schema = data.get("schema") if isinstance(data, dict) else None
    if isinstance(schema, int) and schema > SCHEMA_VERSION:
        raise BaselineError(
            f"{path}: baseline schema {schema} is newer than this pytest-navigator reads ({SCHEMA_VERSION}); "
            "upgrade pytest-navigator. The file is left as it is."
        )
    entries = data.get("entries") if isinstance(data, dict) else None
    if schema != SCHEMA_VERSION or not isinstance(entries, dict) or not isinstance(data.get("model"), dict):
        raise BaselineError(f"{path}: not {accepted}. It is left as it is: fix or delete it.")
    return BaselineFile(path, data["model"], entries)


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
