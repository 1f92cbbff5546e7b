"""Typed baseline entries: checked once when a file is read, written back byte for byte, and each
model's file read once per run."""

from __future__ import annotations

import importlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_navigator.config import ProfilerConfig
from pytest_navigator.gate.baselines import BaselineError, BaselineFile, BaselineStore, _parse, pool
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
    return entry.to_dict() | {"date": "2026-01-02T03:04:05Z"} | fields  # one date: two calls may straddle a second


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


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every baseline file parsed from now on (the module the session imports: see conftest)."""
    baselines = importlib.import_module("pytest_navigator.gate.baselines")
    parsed: list[Path] = []
    real = baselines._parse

    def counting(path: Path) -> BaselineFile:
        parsed.append(path)
        return real(path)

    monkeypatch.setattr(baselines, "_parse", counting)
    return parsed


def test_the_store_reads_a_file_once_and_keeps_what_it_wrote(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    other = (KEY[0], KEY[1], 4)
    BaselineStore(tmp_path).update("m.onnx", "f" * 64, {KEY: BaselineEntry.from_dict(_timed())})
    parsed = _spy(monkeypatch)
    store = BaselineStore(tmp_path)
    first = store.load("m.onnx", "f" * 64)
    assert store.load("m.onnx", "f" * 64) is first and len(parsed) == 1
    store.update("m.onnx", "f" * 64, {other: BaselineEntry.from_dict(_timed(900.0))})
    assert len(parsed) == 2  # under the lock it reads again: another process may have written since
    assert sorted(store.load("m.onnx", "f" * 64).keys()) == [KEY, other] and len(parsed) == 2
    store.path_for("m.onnx", "f" * 64).write_text("{not json")
    fresh = BaselineStore(tmp_path)
    for _ in range(3):
        with pytest.raises(BaselineError, match="cannot read the baseline file"):
            fresh.load("m.onnx", "f" * 64)
    assert len(parsed) == 3  # an unreadable file is read once too, and said every time


def test_a_performance_test_parses_the_models_baseline_file_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    """The sizes to measure, the calibration, the verdict, the constraints and the unused entries all
    read the model's baseline file: the session's store parses it once for the run."""
    from pytest_navigator.runtimes import default_registry
    from pytest_navigator.session import NavigatorSession
    from pytest_navigator.settings import Settings

    calibration = importlib.import_module("pytest_navigator.measure.calibration")
    monkeypatch.setattr(calibration, "calibration_score", lambda device="cpu": 100.0)
    settings = Settings(models=(tiny_models[".pt2"],), baselines_dir=tmp_path, processes=1, constraints="params=1e9")
    session = NavigatorSession(settings, default_registry())
    (model,) = session.load_models()
    key = (session.hardware("torch-cpu"), "torch-cpu", 1)
    BaselineStore(tmp_path).update(model.name, model.fingerprint, {key: BaselineEntry.from_dict(_timed())})
    parsed = _spy(monkeypatch)
    config = ProfilerConfig(measurement_request_count=5, max_trials=3, stability_percentage=90)
    profile, _, broken = session.check_performance(model, "torch-cpu", config)
    assert [b.batch_size for b in profile.batches] == [1] and broken == ""  # the stored size, judged
    assert session.results.result(model.path, "torch-cpu").comparisons
    assert session.unused_baselines(model) == []
    assert parsed == [session.baseline_store.path_for(model.name, model.fingerprint)]
