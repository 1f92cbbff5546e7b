"""Runtime options: one config class per runtime family (seed 000's CustomConfigForFormat), in the
role MegEngine Lite's LiteOptions play (seed 004): threads, graph optimization, precision, TF32,
CUDA graphs, workspace limits. (The int8 runtimes' classes are in quantization_options.py.)

Options come from the CLI (`--navigator-runtime-option onnxruntime-cpu:intra_op_num_threads=1`),
the ini (`navigator_runtime_options`, one per line) or a marker
(`@pytest.mark.navigator(runtime_options={"onnxruntime-cpu": {"intra_op_num_threads": 1}})`).
Options that differ from a runtime's defaults are part of its identity: a runtime id is
`NAME` or `NAME:key=value,key=value` (sorted), and that id is what test ids, reports and baseline
keys show, so a baseline measured with one thread is never compared with one measured with four.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any, Literal

from pytest_navigator import options as option_names
from pytest_navigator.config import CustomConfigForFormat, Format
from pytest_navigator.errors import NavigatorError

if typing.TYPE_CHECKING:
    from pytest_navigator.settings import Settings


class RuntimeOptionError(NavigatorError):
    """A runtime option that does not exist or a value it does not accept."""


class _Options(CustomConfigForFormat):
    """Shared behaviour: checked fields, canonical text, parsing from strings. Subclasses set
    FORMAT and NAME."""

    FORMAT: typing.ClassVar[Format]
    NAME: typing.ClassVar[str]

    @classmethod
    def name(cls) -> str:
        return cls.NAME

    def __post_init__(self) -> None:
        for item in fields(self):  # type: ignore[arg-type]  # from_dict({"fp16": "true"}) gets a bool
            object.__setattr__(self, item.name, _coerce(type(self), item.name, getattr(self, item.name), ""))

    @property
    def format(self) -> Format:
        return self.FORMAT

    def changed(self, defaults: _Options | None = None) -> dict[str, Any]:
        """Fields whose value differs from `defaults` (the class defaults when None), in field order."""
        base = defaults if defaults is not None else type(self)()
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(base, f.name)}  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @property
    def precision(self) -> str | None:
        """The precision these options make the runtime compute in (fp16, bf16), where an option
        decides it; None: the runtime's own. It sets the error budget and the fixed tolerance."""
        return None

    @classmethod
    def describe_fields(cls) -> str:
        hints = _hints(cls)
        parts = []
        for item in fields(cls):  # type: ignore[arg-type]
            default = _text(item.default) if item.default != "" else "none"
            parts.append(f"{item.name} ({_accepted(hints[item.name])}, default {default})")
        return "; ".join(parts)


@dataclass(frozen=True)
class _TorchOptions(_Options):
    """What every torch runtime takes: settings that hold only while the runtime runs."""

    #: torch.set_num_threads while this runtime runs (0: torch's default).
    threads: int = 0
    #: TF32 tensor cores for float32 matmuls and convolutions on CUDA.
    tf32: bool = False


@dataclass(frozen=True)
class TorchConfig(_TorchOptions):
    """Eager PyTorch (torch-cpu, torch-cuda)."""

    FORMAT: typing.ClassVar[Format] = Format.TORCH
    NAME: typing.ClassVar[str] = "Torch"


@dataclass(frozen=True)
class TorchScriptConfig(_TorchOptions):
    """TorchScript (torchscript-cpu, torchscript-cuda): frozen, optionally optimized for inference."""

    FORMAT: typing.ClassVar[Format] = Format.TORCHSCRIPT
    NAME: typing.ClassVar[str] = "TorchScript"
    #: torch.jit.optimize_for_inference after freezing (fusions, MKLDNN layouts on the CPU).
    optimize_for_inference: bool = True


@dataclass(frozen=True)
class TorchCompileConfig(_TorchOptions):
    """torch.compile (torch-compile-cpu, torch-compile-cuda)."""

    FORMAT: typing.ClassVar[Format] = Format.TORCH
    NAME: typing.ClassVar[str] = "TorchCompile"
    #: torch.compile's mode; reduce-overhead and max-autotune capture CUDA graphs themselves.
    mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    #: CUDA graphs in mode=default (inductor's triton.cudagraphs); CUDA runtimes only.
    cuda_graphs: bool = False
    #: One compiled plan per batch size (static shapes, memoized) or torch's automatic dynamic shapes.
    static_shapes: bool = False
    fullgraph: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cuda_graphs and self.mode != "default":
            raise RuntimeOptionError(
                f"torch.compile: cuda_graphs=true goes with mode=default; mode={self.mode} "
                "decides CUDA graphs itself (reduce-overhead and max-autotune use them)."
            )


@dataclass(frozen=True)
class TorchAOTIConfig(_TorchOptions):
    """AOTInductor (torch-aoti-cpu, torch-aoti-cuda): what changes the compiled package. `threads` is
    compiled into it on the CPU (inductor's OpenMP loops), so a new value compiles a new package."""

    FORMAT: typing.ClassVar[Format] = Format.TORCH_EXPORTEDPROGRAM
    NAME: typing.ClassVar[str] = "TorchAOTI"
    #: Inductor's freezing: weights become constants, folded and prepacked into the package.
    freezing: bool = True
    #: Inductor's max-autotune: benchmark kernel choices while compiling (much longer builds).
    max_autotune: bool = False


@dataclass(frozen=True)
class OnnxRuntimeConfig(_Options):
    """ONNX Runtime (onnxruntime-cpu, onnxruntime-cuda, onnxruntime-tensorrt)."""

    FORMAT: typing.ClassVar[Format] = Format.ONNX
    NAME: typing.ClassVar[str] = "OnnxRuntime"
    #: SessionOptions.intra_op_num_threads (0: one per physical core).
    intra_op_num_threads: int = 0
    inter_op_num_threads: int = 0
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    #: Whether idle intra-op threads spin (faster next request, busy cores between requests).
    allow_spinning: bool = True
    #: GPU providers: inputs and outputs bound on the device (IO binding), no host copies timed.
    io_binding: bool = True
    #: TensorRT execution provider: fp16 kernels and the builder's workspace limit.
    trt_fp16: bool = False
    trt_workspace_bytes: int = 1 << 30

    @property
    def precision(self) -> str | None:
        return "fp16" if self.trt_fp16 else None


@dataclass(frozen=True)
class OpenVINOConfig(_Options):
    """OpenVINO on the CPU (openvino-cpu), compiled from the model's ONNX form."""

    FORMAT: typing.ClassVar[Format] = Format.ONNX
    NAME: typing.ClassVar[str] = "OpenVINO"
    #: PERFORMANCE_HINT: LATENCY (one stream, one request at a time) or THROUGHPUT (several streams;
    #: a request's batch is split over an AsyncInferQueue, as OpenVINO's throughput users run it).
    performance_hint: Literal["LATENCY", "THROUGHPUT"] = "LATENCY"
    #: NUM_STREAMS (0: what the hint chooses).
    num_streams: int = 0
    #: INFERENCE_NUM_THREADS (0: OpenVINO's default, a thread per core).
    inference_num_threads: int = 0
    #: INFERENCE_PRECISION_HINT. OpenVINO's own default on a CPU with native bf16 is bf16; an fp32
    #: runtime must not round to bf16 unasked, so f32 is this runtime's default.
    inference_precision: Literal["f32", "bf16"] = "f32"
    #: CACHE_DIR in the artifact cache: a rerun loads the compiled model instead of compiling again.
    model_cache: bool = True

    @property
    def precision(self) -> str | None:
        return "bf16" if self.inference_precision == "bf16" else None

    def __post_init__(self) -> None:
        super().__post_init__()
        cores = os.cpu_count() or 1
        for name in ("num_streams", "inference_num_threads"):
            value = getattr(self, name)
            if value > cores:
                raise RuntimeOptionError(
                    f"openvino: {name}={value} is out of range on this machine; expected 0 (OpenVINO's choice) to "
                    f"{cores}, its CPU count."
                )


@dataclass(frozen=True)
class TensorRTConfig(_Options):
    """Native TensorRT (tensorrt, tensorrt-fp16)."""

    FORMAT: typing.ClassVar[Format] = Format.TENSORRT
    NAME: typing.ClassVar[str] = "TensorRT"
    fp16: bool = False
    tf32: bool = True
    #: The builder's workspace memory pool limit.
    workspace_bytes: int = 1 << 30
    #: IBuilderConfig.builder_optimization_level: 0 (fast builds) to 5 (slow builds, fast engines).
    builder_optimization_level: int = 3
    #: One optimization profile per batch size (seed 003's per-batch plans) or one for all sizes.
    profile_per_batch_size: bool = False

    @property
    def precision(self) -> str | None:
        return "fp16" if self.fp16 else None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.builder_optimization_level <= 5:
            raise RuntimeOptionError(
                f"tensorrt: builder_optimization_level={self.builder_optimization_level} is not accepted; expected 0 to 5."
            )


@functools.cache
def _hints(cls: type[_Options]) -> dict[str, Any]:
    """A config class's resolved field types (annotations are strings under `from __future__`)."""
    return typing.get_type_hints(cls)


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _accepted(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return " | ".join(map(str, typing.get_args(hint)))
    if hint is bool:
        return "true | false"
    if hint is int:
        return "integer >= 0"
    if hint is str:
        return "text"
    return getattr(hint, "__name__", str(hint))


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _coerce(cls: type[_Options], name: str, value: Any, where: str) -> Any:
    """`value` (a string from the CLI/ini, or a Python value from a marker) as field `name`'s type."""
    hint = _hints(cls)[name]
    prefix = f"{where}: " if where else ""

    def reject() -> typing.NoReturn:
        raise RuntimeOptionError(
            f"{prefix}{cls.name()} option {name}={value!r} is not accepted; expected {_accepted(hint)}."
        )

    if typing.get_origin(hint) is Literal:
        if value not in typing.get_args(hint):
            reject()
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if isinstance(value, str) and text in _TRUE | _FALSE:
            return text in _TRUE
        reject()
    if hint is int:
        if isinstance(value, bool):
            reject()
        try:
            number = int(str(value).strip())
        except ValueError:
            reject()
        if number < 0:
            reject()
        return number
    return value


def with_options(defaults: _Options, values: Mapping[str, Any], where: str, runtime: str) -> _Options:
    """`defaults` updated with `values` (strings or Python values); unknown names and bad values are
    one RuntimeOptionError listing what the runtime accepts."""
    cls = type(defaults)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise RuntimeOptionError(
            f"{where}: {runtime} has no option {', '.join(map(repr, unknown))}; "
            f"its options ({cls.name()}Config): {cls.describe_fields()}."
        )
    coerced = {name: _coerce(cls, name, value, where) for name, value in values.items()}
    try:
        return replace(defaults, **coerced)  # type: ignore[type-var]
    except RuntimeOptionError as exc:
        raise RuntimeOptionError(f"{where}: {exc}") from None


def parse_option_specs(specs: Iterable[str], where: str) -> dict[str, dict[str, str]]:
    """['onnxruntime-cpu:intra_op_num_threads=1,allow_spinning=false', ...] -> runtime -> {name: text}.
    Later specs for the same runtime and option win."""
    found: dict[str, dict[str, str]] = {}
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        runtime, sep, rest = spec.partition(":")
        pairs = [p.strip() for p in rest.split(",") if p.strip()]
        if not sep or not runtime.strip() or not pairs or any("=" not in p for p in pairs):
            raise RuntimeOptionError(
                f"{where}={spec!r} is not RUNTIME:OPTION=VALUE[,OPTION=VALUE...], "
                "e.g. onnxruntime-cpu:intra_op_num_threads=1"
            )
        options = found.setdefault(runtime.strip(), {})
        for pair in pairs:
            name, _, value = pair.partition("=")
            options[name.strip()] = value.strip()
    return found


def configured_options(settings: Settings) -> dict[str, dict[str, str]]:
    """The run's runtime options, runtime name -> option -> value text: a script's (Settings.runtime_options),
    the ini's navigator_runtime_options over them, and --navigator-runtime-option over both (a spec
    that is not RUNTIME:OPTION=VALUE names the option it came from)."""
    found = {runtime: dict(values) for runtime, values in settings.runtime_options.items()}
    for specs, where in (
        (settings.ini_runtime_options, "navigator_runtime_options"),
        (settings.cli_runtime_options, option_names.RUNTIME_OPTION),
    ):
        for runtime, values in parse_option_specs(specs, where).items():
            found.setdefault(runtime, {}).update(values)
    return found


#: --navigator-mode=instructions: what a CPU runtime is built with, for counts that do not depend on
#: scheduling (one compute thread, no thread spinning while idle). Applied under the user's options.
SINGLE_THREAD: dict[str, Any] = {
    "threads": 1,
    "intra_op_num_threads": 1,
    "inter_op_num_threads": 1,
    "allow_spinning": False,
    "inference_num_threads": 1,
    "num_streams": 1,
}


def single_thread(options: _Options | None) -> dict[str, Any]:
    """The SINGLE_THREAD settings a runtime's options class has (none for a runtime without options)."""
    if options is None:
        return {}
    names = {f.name for f in fields(options)}  # type: ignore[arg-type]
    return {name: value for name, value in SINGLE_THREAD.items() if name in names}


def runtime_id(name: str, options: _Options | None, defaults: _Options | None) -> str:
    """`name`, or `name:key=value,...` with every option that differs from the runtime's defaults."""
    if options is None:
        return name
    changed = options.changed(defaults)
    if not changed:
        return name
    return name + ":" + ",".join(f"{key}={_text(value)}" for key, value in sorted(changed.items()))


def split_runtime_id(runtime: str) -> tuple[str, dict[str, str]]:
    """'onnxruntime-cpu:intra_op_num_threads=1' -> ('onnxruntime-cpu', {'intra_op_num_threads': '1'})."""
    name, sep, rest = runtime.partition(":")
    if not sep:
        return name, {}
    return name, dict(pair.split("=", 1) for pair in rest.split(",") if "=" in pair)
