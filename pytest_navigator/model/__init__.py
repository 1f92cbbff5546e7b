"""The model under test: its file loaded into a reference callable with an input spec and a fingerprint
(loader), input specs (spec), and its parameters and FLOPs (profile).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """The names of the old flat module `pytest_navigator.model` (deprecated: see _moved.py)."""
    from pytest_navigator._moved import moved_attribute

    return moved_attribute("model", name)
