"""Hooks the plugin calls; implement them in conftest.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_navigator.config import SizedDataLoader
    from pytest_navigator.model.loader import Model
    from pytest_navigator.runtimes import Registry


def pytest_navigator_register_runtimes(registry: Registry, config: pytest.Config) -> None:
    """Register extra runtimes (e.g. your own serving wrapper) before tests are generated.

    Called once per run with `--navigator-model`; use `registry.register(RuntimeDefinition(...))`
    or the `@registry.runtime(name)` decorator. Generated tests include them like built-ins.
    """


@pytest.hookspec(firstresult=True)
def pytest_navigator_calibration_data(model: Model, runtime: str, config: pytest.Config) -> SizedDataLoader | None:
    """The samples runtime `runtime` (a name, e.g. "onnxruntime-int8-cpu") of `model` calibrates on.

    Return a SizedDataLoader as navigator_dataloader does (dicts by input name, tuples in input order,
    or arrays for one-input models), or None: then it calibrates on --navigator-samples when given,
    else on samples drawn from the input spec with a fixed seed. Asked once per model and runtime
    before its build, which every test of the run shares; the first calibration_samples (a runtime
    option, 32 by default) are used. Their content keys the quantized model in the artifact cache:
    return the same data every time, or every run and xdist worker builds its own.
    """
