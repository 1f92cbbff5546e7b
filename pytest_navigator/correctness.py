"""The correctness check of one runtime: users' samples first, then Hypothesis-generated ones, shrunk on failure.

Each sample runs through the runtime and the reference (whose outputs the session computes once
per sample for all runtimes) and is judged by a verify function. A failure is shrunk by
Hypothesis to the simplest failing sample, saved as an .npz under .navigator/failures, and
reported with every figure needed to see why and a one-line command that replays it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_navigator.config import Sample, VerifyFunction
from pytest_navigator.errors import NavigatorError, last_line
from pytest_navigator.samples import describe, digest, random_sample, samples, simplify
from pytest_navigator.user_samples import LabeledSample
from pytest_navigator.verify import (
    Allclose,
    ExplainingVerify,
    Tolerance,
    compare_array,
    default_verify,
    explain,
    tolerance_for,
)

if TYPE_CHECKING:
    from pytest_navigator.model import Model
    from pytest_navigator.runtimes import Runner
    from pytest_navigator.session import NavigatorSession
    from pytest_navigator.truth import Truth

#: Generated samples per runtime unless --navigator-examples says otherwise: enough to find
#: shape- and value-dependent bugs, few enough for CI.
DEFAULT_EXAMPLES = 25
CI_PROFILE = "navigator-ci"
DEV_PROFILE = "navigator-dev"


class CorrectnessFailure(AssertionError):
    """A runtime's outputs disagree with the reference; the message has every figure."""


class VacuousCheckWarning(UserWarning):
    """The reference outputs are so small or constant that the check would accept almost anything."""


@dataclass(frozen=True)
class CheckOptions:
    """How one runtime is checked: the verify function, how many generated samples, users' samples first."""

    verify: VerifyFunction | None = None
    examples: int = DEFAULT_EXAMPLES
    explicit: Sequence[LabeledSample] = ()
    strict: bool = False


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


class _SampleFailed(Exception):
    """One sample failed; raised inside the property so Hypothesis can shrink it."""

    def __init__(self, sample: Sample, label: str, problems: list[str], kind: str = "mismatch") -> None:
        super().__init__("\n".join(problems))
        self.sample, self.label, self.problems, self.kind = sample, label, problems, kind


class _ShownSample(dict[str, Any]):
    """A Sample that Hypothesis prints as its shapes, not as megabytes of numbers."""

    def __repr__(self) -> str:
        return f"<sample {describe(self)}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


@dataclass
class _Observed:
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
        from pytest_navigator.budget import ErrorBudget

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
                )
            )
        return tuple(summaries)


def check_runtime(session: NavigatorSession, model: Model, runtime: str, options: CheckOptions) -> CorrectnessReport:
    """Check one runtime of one model; raise CorrectnessFailure (shrunk, saved, explained) on disagreement."""
    return _RuntimeCheck(session, model, session.runner(model, runtime), options).run()


class _RuntimeCheck:
    """The state of one runtime's check: what judges it, what it has seen, how to report a failure."""

    def __init__(self, session: NavigatorSession, model: Model, runner: Runner, options: CheckOptions) -> None:
        self.session, self.model, self.runner, self.options = session, model, runner, options
        precision = session.precision(runner.runtime)
        #: The precision's fixed tolerance: explains plain verify functions' failures, and the vacuous check's atol.
        self.fixed = tolerance_for(precision)
        self.verify = options.verify or default_verify(precision)
        self.observed = _Observed()

    def run(self) -> CorrectnessReport:
        # Users' samples first; then generated ones (shrunk on failure); then one random sample at
        # each configured batch size, so those sizes are covered whatever Hypothesis drew.
        configured = self._configured_batch_samples()
        for label, sample in self.options.explicit:
            self._check_given(label, sample)
        if self.options.examples > 0:
            self._run_hypothesis()
        for label, sample in configured:
            self.observed.generated += 1
            self._check_given(label, sample)
        report = CorrectnessReport(
            self.model.name,
            self.runner.runtime,
            _verify_name(self.verify),
            len(self.options.explicit),
            self.observed.generated,
            self.observed.summary(),
            tuple(sorted(self.observed.batch_sizes)),
            budget_multiple=getattr(self.verify, "multiple", None) if getattr(self.verify, "uses_truth", False) else None,
            truth_note="; ".join(sorted(self.observed.truth_notes)),
        )
        vacuous = _vacuous_outputs(report, self.verify, self.fixed)
        if vacuous and self.options.strict:
            raise CorrectnessFailure("\n".join([*vacuous, "(--navigator-strict turns this warning into a failure)"]))
        for text in vacuous:
            warnings.warn(VacuousCheckWarning(text), stacklevel=3)
        return dataclasses.replace(report, warnings=tuple(vacuous))

    def check(self, sample: Sample, label: str) -> None:
        """Raise _SampleFailed when the runtime (or the reference) raises or the verify function rejects it."""
        try:
            expected = self.session.reference_outputs(self.model, sample)
        except NavigatorError:
            raise
        except Exception as exc:
            reference = self.session.reference(self.model).runtime
            problem = f"the reference ({reference}) itself raised {f'{type(exc).__name__}: {last_line(exc)}'}"
            raise _SampleFailed(sample, label, [problem], "reference raised") from exc
        try:
            actual = self.runner.infer(sample)
        except NavigatorError:
            raise
        except Exception as exc:
            raise _SampleFailed(
                sample, label, [f"{self.runner.runtime} raised {f'{type(exc).__name__}: {last_line(exc)}'}"], "raised"
            ) from exc
        truth = self.session.truth(self.model, sample) if getattr(self.verify, "uses_truth", False) else None
        problems = explain(self.verify, expected, actual, self.fixed, truth)
        self.observed.add(expected, actual, truth, self.verify)
        self.observed.batch_sizes.update(
            sample[t.name].shape[0] for t in self.model.io_spec if t.batch_axis is not None
        )
        if problems:
            raise _SampleFailed(sample, label, problems)

    def _check_given(self, label: str, sample: Sample) -> None:
        try:
            self.check(sample, label)
        except _SampleFailed as failure:
            raise CorrectnessFailure(self._message(failure)) from None

    def _run_hypothesis(self) -> None:
        from hypothesis import given, seed
        from hypothesis.errors import Flaky

        session, observed = self.session, self.observed
        strategy = samples(self.model.io_spec, session.batch_sizes(self.model), self.runner.max_batch_size)

        def generated_sample_agrees(sample: Sample) -> None:
            observed.generated += 1
            try:
                self.check(sample, "generated")
            except _SampleFailed:
                observed.failures += 1
                observed.first_failure = observed.first_failure or describe(sample)
                raise

        # Failures are remembered (example database) per model content and runtime.
        key = f"{self.model.fingerprint}:{self.runner.runtime}".encode()
        generated_sample_agrees._hypothesis_internal_add_digest = key  # type: ignore[attr-defined]
        test = given(sample=strategy.map(_ShownSample))(generated_sample_agrees)
        # One seed for every runtime of the run: they see the same samples, so reference outputs are
        # shared. @seed turns the example database off; the settings applied after it turn it back on.
        test = seed(session.run_seed)(test)
        test = hypothesis_settings(session.settings.hypothesis_profile, self.options.examples, session.state_dir)(test)
        try:
            test()
        except _SampleFailed as failure:
            raise CorrectnessFailure(self._message(self._simplified(failure))) from None
        except Flaky as exc:
            raise CorrectnessFailure(
                f"{self.runner.runtime} on {self.model.name}: a sample failed once and passed when Hypothesis replayed it; the runtime (or the reference) is not deterministic.\n{exc}"
            ) from None

    def _configured_batch_samples(self) -> list[LabeledSample]:
        """One random sample at each configured batch size (--navigator-batch-sizes) the runner takes."""
        rng = np.random.default_rng(self.session.run_seed)
        return [
            (f"random sample at batch size {size}", random_sample(self.model.io_spec, size, rng))
            for size in self.session.batch_sizes(self.model)
            if self.runner.accepts_batch_size(size)
        ]

    def _simplified(self, failure: _SampleFailed) -> _SampleFailed:
        """Hypothesis shrank the recipe; now set every element the failure does not need to the simplest value."""
        found = [failure]

        def fails(candidate: Sample) -> bool:
            try:
                self.check(candidate, failure.label)
            except _SampleFailed as again:
                if again.kind == failure.kind:
                    found.append(again)
                    return True
            return False

        simplify(failure.sample, self.model.io_spec, fails)
        return found[-1]

    def _message(self, failure: _SampleFailed) -> str:
        session, model, runtime = self.session, self.model, self.runner.runtime
        here = session.settings.invocation_dir
        reference = session.reference(model).runtime
        lines = [
            f"{runtime} disagrees with the reference ({reference}) on {model.name}, judged by {_verify_name(self.verify)}:"
        ]
        shape = describe(failure.sample)
        if failure.label == "generated":
            first = self.observed.first_failure
            shrunk = f", first failing as {first}" if first != shape else ""
            lines.append(
                f"  sample: {shape} (generated; shrunk over {self.observed.failures} failing tries{shrunk}, then unneeded elements set to the simplest value)"
            )
        else:
            shown = _shown(Path(failure.label), here) if failure.label.endswith(".npz") else failure.label
            lines.append(f"  sample: {shown}: {shape}")
        lines += [f"  {problem}" for problem in failure.problems]
        if getattr(self.verify, "uses_truth", False) and failure.kind == "mismatch":
            lines.append(f"  truth: {describe_truth(session.truth(model, failure.sample))}")
        if failure.label.endswith(".npz") and Path(failure.label).is_file():
            saved = Path(failure.label)
        else:
            saved = save_failure(session.state_dir, model, runtime, failure.sample)
        lines.append(f"  saved: {_shown(saved, here)}")
        lines.append(f"  replay: {replay_command(session, model, runtime, saved)}")
        if (
            failure.label == "generated"
            and session.settings.seed is None
            and not derandomized(session.settings.hypothesis_profile)
        ):
            lines.append(
                f"  run seed: {session.run_seed} (rerun every check alike with --navigator-seed={session.run_seed})"
            )
        return "\n".join(lines)


def describe_truth(truth: Truth) -> str:
    """What a budget was measured against, and why when it is not the float64 shadow."""
    from pytest_navigator.truth import FLOAT64_SHADOW, PERTURBATION

    what = {
        FLOAT64_SHADOW: "the float64 shadow (the reference model in double precision)",
        PERTURBATION: "the reference itself; its own rounding is a perturbation estimate (inputs and weights moved one ulp)",
    }.get(truth.kind, "the reference itself, with no estimate of its rounding: the precision's fixed tolerance judged")
    return what + (f" ({truth.note})" if truth.note else "")


def _verify_name(verify: VerifyFunction) -> str:
    return repr(verify) if isinstance(verify, ExplainingVerify) else getattr(verify, "__qualname__", repr(verify))


def register_profiles() -> None:
    """navigator-ci: derandomized, the same samples every run. navigator-dev: new samples each run,
    failures remembered between runs. Neither has a deadline (compilation makes first calls slow)."""
    from hypothesis import HealthCheck, settings

    quiet = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
    # From Hypothesis's own defaults, not from whatever profile is loaded (under CI, Hypothesis
    # loads its "ci" profile, which is derandomized and has no database).
    base = settings.get_profile("default")
    settings.register_profile(
        CI_PROFILE, base, derandomize=True, deadline=None, suppress_health_check=quiet, print_blob=True
    )
    settings.register_profile(DEV_PROFILE, base, derandomize=False, deadline=None, suppress_health_check=quiet)


def default_profile() -> str:
    return CI_PROFILE if os.environ.get("CI") else DEV_PROFILE


def hypothesis_settings(profile: str | None, examples: int, state_dir: Path) -> Any:
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis.database import DirectoryBasedExampleDatabase

    register_profiles()
    parent = settings.get_profile(profile or default_profile())
    extra: dict[str, Any] = {}
    if not parent.derandomize:
        extra["database"] = DirectoryBasedExampleDatabase(str(state_dir / "hypothesis"))
    return settings(
        parent,
        max_examples=examples,
        deadline=None,
        report_multiple_bugs=False,
        phases=[p for p in Phase if p is not Phase.explain],  # explaining re-runs the model many times
        suppress_health_check=[*parent.suppress_health_check, HealthCheck.too_slow, HealthCheck.data_too_large],
        **extra,
    )


def save_failure(state_dir: Path, model: Model, runtime: str, sample: Sample) -> Path:
    """Save a failing sample's inputs as <state>/failures/<model>/<runtime>-<hash>.npz (loadable by --navigator-samples)."""
    folder = state_dir / "failures" / _safe(model.name)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_safe(runtime)}-{digest(sample)[:12]}.npz"
    temporary = path.with_name(path.name + ".tmp.npz")
    arrays: dict[str, Any] = {name: np.asarray(array) for name, array in sample.items()}
    np.savez(temporary, **arrays)
    temporary.replace(path)
    return path


def replay_command(session: NavigatorSession, model: Model, runtime: str, saved: Path) -> str:
    here = session.settings.invocation_dir
    parts = [
        "pytest",
        f"--navigator-model={_shown(model.path, here)}",
        f"--navigator-runtimes={runtime}",
        f"--navigator-samples={_shown(saved, here)}",
        "--navigator-examples=0",
    ]
    if session.settings.trust_model:
        parts.append("--navigator-trust-model")
    return shlex.join(parts)


def _vacuous_outputs(report: CorrectnessReport, verify: VerifyFunction, fallback: Allclose) -> list[str]:
    """Outputs whose check could not fail: every reference value within atol of 0, or one value everywhere."""
    found = []
    checked = f"{report.samples} sample(s)"
    for output in report.outputs:
        atol = verify.atol(output.name) if isinstance(verify, ExplainingVerify) else None
        atol = fallback.tolerance.atol if atol is None else atol
        where = f"{report.runtime} on {report.model}: output {output.name!r}"
        if output.max_abs_reference <= atol:
            found.append(
                f"{where}: every reference value is within atol={atol:g} of 0 (max |value| {output.max_abs_reference:.3g} over {checked}), so the check accepts almost any output; calibrate the model (a randomly initialised network can emit values near 1e-9) or lower atol."
            )
        elif output.constant:
            found.append(
                f"{where}: the reference output is one constant value over {checked}; the check cannot tell whether the runtime reacts to its inputs."
            )
    return found


def derandomized(profile: str | None) -> bool:
    """Whether the Hypothesis profile in force draws the same samples every run."""
    from hypothesis import settings

    register_profiles()
    return bool(settings.get_profile(profile or default_profile()).derandomize)


def _safe(name: str) -> str:
    return re.sub(r"[^\w.\-]+", "_", name)


def _shown(path: Path, here: Path | None) -> str:
    """A path relative to where pytest was invoked when it is under it, else absolute."""
    if here is not None:
        try:
            return str(path.resolve().relative_to(here.resolve()))
        except ValueError:
            pass
    return str(path)
