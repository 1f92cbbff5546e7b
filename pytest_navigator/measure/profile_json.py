"""A RuntimeProfile as plain JSON-ready values and back: every window kept (xdist workers hand their
profiles to the controller this way, and RunResults stores them)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from pytest_navigator.config import ProfilerConfig
from pytest_navigator.measure.interference import CpuReading
from pytest_navigator.measure.profiler import BatchProfile, RuntimeProfile, WindowResult
from pytest_navigator.measure.telemetry import DeviceReading


def profile_to_dict(profile: RuntimeProfile) -> dict[str, Any]:
    """Every measured value, JSON-ready (xdist workers send profiles to the controller this way)."""
    return {
        "runtime": profile.runtime,
        "stop_reason": profile.stop_reason,
        "config": profile.config.to_dict(),
        "calibration": profile.calibration,
        "thread_option": profile.thread_option,
        "tool": profile.tool,
        "batches": [
            {
                "batch_size": b.batch_size,
                "status": b.status,
                "cold_start_ms": b.cold_start_ms,
                "error": b.error,
                "reason": b.reason,
                "stable_windows": list(b.stable_windows),
                "instructions": list(b.instructions),
                "peak_rss": b.peak_rss,
                "peak_cuda": b.peak_cuda,
                "rss_scope": b.rss_scope,
                "gpu_process": b.gpu_process,
                "engine_memory": b.engine_memory,
                "runs": [dict(r) for r in b.runs],
                "windows": [
                    {
                        "latencies_ms": list(w.latencies_ms),
                        "wall_ms": w.wall_ms,
                        "device": None if w.device is None else asdict(w.device),
                        "cpu": None if w.cpu is None else asdict(w.cpu),
                    }
                    for w in b.windows
                ],
            }
            for b in profile.batches
        ],
    }


def profile_from_dict(data: dict[str, Any]) -> RuntimeProfile:
    """The inverse of profile_to_dict."""
    batches = []
    for b in data["batches"]:
        windows = tuple(
            WindowResult(
                b["batch_size"],
                tuple(w["latencies_ms"]),
                w["wall_ms"],
                None if w["device"] is None else _reading(w["device"]),
                None if w.get("cpu") is None else CpuReading(**w["cpu"]),
            )
            for w in b["windows"]
        )
        batches.append(
            BatchProfile(
                b["batch_size"],
                b["status"],
                b["cold_start_ms"],
                windows,
                tuple(b["stable_windows"]),
                b["error"],
                b.get("reason", ""),
                tuple(b.get("instructions", ())),
                b.get("peak_rss"),
                b.get("peak_cuda"),
                b.get("rss_scope", ""),
                b.get("gpu_process"),
                b.get("engine_memory"),
                tuple(dict(r) for r in b.get("runs", ())),
            )
        )
    return RuntimeProfile(
        data["runtime"],
        tuple(batches),
        data["stop_reason"],
        ProfilerConfig.from_dict(data["config"]),
        data["calibration"],
        data.get("thread_option"),
        data.get("tool"),
    )


def _reading(values: dict[str, Any]) -> DeviceReading:
    return DeviceReading(**{**values, "reasons": tuple(values.get("reasons", ()))})
