"""The samples a runtime that calibrates (a quantizer measuring its activation ranges) is built with,
and their digest, which keys the calibrated artifact.

The users' own samples (--navigator-samples) when the run has them: they are what the model will
see. Else samples drawn from the model's input spec with the generator the run's random samples
come from, under a fixed seed, so every worker of a run (xdist, isolated builds) calibrates on the
same data and restores the same artifact.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from pytest_navigator.config import Sample
from pytest_navigator.model.draws import MIN_BATCH_CAP, digest, random_sample
from pytest_navigator.model.spec import IOSpec

if TYPE_CHECKING:
    from pytest_navigator.model.loader import Model
    from pytest_navigator.runtimes.base import BuildContext

#: How many samples a runtime calibrates on when its options do not say (calibration_samples).
DEFAULT_CALIBRATION_SAMPLES = 32
#: The seed drawn calibration samples come from: fixed, whatever the run's seed.
CALIBRATION_SEED = 32_008
#: Drawn samples take the runtime's batch sizes up to this one. A range or histogram is gathered over
#: rows, which more samples add as well as a larger batch does; a batch of the profiler's sweep (up
#: to 1024 rows of images) would cost the build seconds and memory for no better ranges.
CALIBRATION_BATCH_CAP = MIN_BATCH_CAP


def calibrated(
    context: BuildContext, model: Model, runtime: str, users: Callable[[Model, str], Sequence[Sample]]
) -> BuildContext:
    """`context` with the samples runtime `runtime` calibrates on: as many as its options' calibration_samples
    (DEFAULT_CALIBRATION_SAMPLES for options without it), of `users(model, runtime)` or drawn."""
    count = getattr(context.options, "calibration_samples", DEFAULT_CALIBRATION_SAMPLES)
    given = users(model, runtime)
    return replace(context, calibration=calibration_samples(model.io_spec, context.batch_sizes, count, given))


def calibration_samples(
    io_spec: IOSpec, batch_sizes: Sequence[int], count: int, users: Sequence[Sample] = ()
) -> tuple[Sample, ...]:
    """At most `count` samples to calibrate on: the first of the users' own, else drawn at the
    `batch_sizes` the runtime is built for (those up to CALIBRATION_BATCH_CAP), in turn."""
    if users:
        return tuple(users[:count])
    sizes = tuple(size for size in batch_sizes if size <= CALIBRATION_BATCH_CAP) or tuple(batch_sizes[:1]) or (1,)
    return _drawn(io_spec, sizes, count)


@functools.lru_cache(maxsize=4)  # every build of a run (workers, counting processes) asks again
def _drawn(io_spec: IOSpec, sizes: tuple[int, ...], count: int) -> tuple[Sample, ...]:
    rng = np.random.default_rng(CALIBRATION_SEED)
    return tuple(random_sample(io_spec, sizes[index % len(sizes)], rng) for index in range(count))


def calibration_digest(samples: Sequence[Sample]) -> str:
    """A content hash of calibration data, in order: the same samples, the same digest."""
    hasher = hashlib.blake2b(digest_size=16)
    for sample in samples:
        hasher.update(digest(sample).encode())
    return hasher.hexdigest()
