"""The Hypothesis profiles the checks run under: navigator-ci (derandomized: the same samples every
run) and navigator-dev (new samples each run, past failures replayed from an example database)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CI_PROFILE = "navigator-ci"
DEV_PROFILE = "navigator-dev"


def register_profiles() -> None:
    """navigator-ci: derandomized, the same samples every run. navigator-dev: new samples each run,
    failures remembered between runs. Neither has a deadline (compilation makes first calls slow)."""
    from hypothesis import HealthCheck, settings

    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
    # From Hypothesis's own defaults, not from whatever profile is loaded (under CI, Hypothesis
    # loads its "ci" profile, which is derandomized and has no database).
    base = settings.get_profile("default")
    settings.register_profile(
        CI_PROFILE, base, derandomize=True, deadline=None, suppress_health_check=quiet, print_blob=True
    )
    settings.register_profile(DEV_PROFILE, base, derandomize=False, deadline=None, suppress_health_check=quiet)


def default_profile() -> str:
    return CI_PROFILE if os.environ.get("CI") else DEV_PROFILE


def hypothesis_settings(profile: str | None, examples: int, state_dir: Path) -> Any:
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    register_profiles()
    parent = settings.get_profile(profile or default_profile())
    extra: dict[str, Any] = {}
    if not parent.derandomize:
        extra["database"] = DirectoryBasedExampleDatabase(str(state_dir / "hypothesis"))
    return settings(
        parent,
        max_examples=examples,
        deadline=None,
        report_multiple_bugs=False,
        phases=[p for p in Phase if p is not Phase.explain],  # explaining re-runs the model many times
        suppress_health_check=[*parent.suppress_health_check, HealthCheck.too_slow, HealthCheck.data_too_large],
        **extra,
    )


def derandomized(profile: str | None) -> bool:
    """Whether the Hypothesis profile in force draws the same samples every run."""
    from hypothesis import settings

    register_profiles()
    return bool(settings.get_profile(profile or default_profile()).derandomize)
