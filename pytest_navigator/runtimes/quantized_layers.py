"""Where the error of an int8 ONNX graph enters: its intermediate tensors against the fp32 graph's, layer by layer.

Both graphs run on CPU with their float intermediate tensors exposed as outputs; an fp32 tensor is
matched by name with the int8 graph's tensor holding its value: ONNX Runtime's quantize_static (QDQ)
keeps the name and puts a QuantizeLinear/DequantizeLinear pair after it, whose output the next layer
reads (as qdq_loss_debug's create_activation_matching pairs them); quantize_dynamic keeps the output
names of the MatMul/Gemm it replaces. Optimizations are off in both sessions: they would rename fp32
tensors, and ORT's QDQ fusions skip a tensor that is a graph output anyway. So a QDQ graph is computed
in float on dequantized values (errors of scales, zero points, ranges); fused_kernel_sqnr_db measures
what the fused int8 kernels add. A dynamic graph runs its own int8 kernels (MatMulInteger) here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_navigator.config import Sample
from pytest_navigator.errors import ModelLoadError, SampleError, first_line

if TYPE_CHECKING:
    import numpy

# Measured on tests/runtimes/test_quantized_layers.py's models and a few alike (a fault: one weight
# scale or one DequantizeLinear's scale doubled). Honest layers: 22.5-50 dB (QDQ CNNs, a MobileNetV2-
# like net, transformer blocks; dynamic ones with uint8 weights 37-44 dB), losing at most 8.7 dB to
# their inputs where under 30 dB, and staying above 40 dB where they lose more (up to 17 dB). Faulty
# layers: -2.1 to 23.4 dB, losing 16.4 dB or more; the layers after them lose at most 2.4 dB or gain.
#: A drop is a layer under this SQNR floor (dB; 30 dB is an error power of 1/1000 of the signal) ...
FLOOR_DB = 30.0
#: ... that is also at least this many dB below the tensors it is computed from: the error enters
#: there instead of arriving from upstream.
LOSS_DB = 12.0

_FLOAT_TYPES = (1, 10, 11, 16)  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
_QDQ = ("QuantizeLinear", "DequantizeLinear")
#: How many drops a failure message names after the first.
_MORE_DROPS = 2


@dataclass(frozen=True, slots=True)
class LayerError:
    """How far one intermediate tensor of the int8 graph is from the fp32 graph's, over all samples."""

    #: The fp32 graph's tensor name.
    tensor: str
    #: The node computing it in the int8 graph when that node is one of the fp32 graph's (a QDQ
    #: Conv that absorbed its Relu), else the fp32 graph's node; "" for a graph input.
    node: str
    #: That node's op type ("input" for a graph input).
    op_type: str
    #: The tensor's place in the fp32 graph's topological order (graph inputs first).
    position: int
    #: 10*log10(sum(ref^2) / sum((ref - q)^2)) over all samples; inf when equal.
    sqnr_db: float
    #: Cosine similarity of the flattened tensors over all samples.
    cosine: float
    #: The lowest SQNR among the matched tensors it is computed from (through unmatched ones); inf
    #: when they are all exact (an unquantized graph input) or it has none.
    input_sqnr_db: float

    @property
    def loss_db(self) -> float:
        """How many dB this layer loses to the tensors it is computed from (negative: it gains)."""
        return 0.0 if self.input_sqnr_db == self.sqnr_db else self.input_sqnr_db - self.sqnr_db

    @property
    def label(self) -> str:
        """How a failure message names the layer: Conv 'node_conv2d_1' output 'relu_1', or input 'x'."""
        return f"{self.op_type} '{self.node}' output '{self.tensor}'" if self.node else f"input '{self.tensor}'"


def layer_errors(fp32_path: Path, quantized_path: Path, samples: Sequence[Sample]) -> list[LayerError]:
    """Every matched intermediate tensor's error, in the fp32 graph's topological order.

    An unquantized graph input (fed to both graphs as is) is not listed; an input quantized by a QDQ
    pair is. Tensors whose type shape inference cannot tell, or whose sizes differ between the
    graphs, are left out. Raises ModelLoadError for a file ONNX or ONNX Runtime cannot read,
    SampleError for samples lacking a graph input.
    """
    fp32 = _load(fp32_path)
    quantized = _load(quantized_path)
    order = _float_tensors(fp32)
    matches = _counterparts(order, quantized)
    if not matches or not samples:
        return []
    fp32_inputs = {i.name for i in fp32.graph.input}
    quantized_inputs = {i.name for i in quantized.graph.input}
    # a graph input's value is the sample's own: only computed tensors become outputs
    exposed_fp32 = [name for name in matches if name not in fp32_inputs]
    exposed_quantized = [target for target in matches.values() if target not in quantized_inputs]
    fp32_session = _session(_exposing(fp32, exposed_fp32), fp32_path, optimized=False)
    quantized_session = _session(_exposing(quantized, exposed_quantized), quantized_path, optimized=False)
    sums = _ErrorSums()
    for sample in samples:
        fp32_values = _values(fp32_session, exposed_fp32, sample, fp32_path)
        quantized_values = _values(quantized_session, exposed_quantized, sample, quantized_path)
        for name, target in matches.items():
            sums.add(name, fp32_values[name], quantized_values[target])
    measured = [name for name in matches if sums.has(name)]
    sqnr = {name: sums.sqnr_db(name) for name in measured}
    sources = _source_tensors(fp32, set(measured) | fp32_inputs)
    fp32_producers, quantized_producers = _producers(fp32), _producers(quantized)
    fp32_names = {node.name for node in fp32.graph.node}
    layers = []
    for name in measured:
        if name in fp32_inputs and math.isinf(sqnr[name]):
            continue
        node, op_type = _computing_node(name, fp32_producers, quantized_producers, fp32_names)
        layers.append(
            LayerError(
                tensor=name,
                node=node,
                op_type=op_type,
                position=order[name],
                sqnr_db=sqnr[name],
                cosine=sums.cosine(name),
                input_sqnr_db=min((sqnr.get(source, math.inf) for source in sources.get(name, ())), default=math.inf),
            )
        )
    return sorted(layers, key=lambda layer: layer.position)


def drops(layers: Sequence[LayerError], floor_db: float = FLOOR_DB, loss_db: float = LOSS_DB) -> list[LayerError]:
    """The layers where error enters, in topological order: under `floor_db` and at least `loss_db`
    below the tensors they are computed from. A layer that only carries an upstream error on is
    under the floor too, but not far below its inputs, so it is not one."""
    return [layer for layer in layers if layer.sqnr_db < floor_db and layer.loss_db >= loss_db]


def fused_kernel_sqnr_db(quantized_path: Path, samples: Sequence[Sample]) -> float:
    """SQNR of the int8 graph's float outputs as ONNX Runtime runs it by default (ORT_ENABLE_ALL: a
    QDQ graph's pairs fused into QLinearConv, QGemm...) against the same graph unoptimized, over all
    samples: the error the fused int8 kernels add to what layer_errors measures."""
    plain = _session(str(quantized_path), quantized_path, optimized=False)
    fused = _session(str(quantized_path), quantized_path, optimized=True)
    outputs = [o.name for o in plain.get_outputs() if o.type in ("tensor(float)", "tensor(float16)", "tensor(double)")]
    sums = _ErrorSums()
    for sample in samples:
        reference = _values(plain, outputs, sample, quantized_path)
        values = _values(fused, outputs, sample, quantized_path)
        for name in outputs:
            sums.add("outputs", reference[name], values[name])
    return sums.sqnr_db("outputs") if sums.has("outputs") else math.inf


def diagnose(fp32_path: Path, quantized_path: Path, samples: Sequence[Sample]) -> list[str]:
    """Lines for a failure message saying where the int8 graph's error enters; never raises, since a
    diagnosis failing must not hide the check's own failure."""
    try:
        if not samples:
            return ["where the error enters: the per-layer diagnosis could not run (no samples)"]
        layers = layer_errors(Path(fp32_path), Path(quantized_path), samples)
        if not layers:
            return [
                f"where the error enters: no intermediate tensor of {quantized_path} has the name of a float "
                f"tensor of {fp32_path}, so no layer could be compared (a quantizer that renames tensors, or "
                "unrelated models)"
            ]
        return [*_describe(layers, len(samples)), _kernel_line(Path(quantized_path), samples)]
    except Exception as exc:  # any failure of the diagnosis becomes its one line
        return [
            f"where the error enters: the per-layer diagnosis could not run ({type(exc).__name__}: {first_line(exc)})"
        ]


def _describe(layers: list[LayerError], sample_count: int) -> list[str]:
    header = (
        f"where the error enters (per-layer SQNR of the int8 graph against fp32 over {sample_count} "
        f"sample{'s' if sample_count != 1 else ''}, {len(layers)} layers matched; a drop is under {FLOOR_DB:g} dB "
        f"and {LOSS_DB:g} dB below its inputs):"
    )
    worst = min(layers, key=lambda layer: layer.sqnr_db)
    found = drops(layers)
    if not found:
        return [
            header,
            f"  no layer stands out: none loses {LOSS_DB:g} dB to its inputs while under {FLOOR_DB:g} dB "
            f"(layers {_db_range(layers)}, lowest at {worst.label})",
        ]
    lines = [header, f"  first drop at {_drop(found[0], layers)}"]
    lines += [f"  then {_drop(layer, layers)}" for layer in found[1 : 1 + _MORE_DROPS]]
    if len(found) > 1 + _MORE_DROPS:
        lines.append(f"  ({len(found) - 1 - _MORE_DROPS} more drops after these)")
    if worst not in found[: 1 + _MORE_DROPS]:
        lines.append(f"  worst: {worst.label}: {_db(worst.sqnr_db)} (it loses {_db(worst.loss_db)} to its inputs)")
    return lines


def _kernel_line(quantized_path: Path, samples: Sequence[Sample]) -> str:
    try:
        sqnr = fused_kernel_sqnr_db(quantized_path, samples)
    except Exception as exc:  # the layer lines above stand without it
        return f"  (the fused int8 kernels could not be compared: {type(exc).__name__}: {first_line(exc)})"
    if math.isinf(sqnr):
        return "  ONNX Runtime's optimizations (fused int8 kernels) leave the int8 graph's outputs unchanged"
    verdict = "error of their own, which the layers above do not show" if sqnr < FLOOR_DB else "little"
    return (
        f"  ONNX Runtime's optimizations (fused int8 kernels) move the int8 graph's outputs {_db(sqnr)} SQNR "
        f"from this unoptimized run: they add {verdict}"
    )


def _drop(layer: LayerError, layers: list[LayerError]) -> str:
    before = [other for other in layers if other.position < layer.position][-3:]
    context = f"the layers before it: {_db_range(before)}" if before else "the first layer"
    return (
        f"{layer.label}: {_db(layer.sqnr_db)}, cosine {layer.cosine:.3f} "
        f"(its inputs: {_db(layer.input_sqnr_db)}; {context})"
    )


def _db(value: float) -> str:
    return "exact" if math.isinf(value) and value > 0 else f"{value:.1f} dB"


def _db_range(layers: Sequence[LayerError]) -> str:
    low = min(layer.sqnr_db for layer in layers)
    high = max(layer.sqnr_db for layer in layers)
    if low == high:
        return _db(low)
    return f"{low:.1f}-{high:.1f} dB" if math.isfinite(high) else f"{_db(low)} to exact"


class _ErrorSums:
    """Per tensor sums over the samples (float64), so no sample's activations are kept; a tensor whose
    sizes differ between the graphs is dropped."""

    def __init__(self) -> None:
        self._sums: dict[str, list[float]] = {}  # ref^2, q^2, ref*q, (ref-q)^2
        self._mismatched: set[str] = set()

    def add(self, name: str, reference: numpy.ndarray, quantized: numpy.ndarray) -> None:
        import numpy as np

        ref = np.asarray(reference, dtype=np.float64).ravel()
        q = np.asarray(quantized, dtype=np.float64).ravel()
        if ref.shape != q.shape:
            self._mismatched.add(name)
            return
        difference = ref - q
        terms = [float(ref @ ref), float(q @ q), float(ref @ q), float(difference @ difference)]
        self._sums[name] = [total + term for total, term in zip(self._sums.get(name, [0.0] * 4), terms, strict=True)]

    def has(self, name: str) -> bool:
        return name in self._sums and name not in self._mismatched

    def sqnr_db(self, name: str) -> float:
        signal, _, _, noise = self._sums[name]
        if noise == 0.0:
            return math.inf
        if signal == 0.0:
            return -math.inf
        return 10.0 * math.log10(signal / noise)

    def cosine(self, name: str) -> float:
        ref2, q2, dot, _ = self._sums[name]
        if ref2 == 0.0 or q2 == 0.0:
            return 1.0 if ref2 == q2 else 0.0
        return dot / math.sqrt(ref2 * q2)


def _load(path: Path) -> Any:
    """The model with the types of its intermediate tensors inferred (in memory: the file is untouched)."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise ModelLoadError(f"{path} is not a readable ONNX model: {type(exc).__name__}: {first_line(exc)}") from exc
    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # ops onnx cannot infer: keep the types the file states
        return model


def _known_types(model: Any) -> dict[str, int]:
    graph = model.graph
    return {
        info.name: info.type.tensor_type.elem_type
        for info in (*graph.value_info, *graph.output, *graph.input)
        if info.type.HasField("tensor_type")
    }


def _float_tensors(model: Any) -> dict[str, int]:
    """Float tensors computed from the graph inputs (not constants) -> topological position."""
    graph = model.graph
    types = _known_types(model)
    initializers = {init.name for init in graph.initializer}
    order = [i.name for i in graph.input if i.name not in initializers]
    computed = set(order)
    for node in graph.node:  # ONNX requires the node list in topological order
        if any(name in computed for name in node.input):
            computed.update(name for name in node.output if name)
            order.extend(name for name in node.output if name)
    floats = [name for name in order if types.get(name) in _FLOAT_TYPES]
    return {name: position for position, name in enumerate(floats)}


def _producers(model: Any) -> dict[str, Any]:
    return {name: node for node in model.graph.node for name in node.output if name}


def _counterparts(order: dict[str, int], quantized: Any) -> dict[str, str]:
    """fp32 tensor -> the int8 graph's tensor holding its value (after its QDQ pair, if any)."""
    producers = _producers(quantized)
    consumers: dict[str, list[Any]] = {}
    for node in quantized.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    types = _known_types(quantized)
    present = set(producers) | {i.name for i in quantized.graph.input}
    matches = {}
    for name in order:
        if name not in present:
            continue
        target = name
        for quantize in (node for node in consumers.get(name, []) if node.op_type == "QuantizeLinear"):
            dequantize = next(
                (n for n in consumers.get(quantize.output[0], []) if n.op_type == "DequantizeLinear"), None
            )
            if dequantize is not None:
                target = dequantize.output[0]
                break
        if types.get(target) in _FLOAT_TYPES:
            matches[name] = target
    return matches


def _computing_node(
    name: str, fp32_producers: dict[str, Any], quantized_producers: dict[str, Any], fp32_names: set[str]
) -> tuple[str, str]:
    """(node name, op type) computing `name`: the int8 graph's node, looking through Q/DQ pairs, when
    it is one of the fp32 graph's nodes (a QDQ Conv that absorbed its Relu); else the fp32 graph's
    (quantize_dynamic's Add after a MatMulInteger stands for the fp32 Gemm); ("", "input") for an input."""
    node = quantized_producers.get(name)
    while node is not None and node.op_type in _QDQ:
        node = quantized_producers.get(node.input[0])
    if node is not None and node.name in fp32_names:
        return node.name, node.op_type
    original = fp32_producers.get(name)
    return ("", "input") if original is None else (original.name, original.op_type)


def _source_tensors(fp32: Any, matched: set[str]) -> dict[str, set[str]]:
    """Tensor -> the matched tensors it is computed from, looking through unmatched ones (the fp32
    Conv output a QDQ Conv+Relu does not have)."""
    sources: dict[str, set[str]] = {}
    for node in fp32.graph.node:  # topological order: a node's inputs are done before it
        found: set[str] = set()
        for name in node.input:
            if name in matched:
                found.add(name)
            else:
                found |= sources.get(name, set())
        for name in node.output:
            sources[name] = found
    return sources


def _exposing(model: Any, names: list[str]) -> bytes:
    """A copy of the model whose graph outputs are `names` (their types from the model's value infos)."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    types = _known_types(model)
    del copy.graph.output[:]
    copy.graph.output.extend(onnx.helper.make_tensor_value_info(name, types[name], None) for name in names)
    return copy.SerializeToString()


def _session(model: bytes | str, path: Path, optimized: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimized else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadError(f"onnxruntime could not load {path}: {type(exc).__name__}: {first_line(exc)}") from exc


def _values(session: Any, names: list[str], sample: Sample, path: Path) -> dict[str, Any]:
    """Tensor name -> value for `names` and the graph inputs, on one sample."""
    inputs = [i.name for i in session.get_inputs()]
    missing = [name for name in inputs if name not in sample]
    if missing:
        raise SampleError(f"{path} takes inputs {', '.join(inputs)}; a sample lacks {', '.join(missing)}")
    feed = {name: sample[name] for name in inputs}
    computed = session.run(names, feed) if names else []
    return {**feed, **dict(zip(names, computed, strict=True))}
