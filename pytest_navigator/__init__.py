"""pytest-navigator: regression tests for ML inference runtimes (correctness and speed) in pytest."""

from __future__ import annotations

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

__version__ = "0.1.0"

__all__ = [
    "CustomConfig",
    "CustomConfigForFormat",
    "Format",
    "MeasurementMode",
    "NavigatorError",
    "ProfilerConfig",
    "Sample",
    "SizedDataLoader",
    "VerifyFunction",
    "__version__",
]
