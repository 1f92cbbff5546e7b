"""The sample strategy and users' samples: dtypes, shapes, ranges, dynamic axes, shrinking, clear errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_navigator.check.strategies import (
    EDGE_FLOATS,
    MAX_EDITS,
    Recipe,
    batch_bounds,
    digest,
    materialize,
    random_sample,
    samples,
    simplify,
)
from pytest_navigator.check.user_samples import check_sample, load_sample_files, samples_from_dataloader
from pytest_navigator.config import Sample
from pytest_navigator.errors import SampleError
from pytest_navigator.model.spec import IOSpec, parse_io_spec, parse_tensor_spec

MIXED = parse_io_spec(
    [
        "image:float32[N,3,8,8]",
        "pixels:float16[N,4]{0..1}",
        "ids:int64[N,seq=2..12]{0..999}",
        "mask:bool[N,seq=2..12]",
        "small:int32[N,3]",
        "half:bfloat16[N,2]",
        "wide:float64[N,width]",
        "fixed:uint8[2,3]",
    ],
    "test",
)


@given(sample=samples(MIXED, batch_sizes=(1, 4)))
def test_generated_samples_respect_the_spec(sample: Sample) -> None:
    assert list(sample) == list(MIXED.names)
    for spec in MIXED:
        array = sample[spec.name]
        assert array.dtype.name == spec.dtype, spec.name
        assert array.ndim == len(spec.dims)
        for size, dim in zip(array.shape, spec.dims, strict=True):
            assert size == dim.size if dim.size is not None else dim.min <= size <= min(dim.max, 64)
    batch = {sample[t.name].shape[0] for t in MIXED if t.batch_axis is not None}
    assert len(batch) == 1 and 1 <= batch.pop() <= 8  # one batch size, up to max(configured, 8)
    assert sample["ids"].shape[1] == sample["mask"].shape[1]  # a named axis is shared
    assert sample["pixels"].astype(np.float32).min() >= 0 and sample["pixels"].astype(np.float32).max() <= 1
    assert sample["ids"].min() >= 0 and sample["ids"].max() <= 999
    assert sample["small"].min() >= 0 and sample["small"].max() <= 9  # undeclared integer range
    assert np.isfinite(sample["image"]).all() and np.isfinite(sample["half"].astype(np.float32)).all()


@given(
    low=st.integers(1, 6),
    span=st.integers(0, 40),
    configured=st.lists(st.integers(1, 64), max_size=3),
    runner_limit=st.none() | st.integers(1, 50),
)
def test_batch_bounds_stay_inside_spec_and_runner(
    low: int, span: int, configured: list[int], runner_limit: int | None
) -> None:
    spec = parse_io_spec([f"x:float32[N={low}..{low + span},2]"], "test")
    lo, hi = batch_bounds(spec, configured, runner_limit) or (0, 0)
    assert lo == low
    assert hi <= low + span or hi == lo
    if runner_limit is not None and runner_limit >= low:
        assert hi <= runner_limit
    assert hi >= min(max([*configured, 8]), low + span, runner_limit or 10**9) or hi == lo


def test_static_batch_models_get_no_batch_axis() -> None:
    assert batch_bounds(parse_io_spec(["x:float32[1,3]"], "test")) is None


def _find(spec: IOSpec, condition: object) -> Sample:
    from hypothesis import find

    # derandomized: these assert where shrinking ends, which a random start can leave a step short of
    return find(samples(spec, (1, 4)), condition, settings=settings(max_examples=500, database=None, derandomize=True))  # type: ignore[arg-type]


# These assert what the tool promises, not where one Hypothesis release's shrinker stops: the
# condition holds, the documented bound is reached (the batch shrinks to the smallest size that
# fails), values come from the spec's range and edge values, and after `simplify` (our own step,
# which the correctness check runs on every shrunk failure) only the elements the condition needs
# are left. A patch release of Hypothesis left a shrunk array dense where an older one had made it
# sparse (min 2 instead of 0), and failed a fresh install while CI's older release stayed green.


def _shrunk(spec: IOSpec, condition: Callable[[Sample], bool]) -> Sample:
    """Hypothesis's shrunk example, then `simplify`: what a failure report shows."""
    found = _find(spec, condition)
    assert condition(found)
    simple = simplify(found, spec, condition)
    assert condition(simple)
    return simple


def test_defaults_reach_edges_large_values_and_large_batches() -> None:
    spec = parse_io_spec(["x:float32[N,16]"], "test")
    assert _find(spec, lambda s: s["x"].shape[0] > 4)["x"].shape[0] == 5  # shrinks to the smallest such batch
    big = _find(spec, lambda s: bool((np.abs(s["x"]) >= 100).any()))["x"]
    # a large-magnitude edge value, placed by an edit: the strategy draws nothing larger
    assert np.abs(big).max() == 100.0 and 1 <= int((np.abs(big) == 100).sum()) <= MAX_EDITS
    simple = _shrunk(spec, lambda s: bool((s["x"] == -1).any()))["x"]
    assert np.count_nonzero(simple) == 1 and simple.min() == -1.0


def test_integer_ranges_are_covered_end_to_end() -> None:
    spec = parse_io_spec(["ids:int64[N,32]{0..999}"], "test")
    top = _shrunk(spec, lambda s: bool((s["ids"] == 999).any()))["ids"]
    assert np.count_nonzero(top) == 1 and top.max() == 999
    many = _shrunk(spec, lambda s: int((s["ids"] > 500).sum()) > 10)["ids"]
    # exactly the 11 elements the condition needs are left (the first MAX_EDITS of them moved to an
    # edge value); every other element sits at the low end of the range
    kept = many[many != 0]
    assert kept.size == 11 and (kept > 500).all() and many.min() == 0
    assert int((kept == 999).sum()) >= MAX_EDITS


def test_materialize_is_reproducible_and_fast_shaped() -> None:
    spec = parse_tensor_spec("x:float32[N,3,224,224]")
    recipe = Recipe("normal", seed=7, scale=1.0, count=None, edits=((5, -100.0),))
    a = materialize(spec, (2, 3, 224, 224), recipe)
    b = materialize(spec, (2, 3, 224, 224), recipe)
    assert a.dtype == np.float32 and np.array_equal(a, b) and a.reshape(-1)[5] == -100.0
    assert len(np.unique(a[0])) > 1000 and not np.array_equal(a[0], a[1])  # distinct rows, not one repeated
    sparse = materialize(spec, (1, 3, 224, 224), Recipe("normal", seed=7, count=3))
    assert np.count_nonzero(sparse) == 3
    fewer = materialize(spec, (1, 3, 224, 224), Recipe("normal", seed=7, count=2))
    assert set(np.flatnonzero(fewer)) < set(np.flatnonzero(sparse))  # fewer is a subset of more: shrinking walks down


def test_materialized_arrays_are_reused_as_copies_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    module: Any = importlib.import_module("pytest_navigator.model.draws")  # the seeded draws and their memo

    monkeypatch.setattr(module, "_memo", type(module._memo)())
    monkeypatch.setattr(module, "_memo_bytes", 0)
    made: list[Recipe] = []
    real = module._materialize

    def counted(*args: Any) -> Any:
        made.append(args[2])
        return real(*args)

    monkeypatch.setattr(module, "_materialize", counted)
    monkeypatch.setattr(module, "MEMO_BYTES", 3 * 16 * 4)  # room for one float32 (3, 16) array
    spec = parse_tensor_spec("x:float32[N,16]")
    first = materialize(spec, (2, 16), Recipe("normal", seed=1, count=None))
    first[:] = 0  # the caller's copy: writing to it changes nothing kept
    again = materialize(spec, (2, 16), Recipe("normal", seed=1, count=None))
    assert len(made) == 1 and np.count_nonzero(again) == again.size
    materialize(
        spec, (3, 16), Recipe("normal", seed=1, count=None)
    )  # another shape is another array; the bound evicts the first
    assert len(made) == 2 and len(module._memo) == 1 and module._memo_bytes == 3 * 16 * 4
    materialize(spec, (4, 16), Recipe("normal", seed=1, count=None))  # larger than the bound: made, not kept
    assert len(made) == 3 and len(module._memo) == 1
    materialize(spec, (2, 16), Recipe("normal", seed=1, count=None))  # evicted earlier: made again
    assert len(made) == 4 and module._memo_bytes == sum(a.nbytes for a in module._memo.values()) == 2 * 16 * 4


def test_declared_ranges_bound_every_recipe() -> None:
    spec = parse_tensor_spec("x:float32[N,50]{0.5..2}")
    for recipe in (Recipe("normal", seed=1, scale=1.0, count=None), Recipe("uniform", seed=2, count=None), Recipe()):
        array = materialize(spec, (4, 50), recipe)
        assert array.min() >= 0.5 and array.max() <= 2.0
    assert materialize(spec, (1, 50), Recipe()).min() == 0.5  # the simplest value is the one nearest 0


def test_simplify_keeps_only_the_elements_a_failure_needs() -> None:
    spec = parse_io_spec(["x:float32[N,100]"], "test")
    sample = random_sample(spec, 3, np.random.default_rng(0))
    simple = simplify(sample, spec, lambda s: bool((s["x"] < -0.5).any()))
    assert np.count_nonzero(simple["x"]) == 1 and simple["x"].min() == -1.0
    assert simple["x"].shape == (3, 100)
    unchanged = simplify(sample, spec, lambda s: False)
    assert np.array_equal(unchanged["x"], sample["x"])


def test_digest_tells_samples_apart() -> None:
    spec = parse_io_spec(["x:float32[N,4]"], "test")
    a = random_sample(spec, 2, np.random.default_rng(0))
    assert digest(a) == digest({"x": a["x"].copy()})
    assert digest(a) != digest({"x": a["x"] + 1}) and digest(a) != digest({"x": a["x"].astype(np.float64)})


def test_edge_values_include_large_magnitudes() -> None:
    assert {100.0, -100.0} <= set(EDGE_FLOATS)


# -- users' samples ------------------------------------------------------------------------------

SPEC = parse_io_spec(["ids:int64[N,seq=1..16]{0..999}", "mask:int64[N,seq=1..16]{0..1}"], "test")


def _good(batch: int = 2, seq: int = 5) -> Sample:
    return {"ids": np.zeros((batch, seq), np.int64), "mask": np.ones((batch, seq), np.int64)}


def test_npz_files_and_folders_load_in_name_order(tmp_path: Path) -> None:
    np.savez(tmp_path / "b.npz", **_good(1))  # type: ignore[arg-type]  # numpy's stub types **kwds badly
    np.savez(tmp_path / "a.npz", **_good(3))  # type: ignore[arg-type]
    (tmp_path / "notes.txt").write_text("not a sample")
    loaded = load_sample_files(tmp_path)
    assert [Path(label).name for label, _ in loaded] == ["a.npz", "b.npz"]
    assert loaded[0][1]["ids"].shape == (3, 5)
    assert len(load_sample_files(tmp_path / "b.npz")) == 1


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        ({"ids": np.zeros((2, 5), np.int64)}, r"sample s1: no input 'mask'; the model takes ids:int64"),
        ({**_good(), "extra": np.zeros(2)}, r"sample s1: unknown input 'extra'; the model's inputs are ids, mask"),
        ({**_good(), "ids": np.zeros((2, 5), np.float32)}, r"input 'ids' is float32; the model takes int64.*astype"),
        (
            {**_good(), "ids": np.zeros((2, 5, 1), np.int64)},
            r"input 'ids' has rank 3 \(shape \[2, 5, 1\]\); the model takes rank 2",
        ),
        ({**_good(), "ids": np.zeros((2, 17), np.int64)}, r"input 'ids' axis 1 is 17; the model allows 1..16"),
        (
            {**_good(), "mask": np.ones((3, 5), np.int64)},
            r"input 'mask' axis 0 \(the batch axis\) is 3, but input 'ids' has batch size 2",
        ),
        (
            {**_good(), "mask": np.ones((2, 4), np.int64)},
            r"input 'mask' axis 1 \(axis 'seq'\) is 4, but input 'ids' axis 1 is 5",
        ),
    ],
)
def test_samples_that_do_not_fit_name_the_sample_and_field(sample: Sample, message: str) -> None:
    with pytest.raises(SampleError, match=message):
        check_sample("s1", sample, SPEC)


def test_fixed_axes_are_checked() -> None:
    spec = parse_io_spec(["x:float32[N,3]"], "test")
    with pytest.raises(SampleError, match=r"input 'x' axis 1 is 4; the model fixes it at 3"):
        check_sample("s", {"x": np.zeros((1, 4), np.float32)}, spec)


def test_unreadable_sample_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(SampleError, match=r"--navigator-samples=.*missing: no such file or folder"):
        load_sample_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SampleError, match=r"the folder has no .npz files"):
        load_sample_files(tmp_path / "empty")
    (tmp_path / "bad.npz").write_bytes(b"garbage")
    with pytest.raises(SampleError, match=r"bad.npz is not a readable .npz file"):
        load_sample_files(tmp_path / "bad.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(SampleError, match=r"single.npy holds a single array, not named inputs"):
        load_sample_files(tmp_path / "single.npy")


def test_dataloader_items_become_samples() -> None:
    import torch

    loader = [
        _good(1),
        (np.zeros((2, 3), np.int64), np.ones((2, 3), np.int64)),
        {"ids": torch.zeros(1, 4, dtype=torch.int64), "mask": torch.ones(1, 4, dtype=torch.int64)},
    ]
    converted = samples_from_dataloader(loader, SPEC)
    assert [label for label, _ in converted] == [
        "navigator_dataloader[0]",
        "navigator_dataloader[1]",
        "navigator_dataloader[2]",
    ]
    assert converted[1][1]["mask"].shape == (2, 3) and isinstance(converted[2][1]["ids"], np.ndarray)
    with pytest.raises(
        SampleError, match=r"navigator_dataloader\[0\]: a sequence of 1 arrays, but the model takes 2 inputs"
    ):
        samples_from_dataloader([(np.zeros((1, 3)),)], SPEC)
    one_input = parse_io_spec(["x:float32[N,3]"], "test")
    assert samples_from_dataloader([np.zeros((1, 3), np.float32)], one_input)[0][1]["x"].shape == (1, 3)


def test_the_public_samples_strategy_is_the_function_after_the_plugin_imported_its_module() -> None:
    """`pytest_navigator.samples(spec)` is the public strategy. The module it lived in was named
    `samples` too, and importing that module (every plugin session does) replaced the package's
    attribute with the module: `pytest_navigator.samples(spec)` then said 'module is not callable'."""
    import importlib

    import pytest_navigator

    importlib.import_module("pytest_navigator.check.strategies")
    assert callable(pytest_navigator.samples)
    assert pytest_navigator.samples is importlib.import_module("pytest_navigator.check.strategies").samples


def test_a_digest_hashes_each_arrays_bytes_as_stored_whatever_its_layout_or_dtype() -> None:
    """Stored truths and saved failures are named by digest: the same sample must keep its digest
    (the bytes hashed are tobytes()'s, read in place), and any changed byte must change it."""
    import hashlib

    import ml_dtypes

    from pytest_navigator.check.strategies import digest

    def by_copy(sample: dict[str, np.ndarray]) -> str:
        hasher = hashlib.blake2b(digest_size=16)
        for name in sorted(sample):
            array = np.ascontiguousarray(sample[name])
            hasher.update(f"{name}:{array.dtype}:{array.shape};".encode())
            hasher.update(array.tobytes())
        return hasher.hexdigest()

    rng = np.random.default_rng(0)
    samples = [
        {"x": rng.standard_normal((4, 3, 8, 8), dtype=np.float32)},
        {"scalar": np.array(3.5), "flag": np.array(True)},
        {"strided": rng.integers(0, 9, (2, 5))[:, ::2], "transposed": rng.standard_normal((5, 6)).T},
        {"half": np.ones((3, 2), dtype=ml_dtypes.bfloat16), "empty": np.zeros((0, 4), np.float32)},
    ]
    for sample in samples:
        assert digest(sample) == by_copy(sample)
    changed = {"x": samples[0]["x"].copy()}
    changed["x"][1, 2, 3, 4] = np.nextafter(changed["x"][1, 2, 3, 4], np.float32(np.inf))
    assert digest(changed) != digest(samples[0])
