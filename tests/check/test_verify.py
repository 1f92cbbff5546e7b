"""Output comparison: the both-tolerances rule, non-finite values, exact integers, the error figures."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pytest_navigator.check.budget import ErrorBudget, default_verify
from pytest_navigator.check.verify import (
    DEFAULT_TOLERANCES,
    Tolerance,
    VerifyError,
    allclose,
    compare_array,
    compare_outputs,
    cosine,
    explain,
    tolerance_for,
    topk_agreement,
)

TOL = Tolerance(atol=1e-3, rtol=1e-2)


def test_element_fails_only_when_it_exceeds_both_tolerances() -> None:
    ref = np.array([1000.0, 0.0, 1.0])
    # 1000 -> 1005: abs 5 > atol but rel 0.005 < rtol: passes; 0 -> 5e-4: abs < atol: passes
    assert compare_array("y", ref, np.array([1005.0, 5e-4, 1.0]), TOL).passed
    result = compare_array("y", ref, np.array([1000.0, 0.0, 1.5]), TOL)
    assert not result.passed
    assert result.worst_index == (2,)
    assert (result.expected, result.actual) == (1.0, 1.5)
    assert result.max_abs_error == pytest.approx(0.5)
    assert result.max_rel_error == pytest.approx(0.5)
    assert result.failing_elements == 1


def test_minimum_passing_tolerances_really_pass() -> None:
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((4, 5))
    got = ref + rng.standard_normal((4, 5)) * 0.05
    result = compare_array("y", ref, got, TOL)
    assert not result.passed
    assert compare_array("y", ref, got, Tolerance(result.min_passing_atol, TOL.rtol)).passed
    assert compare_array("y", ref, got, Tolerance(TOL.atol, result.min_passing_rtol)).passed
    assert not compare_array("y", ref, got, Tolerance(result.min_passing_atol * 0.99, TOL.rtol)).passed
    text = result.describe()
    assert "max abs error" in text and "would pass with atol >=" in text and f"{list(result.worst_index)}" in text


def test_nan_where_the_reference_is_finite_always_fails() -> None:
    result = compare_array("y", np.array([1.0, 2.0]), np.array([1.0, np.nan]), Tolerance(1e9, 1e9))
    assert not result.passed and "NaN/Inf" in (result.problem or "") and result.worst_index == (1,)
    # matching non-finite values agree
    assert compare_array("y", np.array([np.inf, np.nan]), np.array([np.inf, np.nan]), TOL).passed


def test_integer_outputs_compare_exactly() -> None:
    result = compare_array("ids", np.array([3, 4]), np.array([3, 5]), Tolerance(10, 10))
    assert not result.passed and "compare exactly" in (result.problem or "")


def test_shape_and_name_mismatches_fail() -> None:
    assert "shape (3,)" in (compare_array("y", np.zeros(2), np.zeros(3), TOL).problem or "")
    results = compare_outputs({"a": np.zeros(2)}, {"b": np.zeros(2)}, TOL)
    assert [r.passed for r in results] == [False, False]
    assert "missing" in (results[0].problem or "") and "no output 'b'" in (results[1].problem or "")


def test_allclose_is_a_seed_000_verify_function() -> None:
    verify = allclose(atol=1e-3, rtol=1e-3)
    ref = [{"y": np.ones(3)}]
    assert verify(ref, [{"y": np.ones(3) + 1e-4}])
    assert not verify(ref, [{"y": np.ones(3) + 1e-1}])


def test_per_output_tolerances_override_by_name() -> None:
    verify = allclose(atol=1e-6, rtol=1e-6, per_output={"scores": (0.1, 0.1)})
    ref = {"scores": np.array([1.0, 2.0]), "ids": np.array([3, 4])}
    assert verify([ref], [{"scores": np.array([1.05, 2.0]), "ids": np.array([3, 4])}])
    assert not verify([ref], [{"scores": np.array([1.5, 2.0]), "ids": np.array([3, 4])}])
    with pytest.raises(
        VerifyError, match=r"per_output=\.\.\.\) names output 'logits', but the model's outputs are scores, ids"
    ):
        allclose(per_output={"logits": (1, 1)})([ref], [ref])
    with pytest.raises(VerifyError, match=r"tolerances must be >= 0"):
        allclose(atol=-1)


def test_topk_agreement_judges_rankings_not_values() -> None:
    ref = {"logits": np.array([[5.0, 1.0, 3.0, 0.0], [0.0, 2.0, 1.0, 9.0]])}
    scaled = {"logits": ref["logits"] * 10 + 4}  # far outside any tolerance, same ranking
    assert topk_agreement(k=2)([ref], [scaled]) and not allclose()([ref], [scaled])
    swapped = {"logits": np.array([[5.0, 1.0, 3.0, 0.0], [9.0, 2.0, 1.0, 0.0]])}
    problems = topk_agreement(k=1).explain(ref, swapped)
    assert problems == [
        "output 'logits': top-1 agrees in 1 of 2 rows (50.0% < 100.0%); first disagreeing row [1]: reference top-1 [3], runtime top-1 [0]"
    ]
    assert topk_agreement(k=1, min_agreement=0.5)([ref], [swapped])
    tie = {"logits": np.array([[1.0, 1.0, 0.0]])}
    assert topk_agreement(k=1)([tie], [{"logits": np.array([[1.0, 1.0 + 1e-9, 0.0]])}])  # a near-tie flipping is fine
    with pytest.raises(VerifyError, match=r"k must be a positive integer"):
        topk_agreement(k=0)


def test_cosine_judges_direction_per_row() -> None:
    ref = {"embedding": np.array([[1.0, 0.0], [0.0, 2.0]])}
    assert cosine(0.999)([ref], [{"embedding": np.array([[3.0, 0.0], [0.0, 0.1]])}])  # scale does not matter
    problems = cosine(0.99).explain(ref, {"embedding": np.array([[1.0, 1.0], [0.0, 2.0]])})
    assert problems == ["output 'embedding': cosine similarity 0.707107 < 0.99 at row 0 (1 of 2 rows below)"]


def test_every_verify_function_fails_nan_shapes_and_integers() -> None:
    ref = {"y": np.array([1.0, 2.0]), "ids": np.array([1, 2])}
    for verify in (allclose(1e9, 1e9), topk_agreement(k=1), cosine(-1.0)):
        assert not verify([ref], [{"y": np.array([1.0, np.nan]), "ids": np.array([1, 2])}])
        assert not verify([ref], [{"y": np.array([1.0, 2.0]), "ids": np.array([1, 3])}])
        assert not verify([ref], [{"y": np.array([1.0, 2.0, 3.0]), "ids": np.array([1, 2])}])


def test_plain_verify_functions_are_explained_with_figures() -> None:
    def within_half(expected: Any, actual: Any) -> bool:
        return all(np.abs(a["y"] - e["y"]).max() < 0.5 for e, a in zip(expected, actual, strict=True))

    ref = {"y": np.array([1.0, 2.0])}
    assert explain(within_half, ref, {"y": np.array([1.2, 2.0])}, tolerance_for("fp32")) == []
    lines = explain(within_half, ref, {"y": np.array([1.7, 2.0])}, tolerance_for("fp32"))
    assert lines[0].startswith(
        "verify function test_plain_verify_functions_are_explained_with_figures.<locals>.within_half returned False"
    )
    assert "max abs error 0.7" in lines[1]


def test_fixed_tolerances_follow_precision() -> None:
    assert tolerance_for("fp16").tolerance == DEFAULT_TOLERANCES["fp16"]
    assert tolerance_for("something-new").tolerance == DEFAULT_TOLERANCES["fp32"]
    # the default verdict is the error budget of the precision, whose fallback is the fixed tolerance
    budget = default_verify("fp16")
    assert isinstance(budget, ErrorBudget) and budget.precision == "fp16"
    assert budget.fixed.tolerance == DEFAULT_TOLERANCES["fp16"]
    assert DEFAULT_TOLERANCES["fp32"].atol < DEFAULT_TOLERANCES["tf32"].atol < DEFAULT_TOLERANCES["fp16"].atol
