"""The layer-wise diagnosis of int8 graphs, on tiny models quantized for real by ONNX Runtime: an honest
quantization names no layer, one broken on purpose names the broken layer first."""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from torch import nn

from pytest_navigator.config import Sample
from pytest_navigator.runtimes.quantized_layers import FLOOR_DB, diagnose, drops, fused_kernel_sqnr_db, layer_errors

CNN_INPUT = (1, 3, 16, 16)
MLP_INPUT = (2, 32)


class TinyCnn(nn.Module):
    """Conv, depthwise Conv, pointwise Conv, strided Conv, pooling, Linear: the dynamo exporter names
    the Convs node_conv2d ... node_conv2d_3 and their Relu outputs relu ... relu_3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1, stride=2)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.dw(x))
        x = torch.relu(self.pw(x))
        x = torch.relu(self.conv3(x))
        return self.fc(x.mean((2, 3)))


class _Samples(CalibrationDataReader):
    def __init__(self, samples: list[Sample]) -> None:
        self._samples: Iterator[Sample] = iter(samples)

    def get_next(self) -> Sample | None:
        return next(self._samples, None)


def _samples(shape: tuple[int, ...], count: int, seed: int) -> list[Sample]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(count)]


def _export(module: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    with warnings.catch_warnings():
        # torch's own export code trips its pytree deprecation; nothing this test can change
        warnings.filterwarnings(
            "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
        )
        torch.onnx.export(
            module.eval(), (torch.randn(shape),), str(path), dynamo=True, external_data=False,
            input_names=["x"], output_names=["y"], verbose=False,
        )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny CNN in fp32 and quantized static QDQ, int8 per-channel, calibrated on random inputs."""
    folder = tmp_path_factory.mktemp("cnn")
    torch.manual_seed(0)
    fp32 = _export(TinyCnn(), CNN_INPUT, folder / "fp32.onnx")
    quantized = folder / "int8.onnx"
    quantize_static(
        fp32, quantized, _Samples(_samples(CNN_INPUT, 8, seed=1)), quant_format=QuantFormat.QDQ, per_channel=True
    )
    return fp32, quantized


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An MLP in fp32 and quantized dynamically. uint8 weights: int8 weights with uint8 activations go
    through VPMADDUBSW on AVX2 CPUs without VNNI, which saturates (12-18 dB per layer there, 41 dB
    elsewhere); an honest model must measure the same on every CPU."""
    folder = tmp_path_factory.mktemp("mlp")
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.GELU(), nn.Linear(64, 10))
    fp32 = _export(module, MLP_INPUT, folder / "fp32.onnx")
    quantized = folder / "int8.onnx"
    quantize_dynamic(fp32, quantized, weight_type=QuantType.QUInt8)
    return fp32, quantized


def _edited(source: Path, target: Path, edit: Callable[[onnx.ModelProto], None]) -> Path:
    model = onnx.load(source)
    edit(model)
    onnx.save(model, target)
    return target


def _scale_times(name: str, factor: float) -> Callable[[onnx.ModelProto], None]:
    """Multiplies the initializer `name` (a weight's *_scale, read only by its DequantizeLinear)."""

    def edit(model: onnx.ModelProto) -> None:
        (index,) = [i for i, init in enumerate(model.graph.initializer) if init.name == name]
        init = model.graph.initializer[index]
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * factor, name))

    return edit


def _dequantize_scale_times(tensor: str, factor: float) -> Callable[[onnx.ModelProto], None]:
    """Gives the DequantizeLinear after `tensor` its own copy of the scale, times `factor` (the
    QuantizeLinear shares the original): the layer's activation comes out `factor` times too big."""

    def edit(model: onnx.ModelProto) -> None:
        (node,) = [
            n
            for n in model.graph.node
            if n.op_type == "DequantizeLinear" and n.input[0] == f"{tensor}_QuantizeLinear_Output"
        ]
        (scale,) = [init for init in model.graph.initializer if init.name == node.input[1]]
        faulty = numpy_helper.from_array(numpy_helper.to_array(scale) * factor, f"{scale.name}_faulty")
        model.graph.initializer.append(faulty)
        node.input[1] = faulty.name

    return edit


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_honest_static_quantization_names_no_layer(cnn: tuple[Path, Path]) -> None:
    fp32, quantized = cnn
    before = _digest(fp32), _digest(quantized)
    samples = _samples(CNN_INPUT, 4, seed=2)
    layers = layer_errors(fp32, quantized, samples)
    # the quantized Convs absorbed their Relus: each Relu's output is matched and named by its Conv
    assert [(layer.op_type, layer.node, layer.tensor) for layer in layers] == [
        ("input", "", "x"),
        ("Conv", "node_conv2d", "relu"),
        ("Conv", "node_conv2d_1", "relu_1"),
        ("Conv", "node_conv2d_2", "relu_2"),
        ("Conv", "node_conv2d_3", "relu_3"),
        ("ReduceMean", "node_mean", "mean"),
        ("Gemm", "node_linear", "y"),
    ]
    assert [layer.position for layer in layers] == sorted(layer.position for layer in layers)
    assert all(FLOOR_DB < layer.sqnr_db < math.inf and layer.cosine > 0.999 for layer in layers), layers
    assert drops(layers) == []
    lines = diagnose(fp32, quantized, samples)
    assert lines[0].startswith("where the error enters (per-layer SQNR of the int8 graph against fp32 over 4 samples")
    assert lines[1].startswith("  no layer stands out")
    # Whether the fused kernels (QLinearConv...) round differently depends on the CPU: on AVX2 they
    # differ from the unoptimized graph (an 8-bit multiply-add that saturates in 16 bits); with
    # AVX-512 VNNI (exact 32-bit accumulation) this graph's outputs came out identical. Either way
    # the line says what was measured, and an honest quantization adds little.
    fused = fused_kernel_sqnr_db(quantized, samples)
    if math.isinf(fused):
        assert (
            lines[2] == "  ONNX Runtime's optimizations (fused int8 kernels) leave the int8 graph's outputs unchanged"
        )
    else:
        assert FLOOR_DB < fused and lines[2].endswith("from this unoptimized run: they add little")
    assert (_digest(fp32), _digest(quantized)) == before  # the debug graphs are copies


@pytest.mark.parametrize(
    ("sqnr", "line"),
    [
        (math.inf, "leave the int8 graph's outputs unchanged"),
        (
            FLOOR_DB + 20.0,
            f"move the int8 graph's outputs {FLOOR_DB + 20.0:.1f} dB SQNR from this unoptimized run: they add little",
        ),
        (
            FLOOR_DB - 5.0,
            f"move the int8 graph's outputs {FLOOR_DB - 5.0:.1f} dB SQNR from this unoptimized run: they add error of their own, which the layers above do not show",
        ),
    ],
    ids=["unchanged", "little", "their-own-error"],
)
def test_the_fused_kernels_line_says_what_was_measured_on_any_cpu(
    cnn: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, sqnr: float, line: str
) -> None:
    """The three wordings, whatever this CPU's int8 kernels do (the honest test above sees one of the
    first two): the SQNR of the fused kernels' outputs is set, the rest of the diagnosis is real."""
    from pytest_navigator.runtimes import quantized_layers

    fp32, quantized = cnn
    monkeypatch.setattr(quantized_layers, "fused_kernel_sqnr_db", lambda path, samples: sqnr)
    lines = diagnose(fp32, quantized, _samples(CNN_INPUT, 2, seed=2))
    assert lines[-1] == f"  ONNX Runtime's optimizations (fused int8 kernels) {line}"


@pytest.mark.parametrize(
    ("edit", "node"),
    [
        (_scale_times("dw.weight_scale", 2.0), "node_conv2d_1"),
        (_scale_times("conv3.weight_scale", 2.0), "node_conv2d_3"),
        (_dequantize_scale_times("relu_2", 2.0), "node_conv2d_2"),
    ],
    ids=["depthwise-weight-scale", "strided-conv-weight-scale", "pointwise-activation-scale"],
)
def test_a_broken_layer_is_named_as_the_first_drop(
    cnn: tuple[Path, Path], tmp_path: Path, edit: Callable[[onnx.ModelProto], None], node: str
) -> None:
    fp32, quantized = cnn
    broken = _edited(quantized, tmp_path / "broken.onnx", edit)
    samples = _samples(CNN_INPUT, 4, seed=2)
    found = drops(layer_errors(fp32, broken, samples))
    # the layers after it carry the error on without losing much more: they are no drops
    assert [layer.node for layer in found] == [node]
    lines = diagnose(fp32, broken, samples)
    assert lines[1].startswith(f"  first drop at Conv '{node}' output ")
    assert "(its inputs: " in lines[1] and "the layers before it: " in lines[1]


def test_calibration_on_zeros_is_found_at_the_input_quantization(cnn: tuple[Path, Path], tmp_path: Path) -> None:
    fp32, _ = cnn
    zeros = [{"x": np.zeros(CNN_INPUT, np.float32)} for _ in range(2)]
    quantized = tmp_path / "zeros.onnx"
    quantize_static(fp32, quantized, _Samples(zeros), quant_format=QuantFormat.QDQ, per_channel=True)
    found = drops(layer_errors(fp32, quantized, _samples(CNN_INPUT, 4, seed=2)))
    assert (found[0].op_type, found[0].tensor) == ("input", "x")


def test_a_dynamic_quantization_is_matched_by_the_names_it_keeps(mlp: tuple[Path, Path], tmp_path: Path) -> None:
    fp32, quantized = mlp
    samples = _samples(MLP_INPUT, 4, seed=3)
    layers = layer_errors(fp32, quantized, samples)
    # quantize_dynamic splits each Gemm into MatMulInteger ... Add: the fp32 Gemm names the layer
    assert [(layer.op_type, layer.node, layer.tensor) for layer in layers] == [
        ("Gemm", "node_linear", "linear"),
        ("Relu", "node_relu", "relu"),
        ("Gemm", "node_linear_1", "linear_1"),
        ("Gelu", "node_gelu", "gelu"),
        ("Gemm", "node_linear_2", "y"),
    ]
    assert all(FLOOR_DB < layer.sqnr_db < math.inf for layer in layers), layers
    assert layers[0].input_sqnr_db == math.inf  # the input goes in unquantized
    assert drops(layers) == []

    broken = _edited(quantized, tmp_path / "broken.onnx", _scale_times("2.weight_Transposed_scale", 2.0))
    lines = diagnose(fp32, broken, samples)
    assert lines[1].startswith("  first drop at Gemm 'node_linear_1' output 'linear_1': ")
    assert lines[-1] == "  ONNX Runtime's optimizations (fused int8 kernels) leave the int8 graph's outputs unchanged"


def _relu_then_neg(path: Path, names: tuple[str, str]) -> Path:
    nodes = [helper.make_node("Relu", ["x"], [names[0]]), helper.make_node("Neg", [names[0]], [names[1]])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(names[1], onnx.TensorProto.FLOAT, [2])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_graphs_without_a_common_tensor_name_say_so(tmp_path: Path) -> None:
    fp32 = _relu_then_neg(tmp_path / "fp32.onnx", ("a", "b"))
    renamed = _relu_then_neg(tmp_path / "renamed.onnx", ("p", "q"))
    samples = [{"x": np.array([1.0, -1.0], np.float32)}]
    assert layer_errors(fp32, renamed, samples) == []
    (line,) = diagnose(fp32, renamed, samples)
    assert line.startswith(
        f"where the error enters: no intermediate tensor of {renamed} has the name of a float tensor"
    )


def test_a_diagnosis_that_cannot_run_is_one_line_not_an_exception(tmp_path: Path) -> None:
    fp32 = _relu_then_neg(tmp_path / "fp32.onnx", ("a", "b"))
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    sample = [{"x": np.array([1.0, -1.0], np.float32)}]

    (line,) = diagnose(fp32, garbage, sample)
    assert line.startswith("where the error enters: the per-layer diagnosis could not run (ModelLoadError: ")
    assert str(garbage) in line
    (line,) = diagnose(fp32, tmp_path / "missing.onnx", sample)
    assert "could not run (ModelLoadError: " in line
    (line,) = diagnose(fp32, fp32, [{"y": np.zeros(2, np.float32)}])
    assert "could not run (SampleError: " in line and "a sample lacks x" in line
    (line,) = diagnose(fp32, fp32, [])
    assert line == "where the error enters: the per-layer diagnosis could not run (no samples)"
