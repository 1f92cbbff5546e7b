"""Seeded draws of input Samples from an input spec: the example request builds trace and export
with, the profiler's inputs, and the arrays the Hypothesis strategy (check/strategies.py) materializes.

An array is never drawn element by element. A few parameters per input (a `Recipe`: a mode, a
seed, a scale, a handful of edge values at chosen positions) describe it, and numpy materializes
the array from them, so image-sized inputs stay fast. Nothing here imports Hypothesis.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_navigator.config import Sample
from pytest_navigator.model.spec import IOSpec, TensorSpec

#: Float inputs without a declared range live mostly in [-3, 3] ...
DEFAULT_FLOAT_RANGE = (-3.0, 3.0)
#: ... plus these edge values (the large magnitudes included), placed by a recipe's edits.
EDGE_FLOATS = (0.0, 1.0, -1.0, 3.0, -3.0, 100.0, -100.0)
#: Integer inputs without a declared range draw from these ranges.
DEFAULT_INT_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}
DEFAULT_INT_RANGE = (0, 9)
#: Dynamic non-batch axes draw sizes up to this, within their own bounds.
DEFAULT_AXIS_CAP = 64
#: Generated batch sizes go up to the largest configured batch size, and at least this far.
MIN_BATCH_CAP = 8


@dataclass(frozen=True, slots=True)
class Recipe:
    """How to materialize one array: a few drawn parameters, not its elements.

    normal: N(0, scale), clipped to a declared range; uniform: the low `scale` share of the range
    (integers, bools: the whole of it). `count` elements are random, the others hold the simplest
    value in range (0 where allowed); None: all of them. `edits` then set single elements to edge
    values (flat index, value).
    """

    mode: str = "normal"
    seed: int = 0
    scale: float = 1.0
    count: int | None = 0
    edits: tuple[tuple[int, float], ...] = ()


def value_range(spec: TensorSpec) -> tuple[float, float]:
    """The declared value range, or the default one for the dtype."""
    if spec.dtype == "bool":
        return (0, 1)
    if spec.is_float:
        return spec.value_range or DEFAULT_FLOAT_RANGE
    info = np.iinfo(spec.dtype)
    lo, hi = spec.value_range or DEFAULT_INT_RANGES.get(spec.dtype, DEFAULT_INT_RANGE)
    return (max(lo, info.min), min(hi, info.max))


def edge_values(spec: TensorSpec) -> tuple[float, ...]:
    """Edge values inside the range, simplest first: the value nearest 0, then +-1, the bounds, large ones."""
    if spec.dtype == "bool":
        return (0, 1)
    if spec.is_float:
        # Undeclared float ranges are only where most values fall; the large edge values go past them.
        lo, hi = spec.value_range or (-np.inf, np.inf)
        candidates = [0.0, 1.0, -1.0, lo, hi, *EDGE_FLOATS[3:]]
    else:
        lo, hi = value_range(spec)
        candidates = [0, 1, -1, lo, hi, lo + 1, hi - 1]
    inside = (float(np.clip(v, lo, hi)) for v in candidates if np.isfinite(v))
    return tuple(dict.fromkeys(inside))


def numpy_dtype(dtype: str) -> np.dtype[Any]:
    """The numpy dtype of a spec's dtype name (bfloat16 is ml_dtypes')."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


#: Bytes of materialized arrays kept for reuse. Every runtime of a run draws the same generated
#: samples (one seed), and drawing a batch of 224x224 images again (normal values, a permutation
#: for sparse ones) costs far more than copying it: about 1 s per runtime on MobileNetV3-Small.
MEMO_BYTES = 256 * 2**20
#: ... and at most this many arrays (a shrinking Hypothesis run makes thousands of tiny ones).
MEMO_ARRAYS = 1024
_memo: collections.OrderedDict[tuple[Any, ...], np.ndarray] = collections.OrderedDict()
_memo_bytes = 0


def materialize(spec: TensorSpec, shape: tuple[int, ...], recipe: Recipe) -> np.ndarray:
    """The array a recipe describes, in the spec's dtype, every value inside the spec's range
    (a fresh copy: the caller may write to it)."""
    global _memo_bytes
    key = (spec, tuple(shape), recipe)
    found = _memo.get(key)
    if found is None:
        found = _materialize(spec, shape, recipe)
        if found.nbytes <= MEMO_BYTES:
            _memo[key] = found
            _memo_bytes += found.nbytes
            while _memo_bytes > MEMO_BYTES or len(_memo) > MEMO_ARRAYS:
                _memo_bytes -= _memo.popitem(last=False)[1].nbytes
    else:
        _memo.move_to_end(key)
    return found.copy()


def _materialize(spec: TensorSpec, shape: tuple[int, ...], recipe: Recipe) -> np.ndarray:
    lo, hi = value_range(spec)
    simplest = edge_values(spec)[0]
    rng = np.random.default_rng(recipe.seed)
    array: np.ndarray
    if spec.dtype == "bool":
        array = rng.random(shape) < 0.5
    elif not spec.is_float:
        high = int(lo + round((hi - lo) * recipe.scale))
        array = rng.integers(int(lo), max(int(lo), high), size=shape, endpoint=True, dtype=np.int64)
    elif recipe.mode == "normal":
        array = rng.standard_normal(shape, dtype=np.float32) * np.float32(recipe.scale)
        if spec.value_range is not None:
            array = np.clip(array, lo, hi)
    else:
        ulo, uhi = (max(lo, -1e6), min(hi, 1e6))  # a half-open declared range still needs finite bounds
        array = rng.uniform(ulo, ulo + (uhi - ulo) * recipe.scale, shape).astype(np.float32)
    if recipe.count is not None and recipe.count < array.size:
        # The random elements are a prefix of one permutation: fewer is a subset of more, so
        # shrinking the count walks down to the one element a failure needs.
        keep = np.zeros(array.size, dtype=bool)
        keep[rng.permutation(array.size)[: recipe.count]] = True
        array = np.where(keep.reshape(shape), array, np.asarray(simplest).astype(array.dtype))
    if recipe.edits and array.size:
        flat = array.reshape(-1)
        for index, value in recipe.edits:
            flat[index % flat.size] = value
    return array.astype(numpy_dtype(spec.dtype))


def random_recipe(spec: TensorSpec, rng: np.random.Generator) -> Recipe:
    """A recipe for a realistic random array (used for build examples and timing inputs)."""
    mode = "normal" if spec.is_float and spec.value_range is None else "uniform"
    return Recipe(mode=mode, seed=int(rng.integers(2**32)), count=None)


def random_sample(io_spec: IOSpec, batch_size: int, rng: np.random.Generator) -> Sample:
    """One request of `batch_size` distinct rows; other dynamic axes get one size shared by inputs that name it."""
    axis_sizes: dict[str, int] = {}
    sample: Sample = {}
    for spec in io_spec:
        shape = concrete_shape(spec, batch_size, axis_sizes, lambda lo, hi: int(rng.integers(lo, hi + 1)))
        sample[spec.name] = materialize(spec, shape, random_recipe(spec, rng))
    return sample


#: The profiler rotates up to this many distinct samples per batch size ...
PROFILE_INPUTS = 8
#: ... as long as they fit in this many bytes (at least 2 samples are always made).
PROFILE_INPUT_BYTES = 256 * 2**20


def profiling_inputs(io_spec: IOSpec, batch_size: int) -> list[Sample]:
    """Distinct random samples of one batch size for the profiler to rotate through: up to
    PROFILE_INPUTS of them within PROFILE_INPUT_BYTES, the same ones in every run (seeded by size)."""
    rng = np.random.default_rng(batch_size)  # the stream random_samples(seed=batch_size) draws from
    found = [random_sample(io_spec, batch_size, rng)]
    size = max(sum(a.nbytes for a in found[0].values()), 1)
    count = max(2, min(PROFILE_INPUTS, PROFILE_INPUT_BYTES // size))
    return found + [random_sample(io_spec, batch_size, rng) for _ in range(count - 1)]


def random_samples(io_spec: IOSpec, batch_sizes: Sequence[int], per_batch: int = 1, seed: int = 0) -> list[Sample]:
    """`per_batch` distinct samples for each batch size, the same for the same seed."""
    rng = np.random.default_rng(seed)
    return [random_sample(io_spec, size, rng) for size in batch_sizes for _ in range(per_batch)]


def concrete_shape(spec: TensorSpec, batch_size: int | None, axis_sizes: dict[str, int], pick: Any) -> tuple[int, ...]:
    """The concrete shape: the batch axis gets `batch_size`, another dynamic axis `pick(lo, hi)`,
    shared by every input that names the same axis."""
    shape = []
    for axis, dim in enumerate(spec.dims):
        if dim.size is not None:
            shape.append(dim.size)
        elif axis == 0 and batch_size is not None:
            shape.append(batch_size)
        else:
            key = dim.name or f"{spec.name}:{axis}"
            if key not in axis_sizes:
                axis_sizes[key] = pick(dim.min, max(dim.min, min(dim.max, DEFAULT_AXIS_CAP)))
            shape.append(axis_sizes[key])
    return tuple(shape)


def batch_bounds(
    io_spec: IOSpec, batch_sizes: Iterable[int] = (), max_batch_size: int | None = None
) -> tuple[int, int] | None:
    """The batch sizes generated samples range over: from the smallest allowed to the largest configured
    (at least MIN_BATCH_CAP), never past what the spec and the runner allow. None: no batch axis."""
    batched = [t for t in io_spec if t.batch_axis is not None]
    if not batched:
        return None
    low = max(t.dims[0].min for t in batched)
    limits = [io_spec.max_batch_size or low]
    if max_batch_size is not None:
        limits.append(max_batch_size)
    high = min(max([*batch_sizes, MIN_BATCH_CAP]), *limits)
    return low, max(low, high)


def digest(sample: Sample) -> str:
    """A content hash of a sample (names, dtypes, shapes, bytes): equal samples, equal digests. It keys
    what is stored per sample (reference outputs, truths) and the calibration data of quantized builds."""
    import hashlib

    hasher = hashlib.blake2b(digest_size=16)
    for name in sorted(sample):
        array = np.ascontiguousarray(sample[name])
        hasher.update(f"{name}:{array.dtype}:{array.shape};".encode())
        hasher.update(array.reshape(-1).view(np.uint8).data)  # the same bytes as tobytes(), not copied
    return hasher.hexdigest()


def describe(sample: Sample) -> str:
    """'ids int64[5, 32], mask int64[5, 32]': what a sample is, without its values."""
    return ", ".join(f"{name} {np.asarray(a).dtype}{list(np.shape(a))}" for name, a in sample.items())
