"""The reference pages generated from the code at build time, so they cannot drift from it.

At `builder-inited` this writes Markdown into docs/_generated/ (ignored by git, excluded as sources),
which the reference pages `{include}`:

- options.md: every option of `pytest_navigator.options.OPTIONS` (flag, ini key, kind, help) and
  every setting of the `navigator` marker (`options.MARKER_SETTINGS`);
- cli.md: the `navigator` CLI, each subcommand's help as its argparse parser prints it;
- schema.md: the JSON report's fields, from `pytest_navigator/report/report.schema.json`.

The functions are plain (no Sphinx) so that tests can call them on a changed table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_navigator import options as option_table

GENERATED = Path(__file__).resolve().parent.parent / "_generated"
#: argparse wraps help at the terminal's width: fixed, so that a build does not depend on who runs it.
HELP_COLUMNS = "100"


def _cell(text: str) -> str:
    """Text shown as written in one Markdown table cell: `<model>` would be an HTML tag, `*` emphasis."""
    return re.sub(r"([\\`*_<>\[\]|])", r"\\\1", " ".join(text.split()))


def _kind(option: option_table.Option) -> str:
    return {
        "paths": "path, repeatable",
        "linelist": "value, repeatable (ini: one per line)",
        "bool": "flag",
        "string": "value",
    }.get(option.kind, option.kind)


def options_markdown(table: Iterable[option_table.Option] | None = None) -> str:
    """The command-line options and their ini twins, one row each, in the table's order."""
    rows = ["| option | what it does |", "| --- | --- |"]
    for option in option_table.OPTIONS if table is None else table:
        flag = option.flag if option.kind == "bool" else f"{option.flag}={option.metavar}"
        ini = f"ini `{option.ini}`" if option.ini else "no ini key: a decision per run"
        rows.append(f"| `{flag}`<br>{ini}<br>{_kind(option)} | {_cell(option.help)} |")
    return "\n".join(rows) + "\n"


def markers_markdown(settings: Mapping[str, str] | None = None) -> str:
    """The `navigator` marker's settings, one row each, with the option each one stands for."""
    settings = option_table.MARKER_SETTINGS if settings is None else settings
    rows = ["| marker setting | what it sets |", "| --- | --- |"]
    for name, text in settings.items():
        meaning = (
            f"per test, as `{text}`: {_cell(option_table.BY_FLAG[text].help)}"
            if text in option_table.BY_FLAG
            else _cell(text)
        )
        rows.append(f"| `{name}` | {meaning} |")
    return "\n".join(rows) + "\n"


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """`navigator --help` and each subcommand's help, as the parser prints them."""
    if parser is None:
        from pytest_navigator.cli import _parser

        parser = _parser()
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        parts = [f"## `{parser.prog}`\n\n```text\n{parser.format_help().rstrip()}\n```\n"]
        for name, sub in _subparsers(parser).items():
            parts.append(f"## `{parser.prog} {name}`\n\n```text\n{sub.format_help().rstrip()}\n```\n")
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before
    return "\n".join(parts)


def _type(schema: Mapping[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#schema-{name.replace('_', '-')})"
    kinds = schema.get("type")
    if isinstance(kinds, list):
        text = " or ".join(kinds)
    elif kinds == "array" and isinstance(schema.get("items"), Mapping):
        text = f"array of {_type(schema['items'])}"
    elif kinds:
        text = str(kinds)
    elif "anyOf" in schema or "oneOf" in schema:
        text = " or ".join(_type(s) for s in schema.get("anyOf", schema.get("oneOf", [])))
    elif "enum" in schema or "const" in schema:
        text = "one of"
    else:
        text = "any"
    if "const" in schema:
        text += f": `{json.dumps(schema['const'])}`"
    if "enum" in schema:
        text += ": " + ", ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    return text


def _fields(schema: Mapping[str, Any], prefix: str, rows: list[str]) -> None:
    required = set(schema.get("required", ()))
    for name, field in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        must = "yes" if name in required else ""
        kind = _type(field).replace("|", "\\|")  # Markdown (links): only the cell's own delimiter is escaped
        rows.append(f"| `{path}` | {kind} | {must} | {_cell(field.get('description', ''))} |")
        if field.get("type") == "object" or "properties" in field:
            _fields(field, f"{path}.", rows)
        items = field.get("items")
        if isinstance(items, Mapping) and "properties" in items:
            _fields(items, f"{path}[].", rows)


def schema_markdown(schema: Mapping[str, Any] | None = None) -> str:
    """Every field of the report schema: its path, type, whether it is required, and its description."""
    if schema is None:
        schema = json.loads((Path(option_table.__file__).parent / "report" / "report.schema.json").read_text())
    parts = [f"{_cell(schema.get('description', ''))}\n"]

    def table(title: str, anchor: str, node: Mapping[str, Any]) -> None:
        rows = ["| field | type | required | meaning |", "| --- | --- | --- | --- |"]
        _fields(node, "", rows)
        parts.append(f"({anchor})=\n## {title}\n\n" + "\n".join(rows) + "\n")

    table("The report", "schema-report", schema)
    for name, node in schema.get("$defs", {}).items():
        if "properties" in node:
            table(f"`{name}`", f"schema-{name.replace('_', '-')}", node)
        else:
            parts.append(f"(schema-{name.replace('_', '-')})=\n## `{name}`\n\n{_type(node)}\n")
    return "\n".join(parts)


def _is_alias(value: Any) -> bool:
    """A type alias (typing's generic aliases, unions, callables), documented by autodata as is."""
    return type(value).__module__ in ("typing", "types", "collections.abc") or hasattr(value, "__origin__")


def _comment(name: str) -> list[str]:
    """The `#:` comment above a public value, read from the module that defines it."""
    import importlib

    from sphinx.pycode import ModuleAnalyzer

    import pytest_navigator

    modules = [getattr(pytest_navigator, "_LAZY", {}).get(name), "pytest_navigator.config", "pytest_navigator"]
    for module in filter(None, modules):
        importlib.import_module(module)
        found = ModuleAnalyzer.for_module(module).find_attr_docs().get(("", name))
        if found:
            return [line for line in found if line.strip()]
    raise ValueError(f"pytest_navigator.{name} is public (__all__) and has no #: comment where it is defined")


def api_markdown(names: Iterable[str] | None = None) -> str:
    """An autodoc entry for every name `pytest_navigator.__all__` exports (its lazy ones included,
    which autodoc's :members: does not see: they load on first use)."""
    import inspect

    import pytest_navigator

    lines = ["```{eval-rst}"]
    for name in pytest_navigator.__all__ if names is None else names:
        if name.startswith("__"):
            continue
        value = getattr(pytest_navigator, name)
        if inspect.isclass(value):
            lines += [f".. autoclass:: pytest_navigator.{name}", "   :members:", ""]
        elif inspect.isfunction(value):
            lines += [f".. autofunction:: pytest_navigator.{name}", ""]
        else:  # a value or a type alias: its `#:` comment where it is defined (its type's docstring says nothing)
            value_line = [f"   :value: {value!r}"] if _is_alias(value) else []
            lines += [
                f".. py:data:: pytest_navigator.{name}",
                *value_line,
                "",
                *(f"   {line}" for line in _comment(name)),
                "",
            ]
    return "\n".join([*lines, "```", ""])


def write_generated(target: Path = GENERATED) -> list[Path]:
    """Write every generated page; returns the files written."""
    target.mkdir(parents=True, exist_ok=True)
    pages = {
        "options.md": options_markdown(),
        "markers.md": markers_markdown(),
        "cli.md": cli_markdown(),
        "schema.md": schema_markdown(),
        "api.md": api_markdown(),
    }
    written = []
    for name, text in pages.items():
        path = target / name
        if not path.exists() or path.read_text() != text:  # unchanged files keep their time: no rebuild
            path.write_text(text)
        written.append(path)
    return written


def _on_builder_inited(app: Any) -> None:
    write_generated()


def setup(app: Any) -> dict[str, Any]:
    app.connect("builder-inited", _on_builder_inited)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
