"""End to end on the demo models: what README command 1 does, on every CPU runtime."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import zoo
from pytest_navigator.config import Format
from pytest_navigator.runtimes import default_registry

#: The default set of an exported program (the demos are .pt2)
CPU = [d.name for d in default_registry() if d.device == "cpu" and d.default_for(Format.TORCH_EXPORTEDPROGRAM)]
GPU = [d.name for d in default_registry() if d.device != "cpu" and d.default_for(Format.TORCH_EXPORTEDPROGRAM)]


#: The default profiler settings take minutes on the demo and gate on 10% stability; this suite checks
#: that profiling works end to end, so it takes short windows and a tolerance no noisy CI machine breaks.
LENIENT_PROFILER = ("--navigator-window=10", "--navigator-stability=50", "--navigator-max-trials=20")


def _cuda_missing() -> bool:
    import torch

    return not torch.cuda.is_available()


@pytest.mark.skipif(not _cuda_missing(), reason="counts GPU runtimes as skipped, which they are not on a GPU machine")
def test_transformer_demo_passes_every_cpu_runtime(
    pytester: pytest.Pytester, transformer_models: dict[str, Path]
) -> None:
    shutil.copy(transformer_models[".pt2"], pytester.path / "encoder.pt2")
    shutil.copy(transformer_models[".pt2"].with_name("encoder.navigator.toml"), pytester.path)
    result = pytester.runpytest("--navigator-model=encoder.pt2", "--navigator-batch-sizes=1,3", *LENIENT_PROFILER, "-v")
    result.assert_outcomes(passed=2 * len(CPU), skipped=2 * len(GPU))
    result.stdout.fnmatch_lines([f"*encoder.pt2::test_correctness[[]{name}[]] PASSED*" for name in CPU])
    result.stdout.fnmatch_lines([f"*encoder.pt2::test_performance[[]{name}[]] PASSED*" for name in CPU])
    for name in CPU:  # exactly the requested batch sizes, each measured
        result.stdout.fnmatch_lines([f"encoder.pt2 *{name} *1 *stable *", f"encoder.pt2 *{name} *3 *stable *"])


def test_transformer_onnx_demo(pytester: pytest.Pytester, transformer_models: dict[str, Path]) -> None:
    shutil.copy(transformer_models[".onnx"], pytester.path / "encoder.onnx")
    result = pytester.runpytest(
        "--navigator-model=encoder.onnx",
        "--navigator-runtimes=onnxruntime-cpu",
        "--navigator-input=input_ids:int64[N,32]{0..999}",
        "--navigator-no-profile",
    )
    result.assert_outcomes(passed=1)


@pytest.mark.isolated
@pytest.mark.skipif(not _cuda_missing(), reason="counts GPU runtimes as skipped, which they are not on a GPU machine")
def test_readme_command_one(pytester: pytest.Pytester) -> None:
    """The zoo CLI writes the ResNet demo; every CPU runtime passes, GPU ones skip with reasons."""
    made = subprocess.run(
        [sys.executable, "-m", "harness.zoo", "resnet", "--out", str(pytester.path / "demo" / "resnet.pt2")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    result = pytester.runpytest("--navigator-model=demo/resnet.pt2", "-rs", *LENIENT_PROFILER)
    result.assert_outcomes(passed=2 * len(CPU), skipped=2 * len(GPU))
    result.stdout.fnmatch_lines(
        [
            "*navigator runtimes*",
            "*navigator performance*",
            "CPU: *",
            "model *runtime *batch *status *samples/s *p50 ms *p95 ms *p99 ms *cold ms *windows *vs baseline *verdict *MDE",
            "resnet.pt2 *onnxruntime-cpu *1 *stable *",
            "*max throughput: * at batch *; min latency: * at batch *",
            "*SKIPPED*tensorrt: tensorrt is not installed*",
        ]
    )


@pytest.mark.parametrize("name", sorted(zoo.ZOO))
def test_demo_models_are_calibrated(name: str) -> None:
    """Outputs far from zero and not constant, so a tolerance check of them means something."""
    import torch

    model = zoo.build(name)
    with torch.inference_mode():
        outputs = model(*zoo.ZOO[name].example(4))
    for output in outputs if isinstance(outputs, tuple) else (outputs,):
        values = output.numpy()
        assert np.isfinite(values).all()
        assert 0.05 < float(np.abs(values).mean()) < 100, float(np.abs(values).mean())
        assert float(values.std()) > 0.01
