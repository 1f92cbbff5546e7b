"""The CUDA runtimes end to end. Each test skips with the reason where its GPU stack is missing
(no CUDA device, no onnxruntime-gpu, no TensorRT); on a CUDA machine: `pytest -m gpu -rs`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_navigator.check.strategies import random_samples
from pytest_navigator.config import ProfilerConfig
from pytest_navigator.runtimes import default_registry
from pytest_navigator.session import NavigatorSession
from pytest_navigator.settings import Settings


def _missing(runtime: str, model: Path) -> str | None:
    from pytest_navigator.model.loader import load

    return default_registry().get(runtime).unavailable_reason(load(model))


def _session(model: Path, cache: Path, **runtime_options: dict[str, str]) -> NavigatorSession:
    session = NavigatorSession(
        Settings(models=(model,), cache_dir=cache, runtime_options=runtime_options, examples=4),
        default_registry(),
    )
    session.load_models()
    return session


pytestmark = pytest.mark.gpu

QUICK = ProfilerConfig(measurement_request_count=20, stability_percentage=50, max_trials=10, batch_sizes=(1, 4))


@pytest.mark.parametrize(
    ("runtime", "options"),
    [
        ("torch-cuda", {}),
        ("torch-cuda", {"tf32": "true"}),
        ("torchscript-cuda", {}),
        ("torch-compile-cuda", {}),
        ("torch-compile-cuda", {"cuda_graphs": "true"}),
        ("torch-compile-cuda", {"mode": "reduce-overhead", "static_shapes": "true"}),
        ("torch-aoti-cuda", {}),
        ("onnxruntime-cuda", {}),
        ("onnxruntime-tensorrt", {}),
        ("tensorrt", {}),
        ("tensorrt-fp16", {"profile_per_batch_size": "true"}),
    ],
)
def test_gpu_runtime_checks_and_profiles_on_its_own_stream(
    tiny_models: dict[str, Path], tmp_path: Path, runtime: str, options: dict[str, str]
) -> None:
    reason = _missing(runtime, tiny_models[".pt2"])
    if reason:
        pytest.skip(f"{runtime}: {reason}")
    session = _session(tiny_models[".pt2"], tmp_path / "cache", **({runtime: options} if options else {}))
    (model,) = session.models.values()
    rid = session.builds.runtime_id(runtime)
    report = session.check_correctness(model, rid)
    assert report.passed and report.samples >= 4
    runner = session.runner(model, rid)
    assert runner.device.startswith("cuda")
    stream = getattr(runner, "stream", None)
    if stream is not None:  # torch and TensorRT runners queue on their own stream
        import torch

        assert stream != torch.cuda.current_stream()
    profile = session.profile(model, rid, QUICK)
    assert [b.batch_size for b in profile.batches] == [1, 4]
    assert all(b.status == "stable" and b.throughput > 0 for b in profile.batches)
    session.close()


def test_tensorrt_engines_are_restored_from_the_cache(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    reason = _missing("tensorrt", tiny_models[".pt2"])
    if reason:
        pytest.skip(f"tensorrt: {reason}")
    sample = random_samples(_session(tiny_models[".pt2"], tmp_path / "c").load_models()[0].io_spec, [3], seed=1)[0]
    outputs, lines = [], []
    for _ in range(2):
        session = _session(tiny_models[".pt2"], tmp_path / "cache")
        (model,) = session.models.values()
        outputs.append(session.runner(model, "tensorrt").infer(sample))
        lines.append(session.results.runtimes[(model.path, "tensorrt")].artifacts)
    assert any(line.startswith("built tensorrt-engine") for line in lines[0])
    assert any(line.startswith("restored tensorrt-engine") for line in lines[1])
    for name in outputs[0]:
        np.testing.assert_array_equal(outputs[0][name], outputs[1][name])


def test_gpu_telemetry_reads_clocks_around_windows() -> None:
    from pytest_navigator.measure.telemetry import gpu_monitor

    monitor = gpu_monitor("cuda:0")
    if monitor is None:
        pytest.skip("no NVIDIA driver or pynvml: no GPU telemetry here")
    monitor.window_started()
    reading = monitor.window_ended()
    assert reading is not None and (reading.max_sm_clock_mhz or 0) > 0 and (reading.sm_clock_mhz or 0) > 0


@pytest.mark.parametrize("runtime", ["torch-cuda", "tensorrt"])
def test_gpu_memory_figures_and_a_trace_with_kernel_events(
    tiny_models: dict[str, Path], tmp_path: Path, runtime: str
) -> None:
    """Issue 20 on a GPU: the untimed memory pass gives the allocator's peak (and NVML's process
    figure with nvidia-ml-py, TensorRT's engine memory), and the trace holds the device's work:
    CUDA kernels from torch.profiler, layers from TensorRT's IProfiler."""
    import json

    from pytest_navigator.measure.memory import peak_memory
    from pytest_navigator.measure.trace import trace_runner

    reason = _missing(runtime, tiny_models[".pt2"])
    if reason:
        pytest.skip(f"{runtime}: {reason}")
    session = _session(tiny_models[".pt2"], tmp_path / "cache")
    (model,) = session.models.values()
    runner = session.runner(model, runtime)
    peaks = peak_memory(runner, lambda size: session.profiling_inputs(model, size), [1, 4])
    assert all(p.error == "" and p.rss and p.cuda is not None for p in peaks.values()), peaks
    if runtime == "torch-cuda":
        assert peaks[4].cuda > 0  # type: ignore[operator]
    else:
        assert all(p.engine is not None for p in peaks.values()), peaks
    try:
        import pynvml  # noqa: F401
    except ImportError:
        pass
    else:
        assert all((p.gpu_process or 0) > 0 for p in peaks.values()), peaks  # at least the CUDA context
    written = trace_runner(runner, lambda size: session.profiling_inputs(model, size), [4], tmp_path / "trace")
    events = json.loads(Path(written[0]).read_text())["traceEvents"]
    categories = {str(e.get("cat", "")).lower() for e in events}
    assert "kernel" in categories if runtime == "torch-cuda" else "tensorrt layer" in categories, sorted(categories)
    session.close()
