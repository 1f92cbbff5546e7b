"""Compare a runtime's outputs with the reference's, element by element, and say by how much they differ."""

from __future__ import annotations

import abc
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pytest_navigator.config import Sample, VerifyFunction
from pytest_navigator.errors import NavigatorError

if TYPE_CHECKING:
    from pytest_navigator.check.truth import Truth


@dataclass(frozen=True, slots=True)
class Tolerance:
    """An element fails only when it exceeds both: ``|a - r| > atol`` and ``|a - r| / |r| > rtol``."""

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


def compare_outputs(
    expected: Sample,
    actual: Sample,
    tolerance: Tolerance,
    per_output: Mapping[str, Tolerance] | None = None,
) -> list[OutputComparison]:
    """One comparison per reference output; a missing or extra output is a failure of its own."""
    per_output = per_output or {}
    results = [
        compare_array(name, np.asarray(ref), actual.get(name), per_output.get(name, tolerance))
        for name, ref in expected.items()
    ]
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


#: Only what no tolerance can excuse: missing or extra outputs, shapes, NaN/Inf, unequal integers.
STRUCTURE_ONLY = Tolerance(math.inf, math.inf)


class VerifyError(NavigatorError):
    """A verify function that cannot be built or applied as asked."""


def structural_problems(expected: Sample, actual: Sample) -> list[str]:
    """What fails under any verify function: missing/extra outputs, shapes, NaN/Inf where the reference
    is finite, integer and bool outputs that differ."""
    return [c.describe() for c in compare_outputs(expected, actual, STRUCTURE_ONLY) if not c.passed]


class ExplainingVerify(abc.ABC):
    """A seed-000 VerifyFunction that can also say why one pair of samples disagrees."""

    #: Whether explain() judges against the truth (truth.py): the check then computes it per sample.
    uses_truth = False

    def __call__(self, expected: Iterable[Sample], actual: Iterable[Sample]) -> bool:
        return all(not self.explain(e, a) for e, a in zip(expected, actual, strict=True))

    @abc.abstractmethod
    def explain(self, expected: Sample, actual: Sample, truth: Truth | None = None) -> list[str]:
        """One line per failing output; empty when the pair agrees. Structure failures always count.
        `truth` (for verify functions with uses_truth) is the sample's truth and the reference's own rounding."""

    def atol(self, output: str) -> float | None:
        """The absolute tolerance an output is judged by, where there is one (for the vacuous-check warning)."""
        return None


class Allclose(ExplainingVerify):
    """Every element of every output within tolerance: it fails only when it exceeds both atol and rtol."""

    def __init__(self, tolerance: Tolerance, per_output: Mapping[str, Tolerance] | None = None) -> None:
        self.tolerance = tolerance
        self.per_output = dict(per_output or {})

    def explain(self, expected: Sample, actual: Sample, truth: Truth | None = None) -> list[str]:
        unknown = [name for name in self.per_output if name not in expected]
        if unknown:
            raise VerifyError(
                f"allclose(per_output=...) names output {', '.join(map(repr, unknown))}, but the model's outputs are {', '.join(expected)}."
            )
        # compare_outputs checks the structure too, in the same pass
        return [
            c.describe() for c in compare_outputs(expected, actual, self.tolerance, self.per_output) if not c.passed
        ]

    def atol(self, output: str) -> float | None:
        return self.per_output.get(output, self.tolerance).atol

    def __repr__(self) -> str:
        extra = f", per_output={ {k: str(v) for k, v in self.per_output.items()} }" if self.per_output else ""
        return f"allclose({self.tolerance}{extra})"


class _PerOutputVerify(ExplainingVerify):
    """Judges float outputs one by one (all of them, or the named `outputs`) once the structure agrees."""

    def __init__(self, outputs: Iterable[str] | None) -> None:
        self.outputs = None if outputs is None else tuple(outputs)

    def explain(self, expected: Sample, actual: Sample, truth: Truth | None = None) -> list[str]:
        structural = structural_problems(expected, actual)
        if structural:
            return structural
        problems = []
        for name in self.outputs or expected:
            if name not in expected:
                raise VerifyError(
                    f"{self._call()}(outputs=...) names output {name!r}, but the model's outputs are {', '.join(expected)}."
                )
            ref = np.asarray(expected[name])
            if ref.dtype.kind in "biu":
                continue  # compared exactly by the structure checks
            problem = self._explain_output(name, ref.astype(np.float64), np.asarray(actual[name]).astype(np.float64))
            if problem:
                problems.append(problem)
        return problems

    def _call(self) -> str:
        return repr(self).split("(")[0]

    @abc.abstractmethod
    def _explain_output(self, name: str, ref: np.ndarray, got: np.ndarray) -> str | None:
        """Why one float output (as float64) fails, or None."""


class TopKAgreement(_PerOutputVerify):
    """The top-k classes along the last axis agree (as sets) in at least `min_agreement` of the rows.

    A class whose reference score ties the k-th best (within 1e-6 relative) may stand in for it:
    a near-tie flipping is not a disagreement.
    """

    def __init__(self, k: int, min_agreement: float, outputs: Iterable[str] | None) -> None:
        super().__init__(outputs)
        self.k = k
        self.min_agreement = min_agreement

    def _explain_output(self, name: str, ref: np.ndarray, got: np.ndarray) -> str | None:
        if ref.ndim == 0 or ref.shape[-1] < self.k:
            if self.outputs is not None:
                raise VerifyError(
                    f"topk_agreement(k={self.k}): output {name!r} has shape {list(ref.shape)}; it needs a last axis of at least {self.k} scores."
                )
            return None  # not a score output; structure checks covered it
        rows_ref, rows_got = ref.reshape(-1, ref.shape[-1]), got.reshape(-1, got.shape[-1])
        top_ref = np.argsort(-rows_ref, axis=1, kind="stable")[:, : self.k]
        top_got = np.argsort(-rows_got, axis=1, kind="stable")[:, : self.k]
        kth = np.take_along_axis(rows_ref, top_ref[:, -1:], axis=1)
        slack = 1e-6 * np.maximum(np.abs(kth), 1.0)
        agree = (np.take_along_axis(rows_ref, top_got, axis=1) >= kth - slack).all(axis=1)
        share = float(agree.mean()) if agree.size else 1.0
        if share >= self.min_agreement:
            return None
        row = int(np.argmin(agree))
        index = [int(i) for i in np.unravel_index(row, ref.shape[:-1])] if ref.ndim > 1 else []
        return f"output {name!r}: top-{self.k} agrees in {int(agree.sum())} of {agree.size} rows ({share:.1%} < {self.min_agreement:.1%}); first disagreeing row {index}: reference top-{self.k} {top_ref[row].tolist()}, runtime top-{self.k} {top_got[row].tolist()}"

    def __repr__(self) -> str:
        return f"topk_agreement(k={self.k}, min_agreement={self.min_agreement:g})"


class Cosine(_PerOutputVerify):
    """Each sample row of each float output (flattened) has cosine similarity >= min_similarity with the reference."""

    def __init__(self, min_similarity: float, outputs: Iterable[str] | None) -> None:
        super().__init__(outputs)
        self.min_similarity = min_similarity

    def _explain_output(self, name: str, ref: np.ndarray, got: np.ndarray) -> str | None:
        rows = ref.shape[0] if ref.ndim > 1 else 1
        a, b = ref.reshape(rows, -1), got.reshape(rows, -1)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        both_zero = ~a.any(axis=1) & ~b.any(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            similarity = np.where(both_zero, 1.0, np.where(norms > 0, (a * b).sum(axis=1) / norms, 0.0))
        worst = int(np.argmin(similarity))
        if similarity[worst] >= self.min_similarity:
            return None
        failing = int((similarity < self.min_similarity).sum())
        return f"output {name!r}: cosine similarity {similarity[worst]:.6f} < {self.min_similarity:g} at row {worst} ({failing} of {rows} rows below)"

    def __repr__(self) -> str:
        return f"cosine(min_similarity={self.min_similarity:g})"


def _tolerance(value: Tolerance | tuple[float, float] | Mapping[str, float], where: str) -> Tolerance:
    if isinstance(value, Tolerance):
        tolerance = value
    elif isinstance(value, Mapping):
        tolerance = Tolerance(float(value.get("atol", 0.0)), float(value.get("rtol", 0.0)))
    elif isinstance(value, tuple) and len(value) == 2:
        tolerance = Tolerance(float(value[0]), float(value[1]))
    else:
        raise VerifyError(
            f"{where}: {value!r} is not a tolerance; give Tolerance(atol, rtol), (atol, rtol) or {{'atol': .., 'rtol': ..}}."
        )
    if not (tolerance.atol >= 0 and tolerance.rtol >= 0):
        raise VerifyError(f"{where}: tolerances must be >= 0, got {tolerance}.")
    return tolerance


def allclose(
    atol: float = DEFAULT_TOLERANCES["fp32"].atol,
    rtol: float = DEFAULT_TOLERANCES["fp32"].rtol,
    per_output: Mapping[str, Tolerance | tuple[float, float] | Mapping[str, float]] | None = None,
) -> Allclose:
    """A VerifyFunction: every output of every sample within tolerance; `per_output` overrides it by name."""
    return Allclose(
        _tolerance((atol, rtol), "allclose"),
        {name: _tolerance(t, f"allclose(per_output={{{name!r}: ...}})") for name, t in (per_output or {}).items()},
    )


def topk_agreement(k: int = 1, min_agreement: float = 1.0, outputs: Iterable[str] | None = None) -> TopKAgreement:
    """A VerifyFunction for classifiers: the top-k classes (last axis) agree in `min_agreement` of the rows."""
    if not isinstance(k, int) or k < 1:
        raise VerifyError(f"topk_agreement(k={k!r}): k must be a positive integer.")
    if not 0 < min_agreement <= 1:
        raise VerifyError(f"topk_agreement(min_agreement={min_agreement!r}): give a share in (0, 1].")
    return TopKAgreement(k, float(min_agreement), outputs)


def cosine(min_similarity: float = 0.999, outputs: Iterable[str] | None = None) -> Cosine:
    """A VerifyFunction for embeddings: each row's cosine similarity with the reference is >= min_similarity."""
    if not -1 <= min_similarity <= 1:
        raise VerifyError(f"cosine(min_similarity={min_similarity!r}): give a value in [-1, 1].")
    return Cosine(float(min_similarity), outputs)


def tolerance_for(precision: str) -> Allclose:
    """allclose with the documented fixed tolerance of a runtime's precision (fp32 when unknown)."""
    return Allclose(DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"]))


def explain(
    verify: VerifyFunction, expected: Sample, actual: Sample, fallback: Allclose, truth: Truth | None = None
) -> list[str]:
    """Why `actual` fails `verify`; empty when it passes. A plain seed-000 function only says yes or no,
    so its failures are explained with the `fallback` tolerance's figures, for information."""
    if isinstance(verify, ExplainingVerify):
        return verify.explain(expected, actual, truth)
    structural = structural_problems(expected, actual)
    if structural:
        return structural
    if verify([expected], [actual]):
        return []
    figures = fallback.explain(expected, actual) or [f"every output is within {fallback.tolerance}"]
    name = getattr(verify, "__qualname__", None) or repr(verify)
    return [f"verify function {name} returned False; for information, against {fallback}:", *figures]
