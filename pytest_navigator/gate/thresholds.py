"""Regression thresholds: the limits a verdict judges against, parsed from options, ini values and markers.

A limit is a fraction of the baseline (relative, "95%") or a value in samples/s, ms or instructions
(absolute, an SLA); a bad one names the option, the value and what is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pytest_navigator import options
from pytest_navigator.errors import NavigatorError

#: Accepted metrics: throughput is a lower bound, latencies upper bounds.
METRICS = ("throughput", "p50", "p90", "p95", "p99", "instructions")
#: instructions (per request, --navigator-mode=instructions) is an upper bound like the latencies.
DEFAULT_THRESHOLDS: dict[str, str | float] = {"throughput": "95%", "p95": "110%", "p99": "110%", "instructions": "102%"}


class ThresholdError(NavigatorError):
    """A threshold that cannot be used."""


@dataclass(frozen=True, slots=True)
class Limit:
    """One metric's bound: a fraction of the baseline (relative) or a value in samples/s or ms."""

    metric: str
    value: float
    relative: bool

    def bound(self, baseline: float | None) -> float | None:
        if not self.relative:
            return self.value
        return None if baseline is None else baseline * self.value

    def __str__(self) -> str:
        return f"{self.metric}={self.value * 100:g}%" if self.relative else f"{self.metric}={self.value:g}"


def parse_thresholds(value: str | Mapping[str, Any] | None, where: str = options.THRESHOLDS) -> dict[str, Limit]:
    """'throughput=95%,p99=120%' or {"throughput": "95%", "p95": 12.0} over the defaults; a bad one
    names the option, the value and what is accepted."""
    merged: dict[str, Any] = dict(DEFAULT_THRESHOLDS)
    if isinstance(value, str):
        for part in filter(None, (p.strip() for p in value.split(","))):
            name, sep, text = part.partition("=")
            if not sep:
                raise ThresholdError(f"{where}={value!r}: {part!r} is not METRIC=LIMIT, e.g. throughput=95%,p99=120%.")
            merged[name.strip()] = text.strip()
    elif value is not None:
        merged.update(value)
    limits = {}
    for metric, raw in merged.items():
        if metric not in METRICS:
            raise ThresholdError(f"{where}: unknown metric {metric!r}; accepted: {', '.join(METRICS)}.")
        if raw is None:
            continue  # {"p99": None} turns a default off
        limits[metric] = _limit(metric, raw, where)
    return limits


def _limit(metric: str, raw: Any, where: str) -> Limit:
    text = str(raw).strip()
    relative = text.endswith("%")
    try:
        number = float(text.removesuffix("%"))
    except ValueError:
        number = float("nan")
    example = {
        "throughput": "95% (of the baseline) or 500 (samples/s)",
        "instructions": "102% (of the baseline) or 5e6 (instructions per request)",
    }.get(metric, "110% (of the baseline) or 12.5 (ms)")
    if not number > 0:
        raise ThresholdError(f"{where}: {metric}={raw!r} is not a positive number or percentage; e.g. {example}.")
    if relative:
        number /= 100
        wrong = number > 1 if metric == "throughput" else number < 1
        if wrong:
            side = "at most 100%" if metric == "throughput" else "at least 100%"
            raise ThresholdError(
                f"{where}: {metric}={raw!r}: a relative {metric} limit is {side} of the baseline; e.g. {example}."
            )
    return Limit(metric, number, relative)
