"""The reference's outputs and the truth kept across runs (check/truth_store.py): a warm run computes
none of them and gets the same bits, every part of the key is a miss, a corrupt entry is computed
again, no cache root keeps nothing, and a real pytest session says what it restored."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import write_model
from pytest_navigator.check import truth as truth_module
from pytest_navigator.check import truth_store
from pytest_navigator.check.references import ReferenceOutputs
from pytest_navigator.check.strategies import digest, random_samples
from pytest_navigator.check.truth import FLOAT64_SHADOW, PERTURBATION, Truth
from pytest_navigator.config import Sample
from pytest_navigator.model.loader import Model
from pytest_navigator.runtimes import builds as builds_module
from pytest_navigator.runtimes import default_registry
from pytest_navigator.session import NavigatorSession
from pytest_navigator.settings import Settings


def _session(path: Path, cache: Path | None, tmp_path: Path, seed: int = 0) -> tuple[NavigatorSession, Model]:
    session = NavigatorSession(
        Settings(
            models=(path,),
            seed=seed,
            cache_dir=cache,
            state_dir=tmp_path / ".navigator",
            invocation_dir=tmp_path,
        ),
        default_registry(),
    )
    return session, session.load_models()[0]


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    """Runs one session's reference over samples: (its ReferenceOutputs, {entry kind: action} of the
    events). Sessions are closed at the end."""
    sessions: list[NavigatorSession] = []

    def go(path: Path, samples: list[Sample], seed: int = 0, **reference: Any) -> tuple[Any, dict[str, str]]:
        """`reference`: settings of the reference runner to change before its key is made."""
        session, model = _session(path, tmp_path / "cache", tmp_path, seed)
        sessions.append(session)
        for name, value in reference.items():
            setattr(session.builds.reference(model), name, value)
        references = session.references(model)
        for sample in samples:
            references.truth(sample)
        return references, {event.mode: event.action for event in references.take_events()}

    yield go
    for session in sessions:
        session.close()


def _samples(model_path: Path, seed: int = 2) -> list[Sample]:
    from pytest_navigator.model.loader import load

    return random_samples(load(model_path).io_spec, [1, 3], seed=seed)


def _assert_same(cold: Truth, warm: Truth) -> None:
    assert (warm.kind, warm.note) == (cold.kind, cold.note)
    assert (dict(warm.noise), dict(warm.measured), dict(warm.estimated)) == (
        dict(cold.noise),
        dict(cold.measured),
        dict(cold.estimated),
    )
    assert list(warm.outputs) == list(cold.outputs)
    for name, array in cold.outputs.items():
        restored = np.asarray(warm.outputs[name])
        assert restored.dtype == np.asarray(array).dtype and restored.shape == np.shape(array)
        assert np.array_equal(restored, array), name


class _Spy:
    """Counts what a warm run must not do: build the truth source, run the shadow or the perturbations,
    run the reference."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self.monkeypatch = monkeypatch
        for owner, name in (
            (truth_module, "truth_source"),
            (truth_module._Shadow, "truth"),
            (truth_module._Perturbed, "truth"),
            (truth_module._Sensitivity, "spread"),
        ):
            monkeypatch.setattr(owner, name, self._counted(name, getattr(owner, name)))

    def _counted(self, name: str, function: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return function(*args, **kwargs)

        return counted

    def reference(self, references: ReferenceOutputs) -> None:
        """Count the reference's requests from now on (its build ran one already)."""
        self.monkeypatch.setattr(references.runner, "infer", self._counted("infer", references.runner.infer))


@pytest.mark.parametrize("suffix", [".pt2", ".onnx"])
def test_a_warm_run_computes_nothing_and_gets_the_same_bits(
    suffix: str, tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, samples = tiny_models[suffix], _samples(tiny_models[suffix])
    cold_session, model = _session(path, tmp_path / "cache", tmp_path)
    cold = cold_session.references(model)
    truths = [cold.truth(sample) for sample in samples]
    assert {t.kind for t in truths} == {FLOAT64_SHADOW}
    assert [e.summary.split(" ")[:2] for e in cold.take_events()] == [["computed", "truth"]]
    cold_session.close()

    spy = _Spy(monkeypatch)
    warm_session, model = _session(path, tmp_path / "cache", tmp_path)
    warm = warm_session.references(model)
    spy.reference(warm)
    for sample, truth in zip(samples, truths, strict=True):
        _assert_same(truth, warm.truth(sample))
        assert np.array_equal(warm.outputs(sample)["output"], cold.outputs(sample)["output"])
    assert spy.calls == []
    assert warm._source is None, "the truth source (the float64 copy of the model) was built"
    events = [e.summary for e in warm.take_events()]
    assert [re.sub(r" \d+\.\d\d s", "", e) for e in events] == [
        f"restored truth ({len(samples)} of {len(samples)} samples)"
    ]
    warm.outputs({"input": np.ones((1, 8), np.float32)})  # a check that asks no truth (a verify function of its own)
    assert [re.sub(r" \d+\.\d\d s", "", e.summary) for e in warm.take_events()] == [
        "computed reference-outputs (1 of 1 samples)"
    ]
    warm_session.close()


def test_a_perturbation_estimate_and_its_note_are_restored_too(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Any
) -> None:
    """No float64 shadow: the truth is the reference's outputs (stored once) and the note says why."""

    def no_shadow(model: Model, note: str) -> Any:
        raise RuntimeError("no double kernels here")

    monkeypatch.setattr(truth_module, "_torch_shadow", no_shadow)
    samples = _samples(tiny_models[".pt2"])
    cold, actions = run(tiny_models[".pt2"], samples)
    truths = [cold.truth(sample) for sample in samples]
    assert {t.kind for t in truths} == {PERTURBATION} and "no double kernels here" in truths[0].note
    spy = _Spy(monkeypatch)
    warm, actions = run(tiny_models[".pt2"], samples)
    assert actions == {"truth": "restored"} and spy.calls == []
    for sample, truth in zip(samples, truths, strict=True):
        _assert_same(truth, warm.truth(sample))
        assert warm.truth(sample).outputs is warm.outputs(sample)


def _changed_spec(model: Path, folder: Path, spec: str) -> Path:
    folder.mkdir()
    target = shutil.copy(model, folder / model.name)
    (folder / f"{model.stem}.navigator.toml").write_text(f'inputs = ["{spec}"]\n')
    return Path(target)


def test_every_part_of_the_key_is_a_miss(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Any
) -> None:
    model, samples = tiny_models[".pt2"], _samples(tiny_models[".pt2"])
    restored, computed = {"truth": "restored"}, {"truth": "computed"}
    assert run(model, samples)[1] == computed
    assert run(model, samples, seed=5)[1] == restored  # the run's seed decides samples, not their truth
    # the same bytes elsewhere: the path is not in the key
    assert run(_changed_spec(model, tmp_path / "moved", "input:float32[N,8]"), samples)[1] == restored

    # the model's bytes
    other = write_model("mlp", tmp_path / "other" / "mlp.pt2", features=8, hidden=12, classes=3)
    assert run(other, samples)[1] == computed
    # the input spec: a bound on the batch axis changes neither these samples nor the example request
    assert run(_changed_spec(model, tmp_path / "bounded", "input:float32[N=1..16,8]"), samples)[1] == computed
    assert run(_changed_spec(model, tmp_path / "ranged", "input:float32[N,8]{-1..1}"), samples)[1] == computed
    # the example request the truth source is chosen on (shadow, perturbation or plain)
    with monkeypatch.context() as patch:
        drawn = builds_module.random_sample
        patch.setattr(
            builds_module, "random_sample", lambda spec, size, rng: drawn(spec, size, np.random.default_rng(1))
        )
        assert run(model, samples)[1] == computed
    # a sample of the user's, one element apart
    edited = {"input": samples[0]["input"].copy()}
    edited["input"][0, 0] += 1.0
    assert run(model, [edited])[1] == computed
    assert run(model, samples)[1] == restored
    # truth.py's own settings: more perturbations
    with monkeypatch.context() as patch:
        patch.setattr(truth_module, "PERTURBATIONS", 2)
        assert run(model, samples)[1] == computed
    # a library's version
    with monkeypatch.context() as patch:
        patch.setattr(
            "pytest_navigator.runtimes.cache.library_versions", lambda: {"torch": "99.0", "pytest-navigator": "0"}
        )
        assert run(model, samples)[1] == computed
    # the reference's runtime and options
    for setting, value in (("threads", 1), ("tf32", True), ("runtime", "torch-cpu-other")):
        assert run(model, samples, **{setting: value})[1] == computed, setting
    assert run(model, samples)[1] == restored


def test_corrupt_entries_are_computed_again_never_fatal(tiny_models: dict[str, Path], run: Any) -> None:
    samples = _samples(tiny_models[".pt2"])
    cold, _ = run(tiny_models[".pt2"], samples)
    truths = [cold.truth(sample) for sample in samples]
    first, second = (cold._store.folder / digest(sample) for sample in samples)
    truncated = first.with_suffix(".truth.npz")
    truncated.write_bytes(truncated.read_bytes()[:100])
    shutil.copy(first.with_suffix(".reference-outputs.npz"), second.with_suffix(".reference-outputs.npz"))
    (cold._store.folder / "key.json").write_text("{")  # for people only: never read back

    warm, _ = run(tiny_models[".pt2"], [])
    problems = []
    for sample, truth in zip(samples, truths, strict=True):
        _assert_same(truth, warm.truth(sample))
        (event,) = warm.take_events()
        assert (event.mode, event.action) == ("truth", "recomputed")
        problems.append(event.detail)
    assert problems[0].startswith("1 of 1 samples; BadZipFile:"), problems
    assert re.match(r"1 of 1 samples; CacheError: .* holds sample '\w+', not '\w+'", problems[1]), problems
    assert run(tiny_models[".pt2"], samples)[1] == {"truth": "restored"}  # overwritten


def test_outputs_that_would_not_load_back_exactly_are_not_kept(tmp_path: Path) -> None:
    """.npy names no bfloat16 (it would load as raw bytes, |V2); an object array would need pickle."""
    import ml_dtypes

    outputs = {"half": np.arange(3, dtype=ml_dtypes.bfloat16), "object": np.array([None, 1], dtype=object)}
    for name, array in outputs.items():
        actions = []
        sample = {"output": array, "other": np.ones(2, np.float32)}
        for _ in range(2):
            store = truth_store.TruthStore(tmp_path / name, "key")
            found = store.outputs("sample", lambda: sample)  # noqa: B023 - called before the loop moves on
            assert found["output"].dtype == array.dtype
            actions += [event.action for event in store.take_events()]
        assert actions == ["computed", "computed"], name
        assert not list((tmp_path / name).glob("*.npz")), name


def test_rebuild_computes_every_entry_again_once(tiny_models: dict[str, Path], tmp_path: Path, run: Any) -> None:
    samples = _samples(tiny_models[".pt2"])
    run(tiny_models[".pt2"], samples)
    session = NavigatorSession(
        Settings(models=(tiny_models[".pt2"],), cache_dir=tmp_path / "cache", rebuild=True), default_registry()
    )
    (model,) = session.load_models()
    references = session.references(model)
    for sample in samples:
        references.truth(sample)
    (event,) = references.take_events()
    assert (event.action, event.detail) == ("recomputed", "2 of 2 samples; --navigator-rebuild")
    references._truths.clear()  # forgotten in memory (a long run): this run's entry is read back
    references._outputs.clear()
    references.truth(samples[0])
    assert [e.action for e in references.take_events()] == ["restored"]
    session.close()


def test_without_a_cache_root_nothing_is_kept(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: Any
) -> None:
    def no_writes(path: Path, write: Any) -> bool:
        raise AssertionError(f"wrote {path}")

    monkeypatch.setattr(truth_store, "_replace", no_writes)
    samples = _samples(tiny_models[".pt2"])
    for _ in range(2):
        spy = _Spy(monkeypatch)
        session, model = _session(tiny_models[".pt2"], None, tmp_path)
        references = session.references(model)
        spy.reference(references)
        assert references._store is None
        for sample in samples:
            references.truth(sample)
        assert references.take_events() == []
        assert spy.calls.count("infer") >= len(samples) and "truth_source" in spy.calls  # computed each run
        session.close()
    assert not list(tmp_path.rglob(f"{truth_store.FOLDER}/*"))


def test_a_rerun_restores_the_truth_and_says_so(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> None:
    shutil.copy(tiny_models[".pt2"], pytester.path / "mlp.pt2")
    shutil.copy(tiny_models[".pt2"].with_name("mlp.navigator.toml"), pytester.path)
    args = ("--navigator-model=mlp.pt2", "--navigator-runtimes=onnxruntime-cpu", "--navigator-no-profile",
            "--navigator-examples=3", "--navigator-seed=1")  # fmt: skip
    rows = {}
    for name in ("cold", "warm"):
        result = pytester.runpytest(*args)
        result.assert_outcomes(passed=1)
        (row,) = [line for line in result.stdout.lines if re.match(r"mlp\.pt2 +onnxruntime-cpu ", line)]
        rows[name] = row
    cold = re.search(r"computed truth \S+ s \((\d+) of (\d+) samples\)", rows["cold"])
    warm = re.search(r"restored truth \S+ s \((\d+) of (\d+) samples\)", rows["warm"])
    assert cold and warm and cold[1] == cold[2] == warm[1] == warm[2], rows
    assert "computed" not in rows["warm"], rows["warm"]
    detail = re.compile(r"\d+ samples[^)]*, max abs error .*")  # the detail column, not "(3 of 3 samples)"
    first, second = detail.search(rows["cold"]), detail.search(rows["warm"])
    assert first and second and first[0] == second[0]  # the same samples, errors and verdict
    assert list((pytester.path / ".navigator" / "cache" / "truth").glob("*/key.json"))


def test_a_check_hashes_each_sample_once(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest keys both the reference's outputs and the truth; a check computes it once per sample
    (hashing each twice took 0.4 s of a MobileNet's run), and the truths are still stored under it."""
    from pytest_navigator.check import correctness, references

    hashed: list[str] = []

    def counted(sample: Sample) -> str:
        hashed.append(digest(sample))
        return hashed[-1]

    monkeypatch.setattr(correctness, "digest", counted)
    monkeypatch.setattr(references, "digest", counted)
    session, model = _session(tiny_models[".pt2"], tmp_path / "cache", tmp_path)
    try:
        report = session.check_correctness(model, "torch-cpu")
    finally:
        session.close()
    assert report.generated >= 10 and len(hashed) == report.explicit + report.generated
    stored = {path.name.split(".")[0] for path in (tmp_path / "cache").rglob(f"*.{truth_store.TRUTH}.npz")}
    assert stored and stored == set(hashed)
