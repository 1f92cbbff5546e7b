"""Calibration data from a conftest: pytest_navigator_calibration_data's loader, asked once per model and
runtime of the run, checked against the model's input spec like any user's samples.

A build is made once per run and shared by every test, so what a runtime calibrates on cannot come
from a test's fixture (navigator_dataloader is one test's, and may be asked after the build or never):
a hook is the run's, in every process of it (xdist workers ask their own conftest the same question).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_navigator.check.user_samples import check_samples, samples_from_dataloader
from pytest_navigator.errors import SampleError

if TYPE_CHECKING:
    import pytest

    from pytest_navigator.config import Sample
    from pytest_navigator.model.loader import Model

#: How the hook's samples are named in messages: pytest_navigator_calibration_data[3].
HOOK = "pytest_navigator_calibration_data"

Samples = Callable[["Model", str], Sequence["Sample"]]


def hooked(config: pytest.Config, fallback: Samples) -> Samples:
    """(model, runtime name) -> what it calibrates on: the hook's loader when a conftest returns one,
    else `fallback` (--navigator-samples; drawn samples when that is empty too)."""
    found: dict[tuple[Path, str], Sequence[Sample]] = {}

    def samples(model: Model, runtime: str) -> Sequence[Sample]:
        key = (model.path, runtime)
        if key not in found:
            loader = config.hook.pytest_navigator_calibration_data(model=model, runtime=runtime, config=config)
            found[key] = fallback(model, runtime) if loader is None else loader_samples(loader, model, runtime)
        return found[key]

    return samples


def loader_samples(loader: object, model: Model, runtime: str) -> list[Sample]:
    """The loader's items as samples of `model`, each checked against its input spec; none is an error."""
    if isinstance(loader, (str, bytes)) or not hasattr(loader, "__iter__"):
        raise SampleError(
            f"{HOOK}({model.name}, {runtime}) returned a {type(loader).__name__}; return a sized iterable of "
            "samples (dicts by input name, tuples in input order, or arrays for one-input models), or None."
        )
    converted = check_samples(samples_from_dataloader(loader, model.io_spec, HOOK), model.io_spec)  # type: ignore[arg-type]
    if not converted:
        raise SampleError(
            f"{HOOK}({model.name}, {runtime}) returned no samples; return None to calibrate on "
            "--navigator-samples or on samples drawn from the input spec."
        )
    return [sample for _, sample in converted]
