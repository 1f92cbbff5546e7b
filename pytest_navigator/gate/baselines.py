"""Stored baselines: one human-diffable JSON file per model, keyed by hardware, runtime and batch size.

A file is `<model stem>-<first 12 hex of its sha256>.json` under the baselines folder, with a
schema version; its entries are typed (entries.BaselineEntry), checked once when the file is read,
and a store reads each file once (BaselineStore.load) until it writes it. Writes happen under a `filelock` lock and re-read the file first, so concurrent
writers (xdist workers, parallel CI jobs) merge rather than lose entries; the new content goes to
a temporary file renamed over the old one, so a reader never sees half a file. A file that is
corrupt or has a newer schema is never overwritten: BaselineError names it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from pytest_navigator import options
from pytest_navigator.errors import NavigatorError
from pytest_navigator.gate.entries import (  # noqa: F401 - the entries' helpers, importable from here as before
    DIGITS,
    BaselineEntry,
    MalformedEntry,
    blocks,
    entry_for,
    entry_problem,
    instruction_entry,
    read_entry,
    rounded,
)

SCHEMA_VERSION = 1


class BaselineError(NavigatorError):
    """A baseline file that cannot be read or must not be written."""


#: (hardware, runtime, batch size) -> entry
Key = tuple[str, str, int]
#: A file's entry as read: typed, malformed (kept as read), or null (as good as none).
Stored = BaselineEntry | MalformedEntry | None


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


def poolable(old: BaselineEntry | None, new: BaselineEntry) -> bool:
    """Whether `new` measures the same thing as `old` the same way (the time budget decides how far a
    sweep goes, not how a batch size is measured: it does not count)."""
    if old is None or old.counted or new.counted:
        return False  # counts do not drift: an unchanged count keeps its entry (BaselineStore.update)

    def how(entry: BaselineEntry) -> tuple[Any, ...]:
        profiler = {k: v for k, v in (entry.profiler or {}).items() if k not in ("time_budget", "interference")}
        return entry.libraries, profiler, entry.precision

    return how(old) == how(new)


def pool(old: BaselineEntry, new: BaselineEntry) -> BaselineEntry:
    """`new` pooled with `old`'s recordings (the oldest dropped beyond POOL_SIZE, and any older than
    STALE_DAYS): runs and samples concatenated, throughput, latencies and calibration the median over
    the recordings."""
    stored = list(old.recordings or [_recording(old)])
    stale = 0  # recordings are in the order they were made: the stale ones lead
    while stale < len(stored) and _stale(stored[stale], new.date):
        stale += 1
    recordings = [*stored[stale:], _recording(new)]
    excess = max(0, len(recordings) - POOL_SIZE)
    dropped, kept = stored[:stale] + recordings[:excess], recordings[excess:]
    merged = new.to_dict()
    for name in POOLED:
        skip = sum(r["counts"].get(name, 0) for r in dropped)
        earlier = list(getattr(old, name) or ()) if name != "runs" or old.runs is not None else [_old_run(old)]
        merged[name] = [*earlier[skip:], *(getattr(new, name) or ())]
    merged["recordings"] = kept
    merged["throughput"] = float(np.median([r["throughput"] for r in kept]))
    merged["latency_ms"] = {k: float(np.median([r["latency_ms"][k] for r in kept])) for k in new.latency_ms or {}}
    scores = [r["calibration"] for r in kept if r.get("calibration")]
    merged["calibration"] = float(np.median(scores)) if scores else None
    return BaselineEntry.from_dict(rounded(merged))


def _recording(entry: BaselineEntry) -> dict[str, Any]:
    counts = {name: len(getattr(entry, name) or ()) for name in POOLED}
    counts["runs"] = len(entry.runs or [None])  # an entry from before runs were kept: one run
    return {
        "date": entry.date,
        "throughput": entry.throughput,
        "latency_ms": dict(entry.latency_ms or {}),
        "calibration": entry.calibration,
        "counts": counts,
    }


def _old_run(entry: BaselineEntry) -> dict[str, Any]:
    """The one run an entry from before runs were kept stands for: its headline figures."""
    latency = entry.latency_ms or {}
    return {"throughput": entry.throughput, "p50": latency["p50"], "p95": latency["p95"], "p99": latency["p99"]}


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


@dataclass
class BaselineFile:
    """One model's baselines: entries[hardware][runtime][str(batch)] -> entry, each checked once when
    the file was read. A store shares the file it read with every caller: read it, never change it
    (BaselineStore.update changes a copy of its own)."""

    path: Path
    model: dict[str, str]
    entries: dict[str, dict[str, dict[str, Stored]]]

    def get(self, key: Key) -> BaselineEntry | None:
        """The stored entry for `key`, None when there is none; BaselineError for an entry that is
        there but malformed (it is never used for a verdict)."""
        hardware, runtime, batch = key
        entry = self.entries.get(hardware, {}).get(runtime, {}).get(str(batch))
        if isinstance(entry, MalformedEntry):
            raise BaselineError(
                f"{self.path}: the entry for {runtime} at batch size {batch} on {hardware} {entry.problem}. It is "
                f"not used for a verdict; fix or delete it in the file, or record it again with "
                f"{options.UPDATE_BASELINES}."
            )
        return entry

    def lookup(self, key: Key) -> tuple[BaselineEntry | None, str]:
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

    def runtime_entries(self, hardware: str, runtime: str) -> dict[str, Stored]:
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

    def put(self, key: Key, entry: BaselineEntry) -> None:
        hardware, runtime, batch = key
        self.entries.setdefault(hardware, {}).setdefault(runtime, {})[str(batch)] = entry

    def dumps(self) -> str:
        entries = {
            hardware: {
                runtime: {batch: None if entry is None else entry.to_dict() for batch, entry in batches.items()}
                for runtime, batches in runtimes.items()
            }
            for hardware, runtimes in self.entries.items()
        }
        data = {"schema": SCHEMA_VERSION, "model": self.model, "entries": entries}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"


class BaselineStore:
    """The baselines folder: read a model's file, write measured entries into it safely. A run keeps
    one store (the session's), which reads each file once, however many steps ask for it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        #: path -> the file as read (or written), or the error reading it raised
        self._read: dict[Path, BaselineFile | BaselineError] = {}

    def path_for(self, model_name: str, fingerprint: str) -> Path:
        return self.directory / f"{Path(model_name).stem}-{fingerprint[:12]}.json"

    def load(self, model_name: str, fingerprint: str) -> BaselineFile:
        """The model's baselines (an empty file object when none is stored yet), read on the first
        call and shared by the later ones until this store writes the file; an unreadable file raises
        its BaselineError each time."""
        path = self.path_for(model_name, fingerprint)
        if path not in self._read:
            try:
                self._read[path] = _load(path, model_name, fingerprint)
            except BaselineError as exc:
                self._read[path] = exc
        found = self._read[path]
        if isinstance(found, BaselineError):
            raise BaselineError(str(found)) from None
        return found

    def update(
        self,
        model_name: str,
        fingerprint: str,
        entries: Mapping[Key, BaselineEntry],
        pool_keys: frozenset[Key] | set[Key] = frozenset(),
    ) -> list[tuple[Key, BaselineEntry | None, BaselineEntry]]:
        """Write `entries` into the model's file, keeping every other entry; returns (key, old, new) rows.
        Entries under `pool_keys` (measurements that confirmed the stored speed) are pooled with the
        stored recordings where poolable. Locked and atomic: concurrent updaters merge; a corrupt or
        newer-schema file raises, untouched."""
        from filelock import FileLock

        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(model_name, fingerprint)
        with FileLock(str(path) + ".lock", timeout=120):
            # read again under the lock, past what this store read: others may have written since
            stored = _load(path, model_name, fingerprint)
            changes = []
            for key, entry in sorted(entries.items(), key=lambda item: item[0]):
                try:
                    old = stored.get(key)
                except BaselineError:  # a malformed entry is replaced, never pooled with
                    old = None
                if key in pool_keys and old is not None and entry.counted and _same_setup(old, entry):
                    written = old  # an unchanged count: the file stays byte-identical
                elif key in pool_keys and old is not None and poolable(old, entry):
                    written = pool(old, entry)
                else:
                    written = entry
                changes.append((key, old, written))
                stored.put(key, written)
            _write_atomically(path, stored.dumps())
            self._read[path] = stored  # what the file now holds
        return changes


def _same_setup(old: BaselineEntry, new: BaselineEntry) -> bool:
    return (old.libraries, old.precision, old.profiler) == (new.libraries, new.precision, new.profiler)


def _load(path: Path, model_name: str, fingerprint: str) -> BaselineFile:
    if not path.exists():
        return BaselineFile(path, {"name": model_name, "sha256": fingerprint}, {})
    return _parse(path)


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
    nested = isinstance(entries, dict) and all(
        isinstance(runtimes, dict) and all(isinstance(batches, dict) for batches in runtimes.values())
        for runtimes in entries.values()
    )
    if (
        schema != SCHEMA_VERSION
        or not nested
        or not isinstance(entries, dict)
        or not isinstance(data.get("model"), dict)
    ):
        raise BaselineError(f"{path}: not {accepted}. It is left as it is: fix or delete it.")
    typed = {
        hardware: {
            runtime: {batch: None if entry is None else read_entry(entry) for batch, entry in batches.items()}
            for runtime, batches in runtimes.items()
        }
        for hardware, runtimes in entries.items()
    }
    return BaselineFile(path, data["model"], typed)


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
