"""Loading model files by content: every format, every kind of bad file, and the pickle opt-in."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pytest_navigator.config import Format
from pytest_navigator.errors import ModelLoadError, SpecError
from pytest_navigator.model.loader import load
from pytest_navigator.model.spec import parse_io_spec

SPEC = parse_io_spec(["input:float32[N,8]"], "--navigator-input")


@pytest.mark.parametrize(
    ("suffix", "fmt", "needs_spec"),
    [
        (".pt", Format.TORCHSCRIPT, True),
        (".pt2", Format.TORCH_EXPORTEDPROGRAM, False),
        (".onnx", Format.ONNX, False),
        (".pkl", Format.TORCH, True),
    ],
)
def test_each_format_loads_with_its_spec(
    tiny_models: dict[str, Path], suffix: str, fmt: Format, needs_spec: bool
) -> None:
    path = tiny_models[suffix]
    model = load(path, trust=True, user_specs=[SPEC] if needs_spec else [])
    assert model.format is fmt
    assert model.io_spec.names == ("input",)
    assert model.io_spec["input"].shape == (-1, 8)
    assert model.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()


def test_format_comes_from_content_not_suffix(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    disguised = tmp_path / "model.bin"
    disguised.write_bytes(tiny_models[".onnx"].read_bytes())
    assert load(disguised).format is Format.ONNX


def test_torchscript_without_spec_names_the_option(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(SpecError) as info:
        load(tiny_models[".pt"])
    assert '--navigator-input "input:float32[N,...]"' in str(info.value)
    assert "mlp.pt" in str(info.value)


def _bad_file(tmp_path: Path, tiny_models: dict[str, Path], kind: str) -> Path:
    path = tmp_path / f"{kind}.pt2"
    if kind == "missing":
        return path
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = tiny_models[".pt2"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(bytes((i * 7919 + 13) % 251 for i in range(4096)))  # fixed "random" bytes
    elif kind == "truncated-onnx":
        path = tmp_path / "cut.onnx"
        data = tiny_models[".onnx"].read_bytes()
        path.write_bytes(data[: len(data) // 3])
    return path


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("missing", "does not exist"),
        ("directory", "is a directory"),
        ("empty", "is empty"),
        ("truncated", "damaged zip archive"),
        ("random", "not a valid ONNX file"),
        ("truncated-onnx", "not a valid ONNX file"),
    ],
)
def test_bad_files_get_one_clear_error(tmp_path: Path, tiny_models: dict[str, Path], kind: str, problem: str) -> None:
    path = _bad_file(tmp_path, tiny_models, kind)
    with pytest.raises(ModelLoadError) as info:
        load(path)
    message = str(info.value)
    assert str(path) in message
    assert problem in message
    assert "Accepted formats: TorchScript" in message and ".pt2" in message and "ONNX" in message


def test_unreadable_file_names_the_os_error(tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests may run as root, for whom chmod 000 does not stop reads: simulate the OS refusing.
    original = Path.open

    def refuse(self: Path, *args: object, **kwargs: object) -> object:
        if self == tiny_models[".onnx"]:
            raise PermissionError(13, "Permission denied")
        return original(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ModelLoadError, match=r"mlp\.onnx' cannot be read \(Permission denied\)"):
        load(tiny_models[".onnx"])


class _Payload:
    """Unpickling this creates a file: proof that loading would have run the file's code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def _malicious_pickle(tmp_path: Path) -> tuple[Path, Path]:
    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save(_Payload(marker), str(path))
    return path, marker


def test_pickles_are_refused_without_opt_in_and_nothing_runs(tmp_path: Path) -> None:
    path, marker = _malicious_pickle(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        load(path, user_specs=[SPEC])
    assert "--navigator-trust-model" in str(info.value)
    assert "runs arbitrary code" in str(info.value)
    assert not marker.exists()


def test_trusted_pickle_is_unpickled(tmp_path: Path) -> None:
    path, marker = _malicious_pickle(tmp_path)
    with pytest.raises(ModelLoadError, match=r"not a torch\.nn\.Module"):
        load(path, trust=True, user_specs=[SPEC])
    assert marker.exists()  # the opt-in really unpickles: the test above would see the file


def _model_without_inputs(path: Path) -> Path:
    """A model whose forward() takes no argument (it returns a parameter), saved in path's format."""
    import warnings

    if path.suffix == ".onnx":
        import onnx
        from onnx import TensorProto, helper

        constant = helper.make_node(
            "Constant", [], ["output"], value=helper.make_tensor("value", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
        )
        output = helper.make_tensor_value_info("output", TensorProto.FLOAT, [3])
        graph = helper.make_graph([constant], "no-inputs", [], [output])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return path
    import torch

    class Constant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.value = torch.nn.Parameter(torch.ones(3))

        def forward(self) -> torch.Tensor:
            return self.value * 2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if path.suffix == ".pt2":
            torch.export.save(torch.export.export(Constant(), ()), str(path))
        else:
            torch.jit.save(torch.jit.script(Constant()), str(path))
    return path


@pytest.mark.parametrize(
    ("suffix", "why"),
    [
        (".pt2", "its exported program's graph signature lists no user input"),
        (".pt", "its TorchScript forward() takes no argument"),
        (".onnx", "its ONNX graph declares no input"),
    ],
)
def test_a_model_without_inputs_is_told_so_whatever_spec_is_given(tmp_path: Path, suffix: str, why: str) -> None:
    """Not "give an input spec" (there is nothing it could feed) nor "TorchScript carries no spec"."""
    path = _model_without_inputs(tmp_path / f"constant{suffix}")
    for given in ([], [SPEC]):
        with pytest.raises(SpecError) as info:
            load(path, user_specs=given)
        message = str(info.value)
        assert message.startswith(f"model file {str(path)!r} takes no inputs: {why}."), message
        assert "needs a model with at least one tensor input" in message
        assert "carry no input spec" not in message and "\n" not in message
