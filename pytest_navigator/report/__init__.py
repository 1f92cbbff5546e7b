"""The views of a run: its typed results, the JSON report and schema, the terminal summaries, HTML,
Markdown, the pytest-benchmark export, and compare and merge of run reports.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """The names of the old flat module `pytest_navigator.report` (deprecated: see _moved.py)."""
    from pytest_navigator._moved import moved_attribute

    return moved_attribute("report", name)
