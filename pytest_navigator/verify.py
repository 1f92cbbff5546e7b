"""Compare a runtime's outputs with the reference's, element by element, and say by how much they differ."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from pytest_navigator.config import Sample, VerifyFunction


@dataclass(frozen=True, slots=True)
class Tolerance:
    """An element fails only when it exceeds both: |a - r| > atol and |a - r| / |r| > rtol."""

    atol: float
    rtol: float

    def __str__(self) -> str:
        return f"atol={self.atol:g}, rtol={self.rtol:g}"


#: Default tolerances by a runtime's precision.
DEFAULT_TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-3),
    "tf32": Tolerance(atol=5e-3, rtol=5e-3),
    "fp16": Tolerance(atol=1e-2, rtol=1e-2),
    "bf16": Tolerance(atol=5e-2, rtol=5e-2),
}


@dataclass(frozen=True, slots=True)
class OutputComparison:
    """One output of one sample: whether it agrees and, when it does not, every figure needed to see why."""

    name: str
    passed: bool
    tolerance: Tolerance
    max_abs_error: float = 0.0
    max_rel_error: float = 0.0
    worst_index: tuple[int, ...] = ()
    expected: float | None = None
    actual: float | None = None
    failing_elements: int = 0
    #: The smallest atol that passes at this rtol, and the smallest rtol that passes at this atol.
    min_passing_atol: float = 0.0
    min_passing_rtol: float = 0.0
    problem: str | None = None

    def describe(self) -> str:
        if self.problem:
            return f"output {self.name!r}: {self.problem}"
        where = f"at index {list(self.worst_index)}: expected {self.expected:.6g}, got {self.actual:.6g}"
        return (
            f"output {self.name!r}: {self.failing_elements} element(s) outside {self.tolerance}; "
            f"max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g}, worst {where}; "
            f"would pass with atol >= {self.min_passing_atol:.3g} (at rtol={self.tolerance.rtol:g}) "
            f"or rtol >= {self.min_passing_rtol:.3g} (at atol={self.tolerance.atol:g})"
        )


def compare_outputs(expected: Sample, actual: Sample, tolerance: Tolerance) -> list[OutputComparison]:
    """One comparison per reference output; a missing or extra output is a failure of its own."""
    results = [compare_array(name, np.asarray(ref), actual.get(name), tolerance) for name, ref in expected.items()]
    for name in actual:
        if name not in expected:
            results.append(
                OutputComparison(
                    name,
                    False,
                    tolerance,
                    problem=f"the reference has no output {name!r} (it has {', '.join(expected)})",
                )
            )
    return results


def compare_array(name: str, expected: np.ndarray, actual: np.ndarray | None, tolerance: Tolerance) -> OutputComparison:
    if actual is None:
        return OutputComparison(name, False, tolerance, problem="missing from the runtime's outputs")
    actual = np.asarray(actual)
    if actual.shape != expected.shape:
        return OutputComparison(
            name, False, tolerance, problem=f"shape {actual.shape} differs from the reference's {expected.shape}"
        )
    if expected.dtype.kind in "biu":
        return _compare_exact(name, expected, actual, tolerance)
    ref = expected.astype(np.float64)
    got = actual.astype(np.float64)
    ref_finite = np.isfinite(ref)
    bad_nonfinite = ~np.isfinite(got) & ref_finite
    if bad_nonfinite.any():
        return _first_mismatch(
            name, bad_nonfinite, ref, got, tolerance, "NaN/Inf element(s) where the reference is finite"
        )
    same_nonfinite = ~ref_finite & ((got == ref) | (np.isnan(got) & np.isnan(ref)))
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf where both are inf: handled above
        abs_err = np.where(same_nonfinite, 0.0, np.abs(got - ref))
    abs_err = np.nan_to_num(abs_err, nan=np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_err = np.where(abs_err == 0, 0.0, abs_err / np.abs(ref))
    failing = (abs_err > tolerance.atol) & (rel_err > tolerance.rtol)
    if abs_err.size == 0:
        return OutputComparison(name, True, tolerance)
    worst = tuple(
        int(i)
        for i in np.unravel_index(
            int(np.argmax(np.where(failing, abs_err, -1.0) if failing.any() else abs_err)), abs_err.shape
        )
    )
    need_atol = float(abs_err[rel_err > tolerance.rtol].max(initial=0.0))
    need_rtol = float(rel_err[abs_err > tolerance.atol].max(initial=0.0))
    return OutputComparison(
        name,
        not failing.any(),
        tolerance,
        max_abs_error=float(abs_err.max()),
        max_rel_error=float(rel_err.max()),
        worst_index=worst,
        expected=float(ref[worst]),
        actual=float(got[worst]),
        failing_elements=int(failing.sum()),
        min_passing_atol=need_atol,
        min_passing_rtol=need_rtol,
    )


def _compare_exact(name: str, expected: np.ndarray, actual: np.ndarray, tolerance: Tolerance) -> OutputComparison:
    diff = expected != actual
    if not diff.any():
        return OutputComparison(name, True, tolerance)
    return _first_mismatch(
        name, diff, expected, actual, tolerance, "element(s) differ (integer/bool outputs compare exactly)"
    )


def _first_mismatch(
    name: str, mask: np.ndarray, expected: np.ndarray, actual: np.ndarray, tolerance: Tolerance, what: str
) -> OutputComparison:
    """A failure that no tolerance can fix, reported at its first element."""
    index = tuple(int(i) for i in np.argwhere(mask)[0])
    count = int(mask.sum())
    return OutputComparison(
        name,
        False,
        tolerance,
        worst_index=index,
        expected=float(expected[index]),
        actual=float(actual[index]),
        failing_elements=count,
        problem=f"{count} {what}, first at index {list(index)}: expected {expected[index]!r}, got {actual[index]!r}",
    )


def allclose(atol: float = 1e-4, rtol: float = 1e-3) -> VerifyFunction:
    """A seed-000 VerifyFunction: every output of every sample within tolerance."""
    tolerance = Tolerance(atol, rtol)

    def verify(expected: Iterable[Sample], actual: Iterable[Sample]) -> bool:
        return all(c.passed for e, a in zip(expected, actual, strict=True) for c in compare_outputs(e, a, tolerance))

    return verify
