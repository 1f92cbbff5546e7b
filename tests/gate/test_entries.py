"""Typed baseline entries: checked once when a file is read, and written back byte for byte."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_navigator.config import ProfilerConfig
from pytest_navigator.gate.baselines import BaselineError, BaselineStore, _parse, pool
from pytest_navigator.gate.entries import BaselineEntry, InstructionCounts, MalformedEntry, entry_for
from pytest_navigator.measure import instructions
from pytest_navigator.measure.profiler import BatchProfile, RuntimeProfile, WindowResult

ROOT = Path(__file__).resolve().parents[2]
KEY = ("AMD EPYC x2", "onnxruntime-cpu", 1)


def _timed(throughput: float = 1000.0, **fields: Any) -> dict[str, Any]:
    """A timed entry's JSON object as entry_for writes it."""
    latency = 1000.0 / throughput  # ms per request of one sample
    windows = tuple(WindowResult(1, (latency,) * 50, latency * 50) for _ in range(3))
    batch = BatchProfile(1, "stable", None, windows, (0, 1, 2))
    entry = entry_for(
        batch, RuntimeProfile("r", (batch,), "", ProfilerConfig()), {"libraries": {"numpy": "2.0"}}, "fp32"
    )
    return entry.to_dict() | fields


def _files() -> list[Path]:
    return sorted((ROOT / "baselines").glob("*.json"))


@pytest.mark.parametrize("path", _files(), ids=lambda path: path.name)
def test_committed_baseline_files_round_trip_byte_for_byte(path: Path) -> None:
    text = path.read_text()
    parsed = _parse(path)
    entries = [e for runtimes in parsed.entries.values() for batches in runtimes.values() for e in batches.values()]
    assert entries and all(isinstance(e, BaselineEntry) and e.counted for e in entries)
    assert parsed.dumps() == text
    for runtimes in json.loads(text)["entries"].values():
        for batches in runtimes.values():
            for raw in batches.values():
                assert BaselineEntry.from_dict(raw).to_dict() == raw


def test_the_run_report_fixtures_entries_round_trip() -> None:
    """tests/data/run-mlp.json's measured entries: from before runs were kept, with a null calibration."""
    report = json.loads((ROOT / "tests" / "data" / "run-mlp.json").read_text())
    raws = [m["entry"] for model in report["models"] for r in model["runtimes"] for m in r["measured"]]
    assert raws
    for raw in raws:
        entry = BaselineEntry.from_dict(raw)
        assert entry.runs is None and entry.to_dict() == raw
        assert json.dumps(entry.to_dict(), indent=2, sort_keys=True) == json.dumps(raw, indent=2, sort_keys=True)


def test_what_this_version_writes_round_trips_and_reads_as_typed_fields() -> None:
    timed = _timed(model={"flops": 704, "parameters": 195}, paired_throughputs=[1.0, 2.0])
    entry = BaselineEntry.from_dict(timed)
    assert entry.to_dict() == timed and BaselineEntry.from_dict(json.loads(json.dumps(timed))) == entry
    assert entry.throughput == 1000.0 and entry.figure("p95") == 1.0 and entry.runs is not None
    assert entry.block_throughputs == tuple(timed["block_throughputs"]) and entry.paired_throughputs == (1.0, 2.0)
    assert entry.calibration is None and "calibration" in timed  # null, and written back as null
    assert entry.model == {"flops": 704, "parameters": 195} and not entry.counted
    pooled = pool(entry, BaselineEntry.from_dict(_timed(900.0)))
    assert BaselineEntry.from_dict(json.loads(json.dumps(pooled.to_dict()))) == pooled
    assert pooled.recorded_runs == [1, 1] and pooled.throughput == pytest.approx(950.0)
    batch = instructions.combine(4, [1_000_300.0, 1_000_000.0, 1_000_100.0])
    counted = entry_for(batch, RuntimeProfile("r", (batch,), "", ProfilerConfig(), tool="valgrind-3.24.0"), {}, "fp32")
    assert counted.instructions == InstructionCounts(
        1_000_100, 1_000_000, 1_000_300, 250_025.0, (1_000_000, 1_000_100, 1_000_300)
    )
    assert BaselineEntry.from_dict(json.loads(json.dumps(counted.to_dict()))) == counted


def test_fields_this_version_does_not_know_or_holds_otherwise_are_written_back_as_read() -> None:
    raw = _timed(calibration=None, cold_start_ms=None, future={"a": [1, 2]}, model=None, precision=None)
    raw["instructions_note"] = "kept"
    entry = BaselineEntry.from_dict(raw)
    assert entry.model is None and entry.extra["future"] == {"a": [1, 2]}
    assert entry.to_dict() == raw
    assert replace(entry, calibration=2.0).to_dict() == raw | {"calibration": 2.0}  # a typed value wins
    counts = {"per_request": 5, "min": 4, "max": 6, "per_sample": None, "extra": True}
    assert BaselineEntry.from_dict({"instructions": counts}).to_dict() == {"instructions": counts}


def test_a_file_is_checked_once_when_read_and_a_malformed_entry_keeps_its_message(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    path = store.path_for("m.onnx", "a" * 64)
    broken = _timed() | {"throughput": -5.0}
    data = {
        "schema": 1,
        "model": {"name": "m.onnx", "sha256": "a" * 64},
        "entries": {KEY[0]: {KEY[1]: {"1": broken, "2": _timed(), "4": None}}},
    }
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    path.write_text(text)
    loaded = store.load("m.onnx", "a" * 64)
    assert isinstance(loaded.entries[KEY[0]][KEY[1]]["1"], MalformedEntry)
    with pytest.raises(BaselineError) as malformed:
        loaded.get(KEY)
    assert str(malformed.value) == (
        f"{path}: the entry for onnxruntime-cpu at batch size 1 on AMD EPYC x2 field 'throughput' is -5.0; a "
        "throughput is a positive number (samples/s). It is not used for a verdict; fix or delete it in the file, "
        "or record it again with --update-baselines."
    )
    assert loaded.get((KEY[0], KEY[1], 2)) == BaselineEntry.from_dict(_timed())
    assert loaded.get((KEY[0], KEY[1], 4)) is None  # null: as good as none, as before
    assert loaded.dumps() == text  # the malformed entry and the null are written back as they were


def test_a_file_whose_levels_are_not_objects_is_not_a_baseline_file(tmp_path: Path) -> None:
    path = tmp_path / "m-aaaaaaaaaaaa.json"
    path.write_text(json.dumps({"schema": 1, "model": {}, "entries": {"hw": []}}))
    with pytest.raises(BaselineError, match="not a pytest-navigator baseline file"):
        _parse(path)
