"""Load a model file into a Model: the callable reference source, its input spec and a fingerprint."""

from __future__ import annotations

import hashlib
import inspect
import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_navigator import options
from pytest_navigator.config import Format
from pytest_navigator.errors import ModelLoadError, SpecError, first_line
from pytest_navigator.model.spec import IOSpec, bind, from_exported_program, from_onnx, resolve

if TYPE_CHECKING:
    from pytest_navigator.settings import Settings

ACCEPTED = (
    "TorchScript (torch.jit.save), a torch.export archive (torch.export.save, .pt2), "
    f"ONNX (.onnx), or a pickled nn.Module (torch.save, only with {options.TRUST_MODEL})"
)

_PICKLE = "pickle"  # detected kind for torch.save files; not a Format until trusted


@dataclass(frozen=True)
class Model:
    """A loaded model: where it came from, what it takes, and the object runtimes build from.

    Pickled (to a runtime's worker process, isolation.py) it travels without its loaded object,
    which the worker takes on first use from what its fork server loaded (preload), else from the
    file: a worker that only restores a cached ONNX export never imports torch or reads the model.
    """

    path: Path
    format: Format
    fingerprint: str
    io_spec: IOSpec
    loaded: Any = field(repr=False, compare=False)
    signature: tuple[str, ...] | None = None
    #: Loaded with --navigator-trust-model (a pickle may only be loaded again that way).
    trust: bool = False

    @property
    def source(self) -> Any:
        """The loaded object: a TorchScript module, an ExportedProgram, an nn.Module or an ONNX proto."""
        if self.loaded is None:
            # taken, not shared: another Model of the file in this process loads its own, as before
            found = _PRELOADED.pop((os.path.abspath(self.path), self.fingerprint), None)
            loaded = found if found is not None else _load_source(self.path, self.format, self.trust)
            object.__setattr__(self, "loaded", loaded)
        return self.loaded

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (Model, (self.path, self.format, self.fingerprint, self.io_spec, None, self.signature, self.trust))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def positional_inputs(self) -> tuple[str, ...]:
        return bind(self.io_spec.names, self.signature)[0]

    @property
    def keyword_inputs(self) -> tuple[str, ...]:
        return bind(self.io_spec.names, self.signature)[1]

    def torch_module(self) -> Any:
        """An eval-mode callable torch module (the ExportedProgram's unlifted module for .pt2)."""
        if self.format is Format.TORCH_EXPORTEDPROGRAM:
            return self.source.module()
        if self.format in (Format.TORCH, Format.TORCHSCRIPT):
            return self.source
        raise TypeError(f"{self.path} is {self.format.value}, not a torch model")


def fingerprint(path: Path) -> str:
    """sha256 of the file's bytes (and of an ONNX external-data file beside it)."""
    digest = hashlib.sha256()
    for part in (path, path.with_name(path.name + ".data")):
        if part == path or part.is_file():
            with part.open("rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
    return digest.hexdigest()


def _fail(path: Path, problem: str) -> ModelLoadError:
    return ModelLoadError(f"model file {str(path)!r} {problem}. Accepted formats: {ACCEPTED}.")


def detect_format(path: Path) -> Format | str:
    """What kind of file this is, from its content, without running any of it."""
    if not path.exists():
        raise _fail(path, "does not exist")
    if path.is_dir():
        raise _fail(path, "is a directory, not a model file")
    try:
        with path.open("rb") as stream:
            head = stream.read(8)
    except OSError as exc:
        raise _fail(path, f"cannot be read ({exc.strerror or exc})") from None
    if not head:
        raise _fail(path, "is empty")
    if head.startswith(b"PK"):
        return _detect_zip(path)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return _PICKLE  # torch.save's legacy (non-zip) format
    return _detect_onnx(path)


def _detect_zip(path: Path) -> Format | str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _fail(path, f"is a damaged zip archive, truncated or corrupt ({exc})") from None
    if bad is not None:
        raise _fail(path, f"is a damaged zip archive: member {bad!r} fails its checksum")
    found = _zip_format(names)
    if found is None:
        raise _fail(path, "is a zip archive but neither TorchScript, a torch.export archive nor torch.save output")
    return found


def _zip_format(names: Sequence[str]) -> Format | str | None:
    """What a zip archive with these members holds, by torch's layouts (None: none of them)."""
    parts = {name.split("/", 1)[1] if "/" in name else name for name in names}
    if "archive_format" in parts or any(p.startswith("models/") for p in parts):
        return Format.TORCH_EXPORTEDPROGRAM
    if "constants.pkl" in parts or any(p.startswith("code/") for p in parts):
        return Format.TORCHSCRIPT
    if "data.pkl" in parts:
        return _PICKLE
    return None


def _detect_onnx(path: Path) -> Format:
    try:
        import onnx
    except ImportError:
        raise _fail(
            path,
            "is not a torch file, and the onnx package that reads ONNX files is not installed (pip install 'pytest-navigator[onnx]')",
        ) from None
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise _fail(path, f"is not a torch file and not a valid ONNX file ({type(exc).__name__}: {exc})") from None
    if not proto.graph.node or not proto.opset_import:
        raise _fail(
            path, "does not hold an ONNX model (no graph nodes or no opset); it may be truncated or random bytes"
        )
    return Format.ONNX


def load(path: str | Path, *, trust: bool = False, user_specs: Sequence[IOSpec | None] = ()) -> Model:
    """Load `path`; user_specs are the CLI, ini and sidecar specs in that order of precedence."""
    path = Path(path)
    kind = detect_format(path)
    label = f"model file {str(path)!r}"
    if kind == _PICKLE:
        if not trust:
            raise ModelLoadError(
                f"{label} is a pickled torch object (torch.save). Unpickling runs arbitrary code stored "
                "in the file, so pytest-navigator refuses it by default. If you trust this file, pass "
                f"{options.TRUST_MODEL} (or set navigator_trust_model = true in the ini file); better, "
                "save it with torch.export.save (.pt2) or torch.jit.save, which load without running code."
            )
        fmt = Format.TORCH
    else:
        fmt = kind  # type: ignore[assignment]  # a Format for everything but pickles
    source = _load_source(path, fmt, trust)
    own_spec, signature = _own_spec(source, fmt, label)
    io_spec = resolve(own_spec, user_specs, label, signature)
    try:
        bind(io_spec.names, signature)
    except SpecError as exc:
        raise SpecError(f"{label}: {exc}") from None
    return Model(
        path=path,
        format=fmt,
        fingerprint=fingerprint(path),
        io_spec=io_spec,
        loaded=source,
        signature=signature,
        trust=trust,
    )


def _load_source(path: Path, fmt: Format, trust: bool) -> Any:
    """The loaded object of a model file whose format is known (torch.save pickles only when trusted)."""
    if fmt is Format.TORCH:
        if not trust:
            raise ModelLoadError(f"model file {str(path)!r} is a pickle; loading it again needs {options.TRUST_MODEL}")
        return _load_pickle(path)
    if fmt is Format.TORCHSCRIPT:
        return _load_torchscript(path)
    if fmt is Format.TORCH_EXPORTEDPROGRAM:
        return _load_exported(path)
    return _load_onnx(path)


def _load_torchscript(path: Path) -> Any:
    import torch

    return _load_with(
        lambda: torch.jit.load(str(path), map_location="cpu").eval(), path, "TorchScript", "torch.jit.load"
    )


def _load_exported(path: Path) -> Any:
    import torch

    return _load_with(lambda: torch.export.load(str(path)), path, "a torch.export archive", "torch.export.load")


def _load_with(loader: Any, path: Path, kind: str, function: str) -> Any:
    """Run a torch loader quietly (torch 2.13 deprecates these loaders) and name the file if it fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*torch.jit.*")
        try:
            return loader()
        except Exception as exc:
            raise _fail(
                path, f"looks like {kind} but {function} failed ({type(exc).__name__}: {first_line(exc)})"
            ) from None


#: The run's torch.export archives as the fork server loaded them (model/preloaded.py), by absolute
#: path and fingerprint: a worker forked from it takes its model from here (Model.source) instead of
#: reading the file again. Empty in any other process. The other formats load in milliseconds and
#: are left to the workers.
_PRELOADED: dict[tuple[str, str], Any] = {}


def preload(path: Path) -> bool:
    """Load `path` into this process's _PRELOADED if it is a torch.export archive; whether it was. One
    that changed while it loaded is not kept: its fingerprint might not be of what was loaded."""
    with path.open("rb") as stream:
        if stream.read(2) != b"PK":
            return False
    with zipfile.ZipFile(path) as archive:
        if _zip_format(archive.namelist()) is not Format.TORCH_EXPORTEDPROGRAM:
            return False
    before = _version(path)
    key = os.path.abspath(path), fingerprint(path)
    program = _load_exported(path)
    if _version(path) != before:
        return False
    _PRELOADED[key] = program
    return True


def _version(path: Path) -> tuple[int, ...]:
    """What a write or a replacement of the file changes: its device and inode, size, modification time."""
    found = os.stat(path)
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns


def _load_pickle(path: Path) -> Any:
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise _fail(
            path,
            f"could not be unpickled ({type(exc).__name__}: {first_line(exc)}); the classes a pickle names must be importable here, e.g. from a package or conftest.py",
        ) from None
    if not isinstance(obj, torch.nn.Module):
        raise _fail(
            path,
            f"unpickles to a {type(obj).__module__}.{type(obj).__qualname__}, not a torch.nn.Module (a state_dict has no architecture: save the module itself)",
        )
    return obj.eval()


def _load_onnx(path: Path) -> Any:
    import onnx

    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise _fail(path, f"is not a valid ONNX model ({type(exc).__name__}: {first_line(exc)})") from None
    return proto


def _own_spec(source: Any, fmt: Format, label: str) -> tuple[IOSpec | None, tuple[str, ...] | None]:
    """The spec the model itself carries, and forward's parameter names when they are known. A model
    that takes no inputs is a SpecError: no input spec could give it one, and nothing could be generated."""
    if fmt is Format.ONNX:
        spec = from_onnx(source, source=f"{label} (ONNX graph inputs)")
        if not len(spec):
            raise _takes_no_inputs(label, "its ONNX graph declares no input")
        return spec, spec.names
    if fmt is Format.TORCH_EXPORTEDPROGRAM:
        spec = from_exported_program(source, source=f"{label} (exported program signature)")
        if not len(spec):
            raise _takes_no_inputs(label, "its exported program's graph signature lists no user input")
        return spec, spec.names
    if fmt is Format.TORCHSCRIPT:
        arguments = source.forward.schema.arguments[1:]
        if not arguments:
            raise _takes_no_inputs(label, "its TorchScript forward() takes no argument")
        return None, tuple(a.name for a in arguments)
    parameters = list(inspect.signature(source.forward).parameters.values())
    if not parameters:  # *args or **kwargs may take inputs: only a forward() with nothing at all takes none
        raise _takes_no_inputs(label, "its forward() takes no argument")
    names = tuple(p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return None, names


def _takes_no_inputs(label: str, why: str) -> SpecError:
    """A model that takes no inputs cannot be checked; `why` says what shows it takes none."""
    return SpecError(
        f"{label} takes no inputs: {why}. pytest-navigator checks and measures a model by feeding it generated "
        f"inputs, so it needs a model with at least one tensor input, and no input spec ({options.INPUT}, "
        "navigator_inputs, a sidecar) can add one to the file; save the model from a forward() that takes its "
        "input tensors, e.g. torch.export.save(torch.export.export(module, (example_input,)), ...)."
    )


def _user_specs(settings: Settings) -> list[IOSpec | None]:
    """--navigator-input and the ini twin's specs, which a sidecar and the file's own spec complete."""
    from pytest_navigator.model.spec import parse_io_spec

    cli = parse_io_spec(settings.cli_inputs, options.INPUT) if settings.cli_inputs else None
    ini = parse_io_spec(settings.ini_inputs, "ini option navigator_inputs") if settings.ini_inputs else None
    return [cli, ini]


def load_models(settings: Settings, loaded: Mapping[Path, Model]) -> dict[Path, Model]:
    """Every model of the settings, those in `loaded` kept; the first bad one raises its NavigatorError."""
    from pytest_navigator.model.spec import read_sidecar

    specs = _user_specs(settings)
    return {
        path: loaded[path]
        if path in loaded
        else load(path, trust=settings.trust_model, user_specs=[*specs, read_sidecar(path)])
        for path in settings.models
    }


def load_against(settings: Settings, models: Sequence[Model]) -> Model:
    """--navigator-against: the old model an A/B run measures beside the one model given, in its format
    and with its inputs."""
    from pytest_navigator.errors import NavigatorError
    from pytest_navigator.model.spec import read_sidecar

    against = settings.against
    assert against is not None
    if len(settings.models) != 1:
        raise NavigatorError(f"{options.AGAINST}={against} compares with one model; {len(settings.models)} are given.")
    (model,) = models
    old = load(against, trust=settings.trust_model, user_specs=[*_user_specs(settings), read_sidecar(against)])
    if old.format is not model.format:
        raise NavigatorError(
            f"{options.AGAINST}={against} is {old.format.value} and {model.name} is {model.format.value}: "
            "an A/B run builds the same runtimes from both, so give the old model in the same format."
        )
    if str(old.io_spec) != str(model.io_spec):
        raise NavigatorError(
            f"{options.AGAINST}={against}: its inputs ({old.io_spec}) differ from {model.name}'s ({model.io_spec})."
        )
    return old
