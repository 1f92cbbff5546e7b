"""Input spec strings, sidecars, merging with the model's own spec, and binding to forward()."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_navigator.errors import SpecError
from pytest_navigator.model.spec import (
    DTYPES,
    Dim,
    IOSpec,
    TensorSpec,
    bind,
    parse_io_spec,
    parse_tensor_spec,
    read_sidecar,
    resolve,
)


def test_image_spec_has_a_dynamic_batch_axis() -> None:
    spec = parse_tensor_spec("input:float32[N,3,224,224]")
    assert spec.name == "input" and spec.dtype == "float32"
    assert spec.shape == (-1, 3, 224, 224)
    assert spec.batch_axis == 0
    assert spec.value_range is None


def test_minus_one_marks_the_batch_axis_too() -> None:
    assert parse_tensor_spec("x:float16[-1,8]").batch_axis == 0
    assert parse_tensor_spec("x:float16[8,-1]").batch_axis is None


def test_integer_range_and_bounded_axis() -> None:
    spec = parse_tensor_spec("ids:int64[N,seq=1..128]{0..30521}")
    assert spec.value_range == (0, 30521)
    assert spec.dims[1] == Dim(None, "seq", 1, 128)
    assert str(spec) == "ids:int64[N,seq=1..128]{0..30521}"


@pytest.mark.parametrize(
    ("text", "fragment", "caret_under"),
    [
        ("input float32[N,3]", "no ':'", ""),
        ("input:float33[N,3]", "unknown dtype 'float33'", "float33"),
        ("input:float32[N,3x]", "dimension 1 '3x'", "3x"),
        ("input:float32[N,0]", "dimension 1 is 0", "0"),
        ("input:float32(N,3)", "[brackets]", ""),
        ("ids:int64[N,8]{0..1.5}", "needs integer bounds", "0..1.5"),
        ("ids:int64[N,8]{5..1}", "needs LOW <= HIGH", "5..1"),
        ("ids:int64[N,8]{a..b}", "{LOW..HIGH}", "a..b"),
        ("x:float32[N,9..2]", "need 1 <= LOW <= HIGH", "9..2"),
    ],
)
def test_malformed_specs_point_at_the_bad_part(text: str, fragment: str, caret_under: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_tensor_spec(text, source="--navigator-input")
    message = str(info.value)
    assert message.startswith("--navigator-input: cannot read input spec")
    assert fragment in message
    assert "input:float32[N,3,224,224]" in message  # shows what is accepted
    if caret_under:
        quoted, carets = message.splitlines()[1:3]
        start = carets.index("^")
        assert quoted[start : start + len(caret_under)] == caret_under


def test_duplicate_input_names_are_an_error() -> None:
    with pytest.raises(SpecError, match="'x' is given 2 times"):
        parse_io_spec(["x:float32[N,2]", "x:float32[N,3]"], "--navigator-input")


_dims = st.one_of(
    st.integers(1, 512).map(Dim),
    st.builds(lambda lo, extra: Dim(None, "S", lo, lo + extra), st.integers(1, 32), st.integers(0, 64)),
)


@given(
    name=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True),
    dtype=st.sampled_from(DTYPES),
    rest=st.lists(_dims, max_size=4),
    batched=st.booleans(),
)
def test_spec_strings_round_trip(name: str, dtype: str, rest: list[Dim], batched: bool) -> None:
    dims = ((Dim(None, "N", 1, 1024),) if batched else ()) + tuple(rest)
    value_range = (0.0, 9.0) if dtype != "bool" else None
    spec = TensorSpec(name, dtype, dims, value_range)
    assert parse_tensor_spec(str(spec)) == spec


def test_sidecar_inputs(tmp_path: Path) -> None:
    model = tmp_path / "encoder.pt"
    (tmp_path / "encoder.navigator.toml").write_text('inputs = ["ids:int64[N,16]{0..99}", "mask:int64[N,16]{0..1}"]\n')
    spec = read_sidecar(model)
    assert spec is not None and spec.names == ("ids", "mask")
    assert read_sidecar(tmp_path / "other.pt") is None


def test_bad_sidecar_names_the_file(tmp_path: Path) -> None:
    sidecar = tmp_path / "m.navigator.toml"
    sidecar.write_text("inputs = 3\n")
    with pytest.raises(SpecError, match=r"m\.navigator\.toml: 'inputs' must be a list"):
        read_sidecar(tmp_path / "m.pt")
    sidecar.write_text("inputs = [\n")
    with pytest.raises(SpecError, match="cannot read this sidecar"):
        read_sidecar(tmp_path / "m.pt")


def _own() -> IOSpec:
    return IOSpec((TensorSpec("ids", "int64", (Dim(None, "N", 1, 1024), Dim(32))),), source="graph")


def test_user_spec_narrows_the_models_own() -> None:
    user = parse_io_spec(["ids:int64[N,32]{0..999}"], "--navigator-input")
    merged = resolve(_own(), [user, None], "m.onnx", None)
    assert merged["ids"].value_range == (0, 999)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("ids:int32[N,32]", "is int64, not int32"),
        ("ids:int64[N,32,1]", "has 2 axes"),
        ("ids:int64[N,16]", "fixed at 32"),
        ("tokens:int64[N,32]", "has no input named 'tokens'; its inputs are ids"),
    ],
)
def test_user_spec_that_contradicts_the_model_is_refused(text: str, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment):
        resolve(_own(), [parse_io_spec([text], "--navigator-input")], "m.onnx", None)


def test_cli_spec_wins_over_ini_and_sidecar() -> None:
    cli = parse_io_spec(["x:float32[N,4]"], "cli")
    ini = parse_io_spec(["x:float32[N,8]"], "ini")
    assert resolve(None, [cli, ini], "m.pt", ("x",)).source == "cli"
    assert resolve(None, [None, ini], "m.pt", ("x",)).source == "ini"


def test_missing_spec_shows_the_option_to_add() -> None:
    with pytest.raises(SpecError) as info:
        resolve(None, [None, None, None], "model file 'm.pt'", ("input_ids", "attention_mask"))
    assert '--navigator-input "input_ids:float32[N,...]" --navigator-input "attention_mask:float32[N,...]"' in str(
        info.value
    )


def test_binding_follows_seed_002() -> None:
    # positional in forward's order; what cannot be positional goes in the trailing kwargs dict
    assert bind(["x", "mask"], ("x", "mask")) == (("x", "mask"), ())
    assert bind(["x", "mask"], ("x", "bias", "mask")) == (("x",), ("mask",))
    assert bind(["mask", "x"], ("x", "mask")) == (("x", "mask"), ())
    # names that match nothing: positional in spec order
    assert bind(["a", "b"], ("x", "y")) == (("a", "b"), ())
    assert bind(["a"], None) == (("a",), ())
    with pytest.raises(SpecError, match="'z' do not name a parameter of forward"):
        bind(["x", "z"], ("x", "y"))
