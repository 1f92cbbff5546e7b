"""When a measurement is stable: seed 000's rule over the last windows (the profiler stops when it
holds), and the failure a profile that never met it raises, with what to try."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pytest_navigator import options
from pytest_navigator.config import MeasurementMode, ProfilerConfig
from pytest_navigator.measure.interference import CpuReading, free_cores
from pytest_navigator.measure.profiles import RuntimeProfile, WindowResult

#: "Still converging": the last stabilization windows lie within this multiple of stability_percentage.
CONVERGING_FACTOR = 2.0


def stable_set(windows: Sequence[WindowResult], config: ProfilerConfig) -> tuple[int, ...] | None:
    """Indices of the last `stabilization_windows` windows not excluded (throttled, interfered with)
    when their throughput and their p50 latency each lie within stability_percentage of their mean;
    None when they do not (yet). Seed 000's rule, unchanged: only the windows it looks at are chosen."""
    return _within(windows, config, config.stability_percentage)


def _within(windows: Sequence[WindowResult], config: ProfilerConfig, percentage: float) -> tuple[int, ...] | None:
    usable = [i for i, w in enumerate(windows) if not w.excluded(config)][-config.stabilization_windows :]
    if len(windows) < config.min_trials or len(usable) < config.stabilization_windows:
        return None
    for values in ([windows[i].throughput for i in usable], [windows[i].p50_ms for i in usable]):
        mean = float(np.mean(values))
        if mean <= 0 or any(abs(v - mean) > percentage / 100 * mean for v in values):
            return None
    return tuple(usable)


def converging(windows: Sequence[WindowResult], config: ProfilerConfig) -> bool:
    """Worth another window after max_trials: the last windows are close to the rule (within
    CONVERGING_FACTOR times stability_percentage), or the latest was excluded (the machine or the
    GPU may settle)."""
    if windows and windows[-1].excluded(config):
        return True
    return _within(windows, config, CONVERGING_FACTOR * config.stability_percentage) is not None


class PerformanceFailure(AssertionError):
    """A measurement that cannot be trusted or did not happen; the message carries every window."""


#: What to try when a measurement will not settle.
UNSTABLE_HINT = (
    f"hint: measure longer windows ({options.WINDOW}=200 in count mode, or {options.MODE}=time "
    f"{options.WINDOW}=5000), allow more windows ({options.MAX_TRIALS}=20) or a looser "
    f"{options.STABILITY}, or run on a quieter machine (no other jobs, fixed CPU frequency, a GPU not shared)."
)


def check_profile(profile: RuntimeProfile, model_name: str) -> None:
    """Raise PerformanceFailure when a batch size's measurement is unstable, or nothing could be measured."""
    config = profile.config
    unstable = [b for b in profile.batches if b.status == "unstable"]
    if unstable and config.measurement_mode is MeasurementMode.INSTRUCTIONS:
        lines = [f"{profile.runtime} on {model_name}: the instruction counts are unstable ({profile.stop_reason}):"]
        lines += [
            f"  batch {b.batch_size}: {b.reason}: {', '.join(f'{c:,.0f}' for c in b.instructions)} per request"
            for b in unstable
        ]
        lines.append(
            "  counts that differ between processes come from work that depends on scheduling or memory addresses:"
            " threads the runtime starts, allocator caches, autotuning; nothing was judged."
        )
        raise PerformanceFailure("\n".join(lines))
    if unstable:
        lines = [
            f"{profile.runtime} on {model_name}: the measurement is unstable at batch size"
            f" {', '.join(str(b.batch_size) for b in unstable)}: no"
            f" {config.stabilization_windows} consecutive windows (throttled and busy ones left out) had throughput"
            f" and p50 latency within {config.stability_percentage:g}% of their mean."
        ]
        busy: list[CpuReading] = []
        for batch in unstable:
            lines.append(f"  batch {batch.batch_size} ({batch.reason}): {batch.describe_windows()}")
            if sum(w.throttled for w in batch.windows) > len(batch.windows) - config.stabilization_windows:
                lines.append("  the GPU throttled (clock or thermal limits) in too many windows; let it cool down.")
            if batch.interference:
                lines.append(f"  {batch.interference}.")
                busy.extend(w.cpu for w in batch.windows if w.cpu is not None)
        if busy:
            lines.append(thread_hint(profile, busy))
        lines.append(UNSTABLE_HINT)
        raise PerformanceFailure("\n".join(lines))
    if not any(b.status != "error" for b in profile.batches):
        raise PerformanceFailure(f"{profile.runtime} on {model_name}: nothing could be measured: {profile.stop_reason}")


def thread_hint(profile: RuntimeProfile, readings: Sequence[CpuReading]) -> str:
    """What to try when other processes took the runtime's cores: fewer threads, or a quiet machine."""
    threads, free = readings[0].threads, free_cores(readings)
    if profile.thread_option is not None and threads > free:
        return (
            f"hint: the runtime's {threads} threads wait for each other when fewer cores are free; give it the"
            f" {free} free core{'s' if free != 1 else ''} with the runtime option {profile.thread_option}={free}"
            f" ({options.RUNTIME_OPTION}={profile.runtime.split(':')[0]}:{profile.thread_option}={free}),"
            " or stop the other jobs."
        )
    return "hint: other processes took the runtime's cores; stop the other jobs or run on a dedicated machine."
