"""Hooks the plugin calls; implement them in conftest.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest

    from pytest_navigator.runtimes import Registry


def pytest_navigator_register_runtimes(registry: Registry, config: pytest.Config) -> None:
    """Register extra runtimes (e.g. your own serving wrapper) before tests are generated.

    Called once per run with `--navigator-model`; use `registry.register(RuntimeDefinition(...))`
    or the `@registry.runtime(name)` decorator. Generated tests include them like built-ins.
    """
