"""A fixed workload measured on the same device around each runtime's profile, so that a baseline
comparison can tell "the model got slower" from "the machine got slower".

On a shared machine the same runtime's throughput drifts by 10-15% between runs; a fixed matmul
drifts with it. Each profile stores the workload's throughput next to the runtime's, and
`--navigator-normalize` compares runtime throughput / calibration throughput instead of the raw
figures. The workload never runs while a runtime is being timed: two thread pools competing for
the cores would slow both.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from pytest_navigator.config import ProfilerConfig, Sample
from pytest_navigator.profiler import Clock, profile_batch
from pytest_navigator.runtimes.base import CallableRunner
from pytest_navigator.spec import parse_io_spec

#: The CPU workload: float32 matrix products of this size (about 34 MFLOP each) ...
CPU_SIZE = 256
#: ... and on CUDA devices, of this size (about 17 GFLOP each).
CUDA_SIZE = 2048
#: Short windows: the workload takes well under a second.
CONFIG = ProfilerConfig(measurement_request_count=100, stability_percentage=10.0, max_trials=10)


def _cpu_workload() -> tuple[Callable[[Sample], Sample], list[Sample]]:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((CPU_SIZE, CPU_SIZE), dtype=np.float32)
    inputs = [{"x": rng.standard_normal((1, CPU_SIZE, CPU_SIZE), dtype=np.float32)} for _ in range(2)]
    return (lambda sample: {"y": sample["x"] @ matrix}), inputs


def calibration_score(device: str = "cpu", clock: Clock = time.perf_counter_ns) -> float | None:
    """Requests per second of the fixed workload on `device` (None when it could not be measured stably).
    Starts after a pause, so that a runtime measured just before has released the cores."""
    from pytest_navigator.profiler import SETTLE_SECONDS

    time.sleep(SETTLE_SECONDS)
    spec = parse_io_spec([f"x:float32[N,{CPU_SIZE},{CPU_SIZE}]"], "calibration")
    runner: CallableRunner
    if device.startswith("cuda"):
        runner = _CudaMatmul(device)
        inputs: list[Sample] = [{"x": np.zeros((1, 1, 1), np.float32)}]
    else:
        function, inputs = _cpu_workload()
        runner = CallableRunner("calibration", function, spec)
    profile = profile_batch(runner, inputs, 1, CONFIG, clock)
    return profile.throughput if profile.stable else None


class _CudaMatmul(CallableRunner):
    """torch matmul on the GPU, synchronized like any CUDA runner."""

    def __init__(self, device: str) -> None:
        import torch

        self._a = torch.randn(CUDA_SIZE, CUDA_SIZE, device=device)
        self._b = torch.randn(CUDA_SIZE, CUDA_SIZE, device=device)
        spec = parse_io_spec(["x:float32[N,1,1]"], "calibration")
        super().__init__(
            "calibration-cuda",
            lambda sample: {"y": self._a @ self._b},  # type: ignore[dict-item]  # stays on the GPU
            spec,
            device=device,
        )

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize(self.device)
