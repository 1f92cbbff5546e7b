"""Input Samples drawn from an input spec (random, reproducible); Hypothesis strategies build on this."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pytest_navigator.config import Sample
from pytest_navigator.spec import IOSpec, TensorSpec

#: Integer inputs without a declared range draw from [0, DEFAULT_INT_HIGH].
DEFAULT_INT_HIGH = 9
#: Dynamic non-batch axes draw sizes up to this, within their own bounds.
DEFAULT_AXIS_CAP = 64


def random_sample(io_spec: IOSpec, batch_size: int, rng: np.random.Generator) -> Sample:
    """One request of `batch_size` rows; other dynamic axes get one size shared by inputs that name it."""
    axis_sizes: dict[str, int] = {}
    sample: Sample = {}
    for spec in io_spec:
        shape = []
        for axis, dim in enumerate(spec.dims):
            if dim.size is not None:
                shape.append(dim.size)
            elif axis == 0:
                shape.append(batch_size)
            else:
                key = dim.name or f"{spec.name}:{axis}"
                if key not in axis_sizes:
                    axis_sizes[key] = int(rng.integers(dim.min, max(dim.min, min(dim.max, DEFAULT_AXIS_CAP)) + 1))
                shape.append(axis_sizes[key])
        sample[spec.name] = random_array(spec, tuple(shape), rng)
    return sample


def random_array(spec: TensorSpec, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if spec.dtype == "bool":
        return rng.random(shape) < 0.5
    if spec.is_float:
        if spec.value_range is not None:
            lo, hi = spec.value_range
            if np.isfinite(lo) and np.isfinite(hi):
                return rng.uniform(lo, hi, shape).astype(spec.dtype)
            return np.clip(rng.standard_normal(shape), lo, hi).astype(spec.dtype)
        return rng.standard_normal(shape).astype(spec.dtype)
    lo, hi = spec.value_range if spec.value_range is not None else (0, DEFAULT_INT_HIGH)
    info = np.iinfo(spec.dtype)
    return rng.integers(max(int(lo), info.min), min(int(hi), info.max), size=shape, endpoint=True, dtype=spec.dtype)


def random_samples(io_spec: IOSpec, batch_sizes: Sequence[int], per_batch: int = 1, seed: int = 0) -> list[Sample]:
    """`per_batch` distinct samples for each batch size, the same for the same seed."""
    rng = np.random.default_rng(seed)
    return [random_sample(io_spec, size, rng) for size in batch_sizes for _ in range(per_batch)]
