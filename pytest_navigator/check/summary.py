"""What a correctness check saw, and its report when it passes: the running maxima per output over
every sample (Observed), each output's summary in the report (CorrectnessReport), and the outputs
whose check could not fail (vacuous_outputs: tiny, constant or non-finite reference outputs; the last
fail the check unless allowed, nonfinite_failure).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from pytest_navigator import options
from pytest_navigator.check.verify import Allclose, ExplainingVerify, Tolerance, compare_array
from pytest_navigator.config import Sample, VerifyFunction

if TYPE_CHECKING:
    from pytest_navigator.check.agreement import OutputAgreement
    from pytest_navigator.check.truth import Truth


@dataclass(frozen=True)
class OutputSummary:
    """What the check saw of one output over every sample it ran."""

    name: str
    max_abs_error: float
    max_rel_error: float
    max_abs_reference: float
    constant: bool
    #: The largest error against the truth in units of the reference's own rounding (error budget
    #: only; None where the fixed tolerance judged), and the truths it was measured against.
    budget_ratio: float | None = None
    truth: str | None = None
    #: Every reference value of this output was NaN or Inf: the check cannot fail (NaN equals NaN).
    nonfinite: bool = False
    #: Agreement's pooled figures (quantized runtimes, agreement.py); None under other verdicts.
    #: top1/topk only for a class axis.
    median_sqnr: float | None = None
    worst_sqnr: float | None = None
    median_cosine: float | None = None
    top1: float | None = None
    topk: float | None = None


@dataclass(frozen=True)
class CorrectnessReport:
    """A passed check: how many samples, judged how, and the worst error seen per output."""

    model: str
    runtime: str
    verify: str
    explicit: int
    generated: int
    outputs: tuple[OutputSummary, ...]
    batch_sizes: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()
    #: The error budget's multiple of the reference's own rounding (None: another verify function).
    budget_multiple: float | None = None
    #: Why the truth was not the float64 shadow, when it was not.
    truth_note: str = ""

    @property
    def passed(self) -> bool:
        return True  # a failing check raises CorrectnessFailure instead of returning

    @property
    def samples(self) -> int:
        return self.explicit + self.generated


@dataclass
class Observed:
    """Running maxima per output, across every sample the check ran."""

    abs_error: dict[str, float] = field(default_factory=dict)
    rel_error: dict[str, float] = field(default_factory=dict)
    abs_reference: dict[str, float] = field(default_factory=dict)
    values: dict[str, tuple[float, float]] = field(default_factory=dict)
    elements: dict[str, int] = field(default_factory=dict)
    budget_ratio: dict[str, float] = field(default_factory=dict)
    truths: dict[str, set[str]] = field(default_factory=dict)
    truth_notes: set[str] = field(default_factory=set)
    failures: int = 0
    first_failure: str = ""
    generated: int = 0
    batch_sizes: set[int] = field(default_factory=set)

    def add(self, expected: Sample, actual: Sample, truth: Truth | None = None, verify: object = None) -> None:
        from pytest_navigator.check.budget import ErrorBudget

        if truth is not None:
            if truth.note:
                self.truth_notes.add(truth.note)
            judged = verify.compare(expected, actual, truth) if isinstance(verify, ErrorBudget) and truth.noise else {}
            for name, comparison in judged.items():
                self.budget_ratio[name] = max(self.budget_ratio.get(name, 0.0), comparison.ratio)
                self.truths.setdefault(name, set()).add(comparison.truth_kind)
        for name, ref in expected.items():
            ref = np.asarray(ref)
            if ref.dtype.kind in "biu" or ref.size == 0 or name not in actual:
                continue
            figures = compare_array(name, ref, actual[name], Tolerance(0.0, 0.0))
            self.abs_error[name] = max(self.abs_error.get(name, 0.0), figures.max_abs_error)
            self.rel_error[name] = max(self.rel_error.get(name, 0.0), figures.max_rel_error)
            finite = ref[np.isfinite(ref.astype(np.float64))].astype(np.float64)
            if finite.size:
                self.abs_reference[name] = max(self.abs_reference.get(name, 0.0), float(np.abs(finite).max()))
                lo, hi = self.values.get(name, (np.inf, -np.inf))
                self.values[name] = (min(lo, float(finite.min())), max(hi, float(finite.max())))
            self.elements[name] = self.elements.get(name, 0) + ref.size

    def summary(self) -> tuple[OutputSummary, ...]:
        summaries = []
        for name in self.abs_error:
            lo, hi = self.values.get(name, (0.0, 1.0))
            summaries.append(
                OutputSummary(
                    name,
                    self.abs_error[name],
                    self.rel_error[name],
                    self.abs_reference.get(name, 0.0),
                    lo == hi,
                    self.budget_ratio.get(name),
                    " and ".join(sorted(self.truths[name])) if name in self.truths else None,
                    name not in self.abs_reference,
                )
            )
        return tuple(summaries)


def with_agreement(outputs: tuple[OutputSummary, ...], pooled: Iterable[OutputAgreement]) -> tuple[OutputSummary, ...]:
    """The outputs' summaries with agreement's pooled figures added where it judged them."""
    by_name = {output.name: output for output in pooled}
    return tuple(
        replace(
            summary,
            median_sqnr=found.median_sqnr,
            worst_sqnr=found.worst_sqnr,
            median_cosine=found.median_cosine,
            top1=found.top1,
            topk=found.topk,
        )
        if (found := by_name.get(summary.name)) is not None
        else summary
        for summary in outputs
    )


def vacuous_outputs(report: CorrectnessReport, verify: VerifyFunction, fallback: Allclose) -> list[str]:
    """Outputs whose check could not fail: every reference value within atol of 0, or one value everywhere."""
    found = []
    checked = f"{report.samples} sample(s)"
    for output in report.outputs:
        atol = verify.atol(output.name) if isinstance(verify, ExplainingVerify) else None
        atol = fallback.tolerance.atol if atol is None else atol
        where = f"{report.runtime} on {report.model}: output {output.name!r}"
        if output.nonfinite:
            found.append(
                f"{where}: every reference value is NaN or Inf over {checked}, and NaN or Inf in a runtime "
                "agrees with it, so the check cannot fail; the reference computes nothing finite (an overflow, "
                "a division by zero, or uninitialised weights)."
            )
        elif output.max_abs_reference <= atol:
            found.append(
                f"{where}: every reference value is within atol={atol:g} of 0 (max |value| {output.max_abs_reference:.3g} over {checked}), so the check accepts almost any output; calibrate the model (a randomly initialised network can emit values near 1e-9) or lower atol."
            )
        elif output.constant:
            found.append(
                f"{where}: the reference output is one constant value over {checked}; the check cannot tell whether the runtime reacts to its inputs."
            )
    return found


def nonfinite_failure(report: CorrectnessReport) -> str | None:
    """Why a check fails whose outputs had no finite reference value over every sample (None: none had):
    it compared no number, and a runtime agreed by returning NaN or Inf where the reference did."""
    names = [output.name for output in report.outputs if output.nonfinite]
    if not names:
        return None
    which = f"output {names[0]!r}" if len(names) == 1 else f"outputs {', '.join(map(repr, names))}"
    ini = options.BY_FLAG[options.ALLOW_NONFINITE].ini
    return (
        f"{report.runtime} on {report.model}: {which} had no finite reference value over {report.samples} "
        "sample(s) (every value NaN or Inf), so the check compared no number and passes any runtime that returns "
        "NaN or Inf there too; the reference computes nothing finite (an overflow, a division by zero, or "
        f"uninitialised weights). If the model is meant to, let the check pass with a warning: {options.ALLOW_NONFINITE} "
        f"(ini {ini} = true, or @pytest.mark.navigator(allow_nonfinite=True) on a test)."
    )
