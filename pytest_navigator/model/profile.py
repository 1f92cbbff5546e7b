"""A model's profile (seed 002's `profile`): parameters and FLOPs per batch size, a property of the
model, not of a runtime (the constraints on them, `--navigator-constraints`, are gate/constraints.py).

- parameters: the model's trainable parameters (an ExportedProgram's graph signature, a module's
  `parameters()`), or an ONNX model's floating-point initializers (an export folds buffers such as
  BatchNorm statistics into them, so an ONNX count can exceed the torch one of the same model);
- FLOPs: torch sources run once per batch size under `torch.utils.flop_counter.FlopCounterMode`
  (under `no_grad`: it counts nothing under `inference_mode`), which counts matrix products,
  convolutions and attention at 2 FLOPs per multiply-add and nothing else. ONNX sources are counted
  over the graph, with shapes inferred for the batch size, by the same convention: MatMul, Gemm and
  Conv; other operators that do comparable work (ConvTranspose, Einsum, recurrent cells, ...) are
  named as not counted, never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pytest_navigator.config import Format
from pytest_navigator.model.loader import Model
from pytest_navigator.model.torch_io import bind_tensors

#: ONNX operators with multiply-adds that the graph counter does not count (FlopCounterMode would).
_UNCOUNTED = frozenset(
    {
        "ConvTranspose",
        "ConvInteger",
        "MatMulInteger",
        "QLinearConv",
        "QLinearMatMul",
        "Einsum",
        "LSTM",
        "GRU",
        "RNN",
        "Attention",
        "MultiHeadAttention",
        "If",
        "Loop",
        "Scan",
    }
)


@dataclass(frozen=True)
class ModelProfile:
    parameters: int
    #: batch size -> FLOPs per request
    flops: dict[int, int]
    #: "torch.utils.flop_counter" or "onnx graph"
    counter: str
    #: ONNX operator types in the graph whose work is not counted
    uncounted: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "parameters": self.parameters,
            "flops": {str(b): f for b, f in sorted(self.flops.items())},
            "counter": self.counter,
            "uncounted": list(self.uncounted),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelProfile:
        flops = {int(b): int(f) for b, f in data["flops"].items()}
        return cls(int(data["parameters"]), flops, data["counter"], tuple(data.get("uncounted", ())))

    def describe(self) -> str:
        per_sample = ", ".join(f"batch {b}: {si(f / b)}" for b, f in sorted(self.flops.items()))
        missing = f"; not counted: {', '.join(self.uncounted)}" if self.uncounted else ""
        return f"{si(self.parameters)} parameters; FLOPs per sample ({self.counter}): {per_sample}{missing}"


def profile_model(model: Model, samples: Mapping[int, Any]) -> ModelProfile:
    """Parameters, and FLOPs per request for each batch size's sample (batch size -> Sample)."""
    if model.format is Format.ONNX:
        return _onnx_profile(model.source, samples)
    return _torch_profile(model, samples)


# -- torch ---------------------------------------------------------------------------------------


def torch_parameters(model: Model) -> int:
    if model.format is Format.TORCH_EXPORTEDPROGRAM:
        program = model.source
        named = program.state_dict
        return sum(int(named[name].numel()) for name in program.graph_signature.parameters if name in named)
    return sum(int(p.numel()) for p in model.torch_module().parameters())


def torch_flops(module: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    """FLOPs of one call of `module` (FlopCounterMode's convention: 2 per multiply-add, matrix products,
    convolutions and attention only)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:  # FlopCounterMode counts nothing under inference_mode
        module(*args, **kwargs)
    return int(counter.get_total_flops())


def _torch_profile(model: Model, samples: Mapping[int, Any]) -> ModelProfile:
    module = model.torch_module()
    flops = {}
    for batch, sample in samples.items():
        args, kwargs = bind_tensors(model, sample)
        flops[batch] = torch_flops(module, args, kwargs)
    return ModelProfile(torch_parameters(model), flops, "torch.utils.flop_counter")


# -- ONNX ----------------------------------------------------------------------------------------


def onnx_parameters(proto: Any) -> int:
    """Elements of the floating-point initializers."""
    from onnx import TensorProto

    floating = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
    return sum(math.prod(t.dims) for t in proto.graph.initializer if t.data_type in floating)


def onnx_flops(proto: Any, shapes: Mapping[str, Sequence[int]]) -> tuple[int, tuple[str, ...]]:
    """FLOPs of one request with inputs of `shapes` (name -> shape), and the operator types not counted."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    for value in fixed.graph.input:
        if value.name in shapes:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, shapes[value.name], strict=False):
                dim.Clear()
                dim.dim_value = int(size)
    inferred = onnx.shape_inference.infer_shapes(fixed, data_prop=True)
    known: dict[str, list[int | None]] = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        known[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    for tensor in inferred.graph.initializer:
        known[tensor.name] = list(tensor.dims)
    local = {f.name for f in inferred.functions}
    total, uncounted = 0, set()
    for node in inferred.graph.node:
        if node.op_type in local or node.op_type in _UNCOUNTED:
            uncounted.add(node.op_type)
            continue
        counted = _node_flops(node, known)
        if counted is None:
            uncounted.add(f"{node.op_type} (shape unknown)")
        else:
            total += counted
    return total, tuple(sorted(uncounted))


def _node_flops(node: Any, known: Mapping[str, list[int | None]]) -> int | None:
    """2 x multiply-adds of a MatMul, Gemm or Conv (0 for other operators); None when a shape is unknown."""
    if node.op_type not in ("MatMul", "Gemm", "Conv"):
        return 0
    out = known.get(node.output[0])
    first = known.get(node.input[0])
    weight = known.get(node.input[1])
    if out is None or first is None or weight is None or None in out or None in first or None in weight:
        return None
    if node.op_type == "MatMul":  # out = A @ B: K is A's last axis
        return 2 * math.prod(out) * int(first[-1] or 0)  # type: ignore[arg-type]
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        inner = first[0] if trans_a else first[1]
        return 2 * math.prod(out) * int(inner or 0)  # type: ignore[arg-type]
    # Conv: each output element takes C_in / group x kernel multiply-adds (the weight's shape after C_out)
    return 2 * math.prod(out) * math.prod(weight[1:])  # type: ignore[arg-type]


def _onnx_profile(proto: Any, samples: Mapping[int, Any]) -> ModelProfile:
    flops: dict[int, int] = {}
    uncounted: set[str] = set()
    for batch, sample in samples.items():
        flops[batch], missing = onnx_flops(proto, {name: array.shape for name, array in sample.items()})
        uncounted.update(missing)
    return ModelProfile(onnx_parameters(proto), flops, "onnx graph", tuple(sorted(uncounted)))


def si(value: float) -> str:
    """A figure with an SI suffix and 3 significant digits: 1.23M, 704."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def profile_for(
    model: Model, batch_sizes: Sequence[int], known: Mapping[str, Any] | None, error: str
) -> tuple[ModelProfile | None, dict[str, Any] | None, str]:
    """The profile at `batch_sizes`, computing only the sizes `known` (a profile's as_json()) lacks; a
    model the counters cannot run keeps the reason (`error`) and is not tried again. Returns the
    profile, its JSON and the error."""
    from pytest_navigator.errors import describe_error
    from pytest_navigator.model.draws import random_samples

    figures = dict(known) if known else None
    wanted = [b for b in dict.fromkeys(batch_sizes) if str(b) not in (figures or {}).get("flops", {})]
    if wanted and not error:
        try:
            # the first of profiling_inputs(b) (the same stream), without drawing the other seven
            found = profile_model(model, {b: random_samples(model.io_spec, [b], seed=b)[0] for b in wanted})
        except Exception as exc:  # a model the counters cannot run: said in the summary, not fatal
            error = describe_error(exc)
        else:
            fresh = found.as_json()
            figures = {**fresh, "flops": {**(figures or {}).get("flops", {}), **fresh["flops"]}}
    return (None if figures is None else ModelProfile.from_json(figures)), figures, error


def remembered(known: Mapping[str, Any] | None, stored: Mapping[str, Any] | None, batch_sizes: Sequence[int]) -> Any:
    """This run's figures (`known`) with the counts a past run stored for `batch_sizes`, so that
    profile_for counts only what neither has; sizes this run does not measure are left out."""
    if not stored or not isinstance(stored.get("flops"), dict):
        return known
    wanted = {str(b) for b in batch_sizes}
    flops = {b: f for b, f in stored["flops"].items() if b in wanted}
    base = dict(known) if known else {k: v for k, v in stored.items() if k != "flops"}
    return {**base, "flops": {**flops, **(known or {}).get("flops", {})}}


def to_store(stored: Mapping[str, Any] | None, figures: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What to store after a run counted `figures`: the stored counts and the new ones, or None when
    nothing is new."""
    if not figures:
        return None
    old = dict(stored.get("flops", {})) if stored else {}
    if all(b in old for b in figures.get("flops", {})):
        return None
    return {**figures, "flops": {**old, **figures.get("flops", {})}}
