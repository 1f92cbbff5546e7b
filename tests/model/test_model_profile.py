"""The model profile (parameters, FLOPs per request), and --navigator-constraints on it end to end
(the constraints themselves: tests/gate/test_constraints.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_navigator.model import profile as model_profile
from pytest_navigator.model.loader import load


def _torch_counts(module: object, *args: object) -> tuple[int, int]:
    return model_profile.torch_flops(module, args, {}), sum(p.numel() for p in module.parameters())  # type: ignore[attr-defined]


def test_torch_counter_matches_hand_computed_linear_conv_and_mlp() -> None:
    import torch

    torch.manual_seed(0)
    # Linear 8 -> 4 at batch 3: 3 x 4 outputs of 8 multiply-adds, 2 FLOPs each; 8*4 weights + 4 biases
    assert _torch_counts(torch.nn.Linear(8, 4), torch.randn(3, 8)) == (2 * 3 * 4 * 8, 36)
    # Conv2d 3 -> 5, 3x3, padding 1, on 1x3x6x6: 5*6*6 outputs of 3*3*3 multiply-adds
    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    assert _torch_counts(conv, torch.randn(1, 3, 6, 6)) == (2 * 5 * 6 * 6 * 27, 5 * 27 + 5)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    assert _torch_counts(mlp, torch.randn(2, 8)) == (2 * 2 * (8 * 16 + 16 * 4), 8 * 16 + 16 + 16 * 4 + 4)


def _graph(nodes: list, inputs: list, initializers: dict[str, np.ndarray], output: str) -> object:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, name) for name, a in initializers.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_counter_matches_hand_computed_gemm_matmul_conv_and_names_what_it_cannot_count() -> None:
    from onnx import helper

    w = np.ones((4, 8), np.float32)
    gemm = _graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
        [("x", ["N", 8])],
        {"w": w, "b": np.ones(4, np.float32)},
        "y",
    )
    assert model_profile.onnx_flops(gemm, {"x": (3, 8)}) == (2 * 3 * 4 * 8, ())
    assert model_profile.onnx_parameters(gemm) == 36
    matmul = _graph([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", ["N", 8])], {"w": w.T.copy()}, "y")
    assert model_profile.onnx_flops(matmul, {"x": (5, 8)}) == (2 * 5 * 4 * 8, ())
    conv = _graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["y"], ["z"])],
        [("x", ["N", 3, 6, 6])],
        {"w": np.ones((5, 3, 3, 3), np.float32), "b": np.ones(5, np.float32)},
        "z",
    )
    assert model_profile.onnx_flops(conv, {"x": (2, 3, 6, 6)}) == (2 * 2 * 5 * 6 * 6 * 27, ())
    assert model_profile.onnx_parameters(conv) == 5 * 27 + 5
    transposed = _graph(
        [helper.make_node("ConvTranspose", ["x", "w"], ["y"])],
        [("x", ["N", 3, 6, 6])],
        {"w": np.ones((3, 5, 3, 3), np.float32)},
        "y",
    )
    assert model_profile.onnx_flops(transposed, {"x": (1, 3, 6, 6)}) == (0, ("ConvTranspose",))


def test_both_counters_agree_on_the_same_model_exported(tiny_models: dict[str, Path]) -> None:
    """The tiny MLP as .pt2 (FlopCounterMode) and as its ONNX export (graph counter): the same figures."""
    from pytest_navigator.check.strategies import profiling_inputs

    pt2, onnx_model = load(tiny_models[".pt2"]), load(tiny_models[".onnx"])
    samples = {b: profiling_inputs(pt2.io_spec, b)[0] for b in (1, 4)}
    torch_side, onnx_side = model_profile.profile_model(pt2, samples), model_profile.profile_model(onnx_model, samples)
    assert torch_side.counter == "torch.utils.flop_counter" and onnx_side.counter == "onnx graph"
    assert torch_side.flops == onnx_side.flops and torch_side.flops[4] == 4 * torch_side.flops[1] > 0
    assert torch_side.parameters == onnx_side.parameters > 0
    assert onnx_side.uncounted == ()


class _Allocating:
    """A runner whose requests each hold `mib x batch size` MiB at once (touched, so resident)."""

    device = "cpu"

    def __init__(self, mib: int) -> None:
        self.mib = mib

    def prepare(self, sample: dict[str, np.ndarray]) -> int:
        return len(next(iter(sample.values())))

    def run(self, batch: int) -> int:
        held = np.ones(self.mib * batch * 2**20 // 8)
        return int(held[-1])

    def synchronize(self) -> None:
        pass


def test_peak_rss_is_each_batch_sizes_own_and_sizes_parse() -> None:
    from pytest_navigator.measure.memory import Peak, parse_bytes, peak_memory

    inputs = {size: [{"x": np.zeros((size, 2), np.float32)}] for size in (1, 4)}
    peaks = peak_memory(_Allocating(64), inputs.__getitem__, [4, 1])
    assert peaks[4].rss_scope == peaks[1].rss_scope == "since reset"  # Linux resets the high-water mark
    # batch 4 held 256 MiB at once, batch 1 64 MiB: the reset makes batch 1's peak its own, ~192 MiB lower
    assert peaks[4].rss - peaks[1].rss > 150 * 2**20, peaks  # type: ignore[operator]
    assert peaks[4].cuda is peaks[4].gpu_process is peaks[4].engine is None  # a CPU runner without engine memory
    sized = _Allocating(1)
    sized.device_memory_bytes = lambda size: 1000 * size  # type: ignore[attr-defined]  # as TensorRTRunner has it
    assert [peak.engine for peak in peak_memory(sized, inputs.__getitem__, [1, 4]).values()] == [1000, 4000]
    assert peak_memory(object(), inputs.__getitem__, [1])[1] == Peak(
        None, error=peak_memory(object(), inputs.__getitem__, [1])[1].error
    )
    assert [parse_bytes(t) for t in ("512MiB", "2GiB", "1.5GB", "3e8", "100b", "lots")] == [
        512 * 2**20,
        2 * 2**30,
        1.5e9,
        3e8,
        100.0,
        None,
    ]


_OTHER = """
import time

from pytest_navigator.runtimes import CallableRunner, RuntimeDefinition
from pytest_navigator.runtimes.torch_runtimes import build_eager


def quick(model, ctx):
    eager = build_eager(model, None)

    def run(sample):
        time.sleep(0.001)
        return eager.infer(sample)

    return CallableRunner("quick", run, model.io_spec)


def pytest_navigator_register_runtimes(registry, config):
    registry.register(RuntimeDefinition("quick", quick))
"""
_QUICK = (
    "--navigator-runtimes=quick",
    "--navigator-examples=2",
    "--navigator-window=10",
    "--navigator-stability=50",
    "--navigator-interference=report",
)


def test_constraints_fail_with_figures_read_the_baseline_and_the_profile_is_reported(
    pytester: pytest.Pytester, tiny_models: dict[str, Path]
) -> None:
    shutil.copy(tiny_models[".pt2"], pytester.path / "mlp.pt2")
    shutil.copy(tiny_models[".pt2"].with_name("mlp.navigator.toml"), pytester.path)
    pytester.makeconftest(_OTHER)
    args = ("--navigator-model=mlp.pt2", *_QUICK, "--navigator-batch-sizes=1,2")
    recorded = pytester.runpytest(*args, "--update-baselines", "--navigator-report=run.json")
    recorded.assert_outcomes(passed=2)
    recorded.stdout.fnmatch_lines(
        ["mlp.pt2 model profile: * parameters; FLOPs per sample (torch.utils.flop_counter): batch 1: *, batch 2: *"]
    )
    report = json.loads((pytester.path / "run.json").read_text())
    profile = report["models"][0]["profile"]
    assert profile["counter"] == "torch.utils.flop_counter" and profile["flops"]["2"] == 2 * profile["flops"]["1"] > 0
    (baseline,) = (pytester.path / "baselines").glob("mlp-*.json")
    entries = next(iter(json.loads(baseline.read_text())["entries"].values()))["quick"]
    assert entries["1"]["model"] == {"flops": profile["flops"]["1"], "parameters": profile["parameters"]}

    assert entries["1"]["peak_memory"]["rss_bytes"] > 10 * 2**20  # a Python with torch: tens of MiB at least
    assert report["models"][0]["runtimes"][0]["profile"]["batches"][0]["peak_memory"]["rss_scope"] == "since reset"

    failed = pytester.runpytest(
        *args, "--navigator-constraints=flops=50%,params=10,peak_rss=1MiB", "-k", "test_performance"
    )
    failed.assert_outcomes(failed=1)
    flops = profile["flops"]["1"]
    failed.stdout.fnmatch_lines(
        [
            "*quick on mlp.pt2 violates its constraints (against *mlp-*.json):",
            f"*FLOPs per request at batch size 1: {model_profile.si(flops)} -> {model_profile.si(flops)}, above the limit * (flops=50%)",
            f"*parameters: {model_profile.si(profile['parameters'])} -> *, above the limit 10 (params=10)",
            "*peak RSS at batch size 1: * MiB -> * MiB, above the limit 1.0 MiB (peak_rss=1.0 MiB)",
        ]
    )
    # the marker's twin, which also takes the thresholds the gate reads (not the profiler)
    pytester.makepyfile(
        test_marked="""
import pytest

@pytest.mark.navigator(constraints={"params": "0.01k"}, thresholds={"throughput": "10%"})
def test_mine(navigator_profile):
    navigator_profile("quick")
"""
    )
    marked = pytester.runpytest(*args, "test_marked.py", "-k", "test_mine")
    marked.assert_outcomes(failed=1)
    marked.stdout.fnmatch_lines(["*parameters: * -> *, above the limit 10 (params=10)"])


def test_the_profile_counts_the_profilers_first_input_without_drawing_the_rest() -> None:
    """profile_for draws only the first of profiling_inputs(b): the same stream (seeded by the batch
    size), so the FLOPs are counted on the very request the profiler times first."""
    import numpy as np

    from pytest_navigator.model.draws import profiling_inputs, random_samples
    from pytest_navigator.model.spec import parse_io_spec

    spec = parse_io_spec(["x:float32[N,3,8,8]", "ids:int64[N,5]{0..9}"], "test")
    for batch in (1, 4, 16):
        first, alone = profiling_inputs(spec, batch)[0], random_samples(spec, [batch], seed=batch)[0]
        assert first.keys() == alone.keys() and all(np.array_equal(first[k], alone[k]) for k in first)


def test_a_past_runs_flop_counts_are_restored_and_only_new_sizes_counted(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_navigator.model import profile as profile_module
    from pytest_navigator.runtimes import default_registry
    from pytest_navigator.session import NavigatorSession
    from pytest_navigator.settings import Settings

    counted: list[list[int]] = []
    real = profile_module.profile_model

    def spy(model: Any, samples: dict[int, Any]) -> Any:
        counted.append(sorted(samples))
        return real(model, samples)

    monkeypatch.setattr(profile_module, "profile_model", spy)

    def run(cache: Path | None, sizes: list[int]) -> Any:
        session = NavigatorSession(Settings(models=(tiny_models[".pt2"],), cache_dir=cache), default_registry())
        (model,) = session.load_models()
        found = session.model_profile(model, sizes)
        return found, session.results.models[model.path].profile

    first, _ = run(tmp_path / "cache", [1, 4])
    again, shown = run(tmp_path / "cache", [1])
    assert counted == [[1, 4]] and again.flops == {1: first.flops[1]}  # restored; only the asked size shown
    assert set(shown["flops"]) == {"1"}
    run(tmp_path / "cache", [4, 8])
    assert counted == [[1, 4], [8]]  # 4 restored, 8 counted and kept
    run(tmp_path / "cache", [8])
    run(None, [1])
    assert counted == [[1, 4], [8], [1]]  # no cache: counted every run
