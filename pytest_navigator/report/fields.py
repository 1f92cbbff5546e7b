"""How a record's fields travel: the fields a type's serializer does not name go by their own names, a
field merges when one side lacks it, and a field that declares `metadata={"column": "header"}` gets a
column in every runtime table (terminal, HTML, Markdown) and the pytest-benchmark export.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def plain(value: Any) -> Any:
    """A value of a field no serializer names, JSON-ready."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def others(cls: type, named: set[str]) -> list[dataclasses.Field[Any]]:
    """The fields of a record type its serializer does not name: they travel by their own names."""
    return [f for f in dataclasses.fields(cls) if f.name not in named]


def empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, list | tuple | dict) and not value)


def shown_columns(records: Iterable[Any]) -> list[tuple[str, str]]:
    """(field, header) of every field of the records' types that asks for a column in the views (a
    subclass that adds a field brings its column)."""
    found: dict[str, str] = {}
    for cls in dict.fromkeys(type(r) for r in records):
        found |= {f.name: f.metadata["column"] for f in dataclasses.fields(cls) if "column" in f.metadata}
    return list(found.items())


def cell(record: Any, name: str) -> str:
    """A shown field's value as a table cell."""
    value = getattr(record, name)
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
