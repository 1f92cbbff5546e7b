"""The default verdict: a runtime's error against the truth, in units of the reference's own rounding.

For each sample and each float output (truth.py gives the truth and the reference's own error):

    own rounding  = max |reference - truth|, at least one unit roundoff of the output's magnitude
    error         = max |runtime - truth|
    the runtime passes when error <= multiple x own rounding

The bound is norm-relative: one figure per output, scaled by that output's largest values, so a
small logit next to a large one is allowed the large one's rounding (which it carries), and a
network that amplifies rounding (deep depthwise stacks, squeeze-excite) gets the room its own fp32
reference needs. The multiple depends on the runtime's precision: fp32 kernels that reorder sums
make errors of the reference's own size, a few times larger at worst; TF32, fp16 and bf16 round
each stored value to fewer bits, so their multiple grows with their unit roundoff. Both were
measured on real architectures: `python -m harness.bench_correctness`.

Without an estimate of the reference's rounding (a plain reference) the fixed tolerance of the
precision applies, as documented in verify.DEFAULT_TOLERANCES.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pytest_navigator.check.agreement import QUANTIZED, Agreement, Thresholds
from pytest_navigator.check.verify import (
    DEFAULT_TOLERANCES,
    Allclose,
    ExplainingVerify,
    OutputComparison,
    compare_array,
    structural_problems,
)
from pytest_navigator.config import Sample

if TYPE_CHECKING:
    from pytest_navigator.check.truth import Truth

#: Unit roundoff: half the gap between 1 and the next representable number.
UNIT_ROUNDOFF = {"fp32": 2.0**-24, "tf32": 2.0**-11, "fp16": 2.0**-11, "bf16": 2.0**-8}
#: fp32 runtimes may be this many times the reference's own rounding: the largest ratio a correct
#: fp32 runtime reached on real architectures (harness/bench_correctness.py), with room to spare.
FP32_MULTIPLE = 16.0
#: A reduced precision's error per stored value grows with its unit roundoff; the fp32 reference's
#: own error also holds accumulation error that fp16 kernels (accumulating in fp32) do not multiply.
#: Measured: an honest fp16 runtime stayed within this share of FP32_MULTIPLE x (u / u_fp32).
REDUCED_PRECISION_SHARE = 1 / 16
#: Outputs whose truth is exactly zero everywhere: the budget never falls below this.
ABSOLUTE_FLOOR = 1e-12


def multiple(precision: str) -> float:
    """How many times the reference's own rounding a runtime of this precision may err."""
    unit = UNIT_ROUNDOFF.get(precision, UNIT_ROUNDOFF["fp32"])
    if unit == UNIT_ROUNDOFF["fp32"]:
        return FP32_MULTIPLE
    return FP32_MULTIPLE * REDUCED_PRECISION_SHARE * unit / UNIT_ROUNDOFF["fp32"]


@dataclass(frozen=True, slots=True)
class BudgetComparison:
    """One float output of one sample against its budget, with every figure behind the verdict."""

    name: str
    passed: bool
    truth_kind: str
    #: max |runtime - truth|
    error: float
    #: The reference's own rounding (max |reference - truth|, at least one ulp of the magnitude).
    own: float
    multiple: float
    precision: str
    worst_index: tuple[int, ...] = ()
    truth: float | None = None
    reference: float | None = None
    actual: float | None = None
    #: The same pair against the precision's fixed tolerance, for its minimum-tolerance figures.
    fixed: OutputComparison | None = None
    #: The figures `own` is the larger of (truth.Truth): |reference - shadow| and the perturbation spread.
    measured: float | None = None
    estimated: float | None = None

    @property
    def budget(self) -> float:
        return self.multiple * self.own

    @property
    def ratio(self) -> float:
        """error / own rounding: 1.0 means exactly as far from the truth as the reference itself."""
        return self.error / self.own if self.own > 0 else 0.0

    @property
    def against(self) -> str:
        """What the error is measured against: the float64 shadow, or the reference itself."""
        from pytest_navigator.check.truth import FLOAT64_SHADOW

        return FLOAT64_SHADOW if self.truth_kind == FLOAT64_SHADOW else "reference"

    def describe(self) -> str:
        shadow = f"{self.against} {self.truth:.6g}, " if self.against != "reference" else ""
        where = (
            f"worst at index {list(self.worst_index)}: {shadow}reference {self.reference:.6g}, got {self.actual:.6g}"
        )
        parts = []
        if self.measured is not None:
            parts.append(f"|reference - {self.against}| {self.measured:.3g}")
        if self.estimated is not None:
            parts.append(f"one-ulp perturbation spread {self.estimated:.3g}")
        basis = f" = the larger of {' and '.join(parts)}" if len(parts) > 1 else f" = {parts[0]}" if parts else ""
        text = (
            f"output {self.name!r}: error {self.error:.3g} against the {self.against} is {self.ratio:.3g}x the "
            f"reference's own rounding (allowed: {self.multiple:g}x at {self.precision}; own rounding "
            f"{self.own:.3g}{basis}; budget {self.budget:.3g}); {where}"
        )
        if self.fixed is not None:
            fixed = self.fixed
            text += (
                f"; against the reference: max abs error {fixed.max_abs_error:.3g}, max rel error "
                f"{fixed.max_rel_error:.3g}, would pass allclose with atol >= {fixed.min_passing_atol:.3g} "
                f"(at rtol={fixed.tolerance.rtol:g}) or rtol >= {fixed.min_passing_rtol:.3g} (at atol={fixed.tolerance.atol:g})"
            )
        return text


def compare_to_budget(
    name: str, expected: np.ndarray, actual: np.ndarray, truth: Truth, precision: str
) -> BudgetComparison | None:
    """One float output against its budget; None when the truth has no estimate for it (the fixed
    tolerance judges it), it is not a float output, or the runtime's output or the truth has another
    shape than the reference's: that is the structure checks' to report (verify.structural_problems),
    and every sample's pair comes here for the report's figures (summary.Observed), whatever its verdict."""
    if np.asarray(expected).dtype.kind not in "fc" or name not in truth.noise or name not in truth.outputs:
        return None
    ref = np.asarray(expected).astype(np.float64)
    got = np.asarray(actual).astype(np.float64)
    true = np.asarray(truth.outputs[name]).astype(np.float64)
    if got.shape != ref.shape or true.shape != ref.shape:
        return None
    finite = np.isfinite(ref) & np.isfinite(true) & np.isfinite(got)  # non-finite: structure checks
    scale = float(np.abs(true[finite]).max(initial=0.0))
    own = max(truth.noise[name], UNIT_ROUNDOFF["fp32"] * scale, ABSOLUTE_FLOOR)
    with np.errstate(invalid="ignore"):  # inf - inf where both are inf: left out by `finite`
        errors = np.where(finite, np.abs(got - true), 0.0)
    error = float(errors.max(initial=0.0))
    allowed = multiple(precision)
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(errors)), errors.shape)) if errors.size else ()
    passed = error <= allowed * own
    fixed = (
        None if passed else compare_array(name, ref, got, DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"]))
    )
    return BudgetComparison(
        name,
        passed,
        truth.kind,
        error,
        own,
        allowed,
        precision,
        index,
        float(true[index]) if errors.size else None,
        float(ref[index]) if errors.size else None,
        float(got[index]) if errors.size else None,
        fixed,
        truth.measured.get(name),
        truth.estimated.get(name),
    )


class ErrorBudget(ExplainingVerify):
    """The default verify function: every float output within `multiple(precision)` times the
    reference's own rounding of the truth; the precision's fixed tolerance where there is no truth."""

    uses_truth = True

    def __init__(self, precision: str = "fp32") -> None:
        self.precision = precision if precision in UNIT_ROUNDOFF else "fp32"
        self.fixed = Allclose(DEFAULT_TOLERANCES[self.precision])

    @property
    def multiple(self) -> float:
        return multiple(self.precision)

    def compare(self, expected: Sample, actual: Sample, truth: Truth) -> dict[str, BudgetComparison]:
        """Each float output the truth covers, against its budget; outputs missing from `actual` or of
        another shape are left out (the structure checks report them)."""
        found = {}
        for name, ref in expected.items():
            if name in actual:
                comparison = compare_to_budget(name, np.asarray(ref), np.asarray(actual[name]), truth, self.precision)
                if comparison is not None:
                    found[name] = comparison
        return found

    def explain(self, expected: Sample, actual: Sample, truth: Truth | None = None) -> list[str]:
        if truth is None or not truth.noise:
            return self.fixed.explain(expected, actual)
        structural = structural_problems(expected, actual)
        if structural:
            return structural
        judged = self.compare(expected, actual, truth)
        problems = [c.describe() for c in judged.values() if not c.passed]
        # outputs the truth has no estimate for (a shadow that could not judge them) keep the fixed tolerance
        rest = {name: ref for name, ref in expected.items() if name not in judged}
        if rest:
            problems += self.fixed.explain(rest, {name: actual[name] for name in rest if name in actual})
        return problems

    def atol(self, output: str) -> float | None:
        return self.fixed.tolerance.atol

    def __repr__(self) -> str:
        return f"error budget ({self.multiple:g}x the reference's own rounding, {self.precision})"


def default_verify(precision: str, thresholds: Thresholds | None = None) -> ExplainingVerify:
    """The default judge: for a quantized precision (int8), agreement in what the outputs mean, with
    `thresholds` (agreement.py); otherwise the error budget of the precision (fp32 when unknown). It
    lives here, not in verify.py, which the budget builds on: verify.py importing the budget back
    made the package's one import cycle."""
    if precision in QUANTIZED:
        return Agreement(thresholds, precision)
    return ErrorBudget(precision)
