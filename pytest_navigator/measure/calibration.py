"""A fixed workload measured on the same device around each runtime's profile, so that a baseline
comparison can tell "the model got slower" from "the machine got slower".

On a shared machine the same runtime's throughput drifts by 10-15% between runs. Each profile
stores the workload's throughput next to the runtime's, and `--navigator-normalize` compares
runtime throughput / calibration throughput instead of the raw figures. The workload never runs
while a runtime is being timed: two thread pools competing for the cores would slow both.

The CPU workload is a small convolution stack in torch (intra-op threads, im2col/GEMM kernels, a
few MB of activations: what an inference runtime does), not a bare matmul. Measured over 10
separate processes beside ONNX Runtime CPU on the demo ResNet (2 cores, shared), its throughput
tracked the runtime's best of three candidates: log-correlation 0.68-0.83 in three experiments,
against 0.10-0.61 for a 512x512 numpy matmul and 0.58 for the 256x256 one this replaced, whose
before/after ratio added more noise than it removed. The score is the median of short windows,
so one stall does not move it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from pytest_navigator.config import ProfilerConfig, Sample
from pytest_navigator.measure.profiler import Clock, measure_window, warm_up
from pytest_navigator.model.spec import parse_io_spec
from pytest_navigator.runtimes.base import CallableRunner

#: On CUDA devices: float32 matrix products of this size (about 17 GFLOP each).
CUDA_SIZE = 2048
#: Windows of this many requests; the score is the median window throughput ...
CONFIG = ProfilerConfig(measurement_request_count=20)
#: ... over this many windows.
WINDOWS = 10


def _cpu_workload() -> Callable[[Sample], Sample]:
    """4 convolutions of 16 channels, 3x3, over a 56x56 map: about 0.1 GFLOP per request."""
    import torch

    generator = torch.Generator().manual_seed(0)
    layers = [torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(4)]
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * 0.1)
    stack = torch.nn.Sequential(*layers).eval()
    x = torch.randn(1, 16, 56, 56, generator=generator)

    def run(sample: Sample) -> Sample:
        with torch.inference_mode():
            return {"y": stack(x)}  # never read back

    return run


def calibration_score(device: str = "cpu", clock: Clock = time.perf_counter_ns) -> float | None:
    """Requests per second of the fixed workload on `device`: the median of WINDOWS windows (None
    when it could not run). Starts after a pause, so that a runtime measured just before has
    released the cores."""
    from pytest_navigator.measure.profiler import SETTLE_SECONDS

    time.sleep(SETTLE_SECONDS)
    runner: CallableRunner
    inputs: list[Any] = [{"x": np.zeros((1, 1), np.float32)}]
    try:
        if device.startswith("cuda"):
            runner = _CudaMatmul(device)
        else:
            runner = CallableRunner("calibration", _cpu_workload(), parse_io_spec(["x:float32[N,1]"], "calibration"))
        prepared = [runner.prepare(sample) for sample in inputs]
        warm_up(runner, prepared, clock)
        windows = [measure_window(runner, prepared, 1, CONFIG, clock).throughput for _ in range(WINDOWS)]
    except Exception:  # a calibration that cannot run leaves the raw figures, never fails a test
        return None
    return float(np.median(windows))


class _CudaMatmul(CallableRunner):
    """torch matmul on the GPU, synchronized like any CUDA runner."""

    def __init__(self, device: str) -> None:
        import torch

        self._a = torch.randn(CUDA_SIZE, CUDA_SIZE, device=device)
        self._b = torch.randn(CUDA_SIZE, CUDA_SIZE, device=device)
        spec = parse_io_spec(["x:float32[N,1]"], "calibration")
        super().__init__(
            "calibration-cuda",
            lambda sample: {"y": self._a @ self._b},  # type: ignore[dict-item]  # stays on the GPU
            spec,
            device=device,
        )

    def synchronize(self) -> None:
        import torch

        torch.cuda.synchronize(self.device)
