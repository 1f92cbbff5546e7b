"""The default verdict: error against the truth within a multiple of the reference's own rounding.

Unit tests of the budget's arithmetic on synthetic truths, then end to end on small in-code
versions of real architectures (harness/architectures.py: a MobileNetV3-like CNN, a ResNet, a
BERT-like encoder with an attention mask, a GPT-like decoder): correct runtimes pass over many
seeds and at the edges of the input ranges, injected faults fail with the budget's figures.
"""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from harness import architectures, faults
from harness.bench_correctness import eager_runtime
from pytest_navigator.check.budget import ABSOLUTE_FLOOR, FP32_MULTIPLE, UNIT_ROUNDOFF, ErrorBudget, multiple
from pytest_navigator.check.correctness import CheckOptions, CorrectnessFailure
from pytest_navigator.check.strategies import value_range
from pytest_navigator.check.truth import FLOAT64_SHADOW, PERTURBATION, Truth, to_double
from pytest_navigator.check.verify import allclose
from pytest_navigator.config import Sample
from pytest_navigator.model.loader import Model
from pytest_navigator.runtimes import Registry, default_registry
from pytest_navigator.session import NavigatorSession
from pytest_navigator.settings import Settings

# -- the arithmetic ------------------------------------------------------------------------------


def _truth(values: list[float], noise: float, kind: str = FLOAT64_SHADOW) -> Truth:
    return Truth(kind, {"y": np.array(values)}, {"y": noise}, measured={"y": noise})


def test_within_the_multiple_passes_and_beyond_it_fails_with_figures() -> None:
    budget = ErrorBudget("fp32")
    truth = _truth([10.0, 0.1], noise=1e-5)
    reference = {"y": np.array([10.0 + 1e-5, 0.1], np.float32)}
    inside = {"y": np.array([10.0, 0.1 + 15e-5])}
    assert budget.explain(reference, inside, truth) == []
    outside = {"y": np.array([10.0, 0.1 + 17e-5])}
    (problem,) = budget.explain(reference, outside, truth)
    assert problem.startswith(
        "output 'y': error 0.00017 against the float64 shadow is 17x the reference's own rounding"
    )
    assert "allowed: 16x at fp32; own rounding 1e-05 = |reference - float64 shadow| 1e-05; budget 0.00016" in problem
    assert "worst at index [1]: float64 shadow 0.1, reference 0.1, got 0.10017" in problem
    assert "would pass allclose with atol >= 0.00017" in problem  # the fixed tolerance's figures stay


def test_a_small_value_next_to_a_large_one_gets_the_large_ones_budget() -> None:
    """Norm-relative: the 0.06 logit beside an 80 one carries the 80's rounding; a fixed rtol fails it."""
    truth = _truth([80.0, 0.06], noise=2.5e-4)
    reference = {"y": np.array([80.0, 0.06], np.float32)}
    actual = {"y": np.array([80.0, 0.06 + 4.6e-4])}  # the MobileNetV3-Small figures
    assert ErrorBudget("fp32").explain(reference, actual, truth) == []
    assert allclose().explain(reference, actual)  # atol 1e-4, rtol 1e-3: a false alarm


def test_the_budget_never_falls_below_an_ulp_of_the_magnitude_or_the_absolute_floor() -> None:
    budget = ErrorBudget("fp32")
    lucky = _truth([1000.0, 1.0], noise=0.0)  # the reference happened to round exactly
    one_ulp = UNIT_ROUNDOFF["fp32"] * 1000
    assert budget.explain({"y": np.array([1000.0, 1.0])}, {"y": np.array([1000.0, 1.0 + 10 * one_ulp])}, lucky) == []
    zeros = _truth([0.0, 0.0], noise=0.0)
    assert budget.explain({"y": np.zeros(2)}, {"y": np.array([0.0, ABSOLUTE_FLOOR * 10])}, zeros) == []
    assert budget.explain({"y": np.zeros(2)}, {"y": np.array([0.0, 1e-6])}, zeros)


def test_structure_is_judged_as_always() -> None:
    budget = ErrorBudget("fp32")
    truth = Truth(FLOAT64_SHADOW, {"y": np.array([1.0, 2.0]), "ids": np.array([1, 2])}, {"y": 1.0})
    reference = {"y": np.array([1.0, 2.0]), "ids": np.array([1, 2])}
    (nan,) = budget.explain(reference, {"y": np.array([1.0, np.nan]), "ids": np.array([1, 2])}, truth)
    assert "NaN/Inf element(s) where the reference is finite" in nan
    (ids,) = budget.explain(reference, {"y": np.array([1.0, 2.0]), "ids": np.array([1, 3])}, truth)
    assert "integer/bool outputs compare exactly" in ids


@pytest.mark.parametrize("shape", [(1, 10), (2, 3)], ids=["not-broadcastable", "broadcastable"])
def test_an_output_of_another_shape_is_left_to_the_structure_checks(shape: tuple[int, ...]) -> None:
    """compare() sees every sample's pair, failing ones too (the report's figures): another shape is
    not judged against the budget, neither raising numpy's broadcast error nor broadcasting."""
    budget = ErrorBudget("fp32")
    truth = Truth(FLOAT64_SHADOW, {"y": np.ones((1, 3))}, {"y": 1e-7})
    reference, actual = {"y": np.ones((1, 3), np.float32)}, {"y": np.ones(shape, np.float32)}
    assert budget.compare(reference, actual, truth) == {}
    assert budget.explain(reference, actual, truth) == [
        f"output 'y': shape {shape} differs from the reference's (1, 3)"
    ]


def test_without_an_estimate_the_precision_table_judges() -> None:
    budget = ErrorBudget("fp16")
    reference = {"y": np.array([1.0])}
    assert budget.explain(reference, {"y": np.array([1.009])}, None) == []
    (problem,) = budget.explain(reference, {"y": np.array([1.02])}, None)
    assert "outside atol=0.01, rtol=0.01" in problem


def test_multiples_grow_with_unit_roundoff() -> None:
    assert multiple("fp32") == FP32_MULTIPLE
    assert multiple("fp32") < multiple("fp16") == multiple("tf32") < multiple("bf16")
    assert multiple("bf16") / multiple("fp16") == UNIT_ROUNDOFF["bf16"] / UNIT_ROUNDOFF["fp16"]
    assert multiple("unknown") == FP32_MULTIPLE


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_perturbation_moves_every_nonzero_finite_element_one_ulp_either_way(dtype: type) -> None:
    from pytest_navigator.check.truth import _nudged

    scales = 10.0 ** np.arange(-3, 4)[:, None]
    array: np.ndarray = (np.random.default_rng(0).standard_normal((7, 257)) * scales).astype(dtype)
    array[0, :3] = [0.0, np.inf, -np.inf]
    array[1, 0] = np.finfo(dtype).max
    sample = {"x": array, "half": np.ones(3, np.float16), "ids": np.arange(5), "scalar": np.array(dtype(2.5))}
    moved = _nudged(sample, np.random.default_rng(1))
    x = moved["x"]
    assert x.dtype == dtype and x.shape == array.shape
    with np.errstate(over="ignore"):  # the largest finite value moves up to inf
        up, down = x == np.nextafter(array, np.inf), x == np.nextafter(array, -np.inf)
    changed = (array != 0) & np.isfinite(array)
    assert (up | down)[changed].all() and (x == array)[~changed].all()  # zeros and infinities stay
    assert 0.4 < up[changed].mean() < 0.6  # both ways, at random
    assert moved["half"] is sample["half"] and moved["ids"] is sample["ids"]
    assert moved["scalar"].shape == () and moved["scalar"] in (np.nextafter(dtype(2.5), 9), np.nextafter(dtype(2.5), 0))


def test_onnx_graphs_convert_to_double_precision() -> None:
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["x32"], to=TensorProto.FLOAT),
            helper.make_node("Constant", [], ["c"], value_float=0.5),
            helper.make_node("Mul", ["x32", "c"], ["m"]),
            helper.make_node("Add", ["m", "w"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        [numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "w")],
    )
    double = to_double(helper.make_model(graph))
    assert double.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    assert double.graph.output[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    assert double.graph.initializer[0].data_type == TensorProto.DOUBLE
    assert double.graph.node[0].attribute[0].i == TensorProto.DOUBLE
    assert double.graph.node[1].attribute[0].t.data_type == TensorProto.DOUBLE
    import onnxruntime as ort

    out = ort.InferenceSession(double.SerializeToString()).run(None, {"x": np.array([1.0, 3.0])})[0]
    assert out.dtype == np.float64 and out.tolist() == [1.5, 3.5]


# -- end to end on real architectures (small in-code versions) ------------------------------------


@pytest.fixture(scope="module")
def small_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("architectures")
    return {name: architectures.write(arch, 0, folder / f"{name}.pt2") for name, arch in architectures.SMALL.items()}


def _session(
    path: Path, tmp_path: Path, registry: Registry | None = None, seed: int = 0
) -> tuple[NavigatorSession, Model]:
    session = NavigatorSession(
        Settings(
            models=(path,),
            seed=seed,
            cache_dir=tmp_path / "cache",
            state_dir=tmp_path / ".navigator",
            invocation_dir=tmp_path,
        ),
        registry or default_registry(),
    )
    return session, session.load_models()[0]


def _edge_samples(model: Model) -> list[tuple[str, Sample]]:
    """Every input at the low end, the high end, and (floats) at the large edge values of its range."""
    found = []
    for label, pick in (("low", 0), ("high", 1)):
        sample = {}
        for spec in model.io_spec:
            shape = tuple(d.size if d.size is not None else 3 for d in spec.dims)
            sample[spec.name] = np.full(shape, value_range(spec)[pick], dtype=spec.dtype)
        found.append((f"every input at its range's {label} end", sample))
    if any(spec.is_float for spec in model.io_spec):
        rng = np.random.default_rng(0)
        sample = {}
        for spec in model.io_spec:
            shape = tuple(d.size if d.size is not None else 2 for d in spec.dims)
            sample[spec.name] = (
                rng.choice([-100.0, 100.0], size=shape).astype(spec.dtype)
                if spec.is_float
                else np.full(shape, value_range(spec)[1], dtype=spec.dtype)
            )
        found.append(("float inputs at +-100", sample))
    return found


@pytest.mark.parametrize("name", sorted(architectures.SMALL))
def test_correct_runtimes_pass_over_many_seeds_and_at_range_edges(
    name: str, small_models: dict[str, Path], tmp_path: Path
) -> None:
    for seed in range(3):
        session, model = _session(small_models[name], tmp_path, seed=seed)
        explicit = _edge_samples(model) if seed == 0 else []
        for runtime in ("torchscript-cpu", "onnxruntime-cpu"):
            report = session.check_correctness(model, runtime, CheckOptions(examples=10, explicit=explicit))
            assert report.budget_multiple == FP32_MULTIPLE
            assert all(o.truth == FLOAT64_SHADOW and (o.budget_ratio or 0) <= FP32_MULTIPLE for o in report.outputs)
        session.close()


@pytest.mark.parametrize("fault", ["weight x(1+1e-2)", "weight x(1+1e-3)", "GELU <-> tanh GELU", "one layer in fp16"])
def test_injected_faults_fail_with_the_budget_figures(
    fault: str, small_models: dict[str, Path], tmp_path: Path
) -> None:
    name = "gpt" if "GELU" in fault else "mobilenet"
    module, _ = faults.FAULTS[fault](architectures.SMALL[name].build(0))
    registry = default_registry()
    registry.register(eager_runtime("faulty", module))
    session, model = _session(small_models[name], tmp_path, registry)
    with pytest.raises(CorrectnessFailure) as failure:
        session.check_correctness(model, "faulty", CheckOptions(examples=10))
    message = str(failure.value)
    assert "faulty disagrees with the reference (torch-cpu)" in message and "judged by error budget (16x" in message
    figures = re.search(r"error (\S+) against the float64 shadow is (\S+)x the reference's own rounding", message)
    assert figures and float(figures[2]) > FP32_MULTIPLE, message
    assert "truth: the float64 shadow" in message and "budget" in message


def test_an_honest_fp16_runtime_passes_its_budget_and_an_fp16_bug_fails_it(
    small_models: dict[str, Path], tmp_path: Path
) -> None:
    module = architectures.SMALL["resnet"].build(0)
    broken, _ = faults.scaled_weight(module, 1e-2)
    registry = default_registry()
    registry.register(eager_runtime("fp16", copy.deepcopy(module).half(), half=True))
    registry.register(eager_runtime("fp16-with-a-bug", broken.half(), half=True))
    session, model = _session(small_models["resnet"], tmp_path, registry)
    report = session.check_correctness(model, "fp16")
    assert report.verify == f"error budget ({multiple('fp16'):g}x the reference's own rounding, fp16)"
    ratio = report.outputs[0].budget_ratio
    assert ratio is not None and FP32_MULTIPLE < ratio <= multiple("fp16")  # real fp16 error, within fp16's budget
    with pytest.raises(CorrectnessFailure, match=r"judged by error budget .* fp16\):"):
        session.check_correctness(model, "fp16-with-a-bug")


def test_explicit_verify_functions_still_override_the_budget(small_models: dict[str, Path], tmp_path: Path) -> None:
    session, model = _session(small_models["mobilenet"], tmp_path)
    assert session.check_correctness(model, "onnxruntime-cpu").verify.startswith("error budget")
    strict = allclose(atol=1e-12, rtol=0.0)  # tighter than any fp32 runtime: the explicit setting must win
    with pytest.raises(CorrectnessFailure, match=r"judged by allclose\(atol=1e-12, rtol=0\)"):
        session.check_correctness(model, "onnxruntime-cpu", CheckOptions(verify=strict))
    loose = session.check_correctness(model, "onnxruntime-cpu", CheckOptions(verify=allclose(atol=1.0, rtol=1.0)))
    assert loose.verify == "allclose(atol=1, rtol=1)" and loose.budget_multiple is None


def test_an_onnx_source_without_a_double_path_uses_the_perturbation_estimate_and_says_so(tmp_path: Path) -> None:
    """ONNX Runtime's CPU provider has no double-precision Conv: a CNN exported to ONNX cannot run a
    float64 shadow, so the reference is the truth and its rounding is estimated from perturbations."""
    path = architectures.write(architectures.SMALL["mobilenet"], 0, tmp_path / "mobilenet.onnx")
    module, _ = faults.scaled_weight(architectures.SMALL["mobilenet"].build(0), 1e-2)
    registry = default_registry()
    registry.register(eager_runtime("faulty", module))
    session, model = _session(path, tmp_path, registry)
    source = session.references(model).source
    assert source.kind == PERTURBATION and "no float64 shadow" in source.note and "Conv" in source.note
    report = session.check_correctness(model, "onnxruntime-cpu")
    assert report.outputs[0].truth == PERTURBATION and "no float64 shadow" in report.truth_note
    assert "truth: perturbation estimate" in session.results.runtimes[(model.path, "onnxruntime-cpu")].detail
    with pytest.raises(CorrectnessFailure) as failure:
        session.check_correctness(model, "faulty", CheckOptions(examples=5))
    message = str(failure.value)
    assert re.search(r"error \S+ against the reference is \S+x the reference.s own rounding", message), message
    assert re.search(r"own rounding \S+ = one-ulp perturbation spread", message), message
    assert "truth: the reference itself; its own rounding is a perturbation estimate" in message
    assert "no float64 shadow" in message


def test_float64_shadows_leave_the_reference_untouched(small_models: dict[str, Path], tmp_path: Path) -> None:
    """The shadow and the perturbed copies are private: the reference shares the loaded module."""
    session, model = _session(small_models["resnet"], tmp_path)
    sample = {"input": np.ones((1, 3, 32, 32), np.float32)}
    before = session.builds.reference(model).infer(sample)["output"].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert session.references(model).truth(sample).kind == FLOAT64_SHADOW
    after = session.builds.reference(model).infer(sample)["output"]
    assert after.dtype == np.float32 and np.array_equal(before, after)
