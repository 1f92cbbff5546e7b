"""The gate: baselines, thresholds, verdicts (statistics), the policy that turns them into a test's
outcome and baseline updates, and the best runtime's selection.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """The names of the old flat module `pytest_navigator.gate` (deprecated: see _moved.py)."""
    from pytest_navigator._moved import moved_attribute

    return moved_attribute("gate", name)
