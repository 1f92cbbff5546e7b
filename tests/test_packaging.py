"""What the wheel installs: the project's own namespace only, and the `navigator` script inside it."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_installs_only_the_pytest_navigator_namespace(tmp_path: Path) -> None:
    """A top-level `harness` in site-packages collided with any user module of that name and shipped
    the project's benchmarks to every user; the repo keeps harness/, the wheel does not."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("pytest_navigator", "harness"):  # harness/ is there, as in a clone: it must stay out
        shutil.copytree(ROOT / folder, source / folder, ignore=ignore)
    out = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(source)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (wheel,) = out.glob("pytest_navigator-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"pytest_navigator"}
    assert "pytest_navigator/report/report.schema.json" in names and "pytest_navigator/cli.py" in names
    points = configparser.ConfigParser()
    points.read_string(entry_points)
    assert points["console_scripts"]["navigator"] == "pytest_navigator.cli:main"
    assert points["pytest11"]["navigator"] == "pytest_navigator.plugin.hooks"
