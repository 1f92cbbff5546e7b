"""Output comparison: the both-tolerances rule, non-finite values, exact integers, the error figures."""

from __future__ import annotations

import numpy as np
import pytest

from pytest_navigator.verify import Tolerance, allclose, compare_array, compare_outputs

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
