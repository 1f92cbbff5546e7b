"""Input Samples for property tests: a Hypothesis strategy drawn from an input spec, and the shrinking
of a failing sample element by element (simplify).

Hypothesis draws a few parameters per input (a `Recipe`, model/draws.py) and numpy materializes the
array from them. Image-sized inputs stay fast, and shrinking stays meaningful: the batch size
shrinks toward 1, the number of random elements toward none (an array of zeros), the seed toward 0,
and the edits toward fewer, simpler values at index 0. A failure that needs one negative element
shrinks to an array of zeros with one negative element.

The seeded draws (random_sample, profiling_inputs, ...) and a sample's digest live in model/draws.py,
below the runtimes that build with them; their names are importable from here too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from pytest_navigator.config import Sample
from pytest_navigator.model.draws import (
    DEFAULT_AXIS_CAP,
    DEFAULT_FLOAT_RANGE,
    DEFAULT_INT_RANGE,
    DEFAULT_INT_RANGES,
    EDGE_FLOATS,
    MEMO_ARRAYS,
    MEMO_BYTES,
    MIN_BATCH_CAP,
    PROFILE_INPUT_BYTES,
    PROFILE_INPUTS,
    Recipe,
    batch_bounds,
    concrete_shape,
    describe,
    digest,
    edge_values,
    materialize,
    numpy_dtype,
    profiling_inputs,
    random_recipe,
    random_sample,
    random_samples,
    value_range,
)
from pytest_navigator.model.spec import IOSpec, TensorSpec

if TYPE_CHECKING:
    from hypothesis.strategies import DrawFn, SearchStrategy

__all__ = [
    "DEFAULT_AXIS_CAP",
    "DEFAULT_FLOAT_RANGE",
    "DEFAULT_INT_RANGE",
    "DEFAULT_INT_RANGES",
    "DISCRETE_MODES",
    "EDGE_FLOATS",
    "FLOAT_MODES",
    "MAX_EDITS",
    "MEMO_ARRAYS",
    "MEMO_BYTES",
    "MIN_BATCH_CAP",
    "PROFILE_INPUTS",
    "PROFILE_INPUT_BYTES",
    "SCALES",
    "Recipe",
    "batch_bounds",
    "concrete_shape",
    "describe",
    "digest",
    "edge_values",
    "materialize",
    "numpy_dtype",
    "profiling_inputs",
    "random_recipe",
    "random_sample",
    "random_samples",
    "recipes",
    "samples",
    "simplify",
    "value_range",
]

#: At most this many single elements are set to edge values in one array.
MAX_EDITS = 4

FLOAT_MODES = ("normal", "uniform")
#: normal: the standard deviation; uniform: the share of the range, from its low end.
SCALES = (1.0, 0.1, 0.01)

DISCRETE_MODES = ("uniform",)


def samples(
    io_spec: IOSpec, batch_sizes: Iterable[int] = (), max_batch_size: int | None = None, realistic: bool = False
) -> SearchStrategy[Sample]:
    """A Hypothesis strategy of Samples (input name -> numpy array) that respect the spec.

    dtypes, fixed and dynamic axes (within their bounds; inputs naming the same axis share its
    size) and declared value ranges are respected. The batch size ranges from the smallest allowed
    up to the largest of `batch_sizes` (at least 8), capped by the spec and by `max_batch_size`.
    `realistic`: every array drawn as random_sample draws it (all elements random at full scale, no
    edge values), the distribution a quantized runtime is calibrated on; only seeds and sizes vary.
    """
    from hypothesis import strategies as st

    bounds = batch_bounds(io_spec, batch_sizes, max_batch_size)

    @st.composite
    def draw_sample(draw: DrawFn) -> Sample:
        batch = draw(st.integers(*bounds), label="batch size") if bounds else None
        axis_sizes: dict[str, int] = {}
        sample: Sample = {}
        for spec in io_spec:
            shape = concrete_shape(spec, batch, axis_sizes, lambda lo, hi: draw(st.integers(lo, hi)))
            size = int(np.prod(shape))
            recipe = _realistic(spec, draw) if realistic else draw(recipes(spec, size))
            sample[spec.name] = materialize(spec, shape, recipe)
        return sample

    return draw_sample()


def _realistic(spec: TensorSpec, draw: DrawFn) -> Recipe:
    """random_recipe's array, its seed drawn by Hypothesis."""
    from hypothesis import strategies as st

    mode = "normal" if spec.is_float and spec.value_range is None else "uniform"
    return Recipe(mode=mode, seed=draw(st.integers(0, 2**32 - 1)), count=None)


def recipes(spec: TensorSpec, size: int) -> SearchStrategy[Recipe]:
    """Recipes for one input of `size` elements; every part shrinks toward the simplest array."""
    from hypothesis import strategies as st

    edges = edge_values(spec)
    modes = FLOAT_MODES if spec.is_float else DISCRETE_MODES
    edit = st.tuples(st.integers(0, max(size - 1, 0)), st.sampled_from(edges))

    @st.composite
    def draw_recipe(draw: DrawFn) -> Recipe:
        mode = draw(st.sampled_from(modes))
        seed = draw(st.integers(0, 2**32 - 1))
        scale = draw(st.sampled_from(SCALES))
        # Sparse first, so a failure shrinks from a dense array to the fewest random elements.
        count = draw(st.integers(0, size)) if draw(st.sampled_from(("sparse", "dense"))) == "sparse" else None
        edits = draw(st.lists(edit, max_size=MAX_EDITS if size else 0, unique_by=lambda e: e[0]))
        return Recipe(mode, seed, scale, count, tuple(edits))

    return draw_recipe()


def simplify(
    sample: Sample, io_spec: IOSpec, fails: Callable[[Sample], bool], max_calls: int = 200, max_seconds: float = 20.0
) -> Sample:
    """Element by element, the simplest sample that still fails: what Hypothesis cannot shrink inside one array.

    First every element the failure does not need is set to the simplest value (0 where the range
    allows; delta debugging, halving chunks), then each remaining element is tried at simpler edge
    values (1, -1, ...). `fails` is called at most `max_calls` times and not after `max_seconds`.
    """
    import time

    deadline = time.monotonic() + max_seconds
    calls = 0

    def still_fails(candidate: Sample) -> bool:
        nonlocal calls
        if calls >= max_calls or time.monotonic() > deadline:
            return False
        calls += 1
        return fails(candidate)

    current = {name: np.array(array, copy=True) for name, array in sample.items()}
    for spec in io_spec:
        if spec.name not in current:
            continue
        edges = edge_values(spec)
        simplest = np.asarray(edges[0]).astype(current[spec.name].dtype)
        flat = current[spec.name].reshape(-1)
        keep = np.flatnonzero(flat != simplest)
        chunk = max(len(keep) // 2, 1)
        while len(keep) and calls < max_calls:
            removed_any = False
            start = 0
            while start < len(keep):
                trial = {**current, spec.name: flat.copy()}
                trial[spec.name][keep[start : start + chunk]] = simplest
                trial[spec.name] = trial[spec.name].reshape(current[spec.name].shape)
                if still_fails(trial):
                    flat = trial[spec.name].reshape(-1)
                    current = trial
                    keep = np.concatenate([keep[:start], keep[start + chunk :]])
                    removed_any = True
                else:
                    start += chunk
            if chunk == 1 and not removed_any:
                break
            chunk = max(chunk // 2, 1)
        for index in keep[:MAX_EDITS]:
            for value in edges[1:]:
                if value == flat[index]:
                    break
                trial_flat = flat.copy()
                trial_flat[index] = value
                trial = {**current, spec.name: trial_flat.reshape(current[spec.name].shape)}
                if still_fails(trial):
                    flat, current = trial_flat, trial
                    break
    return current
