"""Sphinx configuration of pytest-navigator's documentation (MyST Markdown, the furo theme).

Build: `tox -e docs` (warnings are errors, then the internal links are checked). The reference pages
are generated from the code at build time by _ext/navigator_docs.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE / "_ext"), str(HERE.parent)]  # the extension, and the repo's harness CLI

import pytest_navigator  # noqa: E402

project = "pytest-navigator"
author = "the pytest-navigator developers"
copyright = "2026, the pytest-navigator developers"
release = version = pytest_navigator.__version__

extensions = ["myst_parser", "sphinx.ext.autodoc", "navigator_docs"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "snippets"]
myst_enable_extensions = ["colon_fence", "deflist"]
#: `[text](page.md#a-heading)` links to headings up to ###.
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "undoc-members": False}

html_theme = "furo"
html_title = f"pytest-navigator {release}"
html_static_path: list[str] = []
pygments_style = "sphinx"
smartquotes = False  # option names in help texts keep their two hyphens (-- would become an en dash)
