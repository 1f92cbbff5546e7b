"""Peak memory of a runtime at a batch size, measured in an untimed pass right after its profile.

- Host: the peak resident set size of the process the runtime runs in (its worker process under
  the default `--navigator-isolation=process`; pytest's own process, with everything else it holds,
  under `none`). Linux resets the high-water mark when "5" is written to /proc/self/clear_refs, so
  each batch size's peak is its own: reset, run REQUESTS requests, read VmHWM from
  /proc/self/status. Where that reset is not possible, the figure is the process's peak since it
  started (getrusage), and says so.
- CUDA runtimes: also the torch caching allocator's peak (`torch.cuda.max_memory_allocated` after
  `reset_peak_memory_stats`), the memory tensors really held at once; and what NVML says this
  process holds on the GPU after the pass (`nvmlDeviceGetComputeRunningProcesses`: the CUDA
  context, the allocator's cached blocks and memory libraries took outside torch, such as
  TensorRT's or cuDNN's workspaces). NVML has no per-process peak, so this is the level the pass
  left, which the allocator's cache keeps at least as high as its peak.
- TensorRT: the engine's own device memory for the batch size's optimization profile
  (`device_memory_size`), from the runner's `device_memory_bytes`.
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_navigator.errors import describe_error

#: Requests run per batch size while the peak is tracked.
REQUESTS = 3


@dataclass(frozen=True)
class Peak:
    #: bytes, or None when not measured
    rss: int | None
    #: "since reset" (this batch size alone) or "since start" (the process's peak so far)
    rss_scope: str = "since reset"
    #: the torch allocator's peak on the runtime's CUDA device
    cuda: int | None = None
    #: what NVML says this process holds on the runtime's GPU after the pass
    gpu_process: int | None = None
    #: the runner's own device memory at this batch size (TensorRT: the engine's device_memory_size)
    engine: int | None = None
    error: str = ""


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_peak() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def peak_memory(runner: Any, inputs_for: Callable[[int], Sequence[Any]], sizes: Sequence[int]) -> dict[int, Peak]:
    """Each size's peak while REQUESTS requests run (untimed), in this process."""
    found = {}
    cuda = str(getattr(runner, "device", "cpu")).startswith("cuda")
    for size in sizes:
        try:
            prepared = [runner.prepare(sample) for sample in list(inputs_for(size))[:REQUESTS]]
            runner.synchronize()
            if cuda:
                import torch

                torch.cuda.reset_peak_memory_stats(runner.device)
            scope = "since reset" if _reset_rss_peak() else "since start"
            for index in range(REQUESTS):
                runner.run(prepared[index % len(prepared)])
            runner.synchronize()
            allocated = process = None
            if cuda:
                import torch

                allocated = int(torch.cuda.max_memory_allocated(runner.device))
                process = gpu_process_memory(str(runner.device))
            own = getattr(runner, "device_memory_bytes", None)
            engine = own(size) if callable(own) else None
            found[size] = Peak(_rss_peak(), scope, allocated, process, engine)
        except Exception as exc:  # an out-of-memory batch size, say: shown, the profile stands
            found[size] = Peak(None, error=describe_error(exc))
    return found


def gpu_process_memory(device: str, pid: int | None = None) -> int | None:
    """Bytes NVML says process `pid` (this one) holds on `device` ('cuda', 'cuda:1'); None without
    pynvml or a driver, or when NVML cannot see the process (a container's PID namespace) or will
    not say (usedGpuMemory unavailable, as under some virtualised GPUs)."""
    from pytest_navigator.measure.telemetry import _nvml, nvml_index

    nvml = _nvml()
    if nvml is None:
        return None
    pid = os.getpid() if pid is None else pid
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(nvml_index(device))
        processes = list(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
    except Exception:  # NVMLError: a query this driver or GPU does not support
        return None
    used = [getattr(p, "usedGpuMemory", None) for p in processes if getattr(p, "pid", None) == pid]
    known = [u for u in used if isinstance(u, int) and 0 <= u < 2**63]  # 2**64-1: "not available"
    return sum(known) if known else None


def parse_bytes(text: str) -> float | None:
    """'512MiB', '2GiB', '1.5GB', '3e8' -> bytes; None when it is not a size."""
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12}
    lowered = text.strip().lower()
    for unit, scale in units.items():
        if lowered.endswith(unit):
            try:
                return float(lowered[: -len(unit)]) * scale
            except ValueError:
                return None
    try:
        return float(lowered.removesuffix("b"))
    except ValueError:
        return None


def mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"
