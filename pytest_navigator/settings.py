"""Run settings from options and ini values, validated with errors that name the option."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_navigator.errors import NavigatorError

DEFAULT_BATCH_SIZES = (1, 4)


class OptionError(NavigatorError):
    """An option or ini value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    """Everything one navigator run is configured with; built by the plugin, usable without pytest."""

    models: tuple[Path, ...]
    cli_inputs: tuple[str, ...] = ()
    ini_inputs: tuple[str, ...] = ()
    runtimes: tuple[str, ...] | None = None
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES
    trust_model: bool = False
    baselines_dir: Path = Path("baselines")
    report_path: Path | None = None
    update_baselines: bool = False
    #: Generated samples per runtime (--navigator-examples); 0 checks users' samples only.
    examples: int = 25
    #: An .npz file or a folder of them (--navigator-samples), checked before generated samples.
    samples_path: Path | None = None
    #: A check that cannot fail (tiny or constant reference outputs) fails instead of warning.
    strict: bool = False
    #: Hypothesis settings profile: --hypothesis-profile, else navigator-ci under CI, else navigator-dev.
    hypothesis_profile: str | None = None
    #: Seed of the generated samples (--navigator-seed); None: 0 when derandomized, else fresh per run.
    seed: int | None = None
    #: Failing samples and the Hypothesis example database live here (.navigator under the rootdir).
    state_dir: Path = Path(".navigator")
    #: Where pytest was started: paths in messages are shown relative to it.
    invocation_dir: Path | None = None


def parse_runtimes(value: str | None) -> tuple[str, ...] | None:
    """'torch-cpu, onnxruntime-cpu' -> names; empty or None -> None (every runtime)."""
    if value is None or not value.strip():
        return None
    return tuple(name.strip() for name in value.split(",") if name.strip())


def parse_batch_sizes(value: str | Sequence[int] | None, option: str = "--navigator-batch-sizes") -> tuple[int, ...]:
    """'1,4,8' -> (1, 4, 8), sorted and de-duplicated; anything else names the option and the value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEFAULT_BATCH_SIZES
    tokens = (
        [t.strip() for t in re.split(r"[,\s]+", value.strip())] if isinstance(value, str) else [str(v) for v in value]
    )
    sizes = []
    for token in tokens:
        if not token:
            continue
        if not token.isdigit() or int(token) < 1:
            raise OptionError(
                f"{option}={value!r}: {token!r} is not a batch size; give positive integers separated by commas, e.g. 1,4,16."
            )
        sizes.append(int(token))
    if not sizes:
        raise OptionError(f"{option}={value!r}: no batch sizes given; e.g. 1,4,16.")
    return tuple(sorted(set(sizes)))


def parse_count(value: str | int | None, option: str, default: int) -> int:
    """A non-negative integer option ('25') -> 25; anything else names the option and the value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    text = str(value).strip()
    if not text.isdigit():
        raise OptionError(f"{option}={value!r}: give a whole number >= 0, e.g. {default}.")
    return int(text)
