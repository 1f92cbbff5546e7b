"""Headless Chromium for the tests that look at a page in a real browser (the HTML report, the docs
site). They skip, naming the install command, where Chromium is missing (.ci/run installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

NO_CHROMIUM = "chromium is not installed (apt-get install chromium)"
needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None, reason=NO_CHROMIUM)
#: Chromium's own traffic (component updates, sync, metrics) is not the page's: turned off where it can be.
QUIET = (
    "--disable-component-update",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-sync",
    "--metrics-recording-only",
    "--no-default-browser-check",
)


def chromium(profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with its own profile folder; raises when it exits non-zero."""
    command = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}", *QUIET]
    return subprocess.run([*command, *arguments], capture_output=True, text=True, timeout=120, check=True)
