"""Device fingerprint and per-window GPU readings, with a stand-in for pynvml where no GPU is at hand."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_navigator.measure import telemetry
from pytest_navigator.measure.telemetry import DeviceReading, decode_reasons, fingerprint, gpu_monitor, hardware_key


class NVMLError(Exception):
    pass


def fake_nvml(
    clocks: list[int], reasons: list[int], *, event_api: bool = True, init_fails: bool = False
) -> types.ModuleType:
    """A pynvml with two H100s whose SM clock and clock-event reasons follow the given scripts."""
    module = types.ModuleType("pynvml")
    module.NVML_CLOCK_SM = 1  # type: ignore[attr-defined]
    module.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    module.handles = []  # type: ignore[attr-defined]
    clock_script, reason_script = iter(clocks), iter(reasons)

    def init() -> None:
        if init_fails:
            raise NVMLError("Driver Not Loaded")

    def handle(index: int) -> int:
        module.handles.append(index)
        return index

    module.nvmlInit = init  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"  # type: ignore[attr-defined]
    module.nvmlSystemGetDriverVersion = lambda: "560.35.03"  # type: ignore[attr-defined]
    module.nvmlSystemGetCudaDriverVersion = lambda: 12060  # type: ignore[attr-defined]
    module.nvmlDeviceGetMaxClockInfo = lambda h, kind: 1980  # type: ignore[attr-defined]
    module.nvmlDeviceGetClockInfo = lambda h, kind: next(clock_script)  # type: ignore[attr-defined]
    module.nvmlDeviceGetTemperature = lambda h, kind: 61  # type: ignore[attr-defined]
    reasons_api = "nvmlDeviceGetCurrentClocksEventReasons" if event_api else "nvmlDeviceGetCurrentClocksThrottleReasons"
    setattr(module, reasons_api, lambda h: next(reason_script))
    return module


@pytest.fixture
def use_nvml(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def install(module: types.ModuleType | None) -> None:
        monkeypatch.setitem(sys.modules, "pynvml", module)  # None makes `import pynvml` fail
        fingerprint.cache_clear()

    yield install
    fingerprint.cache_clear()


def test_without_pynvml_the_fingerprint_has_the_cpu_and_library_facts_only(use_nvml: Any) -> None:
    use_nvml(None)
    facts = fingerprint()
    assert "gpu" not in facts
    assert facts["cpu"]["cores"] >= facts["cpu"]["usable_cores"] >= 1 and facts["cpu"]["model"]
    assert facts["libraries"]["numpy"] == __import__("numpy").__version__
    assert facts["libraries"]["python"].count(".") == 2
    assert gpu_monitor("cuda:0") is None and gpu_monitor("cpu") is None
    assert hardware_key(facts, "cuda").startswith(f"{facts['cpu']['model']} x{facts['cpu']['usable_cores']} (")


def test_a_driver_that_fails_to_initialize_is_no_error(use_nvml: Any) -> None:
    use_nvml(fake_nvml([], [], init_fails=True))
    assert "gpu" not in fingerprint() and gpu_monitor("cuda") is None


def test_gpu_facts_come_from_pynvml_and_key_cuda_runtimes(use_nvml: Any) -> None:
    use_nvml(fake_nvml([], []))
    facts = fingerprint()
    assert facts["gpu"] == {
        "names": ["NVIDIA H100 80GB HBM3"] * 2,
        "count": 2,
        "driver": "560.35.03",
        "cuda": "12.6",
    }
    assert hardware_key(facts, "cuda:0") == "NVIDIA H100 80GB HBM3 x2"
    assert hardware_key(facts, "cpu").startswith(facts["cpu"]["model"])


def test_the_monitor_reads_around_a_window_and_keeps_the_worse_reading(use_nvml: Any) -> None:
    use_nvml(fake_nvml([1980, 1410], [0x4, 0x4 | 0x40]))
    monitor = gpu_monitor("cuda")
    assert monitor is not None
    monitor.window_started()
    reading = monitor.window_ended()
    assert reading == DeviceReading(1410, 1980, 61, ("sw_power_cap", "hw_thermal_slowdown"))
    assert reading.throttled


def test_the_monitor_uses_the_older_throttle_reason_api_and_maps_visible_devices(
    use_nvml: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    nvml = fake_nvml([1900], [0x1], event_api=False)
    use_nvml(nvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monitor = gpu_monitor("cuda:1")
    assert monitor is not None and nvml.handles == [5]
    assert monitor.read() == DeviceReading(1900, 1980, 61, ("gpu_idle",))


@pytest.mark.parametrize(
    ("reading", "throttled"),
    [
        (DeviceReading(1980, 1980, 60, ("sw_power_cap",)), False),  # a power cap at full clock is normal load
        (DeviceReading(1500, 1980, 60, ()), False),
        (DeviceReading(1480, 1980, 60, ()), True),  # below 75% of the maximum clock
        (DeviceReading(1980, 1980, 90, ("sw_thermal_slowdown",)), True),
        (DeviceReading(None, None, None, ("hw_power_brake_slowdown",)), True),
        (DeviceReading(), False),
    ],
)
def test_throttled_means_a_throttling_reason_or_a_clock_below_the_threshold(
    reading: DeviceReading, throttled: bool
) -> None:
    assert reading.throttled is throttled


def test_reason_bits_decode_with_unknown_bits_kept() -> None:
    assert decode_reasons(0) == ()
    assert decode_reasons(0x8 | 0x20) == ("hw_slowdown", "sw_thermal_slowdown")
    assert decode_reasons(0x400 | 0x1) == ("gpu_idle", "0x400")
    assert set(telemetry.THROTTLING_REASONS) <= set(telemetry.CLOCK_EVENT_REASONS.values())


def test_gpu_process_memory_is_this_processes_entry_on_the_visible_device(
    use_nvml: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """memory.gpu_process_memory: NVML's usedGpuMemory for our pid, on NVML's index of torch's
    device; None where NVML cannot tell (no entry for us, "not available", a failing query)."""
    from pytest_navigator.measure.memory import gpu_process_memory

    module = fake_nvml([], [])
    listed = {
        0: [types.SimpleNamespace(pid=999, usedGpuMemory=5 * 2**30)],
        1: [
            types.SimpleNamespace(pid=4242, usedGpuMemory=700 * 2**20),
            types.SimpleNamespace(pid=999, usedGpuMemory=1 * 2**30),
            types.SimpleNamespace(pid=4242, usedGpuMemory=None),  # nvidia-ml-py's "not available"
        ],
    }

    def processes(handle: int) -> list[Any]:
        if handle == 7:
            raise NVMLError("Not Supported")
        return listed.get(handle, [])

    module.nvmlDeviceGetComputeRunningProcesses = processes  # type: ignore[attr-defined]
    use_nvml(module)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_process_memory("cuda:1", pid=4242) == 700 * 2**20
    assert gpu_process_memory("cuda", pid=4242) is None  # on GPU 0 only another process runs
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")  # torch's cuda:0 is NVML's device 1
    assert gpu_process_memory("cuda", pid=4242) == 700 * 2**20
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert gpu_process_memory("cuda:0", pid=4242) is None  # the query failed: no figure, no error
    listed[1] = [types.SimpleNamespace(pid=4242, usedGpuMemory=2**64 - 1)]  # pynvml without the None mapping
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert gpu_process_memory("cuda:0", pid=4242) is None
    use_nvml(None)
    assert gpu_process_memory("cuda:0", pid=4242) is None


def _cpuinfo(flags: str, model: str = "17") -> str:
    block = (
        f"processor\t: {{n}}\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: {model}\n"
        f"model name\t: AMD EPYC\nflags\t\t: fpu sse2 {flags}\n\n"
    )
    return block.format(n=0) + block.format(n=1)


def test_one_cpu_name_on_two_generations_gives_two_hardware_keys_and_old_files_still_load(tmp_path: Path) -> None:
    """Virtual machines call AVX2 and AVX-512 hosts both "AMD EPYC": their kernels, speed and even a
    built model's bytes differ, so the timed key tells them apart; a file written under the old,
    coarser key is still read, and the verdict says where its baseline came from."""
    from pytest_navigator.gate.baselines import BaselineStore
    from pytest_navigator.gate.entries import BaselineEntry
    from pytest_navigator.measure.telemetry import coarse_key, cpu_generation

    wide = cpu_generation(_cpuinfo("avx2 fma avx512f avx512bw avx512vl avx512dq"))
    narrow = cpu_generation(_cpuinfo("avx2 fma", model="1"))
    assert wide == {"vendor": "AuthenticAMD", "family": "25", "model": "17", "isa": "AVX512"}
    assert narrow["isa"] == "AVX2" and cpu_generation(_cpuinfo("avx512f amx_tile"))["isa"] == "AMX"
    facts = {"cpu": {"model": "AMD EPYC", "cores": 2, "usable_cores": 2}}
    keys = {hardware_key({"cpu": {**facts["cpu"], "generation": g}}, "cpu") for g in (wide, narrow)}
    assert keys == {
        "AMD EPYC x2 (AuthenticAMD family 25 model 17, AVX512)",
        "AMD EPYC x2 (AuthenticAMD family 25 model 1, AVX2)",
    }
    assert {coarse_key(k) for k in keys} == {"AMD EPYC x2"} and hardware_key(facts, "cpu") == "AMD EPYC x2"
    assert coarse_key("AMD EPYC x2") is None and coarse_key("NVIDIA H100 80GB HBM3 x2") is None
    # a baseline file from before: keyed "AMD EPYC x2", still judged against, said to be coarser
    old = {"throughput": 1000.0, "latency_ms": {"p50": 1.0, "p90": 1.0, "p95": 1.0, "p99": 1.0}}
    stored = {
        "schema": 1,
        "model": {"name": "m.onnx", "sha256": "a" * 64},
        "entries": {"AMD EPYC x2": {"r": {"1": old}}},
    }
    (tmp_path / f"m-{'a' * 12}.json").write_text(json.dumps(stored))
    loaded = BaselineStore(tmp_path).load("m.onnx", "a" * 64)
    fine = sorted(keys)[0]
    assert loaded.lookup((fine, "r", 1)) == (BaselineEntry.from_dict(old), "AMD EPYC x2")
    assert loaded.runtime_entries(fine, "r") == {"1": BaselineEntry.from_dict(old)}
    assert loaded.lookup((fine, "other", 1)) == (None, fine)


def test_a_baseline_under_the_coarser_key_is_judged_and_said_to_be_coarser() -> None:
    from pytest_navigator.config import ProfilerConfig
    from pytest_navigator.gate.baselines import BaselineFile
    from pytest_navigator.gate.entries import BaselineEntry
    from pytest_navigator.gate.policy import judge
    from pytest_navigator.gate.thresholds import parse_thresholds
    from pytest_navigator.measure.profiler import BatchProfile, RuntimeProfile, WindowResult

    windows = tuple(WindowResult(1, (1.0,) * 30, 30.0) for _ in range(3))
    batch = BatchProfile(1, "stable", 1.0, windows, (0, 1, 2))
    profile = RuntimeProfile("r", (batch,), "", ProfilerConfig())
    old = {"throughput": 1000.0, "latency_ms": {"p50": 1.0, "p90": 1.0, "p95": 1.0, "p99": 1.0}}
    stored = BaselineFile(Path("b.json"), {}, {"AMD EPYC x2": {"r": {"1": BaselineEntry.from_dict(old)}}})
    fine = "AMD EPYC x2 (AuthenticAMD family 25 model 17, AVX512)"
    found = judge("r", profile, stored, parse_thresholds(None), hardware=fine, precision="fp32", facts={})
    (comparison,) = found.comparisons
    assert comparison.figures["throughput"][0] == 1000.0
    assert "against a baseline recorded under the coarser hardware key 'AMD EPYC x2'" in comparison.reason
    assert list(found.entries) == [(fine, "r", 1)]  # an update records it under the finer key
