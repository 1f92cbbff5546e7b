"""A runtime's profile as the run report keeps it: every figure a view shows, without the raw latencies.

A `RuntimeProfile` holds every request's latency (a fast model's run has hundreds of thousands);
the report, the xdist payload and every view need only the figures computed from them. `of()`
computes them once, from the profile, and the views read the result: the terminal summary, the JSON
report, HTML, Markdown and the pytest-benchmark export show the same numbers because they read the
same object. `to_dict()` is the report's JSON (report.schema.json's `profile`); `from_dict()` reads
it back, from every schema version the report reader accepts (fields new in a version are absent
before it, and read as unknown).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_navigator.measure.profiler import BatchProfile, RuntimeProfile

#: The figures of one process (gate.runs.FIGURES): what a timed verdict compares.
FIGURES = ("throughput", "p50", "p95", "p99")

#: Percentiles kept of the pooled latencies: the HdrHistogram plot's x axis is 1/(1-p), so the grid is
#: dense toward the tail; points beyond what the request count supports (1 - 1/requests) are left out.
PERCENTILES = (0.0, 10.0, 25.0, 50.0, 75.0, 80.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.99, 99.999)


@dataclass(frozen=True)
class WindowSummary:
    """One measurement window, as figures."""

    requests: int
    wall_ms: float
    throughput: float
    p50_ms: float
    throttled: bool = False
    device: str | None = None
    interfered: bool = False
    cpu: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "wall_ms": self.wall_ms,
            "throughput": self.throughput,
            "p50_ms": self.p50_ms,
            "throttled": self.throttled,
            "device": self.device,
            "interfered": self.interfered,
            "cpu": self.cpu,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowSummary:
        return cls(
            data["requests"],
            data["wall_ms"],
            data["throughput"],
            data["p50_ms"],
            bool(data.get("throttled", False)),
            data.get("device"),
            bool(data.get("interfered", False)),
            data.get("cpu"),
        )


@dataclass(frozen=True)
class BatchSummary:
    """One batch size: its status, figures, windows, memory and counts."""

    batch_size: int
    status: str  # "stable", "unstable" or "error"
    error: str | None = None
    reason: str = ""
    #: Over the stable windows (all of them when unstable); None for an error or a count.
    throughput: float | None = None
    latency_ms: dict[str, float] | None = None
    cold_start_ms: float | None = None
    stable_windows: tuple[int, ...] = ()
    #: The pooled latencies' shape (latency_distribution()); None when nothing was timed.
    latency_distribution: dict[str, Any] | None = None
    #: Bytes: rss_scope, rss_bytes, cuda_bytes, gpu_process_bytes, engine_bytes; None when not measured.
    peak_memory: dict[str, Any] | None = None
    #: Instruction counts: per_request (the median of the processes), per_sample, repeats.
    instructions: dict[str, Any] | None = None
    windows: tuple[WindowSummary, ...] = ()
    #: Each process's figures (FIGURES), this one first (new in schema 5).
    runs: tuple[dict[str, float], ...] = ()
    #: The evidence of other work on the CPUs during some window, else "" (new in schema 5).
    interference: str = ""

    @classmethod
    def of(cls, batch: BatchProfile) -> BatchSummary:
        measured = batch.status != "error" and not batch.instructions
        return cls(
            batch_size=batch.batch_size,
            status=batch.status,
            error=batch.error,
            reason=batch.reason,
            throughput=batch.throughput if measured else None,
            latency_ms=batch.latency_ms if measured else None,
            cold_start_ms=batch.cold_start_ms,
            stable_windows=tuple(batch.stable_windows),
            latency_distribution=latency_distribution(batch) if measured else None,
            peak_memory=(
                {"rss_scope": batch.rss_scope, **batch.memory}
                if batch.peak_rss is not None or batch.peak_cuda is not None
                else None
            ),
            instructions=(
                {
                    "per_request": batch.instructions_per_request,
                    "per_sample": batch.instructions_per_request / batch.batch_size,
                    "repeats": list(batch.instructions),
                }
                if batch.instructions
                else None
            ),
            windows=tuple(
                WindowSummary(
                    len(w.latencies_ms),
                    w.wall_ms,
                    w.throughput,
                    w.p50_ms,
                    w.throttled,
                    None if w.device is None else w.device.describe(),
                    w.interfered,
                    None if w.cpu is None else w.cpu.describe(),
                )
                for w in batch.windows
            ),
            runs=tuple(dict(run) for run in batch.runs),
            interference=batch.interference if batch.windows else "",
        )

    @property
    def stable(self) -> bool:
        return self.status == "stable"

    def figures(self) -> dict[str, float]:
        """This process's own figures (FIGURES)."""
        latency = self.latency_ms or {}
        nan = float("nan")
        return {
            "throughput": nan if self.throughput is None else self.throughput,
            **{p: latency.get(p, nan) for p in ("p50", "p95", "p99")},
        }

    def shown_figures(self) -> dict[str, float]:
        """The figures a summary shows: the median over the processes when several measured it (what
        the baseline entry stores and the verdict compares), else this process's own."""
        if len(self.runs) > 1:
            return {name: statistics.median(run[name] for run in self.runs) for name in FIGURES}
        return self.figures()

    def memory(self, name: str) -> int | None:
        """A peak-memory figure in bytes (rss_bytes, cuda_bytes, gpu_process_bytes, engine_bytes)."""
        return None if self.peak_memory is None else self.peak_memory.get(name)

    @property
    def instructions_per_request(self) -> float:
        return float("nan") if self.instructions is None else self.instructions["per_request"]

    @property
    def instruction_repeats(self) -> list[float]:
        return [] if self.instructions is None else list(self.instructions["repeats"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "status": self.status,
            "error": self.error,
            "reason": self.reason,
            "throughput": self.throughput,
            "latency_ms": None if self.latency_ms is None else dict(self.latency_ms),
            "cold_start_ms": self.cold_start_ms,
            "stable_windows": list(self.stable_windows),
            "latency_distribution": self.latency_distribution,
            "peak_memory": self.peak_memory,
            "instructions": self.instructions,
            "windows": [w.to_dict() for w in self.windows],
            "runs": [dict(run) for run in self.runs],
            "interference": self.interference,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchSummary:
        memory = data.get("peak_memory")
        if memory is not None:  # new in schema 4: unknown before
            memory = {"gpu_process_bytes": None, "engine_bytes": None, **memory}
        return cls(
            batch_size=data["batch_size"],
            status=data["status"],
            error=data.get("error"),
            reason=data.get("reason") or "",
            throughput=data.get("throughput"),
            latency_ms=data.get("latency_ms"),
            cold_start_ms=data.get("cold_start_ms"),
            stable_windows=tuple(data.get("stable_windows") or ()),
            latency_distribution=data.get("latency_distribution"),
            peak_memory=memory,
            instructions=data.get("instructions"),
            windows=tuple(WindowSummary.from_dict(w) for w in data.get("windows") or ()),
            runs=tuple(dict(run) for run in data.get("runs") or ()),
            interference=data.get("interference") or "",
        )


@dataclass(frozen=True)
class ProfileSummary:
    """A runtime's profile over its batch sizes, and why the sweep stopped."""

    #: "count", "time" or "instructions"
    mode: str
    stop_reason: str
    batches: tuple[BatchSummary, ...] = ()
    #: The valgrind that counted, in instruction mode.
    tool: str | None = None
    #: The calibration workload's throughput around the profile.
    calibration: float | None = None
    #: The runtime id the figures belong to: a counted runtime's is its one-thread build's
    #: (new in schema 5; the runtime's own name before).
    runtime: str | None = None
    #: --navigator-interference: "exclude" leaves busy windows out, "report" counts them (schema 5).
    interference_mode: str = "exclude"

    @classmethod
    def of(cls, profile: RuntimeProfile) -> ProfileSummary:
        return cls(
            mode=profile.config.measurement_mode.value,
            stop_reason=profile.stop_reason,
            batches=tuple(BatchSummary.of(b) for b in profile.batches),
            tool=profile.tool,
            calibration=profile.calibration,
            runtime=profile.runtime,
            interference_mode=profile.config.interference,
        )

    @property
    def counted(self) -> bool:
        return self.mode == "instructions"

    @property
    def stable(self) -> bool:
        return all(b.stable for b in self.batches if b.status != "error")

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "tool": self.tool,
            "stop_reason": self.stop_reason,
            "calibration": self.calibration,
            "batches": [b.to_dict() for b in self.batches],
            "runtime": self.runtime,
            "interference_mode": self.interference_mode,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileSummary:
        return cls(
            mode=data.get("mode") or "",
            stop_reason=data.get("stop_reason") or "",
            batches=tuple(BatchSummary.from_dict(b) for b in data.get("batches") or ()),
            tool=data.get("tool"),
            calibration=data.get("calibration"),
            runtime=data.get("runtime"),
            interference_mode=data.get("interference_mode") or "exclude",
        )


def latency_distribution(batch: BatchProfile) -> dict[str, Any] | None:
    """The latencies of a batch size's stable windows pooled (all its windows when none is stable):
    count, mean, spread, Tukey's fences (pytest-benchmark's box plot) and percentiles for the HdrHistogram
    plot. Raw latencies are not kept: a fast model's run has hundreds of thousands of them."""
    import numpy as np

    windows = [batch.windows[i] for i in batch.stable_windows] or list(batch.windows)
    values = np.concatenate([np.asarray(w.latencies_ms, dtype=float) for w in windows]) if windows else np.zeros(0)
    if values.size == 0:
        return None
    q1, median, q3 = (float(x) for x in np.percentile(values, [25, 50, 75]))
    iqr, mean, stddev = q3 - q1, float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0
    inside = values[(values >= q1 - 1.5 * iqr) & (values <= q3 + 1.5 * iqr)]
    usable = [p for p in PERCENTILES if p == 0.0 or 1 / (1 - p / 100) <= values.size]
    if 100.0 not in usable:
        usable.append(100.0)
    points = np.percentile(values, usable)
    digits = lambda x: float(f"{x:.6g}")  # noqa: E731 - microsecond resolution at most; smaller JSON
    return {
        "requests": int(values.size),
        "windows": "stable" if batch.stable_windows else "all",
        "mean_ms": digits(mean),
        "stddev_ms": digits(stddev),
        "min_ms": digits(float(values.min())),
        "max_ms": digits(float(values.max())),
        "q1_ms": digits(q1),
        "median_ms": digits(median),
        "q3_ms": digits(q3),
        "low_fence_ms": digits(float(inside.min())),
        "high_fence_ms": digits(float(inside.max())),
        "iqr_outliers": int(values.size - inside.size),
        "stddev_outliers": int(np.count_nonzero(np.abs(values - mean) > stddev)),
        "total_ms": digits(float(values.sum())),
        "percentiles": [[p, digits(float(x))] for p, x in zip(usable, points, strict=True)],
    }
