"""Failing samples: saved where a later run can check them again, and the command that does."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_navigator import options
from pytest_navigator.check.strategies import digest
from pytest_navigator.config import Sample

if TYPE_CHECKING:
    from pytest_navigator.model.loader import Model


def save_failure(state_dir: Path, model: Model, runtime: str, sample: Sample) -> Path:
    """Save a failing sample's inputs as <state>/failures/<model>/<runtime>-<hash>.npz (loadable by --navigator-samples)."""
    folder = state_dir / "failures" / _safe(model.name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_safe(runtime)}-{digest(sample)[:12]}.npz"
    temporary = path.with_name(path.name + ".tmp.npz")
    arrays: dict[str, Any] = {name: np.asarray(array) for name, array in sample.items()}
    np.savez(temporary, **arrays)
    temporary.replace(path)
    return path


def saved_lines(
    state_dir: Path, model: Model, runtime: str, sample: Sample, here: Path | None, trust_model: bool, indent: str
) -> list[str]:
    """A failing sample saved (save_failure), as a message's 'saved:' and 'replay:' lines."""
    saved = save_failure(state_dir, model, runtime, sample)
    return [
        f"{indent}saved: {shown(saved, here)}",
        f"{indent}replay: {replay_command(model, runtime, saved, here, trust_model)}",
    ]


def replay_command(model: Model, runtime: str, saved: Path, here: Path | None, trust_model: bool = False) -> str:
    """The one-line command that checks `saved` (a failing sample) on `runtime` again."""
    parts = [
        "pytest",
        f"{options.MODEL}={shown(model.path, here)}",
        f"{options.RUNTIMES}={runtime}",
        f"{options.SAMPLES}={shown(saved, here)}",
        f"{options.EXAMPLES}=0",
    ]
    if trust_model:
        parts.append(options.TRUST_MODEL)
    return shlex.join(parts)


def _safe(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", name)


def shown(path: Path, here: Path | None) -> str:
    """A path relative to where pytest was invoked when it is under it, else absolute."""
    if here is not None:
        try:
            return str(path.resolve().relative_to(here.resolve()))
        except ValueError:
            pass
    return str(path)
