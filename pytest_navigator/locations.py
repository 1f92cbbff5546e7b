"""The run's folders and files, refused before minutes of measurement when the run could not use them:
a baselines or cache folder that is a file, a report that is a folder, a folder nothing can be written in;
and the run's scratch folders, removed when the process that made them exits."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from pytest_navigator import options
from pytest_navigator.settings import OptionError, Settings


def check_locations(settings: Settings) -> None:
    """Refuse, before minutes of measurement, folders and files the run could not use: a baselines or
    cache folder that is a file, and a report or (under --update-baselines) a baselines folder that
    cannot be written."""
    folders = [(options.BASELINES, settings.baselines_dir), (options.CACHE, settings.cache_dir)]
    for option, folder in folders:
        if folder is not None and folder.exists() and not folder.is_dir():
            raise OptionError(f"{option}={folder} is a file; give a folder (or leave the option out for the default).")
    outputs = [
        (options.REPORT, settings.report_path, "JSON"),
        (options.HTML, settings.html_path, "HTML"),
        (options.MARKDOWN, settings.markdown_path, "Markdown"),
        (options.BENCHMARK_JSON, settings.benchmark_json_path, "pytest-benchmark JSON"),
    ]
    for option, report, kind in outputs:
        if report is None:
            continue
        if report.is_dir():
            raise OptionError(f"{option}={report} is a folder; give the path of the {kind} file to write.")
        _check_writable(report.parent, option, report)
    if settings.update_baselines:
        _check_writable(
            settings.baselines_dir,
            options.BASELINES,
            settings.baselines_dir,
            f" ({options.UPDATE_BASELINES} writes there)",
        )
    if settings.cache_dir is not None:
        _check_writable(
            settings.cache_dir, options.CACHE, settings.cache_dir, f"; {options.CACHE}=none builds without one"
        )


def _check_writable(folder: Path, option: str, given: Path, why: str = "") -> None:
    """`folder`, or the nearest folder above it that exists (it would be created there), must take a new file."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise OptionError(f"{option}={given}: {existing} is a file, so nothing can be written under it{why}.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise OptionError(
            f"{option}={given}: cannot write in {existing} ({exc.strerror or type(exc).__name__}){why}."
        ) from None


def scratch_folder(prefix: str) -> Path:
    """A new temporary folder, removed when this process exits if its owner did not remove it first
    (a session or cache a script or test never closed). Only by the process that made it: a forked
    worker that exits must not remove its parent's folder."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(_remove_from, os.getpid(), folder)
    return folder


def _remove_from(owner: int, folder: Path) -> None:
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)
