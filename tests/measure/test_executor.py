"""The Executor protocol (measure/executor.py): a tiny runner measured, counted, traced and its peak
memory taken in this process and in a worker process, with results of the same kinds."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from pytest_navigator.config import ProfilerConfig, Sample
from pytest_navigator.errors import NavigatorError
from pytest_navigator.measure.executor import Executor, InProcess, InWorker, executor_for
from pytest_navigator.measure.memory import Peak
from pytest_navigator.measure.profiler import AB_MIN_PAIRS, BatchProfile, RuntimeProfile
from pytest_navigator.model.spec import parse_io_spec
from pytest_navigator.runtimes.base import BuildContext, CallableRunner, Runner, RuntimeDefinition

SPEC = parse_io_spec(["x:float32[N,4]"], "tiny")
#: Short windows, a lenient rule, busy windows only named: the kinds of results are under test, not speed.
QUICK = ProfilerConfig(measurement_request_count=5, stability_percentage=60, max_trials=4, interference="report")


def _tanh(sample: Sample) -> Sample:
    return {"y": np.tanh(sample["x"])}


def build_tiny(model: Any, context: BuildContext) -> Runner:
    return CallableRunner("tiny", _tanh, model.io_spec)


def _model(name: str) -> Any:
    return SimpleNamespace(path=Path(name), name=name, io_spec=SPEC)


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Any]:
    from pytest_navigator.workers.isolation import Timeouts, Worker

    started = Worker("tiny", Timeouts(), tmp_path / "workers")
    yield started
    started.close()


def _in_worker(worker: Any, model: Any, tmp_path: Path) -> Runner:
    from pytest_navigator.runtimes.remote import WorkerRunner

    definition = RuntimeDefinition("tiny", build_tiny)
    return WorkerRunner.build(worker, definition, model, BuildContext(tmp_path, {}), "tiny")


@pytest.fixture
def executors(worker: Any, tmp_path: Path) -> dict[str, Executor]:
    return {
        "here": executor_for(CallableRunner("tiny", _tanh, SPEC), SPEC),
        "worker": executor_for(_in_worker(worker, _model("new.onnx"), tmp_path), SPEC),
    }


def test_the_executor_is_picked_by_where_the_runner_runs(executors: dict[str, Executor]) -> None:
    here, there = executors["here"], executors["worker"]
    assert isinstance(here, InProcess) and not here.isolated
    assert isinstance(there, InWorker) and there.isolated
    assert here.runtime == there.runtime == "tiny"


def test_both_executors_measure_a_profile_of_the_same_kind(executors: dict[str, Executor]) -> None:
    for where, executor in executors.items():
        heard: list[str] = []
        profile, olds = executor.measure(QUICK, [1, 2], progress=heard.append)
        assert isinstance(profile, RuntimeProfile) and olds == {}, where
        assert [b.batch_size for b in profile.batches] == [1, 2], where
        assert all(b.status in ("stable", "unstable") and b.windows for b in profile.batches), where
        assert profile.stop_reason == "all requested batch sizes measured", where
        assert any("window" in text for text in heard), where  # a worker's progress comes back too


def test_both_executors_take_peak_memory_of_the_same_kind(executors: dict[str, Executor]) -> None:
    for where, executor in executors.items():
        peaks = executor.peak_memory([1, 2])
        assert sorted(peaks) == [1, 2], where
        assert all(isinstance(p, Peak) and p.rss is not None and p.rss > 0 and not p.error for p in peaks.values())


def test_both_executors_count_only_under_callgrind(executors: dict[str, Executor]) -> None:
    """Neither process runs under callgrind: both say so in the same words (a worker's NavigatorError
    comes back as one)."""
    for executor in executors.values():
        with pytest.raises(NavigatorError, match="count_runner runs in a process under callgrind"):
            executor.count([1])


def test_both_executors_trace_into_the_folder(executors: dict[str, Executor], tmp_path: Path) -> None:
    pytest.importorskip("torch")
    for where, executor in executors.items():
        folder = tmp_path / where
        written = executor.trace([1], folder)
        assert written == [str(folder / "bs1.trace.json")] and Path(written[0]).exists(), where
        assert (folder / "bs1.top.txt").exists(), where


def test_an_ab_measurement_finds_the_old_runner_in_the_same_worker(
    worker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old model's build of the runtime is in the worker that holds the new one: the pair is measured
    there, and in this process alike."""
    from pytest_navigator.measure import profiler

    new = _in_worker(worker, _model("new.onnx"), tmp_path)
    old = _in_worker(worker, _model("old.onnx"), tmp_path)
    profile, olds = executor_for(new, SPEC).measure(QUICK, [1], old)
    _same_kind_of_pair(profile, olds)

    monkeypatch.setattr(profiler, "SETTLE_SECONDS", 0.0)  # in this process only: the worker keeps its own
    monkeypatch.setattr(profiler, "AB_MIN_WINDOW_MS", 0.0)
    here = CallableRunner("tiny", _tanh, SPEC)
    profile, olds = executor_for(here, SPEC).measure(QUICK, [1], CallableRunner("tiny", _tanh, SPEC))
    _same_kind_of_pair(profile, olds)


def _same_kind_of_pair(profile: RuntimeProfile, olds: dict[int, BatchProfile]) -> None:
    assert [b.batch_size for b in profile.batches] == [1] and sorted(olds) == [1]
    assert profile.batches[0].status == olds[1].status == "stable"
    assert len(profile.batches[0].windows) == len(olds[1].windows) == max(AB_MIN_PAIRS, QUICK.max_trials)
