"""The registry and the runtimes' own behaviour, without pytest sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_navigator.check.strategies import random_samples
from pytest_navigator.errors import RuntimeBuildError, RuntimeSelectionError
from pytest_navigator.model.loader import load
from pytest_navigator.model.spec import parse_io_spec
from pytest_navigator.runtimes import BuildContext, CallableRunner, Registry, RuntimeDefinition, default_registry
from pytest_navigator.runtimes.onnx_runtimes import OnnxRuntimeRunner
from pytest_navigator.runtimes.torch_runtimes import name_outputs
from pytest_navigator.session import NavigatorSession
from pytest_navigator.settings import Settings


def test_registry_lists_cpu_runtimes_first_and_every_gpu_runtime() -> None:
    names = default_registry().names
    assert names[:8] == (
        "torch-cpu",
        "torchscript-cpu",
        "torch-compile-cpu",
        "torch-aoti-cpu",
        "onnxruntime-cpu",
        "openvino-cpu",
        "onnxruntime-int8-cpu",  # opt-in: after the CPU runtimes a run tests by default
        "onnxruntime-int8-dynamic-cpu",
    )
    assert set(names[8:]) == {
        "torch-cuda",
        "torchscript-cuda",
        "torch-compile-cuda",
        "torch-aoti-cuda",
        "onnxruntime-cuda",
        "onnxruntime-tensorrt",
        "tensorrt",
        "tensorrt-fp16",
    }


def test_registry_refuses_duplicates_and_lists_known_names() -> None:
    registry = Registry([RuntimeDefinition("a", lambda m, c: None)])  # type: ignore[arg-type, return-value]
    with pytest.raises(RuntimeSelectionError, match="'a' is already registered"):
        registry.register(RuntimeDefinition("a", lambda m, c: None))  # type: ignore[arg-type, return-value]
    with pytest.raises(RuntimeSelectionError, match="unknown runtime 'b', 'c'; known runtimes: a"):
        registry.select(["a", "b", "c"])
    assert [d.name for d in registry.select(["a", "a"])] == ["a"]


def test_torch_compile_does_not_apply_to_torchscript(tiny_models: dict[str, Path]) -> None:
    model = load(tiny_models[".pt"], user_specs=[parse_io_spec(["input:float32[N,8]"], "cli")])
    reason = default_registry().get("torch-compile-cpu").unavailable_reason(model)
    assert reason is not None and "cannot compile a TorchScript module" in reason
    assert default_registry().get("torchscript-cpu").unavailable_reason(model) is None


def test_torch_runtimes_do_not_apply_to_onnx(tiny_models: dict[str, Path]) -> None:
    model = load(tiny_models[".onnx"])
    reason = default_registry().get("torch-cpu").unavailable_reason(model)
    assert reason == "torch-cpu builds from torch, torch-exportedprogram, torchscript models; mlp.onnx is onnx"


@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")  # ORT says so, then falls back
def test_onnxruntime_refuses_a_silent_fallback_to_cpu(tiny_models: dict[str, Path]) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider, so it would not fall back")
    model = load(tiny_models[".onnx"])
    with pytest.raises(
        RuntimeBuildError,
        match=r"did not activate CUDAExecutionProvider \(active: CPUExecutionProvider\); it would silently run on the CPU",
    ):
        OnnxRuntimeRunner("onnxruntime-cuda", model, model.path, "CUDAExecutionProvider")


def test_name_outputs_flattens_nested_results() -> None:
    import torch

    named = name_outputs({"logits": torch.ones(2), "extra": (torch.zeros(1), torch.ones(1, dtype=torch.bfloat16))})
    assert list(named) == ["logits", "extra_0", "extra_1"]
    assert named["extra_1"].dtype == np.float32


def test_cpu_runners_touch_no_cuda_api(tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a CPU runner called torch.cuda")

    monkeypatch.setattr(torch.cuda, "synchronize", forbidden)
    monkeypatch.setattr(torch.cuda, "current_stream", forbidden)
    session = NavigatorSession(
        Settings(models=(tiny_models[".pt2"],), runtimes=("torch-cpu", "torchscript-cpu", "onnxruntime-cpu")),
        default_registry(),
    )
    model = session.load_models()[0]
    for runtime in ("torch-cpu", "torchscript-cpu", "onnxruntime-cpu"):
        runner = session.runner(model, runtime)
        runner.infer(random_samples(model.io_spec, [3])[0])
        runner.synchronize()


def test_build_errors_are_remembered_per_runtime(tiny_models: dict[str, Path]) -> None:
    calls = []

    def broken(model: object, ctx: BuildContext) -> CallableRunner:
        calls.append(1)
        raise OSError("no such server")

    registry = default_registry()
    registry.register(RuntimeDefinition("broken", broken))
    session = NavigatorSession(Settings(models=(tiny_models[".pt2"],)), registry)
    model = session.load_models()[0]
    for _ in range(2):
        with pytest.raises(RuntimeBuildError, match=r"building broken for mlp\.pt2 failed: OSError: no such server"):
            session.runner(model, "broken")
    assert calls == [1]
    assert session.check_correctness(model, "torch-cpu").passed  # others go on


def test_random_samples_follow_the_spec() -> None:
    spec = parse_io_spec(["ids:int64[N,seq=2..6]{0..9}", "mask:bool[N,seq=2..6]", "x:float32[N,3]{-1..1}"], "cli")
    samples = random_samples(spec, [1, 5], per_batch=3, seed=1)
    assert [s["ids"].shape[0] for s in samples] == [1, 1, 1, 5, 5, 5]
    for sample in samples:
        assert sample["ids"].dtype == np.int64 and sample["mask"].dtype == np.bool_ and sample["x"].dtype == np.float32
        assert sample["ids"].shape[1] == sample["mask"].shape[1] and 2 <= sample["ids"].shape[1] <= 6  # a shared axis
        assert sample["ids"].min() >= 0 and sample["ids"].max() <= 9
        assert np.abs(sample["x"]).max() <= 1
    again = random_samples(spec, [1, 5], per_batch=3, seed=1)
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(samples, again, strict=True))


def test_onnx_runtimes_name_the_missing_exporter_package(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from pytest_navigator.runtimes import onnx_runtimes

    model = load(tiny_models[".pt2"])
    found = importlib.util.find_spec
    missing: set[str] = set()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in missing else found(name, *a))
    assert onnx_runtimes.exporter_unavailable(model) is None
    missing.add("onnxscript")
    assert "onnxscript is not installed" in (onnx_runtimes.exporter_unavailable(model) or "")
    missing.add("onnx")
    assert "onnx package is not installed" in (
        default_registry().get("onnxruntime-cpu").unavailable_reason(model) or ""
    )
