"""Input specs: names, dtypes, shapes with dynamic axes and value ranges, and where they come from."""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_navigator import options
from pytest_navigator.errors import SpecError

#: dtypes a spec may name; numpy names, because a Sample holds numpy arrays.
DTYPES = (
    "float16", "bfloat16", "float32", "float64",
    "int8", "int16", "int32", "int64", "uint8",
    "bool",
)  # fmt: skip
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
#: bfloat16 arrays are ml_dtypes.bfloat16 (numpy has no bfloat16 of its own; onnx depends on ml_dtypes).

#: Upper bound used for a dynamic axis nobody bounded (the batch axis has its own, below).
DEFAULT_DYNAMIC_MAX = 64
DEFAULT_MAX_BATCH = 1024

SPEC_EXAMPLE = "input:float32[N,3,224,224]  or  ids:int64[N,128]{0..30521}"


@dataclass(frozen=True, slots=True)
class Dim:
    """One axis: a fixed size, or dynamic within [min, max] (the batch axis is dynamic named N)."""

    size: int | None
    name: str | None = None
    min: int = 1
    max: int = DEFAULT_DYNAMIC_MAX

    @property
    def dynamic(self) -> bool:
        return self.size is None

    def __str__(self) -> str:
        if self.size is not None:
            return str(self.size)
        name = self.name or "-1"
        default_max = DEFAULT_MAX_BATCH if name == "N" else DEFAULT_DYNAMIC_MAX
        if self.min == 1 and self.max == default_max:
            return name
        return f"{self.min}..{self.max}" if self.name is None else f"{name}={self.min}..{self.max}"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output tensor: name, numpy dtype, axes, and the range its values live in."""

    name: str
    dtype: str
    dims: tuple[Dim, ...]
    value_range: tuple[float, float] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape with -1 for every dynamic axis (ONNX's and numpy's convention)."""
        return tuple(-1 if d.size is None else d.size for d in self.dims)

    @property
    def batch_axis(self) -> int | None:
        """Axis 0 when it is dynamic: that is the axis runtimes batch requests over."""
        return 0 if self.dims and self.dims[0].dynamic else None

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    def __str__(self) -> str:
        text = f"{self.name}:{self.dtype}[{','.join(str(d) for d in self.dims)}]"
        if self.value_range is not None:
            lo, hi = self.value_range
            text += "{" + f"{_num(lo)}..{_num(hi)}" + "}"
        return text


@dataclass(frozen=True, slots=True)
class IOSpec:
    """The ordered inputs of a model; order is the positional order of `forward`."""

    inputs: tuple[TensorSpec, ...]
    source: str = field(default="", compare=False)

    def __iter__(self) -> Iterator[TensorSpec]:
        return iter(self.inputs)

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    def __getitem__(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise KeyError(name)

    @property
    def max_batch_size(self) -> int | None:
        """The largest batch every input allows, or None when no input has a batch axis."""
        limits = [t.dims[0].max for t in self.inputs if t.batch_axis is not None]
        return min(limits) if limits else None

    def __str__(self) -> str:
        return ", ".join(str(t) for t in self.inputs)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# -- parsing spec strings -----------------------------------------------------------------------

_SPEC_RE = re.compile(
    r"^\s*(?P<name>[A-Za-z_][\w.\-/]*)\s*:\s*(?P<dtype>[a-z0-9]+)\s*"
    r"\[(?P<dims>[^\]]*)\]\s*(?:\{(?P<range>[^}]*)\})?\s*$"
)
_RANGE_RE = re.compile(r"^\s*(?P<lo>[-+]?[\d.eE+\-]+|-?inf)\s*\.\.\s*(?P<hi>[-+]?[\d.eE+\-]+|-?inf)\s*$")


def _point_at(text: str, part: str, source: str, problem: str) -> SpecError:
    """An error that quotes the spec and puts a caret under the bad part."""
    col = max(text.find(part), 0) if part else len(text)
    caret = " " * col + "^" * max(len(part), 1)
    return SpecError(
        f"{source}: cannot read input spec {text!r}: {problem}\n    {text}\n    {caret}\n"
        f"Expected NAME:DTYPE[DIMS] with an optional {{LOW..HIGH}} value range, "
        f"e.g. {SPEC_EXAMPLE}; DTYPE is one of {', '.join(DTYPES)}; a dimension is a size, "
        f"N (the dynamic batch axis), -1 or a name (dynamic), or LOW..HIGH (dynamic, bounded)."
    )


def parse_tensor_spec(text: str, source: str = options.INPUT) -> TensorSpec:
    """Parse 'input:float32[N,3,224,224]' or 'ids:int64[N,128]{0..30521}'."""
    match = _SPEC_RE.match(text)
    if match is None:
        if ":" not in text:
            raise _point_at(text, "", source, "no ':' between the name and the dtype")
        if "[" not in text or "]" not in text:
            raise _point_at(text, text.split(":", 1)[1], source, "the shape must be in [brackets]")
        name = text.split(":", 1)[0].strip()
        if not re.match(r"^[A-Za-z_][\w.\-/]*$", name):
            raise _point_at(text, name, source, f"{name!r} is not a valid input name")
        tail = text[text.index("]") + 1 :]
        raise _point_at(text, tail.strip() or text, source, "unexpected text after the shape")
    name, dtype = match["name"], match["dtype"]
    if dtype not in DTYPES:
        raise _point_at(text, dtype, source, f"unknown dtype {dtype!r}")
    dims = tuple(
        _parse_dim(token, index, text, source)
        for index, token in enumerate(match["dims"].split(","))
        if match["dims"].strip()
    )
    value_range = None
    if match["range"] is not None:
        value_range = _parse_range(match["range"], text, source, dtype)
    return TensorSpec(name=name, dtype=dtype, dims=dims, value_range=value_range)


def _parse_dim(token: str, index: int, text: str, source: str) -> Dim:
    raw = token.strip()
    if re.fullmatch(r"\d+", raw):
        if int(raw) == 0:
            raise _point_at(text, raw, source, f"dimension {index} is 0")
        return Dim(int(raw))
    if raw in ("N", "-1"):
        name = "N" if raw == "N" or index == 0 else None
        return Dim(None, name, 1, DEFAULT_MAX_BATCH if name == "N" else DEFAULT_DYNAMIC_MAX)
    bounded = re.fullmatch(r"(?:(?P<name>[A-Za-z_]\w*)=)?(?P<lo>\d+)\.\.(?P<hi>\d+)", raw)
    if bounded:
        lo, hi = int(bounded["lo"]), int(bounded["hi"])
        if not 1 <= lo <= hi:
            raise _point_at(text, raw, source, f"dimension {index} bounds {lo}..{hi} need 1 <= LOW <= HIGH")
        return Dim(None, bounded["name"], lo, hi)
    if re.fullmatch(r"[A-Za-z_]\w*", raw):
        return Dim(None, raw, 1, DEFAULT_MAX_BATCH if raw == "N" else DEFAULT_DYNAMIC_MAX)
    raise _point_at(text, raw or "[", source, f"dimension {index} {raw!r} is not a size, N, -1, a name or LOW..HIGH")


def _parse_range(raw: str, text: str, source: str, dtype: str) -> tuple[float, float]:
    match = _RANGE_RE.match(raw)
    if match is None:
        raise _point_at(text, raw or "{", source, "a value range is written {LOW..HIGH}, e.g. {0..30521}")
    try:
        lo, hi = float(match["lo"]), float(match["hi"])
    except ValueError:
        raise _point_at(text, raw, source, "the range bounds are not numbers") from None
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise _point_at(text, raw, source, f"range {raw!r} needs LOW <= HIGH")
    if dtype not in FLOAT_DTYPES and not (lo.is_integer() and hi.is_integer()):
        raise _point_at(text, raw, source, f"an {dtype} input needs integer bounds")
    return lo, hi


def parse_io_spec(texts: Iterable[str], source: str) -> IOSpec:
    specs = tuple(parse_tensor_spec(t, source) for t in texts if t.strip())
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise SpecError(f"{source}: input {name!r} is given {names.count(name)} times; give each input once.")
    return IOSpec(specs, source=source)


def sidecar_path(model_path: Path) -> Path:
    """`resnet.pt2` -> `resnet.navigator.toml` beside it."""
    return model_path.with_name(model_path.stem + ".navigator.toml")


#: What a sidecar may hold.
SIDECAR_KEYS = frozenset({"inputs"})


def read_sidecar(model_path: Path) -> IOSpec | None:
    """The `inputs = [...]` list of `<model>.navigator.toml`, if that file exists."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SpecError(
            f'{path}: cannot read this sidecar: {exc}. Expected TOML such as inputs = ["{SPEC_EXAMPLE.split()[0]}"].'
        ) from None
    unknown = sorted(set(data) - SIDECAR_KEYS)
    if unknown:
        raise SpecError(
            f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; a sidecar accepts "
            f'{", ".join(sorted(SIDECAR_KEYS))} (e.g. inputs = ["{SPEC_EXAMPLE.split()[0]}"]).'
        )
    inputs = data.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
        raise SpecError(
            f"{path}: 'inputs' must be a list of spec strings such as [\"{SPEC_EXAMPLE.split()[0]}\"], got {inputs!r}."
        )
    return parse_io_spec(inputs, source=str(path))


# -- specs a model carries ----------------------------------------------------------------------

_ONNX_DTYPES = {
    1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64",
    9: "bool", 10: "float16", 11: "float64", 16: "bfloat16",
}  # fmt: skip


def from_onnx(model: Any, source: str) -> IOSpec:
    """The graph inputs (less initializers) of an onnx.ModelProto; the first symbolic axis is N."""
    initializers = {init.name for init in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dtype = _ONNX_DTYPES.get(tensor.elem_type)
        if dtype is None:
            raise SpecError(
                f"{source}: input {value.name!r} has ONNX element type {tensor.elem_type}, which pytest-navigator cannot generate; supported: {', '.join(sorted(set(_ONNX_DTYPES.values())))}."
            )
        dims = []
        for index, dim in enumerate(tensor.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(Dim(dim.dim_value))
            elif index == 0:
                dims.append(Dim(None, "N", 1, DEFAULT_MAX_BATCH))
            else:
                dims.append(Dim(None, dim.dim_param or None))
        specs.append(TensorSpec(value.name, dtype, tuple(dims)))
    return IOSpec(tuple(specs), source=source)


def from_exported_program(program: Any, source: str) -> IOSpec:
    """The user inputs of a torch.export ExportedProgram, with its symbolic batch/axis bounds."""
    user_inputs = set(program.graph_signature.user_inputs)
    ranges = {str(sym): rng for sym, rng in program.range_constraints.items()}
    specs = []
    for node in program.graph.nodes:
        if node.op != "placeholder" or node.name not in user_inputs:
            continue
        value = node.meta.get("val")
        if value is None or not hasattr(value, "shape"):
            raise SpecError(f"{source}: input {node.name!r} is not a tensor; pytest-navigator feeds tensors only.")
        dtype = str(value.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise SpecError(
                f"{source}: input {node.name!r} has dtype {dtype}, which pytest-navigator cannot generate; supported: {', '.join(DTYPES)}."
            )
        dims = []
        for index, size in enumerate(value.shape):
            if isinstance(size, int):
                dims.append(Dim(size))
                continue
            rng = ranges.get(str(size))
            lo = int(rng.lower) if rng is not None and math.isfinite(float(rng.lower)) else 1
            default_hi = DEFAULT_MAX_BATCH if index == 0 else DEFAULT_DYNAMIC_MAX
            upper = float(rng.upper) if rng is not None else math.inf
            hi = int(upper) if math.isfinite(upper) and upper < 2**31 else default_hi
            dims.append(Dim(None, "N" if index == 0 else str(size), max(lo, 1), hi))
        specs.append(TensorSpec(node.name, dtype, tuple(dims)))
    return IOSpec(tuple(specs), source=source)


# -- combining sources ----------------------------------------------------------------------------


def resolve(
    model_spec: IOSpec | None, user_sources: Sequence[IOSpec | None], model_label: str, signature: Sequence[str] | None
) -> IOSpec:
    """The model's own spec refined by the first non-empty user source (CLI, ini, sidecar).

    A model that carries no spec (TorchScript, pickled module) takes the user's spec whole;
    one that does keeps its names and dtypes, and a user entry may only narrow it (fix a
    dynamic axis, bound it, add a value range).
    """
    user = next((s for s in user_sources if s is not None and len(s)), None)
    if model_spec is None or not len(model_spec):
        if user is None:
            raise SpecError(_missing_spec_message(model_label, signature))
        return user
    if user is None:
        return model_spec
    merged = []
    by_name = {t.name: t for t in user}
    unknown = [name for name in by_name if name not in model_spec.names]
    if unknown:
        raise SpecError(
            f"{user.source}: {model_label} has no input named {', '.join(map(repr, unknown))}; "
            f"its inputs are {', '.join(model_spec.names)} ({model_spec.source})."
        )
    for own in model_spec:
        given = by_name.get(own.name)
        merged.append(own if given is None else _narrow(own, given, user.source, model_label))
    return IOSpec(tuple(merged), source=f"{model_spec.source} + {user.source}")


def _narrow(own: TensorSpec, given: TensorSpec, source: str, model_label: str) -> TensorSpec:
    if given.dtype != own.dtype:
        raise SpecError(
            f"{source}: input {own.name!r} of {model_label} is {own.dtype}, not {given.dtype}; write {own}."
        )
    if len(given.dims) != len(own.dims):
        raise SpecError(
            f"{source}: input {own.name!r} of {model_label} has {len(own.dims)} axes ({own}), the spec gives {len(given.dims)}."
        )
    for index, (mine, theirs) in enumerate(zip(own.dims, given.dims, strict=True)):
        if mine.size is not None and theirs.size != mine.size:
            raise SpecError(
                f"{source}: axis {index} of input {own.name!r} of {model_label} is fixed at {mine.size}, the spec gives {theirs}; write {own}."
            )
    return replace(given, dims=tuple(t if m.size is None else m for m, t in zip(own.dims, given.dims, strict=True)))


def _missing_spec_message(model_label: str, signature: Sequence[str] | None) -> str:
    names = list(signature) if signature else ["input"]
    example = " ".join(f'{options.INPUT} "{n}:float32[N,...]"' for n in names)
    return (
        f"{model_label} does not say what inputs it takes (TorchScript and pickled modules carry no "
        f"input spec). Give one input spec per forward() argument, in order, e.g.\n    {example}\n"
        f"replacing float32[N,...] with each input's dtype and shape ({SPEC_EXAMPLE}), or put "
        f"inputs = [...] in the ini option navigator_inputs or in a <model>.navigator.toml sidecar."
    )


def bind(spec_names: Sequence[str], signature: Sequence[str] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Split inputs into forward's positional and keyword arguments (seed 002's dummy_input rule).

    Inputs that match forward's leading parameters in order go positionally; the rest that name
    a parameter go by keyword (the trailing dict). With no known signature, or names that match
    no parameter, everything is positional in spec order.
    """
    if not signature or not set(spec_names) & set(signature):
        return tuple(spec_names), ()
    missing = [n for n in spec_names if n not in signature]
    if missing:
        raise SpecError(
            f"inputs {', '.join(map(repr, missing))} do not name a parameter of forward({', '.join(signature)}); "
            "name each input after the parameter it feeds."
        )
    positional: list[str] = []
    for parameter in signature:
        if parameter in spec_names:
            positional.append(parameter)
        else:
            break
    keyword = tuple(n for n in spec_names if n not in positional)
    return tuple(positional), keyword
