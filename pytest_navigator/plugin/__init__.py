"""The pytest glue: hooks (hooks), the generated items, the fixtures, the hook specs users implement,
xdist devices and the progress line.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """The names of the old flat module `pytest_navigator.plugin` (deprecated: see _moved.py)."""
    from pytest_navigator._moved import moved_attribute

    return moved_attribute("plugin", name)
