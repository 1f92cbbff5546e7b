"""What a measurement found: its windows, a batch size's profile, and a runtime's profile over its
batch sizes (the profiler's results; baselines, reports and verdicts read them)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pytest_navigator.config import ProfilerConfig
from pytest_navigator.measure.interference import CpuReading, summarize
from pytest_navigator.measure.telemetry import DeviceReading


@dataclass(frozen=True, slots=True)
class WindowResult:
    """One measurement window: its requests' latencies and the wall time they took together."""

    batch_size: int
    latencies_ms: tuple[float, ...]
    wall_ms: float
    device: DeviceReading | None = None
    cpu: CpuReading | None = None

    @property
    def throttled(self) -> bool:
        return self.device is not None and self.device.throttled

    @property
    def interfered(self) -> bool:
        """Other processes took the runtime's cores during this window (interference.py)."""
        return self.cpu is not None and self.cpu.interfered

    def excluded(self, config: ProfilerConfig) -> bool:
        """Left out of the stable set: the GPU throttled, or the CPUs were busy with other work (unless
        config.interference is "report": busy windows are then named but count)."""
        return self.throttled or (self.interfered and config.interference == "exclude")

    @property
    def throughput(self) -> float:
        """Samples (rows) per second."""
        return len(self.latencies_ms) * self.batch_size / (self.wall_ms / 1000) if self.wall_ms > 0 else 0.0

    @property
    def p50_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 50))


@dataclass(frozen=True)
class BatchProfile:
    """Every window measured at one batch size and, when stable, the figures from the stable ones."""

    batch_size: int
    status: str  # "stable", "unstable" or "error"
    cold_start_ms: float | None
    windows: tuple[WindowResult, ...] = ()
    stable_windows: tuple[int, ...] = ()
    error: str | None = None
    #: Why the measurement of this batch size ended.
    reason: str = ""
    #: --navigator-mode=instructions: instructions per request counted by each process (instructions.py).
    instructions: tuple[float, ...] = ()
    #: Peak memory in an untimed pass after the measurement (memory.py): host RSS and the torch CUDA
    #: allocator's, in bytes; rss_scope "since reset" (this batch size's own) or "since start".
    peak_rss: int | None = None
    peak_cuda: int | None = None
    rss_scope: str = ""
    #: CUDA runtimes: what NVML says the runtime's process holds on the GPU after that pass; TensorRT:
    #: the engine's device memory at this batch size (bytes)
    gpu_process: int | None = None
    engine_memory: int | None = None
    #: The figures of each process this batch size was measured in (runs.FIGURES: throughput and
    #: p50/p95/p99 ms), this one first: a timed verdict compares processes, not windows (runs.py).
    runs: tuple[dict[str, float], ...] = ()

    def figures(self) -> dict[str, float]:
        """This measurement's own per-process figures (runs.FIGURES)."""
        latency = self.latency_ms
        return {"throughput": self.throughput, "p50": latency["p50"], "p95": latency["p95"], "p99": latency["p99"]}

    @property
    def memory(self) -> dict[str, int | None]:
        """The peak-memory figures in bytes, named as the report and baseline entries store them."""
        return {
            "rss_bytes": self.peak_rss,
            "cuda_bytes": self.peak_cuda,
            "gpu_process_bytes": self.gpu_process,
            "engine_bytes": self.engine_memory,
        }

    @property
    def stable(self) -> bool:
        return self.status == "stable"

    @property
    def instructions_per_request(self) -> float:
        """The median of the processes' counts (nan when not counted)."""
        return float(np.median(self.instructions)) if self.instructions else float("nan")

    @property
    def interference(self) -> str:
        """The evidence of other work on the CPUs, when some window was interfered with; else ""."""
        return summarize([w.cpu for w in self.windows if w.cpu is not None])

    def _pooled(self) -> np.ndarray:
        chosen = [self.windows[i] for i in self.stable_windows] if self.stable else list(self.windows)
        return np.array([ms for w in chosen for ms in w.latencies_ms])

    @property
    def throughput(self) -> float:
        """Samples per second over the stable windows: all their samples over all their wall time."""
        chosen = [self.windows[i] for i in self.stable_windows] if self.stable else list(self.windows)
        wall = sum(w.wall_ms for w in chosen)
        return sum(len(w.latencies_ms) for w in chosen) * self.batch_size / (wall / 1000) if wall > 0 else 0.0

    def percentile(self, q: float) -> float:
        pooled = self._pooled()
        return float(np.percentile(pooled, q)) if pooled.size else float("nan")

    @property
    def latency_ms(self) -> dict[str, float]:
        return {f"p{q}": self.percentile(q) for q in (50, 90, 95, 99)}

    def describe_windows(self) -> str:
        """Every window's throughput and p50, for an unstable result's message."""
        return "; ".join(
            f"#{i + 1}: {w.throughput:.1f}/s p50 {w.p50_ms:.3f} ms"
            + (f" (throttled: {w.device.describe()})" if w.device is not None and w.throttled else "")
            + (f" (busy: {w.cpu.describe()})" if w.cpu is not None and w.interfered else "")
            for i, w in enumerate(self.windows)
        )


@dataclass(frozen=True)
class RuntimeProfile:
    """One runner's profile over the batch sizes it was measured at, and why the sweep stopped."""

    runtime: str
    batches: tuple[BatchProfile, ...]
    stop_reason: str
    config: ProfilerConfig = field(default_factory=ProfilerConfig)
    #: Throughput of the device's fixed calibration workload around this profile (calibration.py).
    calibration: float | None = None
    #: The runtime option that sets its CPU threads ("threads", "intra_op_num_threads"), for hints.
    thread_option: str | None = None
    #: Instruction mode: the valgrind that counted ("valgrind-3.24.0").
    tool: str | None = None

    @property
    def stable(self) -> bool:
        return all(b.stable for b in self.batches if b.status != "error")

    def best(self) -> BatchProfile | None:
        """The stable batch size with the highest throughput."""
        stable = [b for b in self.batches if b.stable]
        return max(stable, key=lambda b: b.throughput) if stable else None
