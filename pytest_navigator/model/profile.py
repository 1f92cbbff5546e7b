"""A model's profile (seed 002's `profile`): parameters and FLOPs per batch size, a property of the
model, not of a runtime; and constraints on them (`--navigator-constraints=flops=60%,params=5e6`).

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_navigator import options
from pytest_navigator.config import Format
from pytest_navigator.errors import NavigatorError
from pytest_navigator.model.loader import Model
from pytest_navigator.model.tensors import bind_tensors

if TYPE_CHECKING:
    from pytest_navigator.measure.profiler import RuntimeProfile

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
#: Constraint names and what a value of each means.
CONSTRAINTS = {"flops": "FLOPs per request", "params": "parameters", "peak_rss": "peak RSS"}


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
        per_sample = ", ".join(f"batch {b}: {_si(f / b)}" for b, f in sorted(self.flops.items()))
        missing = f"; not counted: {', '.join(self.uncounted)}" if self.uncounted else ""
        return f"{_si(self.parameters)} parameters; FLOPs per sample ({self.counter}): {per_sample}{missing}"


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


# -- constraints ---------------------------------------------------------------------------------


class ConstraintError(NavigatorError):
    """A --navigator-constraints value that cannot be used."""


@dataclass(frozen=True)
class Constraint:
    name: str
    value: float
    #: a fraction of the baseline's figure, else an absolute limit
    relative: bool

    def describe(self) -> str:
        if self.relative:
            return f"{self.name}={self.value:.0%}"
        return f"{self.name}={_figure(self.name, self.value)}"


@dataclass(frozen=True)
class Violation:
    constraint: Constraint
    baseline: float | None
    current: float
    limit: float
    batch_size: int | None = None

    def describe(self) -> str:
        where = f" at batch size {self.batch_size}" if self.batch_size is not None else ""
        name = self.constraint.name
        old = f"{_figure(name, self.baseline)} -> " if self.baseline is not None else ""
        return (
            f"{CONSTRAINTS[name]}{where}: {old}{_figure(name, self.current)}, above the limit "
            f"{_figure(name, self.limit)} ({self.constraint.describe()})"
        )


@dataclass(frozen=True)
class Checked:
    violations: list[Violation] = field(default_factory=list)
    #: relative constraints with no baseline figure to read
    unjudged: list[str] = field(default_factory=list)


def parse_constraints(value: str | Mapping[str, Any] | None, where: str = options.CONSTRAINTS) -> list[Constraint]:
    """'flops=60%,params=5e6' or {"flops": "60%"}: a percentage of the baseline, or an absolute upper
    limit (a number, k/M/G suffixes allowed); a bad one names the option, the value and what is accepted."""
    if not value:
        return []
    pairs: list[tuple[str, Any]] = []
    if isinstance(value, str):
        for part in filter(None, (p.strip() for p in value.split(","))):
            name, sep, text = part.partition("=")
            if not sep:
                raise ConstraintError(f"{where}={value!r}: {part!r} is not NAME=LIMIT, e.g. flops=60%,params=5e6.")
            pairs.append((name.strip(), text.strip()))
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        raise ConstraintError(f"{where}={value!r}: give 'NAME=LIMIT,...' or a dict, e.g. flops=60%,params=5e6.")
    found = []
    for name, raw in pairs:
        if name not in CONSTRAINTS:
            accepted = ", ".join(f"{k} ({v})" for k, v in CONSTRAINTS.items())
            raise ConstraintError(f"{where}: unknown constraint {name!r}; accepted: {accepted}.")
        text = str(raw).strip()
        relative = text.endswith("%")
        if name == "peak_rss" and not relative:
            from pytest_navigator.measure.memory import parse_bytes

            number = parse_bytes(text)
        else:
            number = _number(text.removesuffix("%"))
        if number is None or not number > 0:
            raise ConstraintError(
                f"{where}: {name}={raw!r} is not a positive number or percentage; e.g. {name}=60% (of the "
                + (
                    "baseline) or peak_rss=512MiB (also GiB, MB, GB, bytes)."
                    if name == "peak_rss"
                    else f"baseline) or {name}=5e6 (also 5M, 2.5G)."
                )
            )
        found.append(Constraint(name, number / 100 if relative else number, relative))
    return found


def check(
    constraints: Sequence[Constraint],
    profile: ModelProfile,
    stored: Mapping[int, Mapping[str, Any] | None],
    peaks: Mapping[int, int | None] | None = None,
) -> Checked:
    """Each constraint against the model's profile and the runtime's peak RSS by batch size (`peaks`);
    `stored` maps batch size -> the baseline's figures ({"parameters", "flops", "peak_rss"}) or None."""
    result = Checked()
    for constraint in constraints:
        cases: list[tuple[int | None, float, float | None]]
        if constraint.name == "params":
            cases = [(None, profile.parameters, _stored(stored, "parameters"))]
        elif constraint.name == "peak_rss":
            cases = [(b, p, (stored.get(b) or {}).get("peak_rss")) for b, p in sorted((peaks or {}).items()) if p]
        else:
            cases = [(b, f, (stored.get(b) or {}).get("flops")) for b, f in sorted(profile.flops.items())]
        for batch, current, baseline in cases:
            if constraint.relative and baseline is None:
                where = f" at batch size {batch}" if batch is not None else ""
                result.unjudged.append(f"{constraint.describe()}{where}: the baseline has no {constraint.name} figure")
                continue
            limit = constraint.value * baseline if constraint.relative else constraint.value  # type: ignore[operator]
            if current > limit:
                result.violations.append(Violation(constraint, baseline, current, limit, batch))
    return result


def constraint_failure(
    session: Any, model: Model, runtime: str, profile: RuntimeProfile, constraints: list[Any], found: Any
) -> str:
    """What violates --navigator-constraints (a failure message), else "". A percentage is of the
    --navigator-against model's figure in an A/B run, else of the stored baseline entry's; one
    with no figure to read is said in a warning (a failure under --navigator-require-baseline)."""
    import contextlib
    import warnings

    from pytest_navigator.config import MeasurementMode
    from pytest_navigator.gate.baselines import BaselineError

    where = f"{runtime} on {model.name}"
    if found is None:
        error = session.results.models[model.path].profile_error
        return f"{where}: the constraints cannot be checked: the model's profile could not be computed: {error}"
    sizes = sorted(found.flops)
    stored: dict[int, Any] = {}
    if session.against_model is not None:
        old = session.model_profile(session.against_model, sizes)
        source = f"the A/B model {session.against_model.name}"
        if old is not None:
            stored = {b: {"parameters": old.parameters, "flops": old.flops.get(b)} for b in sizes}
    else:
        source = str(session.baseline_store.path_for(model.name, model.fingerprint))
        counted = profile.config.measurement_mode is MeasurementMode.INSTRUCTIONS
        hardware, key = session.hardware(runtime, counted), profile.runtime if counted else runtime
        with contextlib.suppress(BaselineError):  # an unreadable file fails the gate already
            baselines = session.baseline_store.load(model.name, model.fingerprint)
            for b in sizes:
                entry = baselines.get((hardware, key, b)) or {}
                peak = (entry.get("peak_memory") or {}).get("rss_bytes")
                stored[b] = {**(entry.get("model") or {}), **({"peak_rss": peak} if peak else {})} or None
    peaks = {b.batch_size: b.peak_rss for b in profile.batches}
    checked = check(constraints, found, stored, peaks)
    if checked.unjudged:
        text = f"{where}: constraints not judged (nothing to compare in {source}): " + "; ".join(checked.unjudged)
        if session.settings.require_baseline:
            return f"{text} ({options.REQUIRE_BASELINE}); record a baseline with {options.UPDATE_BASELINES}."
        warnings.warn(text, stacklevel=2)
    if not checked.violations:
        return ""
    return f"{where} violates its constraints (against {source}):\n" + "\n".join(
        f"  {v.describe()}" for v in checked.violations
    )


def _stored(stored: Mapping[int, Mapping[str, Any] | None], key: str) -> float | None:
    return next((e[key] for e in stored.values() if e and e.get(key) is not None), None)


_SUFFIXES = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def _number(text: str) -> float | None:
    scale = _SUFFIXES.get(text[-1:], 1.0)
    try:
        return float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        return None


def _figure(name: str, value: float) -> str:
    if name == "peak_rss":
        from pytest_navigator.measure.memory import mib

        return mib(value)
    return _si(value)


def _si(value: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"
