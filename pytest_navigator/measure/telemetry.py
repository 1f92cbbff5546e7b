"""What the numbers were measured on: a device fingerprint, library versions, and GPU state per window.

Library versions and GPU facts are runtimes/environment.py's (the artifact cache keys on them too):
read from installed metadata and from NVIDIA's management library (nvidia-ml-py, imported as
`pynvml`) when it and a driver are present; without them the fingerprint holds the CPU facts only,
and nothing fails.
A `GpuMonitor` samples the SM clock, temperature and clock-event (throttle) reasons around each
measurement window; a window during which the GPU throttled is flagged, and the profiler leaves
it out of the stable set, as nvbench does.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from typing import Any

from pytest_navigator.runtimes.environment import gpu_facts, library_versions
from pytest_navigator.runtimes.environment import init_nvml as _nvml

#: NVML clock-event reason bits (nvmlClocksEventReason*, formerly nvmlClocksThrottleReason*): stable ABI.
CLOCK_EVENT_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
#: Reasons that slow a running kernel for reasons outside the code under test.
THROTTLING_REASONS = frozenset({"hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown"})
#: nvbench's rule: a window whose SM clock fell below this fraction of the maximum is throttled.
THROTTLE_CLOCK_FRACTION = 0.75


@dataclass(frozen=True, slots=True)
class DeviceReading:
    """The GPU's state over one window: the lowest SM clock and highest temperature seen, and every
    clock-event reason reported at the window's start or end."""

    sm_clock_mhz: int | None = None
    max_sm_clock_mhz: int | None = None
    temperature_c: int | None = None
    reasons: tuple[str, ...] = ()

    @property
    def throttled(self) -> bool:
        if THROTTLING_REASONS.intersection(self.reasons):
            return True
        if self.sm_clock_mhz and self.max_sm_clock_mhz:
            return self.sm_clock_mhz < THROTTLE_CLOCK_FRACTION * self.max_sm_clock_mhz
        return False

    def describe(self) -> str:
        parts = []
        if self.sm_clock_mhz is not None:
            parts.append(f"SM {self.sm_clock_mhz}/{self.max_sm_clock_mhz or '?'} MHz")
        if self.temperature_c is not None:
            parts.append(f"{self.temperature_c} C")
        if self.reasons:
            parts.append(", ".join(self.reasons))
        return " ".join(parts)

    def merged(self, other: DeviceReading) -> DeviceReading:
        """The worse of two readings: lower clock, higher temperature, all reasons."""
        clocks = [c for c in (self.sm_clock_mhz, other.sm_clock_mhz) if c is not None]
        temps = [t for t in (self.temperature_c, other.temperature_c) if t is not None]
        return DeviceReading(
            min(clocks) if clocks else None,
            self.max_sm_clock_mhz or other.max_sm_clock_mhz,
            max(temps) if temps else None,
            tuple(dict.fromkeys(self.reasons + other.reasons)),
        )


def decode_reasons(mask: int) -> tuple[str, ...]:
    """An NVML clock-event bit mask -> reason names (unknown bits as hex)."""
    names = [name for bit, name in CLOCK_EVENT_REASONS.items() if mask & bit]
    unknown = mask & ~sum(CLOCK_EVENT_REASONS)
    return (*names, f"0x{unknown:x}") if unknown else tuple(names)


class GpuMonitor:
    """Samples one NVIDIA GPU around each measurement window (never during it)."""

    def __init__(self, nvml: Any, index: int = 0) -> None:
        self._nvml = nvml
        self._handle = nvml.nvmlDeviceGetHandleByIndex(index)
        self._max_clock = self._call("nvmlDeviceGetMaxClockInfo", nvml.NVML_CLOCK_SM)
        self._start: DeviceReading | None = None

    def _call(self, name: str, *args: Any) -> Any:
        function = getattr(self._nvml, name, None)
        if function is None:
            return None
        try:
            return function(self._handle, *args)
        except Exception:  # a query this GPU or driver does not support
            return None

    def read(self) -> DeviceReading:
        mask = self._call("nvmlDeviceGetCurrentClocksEventReasons")
        if mask is None:
            mask = self._call("nvmlDeviceGetCurrentClocksThrottleReasons")
        return DeviceReading(
            self._call("nvmlDeviceGetClockInfo", self._nvml.NVML_CLOCK_SM),
            self._max_clock,
            self._call("nvmlDeviceGetTemperature", self._nvml.NVML_TEMPERATURE_GPU),
            decode_reasons(mask or 0),
        )

    def window_started(self) -> None:
        self._start = self.read()

    def window_ended(self) -> DeviceReading:
        end = self.read()
        return self._start.merged(end) if self._start is not None else end


def gpu_monitor(device: str) -> GpuMonitor | None:
    """A monitor for a runner's device ('cuda', 'cuda:1'); None on the CPU or without pynvml."""
    if not device.startswith("cuda"):
        return None
    nvml = _nvml()
    if nvml is None:
        return None
    try:
        return GpuMonitor(nvml, nvml_index(device))
    except Exception:
        return None


def nvml_index(device: str) -> int:
    """NVML's index of torch's 'cuda:N': the N-th entry of CUDA_VISIBLE_DEVICES when that is numeric
    (NVML counts every device, torch only the visible ones); N otherwise."""
    index = int(device.partition(":")[2] or 0)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if index < len(ids) and ids[index].isdigit():
            index = int(ids[index])
    return index


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else what platform reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_generation(cpuinfo: str | None = None) -> dict[str, Any]:
    """What CPU kernels dispatch on, which the marketing name hides on virtual machines ("AMD EPYC"
    covers generations with and without AVX-512): the vendor, family and model numbers from
    /proc/cpuinfo, and the widest vector ISA the flags offer (ATen, oneDNN and MLAS pick their kernels
    by the same flags; ATEN_CPU_CAPABILITY, when set, caps torch's and is kept too)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
                cpuinfo = info.read()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if not key:
            if fields:
                break  # the first processor's block is enough
            continue
        fields.setdefault(key, value.strip())
    flags = set(fields.get("flags", fields.get("Features", "")).split())
    found: dict[str, Any] = {
        "vendor": fields.get("vendor_id") or platform.machine(),
        "family": fields.get("cpu family"),
        "model": fields.get("model"),
        "isa": isa_level(flags) if flags else platform.machine(),
    }
    if os.environ.get("ATEN_CPU_CAPABILITY"):
        found["aten_cpu_capability"] = os.environ["ATEN_CPU_CAPABILITY"]
    return found


def isa_level(flags: set[str]) -> str:
    """The widest x86 vector level of a CPU's flags, named as torch's CPU capability names them."""
    if {"amx_tile", "avx512f"} <= flags:
        return "AMX"
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "AVX512"
    if {"avx2", "fma"} <= flags:
        return "AVX2"
    return "DEFAULT"


@functools.cache
def fingerprint() -> dict[str, Any]:
    """The machine and software a measurement was taken on, JSON-ready."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    facts: dict[str, Any] = {
        "cpu": {
            "model": cpu_model(),
            "cores": os.cpu_count() or 1,
            "usable_cores": usable,
            "generation": cpu_generation(),
        },
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "libraries": library_versions(),
    }
    gpus = gpu_facts()
    if gpus is not None:
        facts["gpu"] = gpus
    return facts


def hardware_key(facts: dict[str, Any], device: str) -> str:
    """What a baseline is keyed by: the GPU name and count for CUDA runtimes, else the CPU model and
    cores and the generation its kernels dispatch on: "AMD EPYC x2 (AuthenticAMD family 25 model 17,
    AVX512)". Keys written before the generation was part of them stop at the cores (coarse_key)."""
    gpu = facts.get("gpu")
    if device.startswith("cuda") and gpu and gpu["names"]:
        return f"{gpu['names'][0]} x{gpu['count']}"
    cpu = facts["cpu"]
    key = f"{cpu['model']} x{cpu['usable_cores']}"
    generation = cpu.get("generation")
    if not generation:
        return key
    numbers = " ".join(f"{name} {generation[name]}" for name in ("family", "model") if generation.get(name) is not None)
    isa = generation["isa"] + (
        f", ATen {generation['aten_cpu_capability']}" if "aten_cpu_capability" in generation else ""
    )
    return f"{key} ({' '.join(p for p in (generation['vendor'], numbers) if p)}, {isa})"


def coarse_key(key: str) -> str | None:
    """The key a CPU baseline had before CPU generations were told apart ("AMD EPYC x2"), or None
    when `key` has no generation part."""
    if not key.endswith(")") or " (" not in key:
        return None
    return key[: key.rindex(" (")]
