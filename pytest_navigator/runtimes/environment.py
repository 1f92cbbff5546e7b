"""The machine runtimes are built and run on: installed library versions, the GPUs NVML sees, the CPU
cores this process may use.

Artifact cache keys hold the library versions and a TensorRT engine's the GPUs, so a build made
with other libraries or for another GPU is never restored; measure/telemetry.py puts the same facts
into the fingerprint of what a measurement ran on. Library versions are read from installed
metadata, so nothing heavy is imported for them. GPU facts come from NVIDIA's management library
(nvidia-ml-py, imported as `pynvml`) when it and a driver are present; without them they are None,
and nothing fails.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

#: Distributions whose versions change the speed of what is measured.
LIBRARIES = ("pytest-navigator", "torch", "onnxruntime", "onnxruntime-gpu", "tensorrt", "numpy")


def init_nvml() -> Any | None:
    """pynvml, initialized; None without the library, a driver or a GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError: no driver, no device, insufficient permissions
        return None
    return pynvml


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide speed (absent ones left out)."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch.version, "cuda", None):
        versions["torch-cuda"] = torch.version.cuda
    return versions


def gpu_facts() -> dict[str, Any] | None:
    """GPU names, count, driver and CUDA driver version via pynvml; None without them."""
    nvml = init_nvml()
    if nvml is None:
        return None
    try:
        count = nvml.nvmlDeviceGetCount()
        names = [_text(nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(i))) for i in range(count)]
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda = nvml.nvmlSystemGetCudaDriverVersion()
    except Exception:
        return None
    return {"names": names, "count": count, "driver": driver, "cuda": f"{cuda // 1000}.{cuda % 1000 // 10}"}


def available_cores() -> tuple[int, ...]:
    """The CPUs this process may run on."""
    try:
        return tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return tuple(range(os.cpu_count() or 1))
