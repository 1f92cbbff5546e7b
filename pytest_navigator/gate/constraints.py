"""Constraints on a model's profile (`--navigator-constraints=flops=60%,params=5e6`): an upper limit on
its FLOPs per request, its parameters or a runtime's peak RSS, absolute or a percentage of the figure
it is judged against (the stored baseline entry's, or in an A/B run the old model's).

The constraints are given values, not the session: the model's profile, the runtime's peaks and the
figures to compare with; the session gathers them (session.check_performance).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_navigator import options
from pytest_navigator.errors import NavigatorError
from pytest_navigator.gate.entries import BaselineEntry
from pytest_navigator.measure.memory import mib, parse_bytes
from pytest_navigator.model.profile import ModelProfile, si

#: Constraint names and what a value of each means.
CONSTRAINTS = {"flops": "FLOPs per request", "params": "parameters", "peak_rss": "peak RSS"}


class ConstraintError(NavigatorError):
    """A --navigator-constraints value that cannot be used."""


@dataclass(frozen=True)
class Constraint:
    name: str
    value: float
    #: a fraction of the baseline's figure, else an absolute limit
    relative: bool

    def describe(self) -> str:
        if self.relative:
            return f"{self.name}={self.value:.0%}"
        return f"{self.name}={_figure(self.name, self.value)}"


@dataclass(frozen=True)
class Violation:
    constraint: Constraint
    baseline: float | None
    current: float
    limit: float
    batch_size: int | None = None

    def describe(self) -> str:
        where = f" at batch size {self.batch_size}" if self.batch_size is not None else ""
        name = self.constraint.name
        old = f"{_figure(name, self.baseline)} -> " if self.baseline is not None else ""
        return (
            f"{CONSTRAINTS[name]}{where}: {old}{_figure(name, self.current)}, above the limit "
            f"{_figure(name, self.limit)} ({self.constraint.describe()})"
        )


@dataclass(frozen=True)
class Checked:
    violations: list[Violation] = field(default_factory=list)
    #: relative constraints with no baseline figure to read
    unjudged: list[str] = field(default_factory=list)


def parse_constraints(value: str | Mapping[str, Any] | None, where: str = options.CONSTRAINTS) -> list[Constraint]:
    """'flops=60%,params=5e6' or {"flops": "60%"}: a percentage of the baseline, or an absolute upper
    limit (a number, k/M/G suffixes allowed); a bad one names the option, the value and what is accepted."""
    if not value:
        return []
    pairs: list[tuple[str, Any]] = []
    if isinstance(value, str):
        for part in filter(None, (p.strip() for p in value.split(","))):
            name, sep, text = part.partition("=")
            if not sep:
                raise ConstraintError(f"{where}={value!r}: {part!r} is not NAME=LIMIT, e.g. flops=60%,params=5e6.")
            pairs.append((name.strip(), text.strip()))
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        raise ConstraintError(f"{where}={value!r}: give 'NAME=LIMIT,...' or a dict, e.g. flops=60%,params=5e6.")
    found = []
    for name, raw in pairs:
        if name not in CONSTRAINTS:
            accepted = ", ".join(f"{k} ({v})" for k, v in CONSTRAINTS.items())
            raise ConstraintError(f"{where}: unknown constraint {name!r}; accepted: {accepted}.")
        text = str(raw).strip()
        relative = text.endswith("%")
        number = parse_bytes(text) if name == "peak_rss" and not relative else _number(text.removesuffix("%"))
        if number is None or not number > 0:
            raise ConstraintError(
                f"{where}: {name}={raw!r} is not a positive number or percentage; e.g. {name}=60% (of the "
                + (
                    "baseline) or peak_rss=512MiB (also GiB, MB, GB, bytes)."
                    if name == "peak_rss"
                    else f"baseline) or {name}=5e6 (also 5M, 2.5G)."
                )
            )
        found.append(Constraint(name, number / 100 if relative else number, relative))
    return found


def check(
    constraints: Sequence[Constraint],
    profile: ModelProfile,
    stored: Mapping[int, Mapping[str, Any] | None],
    peaks: Mapping[int, int | None] | None = None,
) -> Checked:
    """Each constraint against the model's profile and the runtime's peak RSS by batch size (`peaks`);
    `stored` maps batch size -> the baseline's figures ({"parameters", "flops", "peak_rss"}) or None."""
    result = Checked()
    for constraint in constraints:
        cases: list[tuple[int | None, float, float | None]]
        if constraint.name == "params":
            cases = [(None, profile.parameters, _stored(stored, "parameters"))]
        elif constraint.name == "peak_rss":
            cases = [(b, p, (stored.get(b) or {}).get("peak_rss")) for b, p in sorted((peaks or {}).items()) if p]
        else:
            cases = [(b, f, (stored.get(b) or {}).get("flops")) for b, f in sorted(profile.flops.items())]
        for batch, current, baseline in cases:
            if constraint.relative and baseline is None:
                where = f" at batch size {batch}" if batch is not None else ""
                result.unjudged.append(f"{constraint.describe()}{where}: the baseline has no {constraint.name} figure")
                continue
            limit = constraint.value * baseline if constraint.relative else constraint.value  # type: ignore[operator]
            if current > limit:
                result.violations.append(Violation(constraint, baseline, current, limit, batch))
    return result


def constraint_failure(
    where: str,
    constraints: Sequence[Constraint],
    found: ModelProfile | None,
    peaks: Mapping[int, int | None],
    *,
    source: str,
    entries: Mapping[int, BaselineEntry | None] | None = None,
    against: ModelProfile | None = None,
    profile_error: str | None = None,
    require_baseline: bool = False,
) -> str:
    """What violates --navigator-constraints (a failure message naming `where`, "RUNTIME on MODEL"),
    else "". `found` is the model's profile (None when it could not be computed: `profile_error` says
    why) and `peaks` the runtime's peak RSS by batch size. A percentage is of `against`'s figures (an
    A/B run: the old model's profile), else of the stored baseline `entries` by batch size; `source`
    names the one read. One with no figure to read is said in a warning (a failure under
    --navigator-require-baseline: `require_baseline`)."""
    if found is None:
        return f"{where}: the constraints cannot be checked: the model's profile could not be computed: {profile_error}"
    if against is not None:
        stored: dict[int, dict[str, Any] | None] = {
            b: {"parameters": against.parameters, "flops": against.flops.get(b)} for b in sorted(found.flops)
        }
    else:
        stored = {b: _baseline_figures(entry) for b, entry in (entries or {}).items()}
    checked = check(constraints, found, stored, peaks)
    if checked.unjudged:
        text = f"{where}: constraints not judged (nothing to compare in {source}): " + "; ".join(checked.unjudged)
        if require_baseline:
            return f"{text} ({options.REQUIRE_BASELINE}); record a baseline with {options.UPDATE_BASELINES}."
        warnings.warn(text, stacklevel=2)
    if not checked.violations:
        return ""
    return f"{where} violates its constraints (against {source}):\n" + "\n".join(
        f"  {v.describe()}" for v in checked.violations
    )


def _baseline_figures(entry: BaselineEntry | None) -> dict[str, Any] | None:
    """A stored entry's model figures and peak RSS, which the constraints compare with (None: none)."""
    if entry is None:
        return None
    peak = entry.peak_rss
    return {**(entry.model or {}), **({"peak_rss": peak} if peak else {})} or None


def _stored(stored: Mapping[int, Mapping[str, Any] | None], key: str) -> float | None:
    return next((e[key] for e in stored.values() if e and e.get(key) is not None), None)


_SUFFIXES = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def _number(text: str) -> float | None:
    scale = _SUFFIXES.get(text[-1:], 1.0)
    try:
        return float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        return None


def _figure(name: str, value: float) -> str:
    return mib(value) if name == "peak_rss" else si(value)
