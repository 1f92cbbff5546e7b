"""pytest-navigator: regression tests for ML inference runtimes (correctness and speed) in pytest."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pytest_navigator import _moved
from pytest_navigator.config import (
    CustomConfig,
    CustomConfigForFormat,
    Format,
    MeasurementMode,
    ProfilerConfig,
    Sample,
    SizedDataLoader,
    VerifyFunction,
)
from pytest_navigator.errors import NavigatorError

_moved.install()  # old flat import paths (pytest_navigator.telemetry, ...) keep working, with a warning

if TYPE_CHECKING:
    from pytest_navigator.check.agreement import agreement
    from pytest_navigator.check.strategies import samples
    from pytest_navigator.check.verify import DEFAULT_TOLERANCES, Tolerance, allclose, cosine, topk_agreement

__version__ = "0.1.0"

# Imported on first use, so that `import pytest_navigator` (and `pytest --help`) loads no numpy.
_LAZY = {
    "DEFAULT_TOLERANCES": "pytest_navigator.check.verify",
    "Tolerance": "pytest_navigator.check.verify",
    "agreement": "pytest_navigator.check.agreement",
    "allclose": "pytest_navigator.check.verify",
    "cosine": "pytest_navigator.check.verify",
    "topk_agreement": "pytest_navigator.check.verify",
    "samples": "pytest_navigator.check.strategies",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pytest_navigator' has no attribute {name!r}")


__all__ = [
    "DEFAULT_TOLERANCES",
    "CustomConfig",
    "CustomConfigForFormat",
    "Format",
    "MeasurementMode",
    "NavigatorError",
    "ProfilerConfig",
    "Sample",
    "SizedDataLoader",
    "Tolerance",
    "VerifyFunction",
    "__version__",
    "agreement",
    "allclose",
    "cosine",
    "samples",
    "topk_agreement",
]
