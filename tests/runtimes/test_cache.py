"""The artifact cache: keys, restore instead of rebuild, corrupt entries, concurrent workers; and
the per-batch-size plans the runners memoize."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_navigator.check.strategies import random_samples
from pytest_navigator.runtimes import default_registry
from pytest_navigator.runtimes.cache import ArtifactCache, Mode
from pytest_navigator.session import NavigatorSession
from pytest_navigator.settings import Settings


def _mode(calls: list[str], payload: bytes = b"engine") -> Mode[bytes]:
    def convert(model: Any, config: Any, folder: Path) -> tuple[str, dict[str, Any]]:
        calls.append("convert")
        (folder / "artifact.bin").write_bytes(payload)
        return "artifact.bin", {"size": len(payload)}

    def restore(artifact: Path, config: Any, metadata: dict[str, Any]) -> bytes:
        data = artifact.read_bytes()
        assert len(data) == metadata["size"]
        return data

    return Mode("test-mode", convert, restore)


def test_a_second_run_restores_instead_of_building(tmp_path: Path) -> None:
    calls: list[str] = []
    first = ArtifactCache(tmp_path)
    assert first.fetch(_mode(calls), None, None, {"model": "abc"}) == b"engine"
    second = ArtifactCache(tmp_path)
    assert second.fetch(_mode(calls), None, None, {"model": "abc"}) == b"engine"
    assert calls == ["convert"]
    assert [e.action for e in first.events + second.events] == ["built", "restored"]
    entry = Path(second.events[0].path)
    metadata = json.loads((entry / "metadata.json").read_text())
    assert metadata["files"]["artifact.bin"]["size"] == 6 and metadata["metadata"] == {"size": 6}


def test_every_part_of_the_key_makes_a_new_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ArtifactCache(tmp_path)
    keys = {
        cache.key("m", {"model": "abc", "options": {"fp16": False}, "device": "cpu"}),
        cache.key("m", {"model": "abd", "options": {"fp16": False}, "device": "cpu"}),
        cache.key("m", {"model": "abc", "options": {"fp16": True}, "device": "cpu"}),
        cache.key("m", {"model": "abc", "options": {"fp16": False}, "device": "cuda"}),
        cache.key("other", {"model": "abc", "options": {"fp16": False}, "device": "cpu"}),
    }
    assert len(keys) == 5
    before = cache.key("m", {"model": "abc"})
    import pytest_navigator.runtimes.cache as cache_module

    monkeypatch.setattr(cache_module, "library_versions", lambda: {"torch": "99.0"})
    assert cache.key("m", {"model": "abc"}) != before  # a library upgrade builds anew


@pytest.mark.parametrize("damage", ["truncate", "metadata", "no-metadata", "restore-fails"])
def test_a_corrupt_or_partial_entry_is_rebuilt_never_fatal(tmp_path: Path, damage: str) -> None:
    calls: list[str] = []
    ArtifactCache(tmp_path).fetch(_mode(calls), None, None, {"model": "abc"})
    (entry,) = (tmp_path / "test-mode").glob("[!.]*[!k]")  # the entry folder, not its .lock
    if damage == "truncate":
        (entry / "artifact.bin").write_bytes(b"eng")
    elif damage == "metadata":
        (entry / "metadata.json").write_text("{not json")
    elif damage == "no-metadata":
        (entry / "metadata.json").unlink()  # a build that died before its metadata was written
    cache = ArtifactCache(tmp_path)
    mode = _mode(calls)
    if damage == "restore-fails":
        broken = {"n": 0}

        def restore(artifact: Path, config: Any, metadata: dict[str, Any]) -> bytes:
            broken["n"] += 1
            if broken["n"] == 1:
                raise ValueError("engine from another TensorRT")
            return artifact.read_bytes()

        mode = Mode(mode.name, mode.convert, restore)
    assert cache.fetch(mode, None, None, {"model": "abc"}) == b"engine"
    assert calls == ["convert", "convert"]
    (event,) = cache.events
    assert event.action == "rebuilt" and event.detail
    assert ArtifactCache(tmp_path).fetch(_mode(calls), None, None, {"model": "abc"}) == b"engine"  # healthy again
    assert calls == ["convert", "convert"]


def test_rebuild_builds_once_per_run_then_reuses(tmp_path: Path) -> None:
    calls: list[str] = []
    ArtifactCache(tmp_path).fetch(_mode(calls), None, None, {"model": "abc"})
    cache = ArtifactCache(tmp_path, rebuild=True)
    cache.fetch(_mode(calls, b"engine2"), None, None, {"model": "abc"})
    assert cache.fetch(_mode(calls, b"engine2"), None, None, {"model": "abc"}) == b"engine2"
    assert calls == ["convert", "convert"]
    assert [e.action for e in cache.events] == ["rebuilt", "restored"]


def _worker(root: str, log: str) -> bytes:
    import os
    import time

    def convert(model: Any, config: Any, folder: Path) -> tuple[str, dict[str, Any]]:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.3)  # a slow build: the others must wait, not build too
        (folder / "artifact.bin").write_bytes(b"x" * 4096)
        return "artifact.bin", {}

    mode = Mode("shared", convert, lambda artifact, config, metadata: artifact.read_bytes())
    return ArtifactCache(Path(root)).fetch(mode, None, None, {"model": "abc"})


def test_concurrent_workers_build_an_entry_once(tmp_path: Path) -> None:
    log = tmp_path / "builds.log"
    with ProcessPoolExecutor(4) as pool:
        results = list(pool.map(_worker, [str(tmp_path / "cache")] * 4, [str(log)] * 4))
    assert results == [b"x" * 4096] * 4
    assert len(log.read_text().split()) == 1
    assert not list((tmp_path / "cache" / "shared").glob(".*-*"))  # no temporary build folders left


def _session(model: Path, cache: Path, **runtime_options: dict[str, str]) -> NavigatorSession:
    session = NavigatorSession(
        Settings(models=(model,), cache_dir=cache, runtime_options=runtime_options), default_registry()
    )
    session.load_models()
    return session


def test_onnx_exports_and_torchscript_plans_are_restored_by_the_next_run(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    sample = random_samples(load_spec(tiny_models[".pt2"]), [3], seed=2)[0]
    outputs = {}
    for run in ("cold", "warm"):
        session = _session(tiny_models[".pt2"], tmp_path / "cache")
        (model,) = session.models.values()
        for runtime in ("onnxruntime-cpu", "torchscript-cpu"):
            outputs[run, runtime] = session.runner(model, runtime).infer(sample)["output"]
        artifacts = {
            r: session.results.runtimes[(model.path, r)].artifacts for r in ("onnxruntime-cpu", "torchscript-cpu")
        }
        action = "built" if run == "cold" else "restored"
        assert artifacts["onnxruntime-cpu"][0].startswith(f"{action} onnx-export")
        assert artifacts["torchscript-cpu"][0].startswith(f"{action} torchscript-trace")
        session.close()
    for runtime in ("onnxruntime-cpu", "torchscript-cpu"):
        np.testing.assert_array_equal(outputs["cold", runtime], outputs["warm", runtime])


def load_spec(path: Path) -> Any:
    from pytest_navigator.model.loader import load

    return load(path).io_spec


def test_options_are_part_of_the_cache_key(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    session = _session(
        tiny_models[".pt2"], tmp_path / "cache", **{"torchscript-cpu": {"optimize_for_inference": "false"}}
    )
    (model,) = session.models.values()
    session.runner(model, "torchscript-cpu:optimize_for_inference=false")
    other = _session(tiny_models[".pt2"], tmp_path / "cache")
    other.runner(model, "torchscript-cpu")
    # the frozen trace does not depend on optimize_for_inference (applied after restore), so it is shared
    assert other.results.runtimes[(model.path, "torchscript-cpu")].artifacts[0].startswith("restored torchscript-trace")


def test_traced_torchscript_memoizes_one_plan_per_batch_size(tiny_models: dict[str, Path]) -> None:
    from pytest_navigator.config import ProfilerConfig
    from pytest_navigator.measure.profiler import profile_batch

    session = NavigatorSession(Settings(models=(tiny_models[".pt2"],)), default_registry())
    (model,) = session.load_models()
    runner = session.runner(model, "torchscript-cpu")
    assert runner.planned_batch_sizes == (2,)  # the build traced the example request
    runner.preload(random_samples(model.io_spec, [1, 5], seed=3))
    assert runner.planned_batch_sizes == (1, 2, 5)
    assert [runner.select_batch_size(n) for n in (1, 4, 5, 64)] == [1, 2, 5, 5]
    plans = dict(runner.plans)  # type: ignore[attr-defined]
    runner.infer(random_samples(model.io_spec, [5], seed=9)[0])
    assert runner.plans == plans  # type: ignore[attr-defined]  # reused, not rebuilt
    seconds = runner.plan_seconds(7)
    assert seconds is None
    profile = profile_batch(runner, random_samples(model.io_spec, [7], seed=3), 7, ProfilerConfig(max_trials=3))
    plan = runner.plan_seconds(7)
    assert plan is not None and profile.cold_start_ms is not None and profile.cold_start_ms >= plan * 1000


def test_runners_with_one_plan_select_what_they_accept(tiny_models: dict[str, Path]) -> None:
    session = NavigatorSession(Settings(models=(tiny_models[".onnx"],)), default_registry())
    (model,) = session.load_models()
    runner = session.runner(model, "onnxruntime-cpu")
    assert runner.planned_batch_sizes == () and runner.plan_seconds(1) is None
    limit = model.io_spec.max_batch_size
    assert runner.select_batch_size(3) == 3
    assert runner.select_batch_size(10**6) == (limit if limit is not None else 10**6)


def test_torch_compile_caches_live_in_the_artifact_cache(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # torch.compile's own caches follow --navigator-cache; restore the process's settings afterwards
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "before"))
    monkeypatch.setenv("TRITON_CACHE_DIR", str(tmp_path / "before-triton"))
    actions = []
    for _ in range(2):
        session = _session(tiny_models[".pt2"], tmp_path / "cache")
        (model,) = session.models.values()
        session.runner(model, "torch-compile-cpu")
        (line,) = session.results.runtimes[(model.path, "torch-compile-cpu")].artifacts
        actions.append(line.split()[0])
    assert actions == ["built", "restored"]
    assert any((tmp_path / "cache" / "torch-compile").rglob("*")), "inductor wrote into the artifact cache"


def test_builds_plan_for_every_batch_size_the_run_will_serve(tiny_models: dict[str, Path]) -> None:
    from pytest_navigator.config import ProfilerConfig

    def sizes(**settings: Any) -> tuple[int, ...]:
        session = NavigatorSession(Settings(models=(tiny_models[".pt2"],), **settings), default_registry())
        (model,) = session.load_models()
        return session.builds.build_batch_sizes(model)

    checked = sizes(profiler=ProfilerConfig(run_profiling=False))
    assert checked[0] == 1 and {1, 4} <= set(checked) and max(checked) >= 8  # samples range up to 8
    profiled = sizes(profiler=ProfilerConfig(batch_sizes=(2, 16)))
    assert set(checked) | {2, 16} == set(profiled)  # a TensorRT profile covers the profiler's sizes too
