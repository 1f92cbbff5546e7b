"""The best available truth for the reference's outputs, and the reference's own rounding against it.

A runtime is judged by how far its outputs are from the truth, measured in units of the error the
fp32 reference itself makes on the same input (its "own rounding"): a deep stack of depthwise
convolutions amplifies rounding far more than a small MLP, and a small logit next to a large one
carries the large one's rounding error. A fixed elementwise tolerance sees neither.

The truth, best first:

- **float64 shadow**: a copy of the model in double precision (torch sources: the module cast to
  float64, inputs cast; ONNX sources: initializers, inputs, outputs, Cast targets and constants
  converted to double, run by ONNX Runtime with every optimization off).
- **the reference itself**, where no double-precision path runs (ONNX Runtime has no double Conv,
  a traced graph hard-codes float32).
- **plain reference**: neither an estimate nor a shadow (a custom reference): the fixed tolerances
  of verify.DEFAULT_TOLERANCES apply.

The reference's own rounding is the larger of two figures per output:

- *measured*: max |fp32 reference - float64 shadow|, where the shadow runs. It is one draw of what
  rounding does: another correct fp32 implementation (BatchNorm folded into the convolution
  weights, another summation order) draws again, and on MobileNetV3-Small drew up to 26x larger.
- *estimated*: the spread of a few evaluations of the reference with every float input and weight
  moved by one unit in the last place. A backward-stable kernel computes the exact result of
  operands perturbed at that size, so the spread is what rounding can do to this input through
  this network. Folded weights are exactly such a perturbation; correct runtimes stayed within 5x
  of it on every architecture measured (harness/bench_correctness.py).

Every figure is computed once per distinct sample and shared by all runtimes, as reference outputs are,
and kept in the artifact cache for the next run (truth_store.py).
"""

from __future__ import annotations

import abc
import contextlib
import copy
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_navigator.config import Format, Sample
from pytest_navigator.errors import first_line

if TYPE_CHECKING:
    from pytest_navigator.model.loader import Model
    from pytest_navigator.runtimes.base import Runner

FLOAT64_SHADOW = "float64 shadow"
PERTURBATION = "perturbation estimate"
PLAIN = "plain reference"

#: Bumped when what this module computes changes: part of the key of the truths kept across runs
#: (truth_store.py), with PERTURBATIONS and MAX_RELATIVE_NOISE. 3: float64.py's depthwise convolutions.
VERSION = 3
#: Perturbed evaluations per sample for the estimate (evaluation i draws from seeds i and i + 1, fixed:
#: the estimate does not depend on the run's seed).
PERTURBATIONS = 3
#: The float64 shadow is not trusted where it differs from the fp32 reference by more than this
#: share of the output's magnitude: no rounding does that, so the shadow computes something else
#: (a dtype-dependent branch, a float32 constant) and would inflate every budget.
MAX_RELATIVE_NOISE = 1e-3


@dataclass(frozen=True)
class Truth:
    """One sample's truth: the outputs a runtime is measured against, and per float output the
    reference's own rounding (no entry: no estimate, the fixed tolerance judges that output)."""

    kind: str
    outputs: Sample
    noise: Mapping[str, float] = field(default_factory=dict)
    #: Why this kind (e.g. why no float64 shadow could run); empty when the best one ran.
    note: str = ""
    #: The two figures `noise` is the larger of: |reference - shadow|, and the perturbation spread.
    measured: Mapping[str, float] = field(default_factory=dict)
    estimated: Mapping[str, float] = field(default_factory=dict)


class TruthSource(abc.ABC):
    """Computes the truth of a model's samples; built once per model."""

    kind: str = PLAIN
    note: str = ""

    @abc.abstractmethod
    def truth(self, sample: Sample, reference: Sample) -> Truth:
        """The truth for `sample`, whose fp32 reference outputs are `reference`."""


class PlainReference(TruthSource):
    """No estimate of the reference's rounding: runtimes are judged by the fixed tolerances."""

    def __init__(self, note: str = "") -> None:
        self.note = note

    def truth(self, sample: Sample, reference: Sample) -> Truth:
        return Truth(PLAIN, reference, {}, self.note)


def own_rounding(reference: Sample, truth: Sample) -> dict[str, float]:
    """Per float output: max |reference - truth| over the elements finite in both."""
    noise = {}
    for name, ref in reference.items():
        ref = np.asarray(ref)
        if ref.dtype.kind not in "fc" or name not in truth:
            continue
        r, t = ref.astype(np.float64), np.asarray(truth[name]).astype(np.float64)
        if r.shape != t.shape:
            continue
        finite = np.isfinite(r) & np.isfinite(t)
        noise[name] = float(np.abs(r[finite] - t[finite]).max(initial=0.0))
    return noise


def _suspicious(reference: Sample, truth: Sample, noise: Mapping[str, float]) -> str | None:
    """Why a shadow's outputs cannot be the truth of this reference, or None."""
    for name, ref in reference.items():
        ref = np.asarray(ref)
        if ref.dtype.kind not in "fc":
            continue
        if name not in truth or np.shape(truth[name]) != ref.shape:
            return f"it has no output {name!r} of shape {list(ref.shape)}"
        values = np.asarray(truth[name]).astype(np.float64)
        scale = float(np.abs(values[np.isfinite(values)]).max(initial=0.0))
        if noise.get(name, 0.0) > MAX_RELATIVE_NOISE * scale and noise.get(name, 0.0) > 0:
            return (
                f"its output {name!r} differs from the fp32 reference by {noise[name]:.3g} at magnitude "
                f"{scale:.3g}, more than rounding explains"
            )
    return None


class _Sensitivity:
    """The reference evaluated with every float input and weight moved by one ulp, a few times."""

    def __init__(self, runs: list[Callable[[Sample], Sample]]) -> None:
        self._runs = runs

    def spread(self, sample: Sample, reference: Sample) -> dict[str, float]:
        spread: dict[str, float] = {}
        for index, run in enumerate(self._runs):
            outputs = run(_nudged(sample, np.random.default_rng(index)))
            for name, value in own_rounding(reference, outputs).items():
                spread[name] = max(spread.get(name, 0.0), value)
        return spread


class _Shadow(TruthSource):
    """A double-precision copy of the reference (float inputs cast to float64 before the call),
    with the reference's sensitivity as the second figure of its own rounding."""

    kind = FLOAT64_SHADOW

    def __init__(self, run: Callable[[Sample], Sample], sensitivity: _Sensitivity) -> None:
        self._run = run
        self._sensitivity = sensitivity

    def truth(self, sample: Sample, reference: Sample) -> Truth:
        outputs = self._run(_cast_floats(sample, np.float64))
        measured = own_rounding(reference, outputs)
        problem = _suspicious(reference, outputs, measured)
        if problem is not None:  # this sample only: the fixed tolerance judges it, and says why
            return Truth(PLAIN, reference, {}, f"the float64 shadow is not used for this sample: {problem}")
        estimated = self._sensitivity.spread(sample, reference)
        noise = {name: max(value, estimated.get(name, 0.0)) for name, value in measured.items()}
        return Truth(FLOAT64_SHADOW, outputs, noise, self.note, measured, estimated)


class _Perturbed(TruthSource):
    """No double-precision path: the reference is the truth, its own rounding the perturbation spread."""

    kind = PERTURBATION

    def __init__(self, sensitivity: _Sensitivity, note: str) -> None:
        self._sensitivity = sensitivity
        self.note = note

    def truth(self, sample: Sample, reference: Sample) -> Truth:
        estimated = self._sensitivity.spread(sample, reference)
        return Truth(PERTURBATION, reference, estimated, self.note, {}, estimated)


def _cast_floats(sample: Sample, dtype: Any) -> Sample:
    return {
        name: np.asarray(array).astype(dtype) if np.asarray(array).dtype.kind == "f" else array
        for name, array in sample.items()
    }


def _nudged(sample: Sample, rng: np.random.Generator) -> Sample:
    """Every nonzero finite float element moved one ulp up or down at random (in its own dtype): its
    bits as an integer +-1, which is nextafter toward +-inf without nextafter's cost. Zeros stay: a
    relative perturbation of 0 is 0, and one ulp of 0 is a subnormal, which slows every kernel that
    meets it by orders of magnitude."""
    nudged = {}
    for name, array in sample.items():
        array = np.asarray(array)
        if array.dtype.kind != "f" or array.dtype.itemsize < 4:
            nudged[name] = array
            continue
        bits = np.dtype(f"i{array.dtype.itemsize}")
        step = rng.integers(0, 2, array.shape, dtype=bits) * 2 - 1
        moved = (array.view(bits) + step).view(array.dtype)
        nudged[name] = np.where((array == 0) | ~np.isfinite(array), array, moved)
    return nudged


def truth_source(model: Model, reference: Runner, example: Sample) -> TruthSource:
    """The best truth this model allows: a float64 shadow, else a perturbation estimate, else none.
    Each candidate is tried on `example` and must give the reference's outputs within rounding."""
    expected = reference.infer(example)
    builders = (_torch_shadow, _torch_perturbed) if model.format is not Format.ONNX else (_onnx_shadow, _onnx_perturbed)
    reasons: list[str] = []
    for build in builders:
        try:
            source = build(model, "; ".join(reasons))
            found = source.truth(example, expected)
        except Exception as exc:
            reasons.append(f"no {build.__doc__}: {type(exc).__name__}: {first_line(exc)}")
            continue
        if found.kind == source.kind:
            return source
        reasons.append(f"no {build.__doc__}: {found.note}")
    return PlainReference("; ".join(reasons))


# -- torch sources ------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Copying exported and scripted modules warns inside torch; nothing a user can act on."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _module_copy(module: Any) -> Any:
    """A private copy of the model's torch module (one Model.torch_module() per source: unlifting an
    exported program took 0.1-0.26 s a time on a MobileNet): the loaded model shares its parameters
    with the reference, and .double() or a perturbation in place would change the reference too."""
    with _quiet():
        return copy.deepcopy(module).eval()


def _torch_call(model: Model, module: Any, double: bool = False) -> Callable[[Sample], Sample]:
    """`double`: the float64 shadow's call, whose depthwise convolutions run as float64.py computes them."""
    import torch

    from pytest_navigator.check.float64 import DepthwiseInDouble
    from pytest_navigator.model.torch_io import bind_tensors, name_outputs

    def run(sample: Sample) -> Sample:
        args, kwargs = bind_tensors(model, sample)
        with torch.inference_mode(), _quiet(), DepthwiseInDouble() if double else contextlib.nullcontext():
            return name_outputs(module(*args, **kwargs))

    return run


def _torch_sensitivity(model: Model, original: Any) -> _Sensitivity:
    import torch

    runs = []
    for index in range(PERTURBATIONS):
        module = _module_copy(original)
        generator = torch.Generator().manual_seed(index + 1)
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.is_floating_point() and tensor.numel():
                    inf = torch.full_like(tensor, float("inf"))
                    up = torch.rand(tensor.shape, generator=generator) < 0.5
                    moved = torch.where(up, torch.nextafter(tensor, inf), torch.nextafter(tensor, -inf))
                    tensor.copy_(torch.where(tensor == 0, tensor, moved))  # zeros stay (see _nudged)
        runs.append(_torch_call(model, module))
    return _Sensitivity(runs)


def _torch_shadow(model: Model, note: str) -> TruthSource:
    """float64 shadow"""
    from pytest_navigator.check.float64 import double_dtype_constants

    original = model.torch_module()
    with _quiet():
        module = _module_copy(original).double()
    double_dtype_constants(module)
    return _Shadow(_torch_call(model, module, double=True), _torch_sensitivity(model, original))


def _torch_perturbed(model: Model, note: str) -> TruthSource:
    """perturbation estimate"""
    return _Perturbed(_torch_sensitivity(model, model.torch_module()), note)


# -- ONNX sources -------------------------------------------------------------------------------


def to_double(proto: Any) -> Any:
    """A copy of an ONNX model computing in double: float initializers, inputs, outputs, value
    infos, Cast targets and constants converted (subgraphs included)."""
    from onnx import TensorProto

    converted = copy.deepcopy(proto)
    floats: set[int] = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16}
    _double_graph(converted.graph, floats)
    return converted


def _double_tensor(tensor: Any, floats: set[int]) -> None:
    from onnx import TensorProto, numpy_helper

    if tensor.data_type in floats:
        tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float64), tensor.name))
        tensor.data_type = TensorProto.DOUBLE


def _double_graph(graph: Any, floats: set[int]) -> None:
    from onnx import AttributeProto, TensorProto, helper

    for tensor in graph.initializer:
        _double_tensor(tensor, floats)
    for info in [*graph.input, *graph.output, *graph.value_info]:
        if info.type.tensor_type.elem_type in floats:
            info.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in graph.node:
        for attribute in list(node.attribute):
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i in floats:
                attribute.i = TensorProto.DOUBLE
            elif attribute.type == AttributeProto.TENSOR:
                _double_tensor(attribute.t, floats)
            elif attribute.type == AttributeProto.GRAPH:
                _double_graph(attribute.g, floats)
            elif attribute.type == AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    _double_graph(subgraph, floats)
            elif node.op_type == "Constant" and attribute.name in ("value_float", "value_floats"):
                values = [attribute.f] if attribute.name == "value_float" else list(attribute.floats)
                shape = [] if attribute.name == "value_float" else [len(values)]
                node.attribute.remove(attribute)
                node.attribute.append(
                    helper.make_attribute("value", helper.make_tensor("value", TensorProto.DOUBLE, shape, values))
                )


def _ort_call(serialized: bytes) -> Callable[[Sample], Sample]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]

    def run(sample: Sample) -> Sample:
        feed = {name: np.asarray(sample[name]) for name in inputs}
        return dict(zip(names, session.run(None, feed), strict=True))

    return run


def _onnx_sensitivity(model: Model) -> _Sensitivity:
    from onnx import TensorProto, numpy_helper

    runs = []
    for index in range(PERTURBATIONS):
        proto = copy.deepcopy(model.source)
        rng = np.random.default_rng(index + 1)
        for tensor in proto.graph.initializer:
            if tensor.data_type in (TensorProto.FLOAT, TensorProto.DOUBLE):
                nudged = _nudged({"w": numpy_helper.to_array(tensor)}, rng)["w"]
                tensor.CopyFrom(numpy_helper.from_array(nudged, tensor.name))
        runs.append(_ort_call(proto.SerializeToString()))
    return _Sensitivity(runs)


def _onnx_shadow(model: Model, note: str) -> TruthSource:
    """float64 shadow"""
    return _Shadow(_ort_call(to_double(model.source).SerializeToString()), _onnx_sensitivity(model))


def _onnx_perturbed(model: Model, note: str) -> TruthSource:
    """perturbation estimate"""
    return _Perturbed(_onnx_sensitivity(model), note)
