"""The correctness check of one runtime: users' samples first, then Hypothesis-generated ones, shrunk on failure.

Each sample runs through the runtime and the reference (references.ReferenceOutputs computes the reference's
outputs and truth once per sample, for all runtimes) and is judged by a verify function. A failure is shrunk
by Hypothesis to the simplest failing sample, saved as an .npz under .navigator/failures, and reported with
every figure needed to see why and a one-line command that replays it. summary.py: what it saw, its report.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_navigator import options
from pytest_navigator.check.agreement import (
    QUANTIZED,
    Agreement,
    OutputAgreement,
    OutputFigures,
    Thresholds,
    sample_score,
    thresholds_for,
)
from pytest_navigator.check.budget import default_verify
from pytest_navigator.check.failures import replay_command, save_failure, saved_lines, shown
from pytest_navigator.check.hypothesis_profiles import (  # noqa: F401 - importable from here, as before the split
    CI_PROFILE,
    DEV_PROFILE,
    default_profile,
    derandomized,
    hypothesis_settings,
    register_profiles,
)
from pytest_navigator.check.strategies import describe, digest, random_sample, samples, simplify
from pytest_navigator.check.summary import (  # noqa: F401 - the report's types, importable from here as before
    CorrectnessReport,
    Observed,
    OutputSummary,
    nonfinite_failure,
    vacuous_outputs,
    with_agreement,
)
from pytest_navigator.check.user_samples import LabeledSample
from pytest_navigator.check.verify import ExplainingVerify, explain, tolerance_for
from pytest_navigator.config import Sample, VerifyFunction
from pytest_navigator.errors import NavigatorError, RuntimeCrashError, describe_error

if TYPE_CHECKING:
    from pytest_navigator.check.references import ReferenceOutputs
    from pytest_navigator.check.truth import Truth
    from pytest_navigator.model.loader import Model
    from pytest_navigator.runtimes import Runner

#: Generated samples per runtime unless --navigator-examples says otherwise: enough to find
#: shape- and value-dependent bugs, few enough for CI.
DEFAULT_EXAMPLES = 25
#: Samples a failed agreement verdict saves for replay (the lowest SQNR first), and diagnoses.
WORST_SAMPLES = 3
#: Samples the layer-wise diagnosis of a failed agreement verdict runs on.
DIAGNOSED = 8


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
    #: An output with no finite reference value lets the check pass with a warning instead of failing it.
    allow_nonfinite: bool = False
    #: The navigator marker's agreement thresholds for a quantized runtime ({'sqnr': 20}), over the run's.
    agreement: Mapping[str, Any] | None = None


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


@dataclass(frozen=True)
class CheckContext:
    """What one runtime's check needs from its run: values, not the session."""

    model: Model
    runner: Runner
    reference: ReferenceOutputs
    #: The runtime's precision (fp32, tf32, fp16, bf16): the error budget's multiple and the fixed tolerance.
    precision: str = "fp32"
    #: The configured batch sizes (--navigator-batch-sizes): one random sample at each runs after the generated ones.
    batch_sizes: tuple[int, ...] = (1, 4)
    #: The run's seed: every runtime of the run sees the same samples.
    seed: int = 0
    #: Whether the seed was drawn for this run (not given, not derandomized): a failure then prints it.
    seed_drawn: bool = False
    #: Failing samples and the Hypothesis example database live here.
    state_dir: Path = Path(".navigator")
    hypothesis_profile: str | None = None
    #: Paths in messages are shown relative to where the run was invoked.
    invocation_dir: Path | None = None
    #: The replay command needs --navigator-trust-model for pickled models.
    trust_model: bool = False
    #: A quantized runtime's agreement thresholds from the run's settings (--navigator-agreement, ini).
    thresholds: Thresholds | None = None


def check_runtime(context: CheckContext, options: CheckOptions) -> CorrectnessReport:
    """Check one runtime of one model; raise CorrectnessFailure (shrunk, saved, explained) on disagreement."""
    return _RuntimeCheck(context, options).run()


class _RuntimeCheck:
    """The state of one runtime's check: what judges it, what it has seen, how to report a failure."""

    def __init__(self, context: CheckContext, options: CheckOptions) -> None:
        self.context, self.options = context, options
        self.model, self.runner, self.reference = context.model, context.runner, context.reference
        precision = context.precision
        #: The precision's fixed tolerance: explains plain verify functions' failures, and the vacuous check's atol.
        self.fixed = tolerance_for(precision)
        thresholds = context.thresholds or Thresholds()
        if options.agreement:
            thresholds = thresholds_for(context.runner.runtime, (), options.agreement, thresholds)
        self.verify = options.verify or default_verify(precision, thresholds)
        self.observed = Observed()
        #: Agreement's per-sample figures (with the sample and its label), judged once at the end.
        self.agreement: list[tuple[str, Sample, dict[str, OutputFigures]]] = []
        #: The sample a crash or a hang of the runtime's worker happened on (isolation.py), and why.
        self.crash: tuple[Sample, str, RuntimeCrashError] | None = None

    def run(self) -> CorrectnessReport:
        # Users' samples first; then generated ones (shrunk on failure); then one random sample at
        # each configured batch size, so those sizes are covered whatever Hypothesis drew.
        configured = self._configured_batch_samples()
        try:
            for label, sample in self.options.explicit:
                self._check_given(label, sample)
            if self.options.examples > 0:
                self._run_hypothesis()
            for label, sample in configured:
                self.observed.generated += 1
                self._check_given(label, sample)
            pooled = self._conclude()
        except BaseException:
            if self.crash is not None:  # the runtime died: report the sample that killed it, not a shrink
                raise CorrectnessFailure(self._crash_message(*self.crash)) from None
            raise
        report = CorrectnessReport(
            self.model.name,
            self.runner.runtime,
            _verify_name(self.verify),
            len(self.options.explicit),
            self.observed.generated,
            self.observed.summary(),
            tuple(sorted(self.observed.batch_sizes)),
            budget_multiple=getattr(self.verify, "multiple", None)
            if getattr(self.verify, "uses_truth", False)
            else None,
            truth_note="; ".join(sorted(self.observed.truth_notes)),
        )
        # A gate that compared no number must not pass unless the user said the model computes none.
        nonfinite = None if self.options.allow_nonfinite else nonfinite_failure(report)
        if nonfinite is not None:
            raise CorrectnessFailure(nonfinite)
        if pooled:
            report = dataclasses.replace(report, outputs=with_agreement(report.outputs, pooled))
        vacuous = vacuous_outputs(report, self.verify, self.fixed)
        if vacuous and self.options.strict:
            raise CorrectnessFailure("\n".join([*vacuous, f"({options.STRICT} turns this warning into a failure)"]))
        for text in vacuous:
            warnings.warn(VacuousCheckWarning(text), stacklevel=3)
        return dataclasses.replace(report, warnings=tuple(vacuous))

    def check(self, sample: Sample, label: str) -> None:
        """Raise _SampleFailed when the runtime (or the reference) raises or the verify function rejects it."""
        key = digest(sample)  # once: it keys the reference's outputs and the truth (0.4 s of a MobileNet's run)
        try:
            expected = self.reference.outputs(sample, key)
        except NavigatorError:
            raise
        except Exception as exc:
            reference = self.reference.runtime
            problem = f"the reference ({reference}) itself raised {describe_error(exc)}"
            raise _SampleFailed(sample, label, [problem], "reference raised") from exc
        try:
            actual = self.runner.infer(sample)
        except RuntimeCrashError as crash:
            self.crash = self.crash or (sample, label, crash)
            raise
        except NavigatorError:
            raise
        except Exception as exc:
            raise _SampleFailed(
                sample, label, [f"{self.runner.runtime} raised {describe_error(exc)}"], "raised"
            ) from exc
        truth = self.reference.truth(sample, key) if getattr(self.verify, "uses_truth", False) else None
        if isinstance(self.verify, Agreement):  # its figures once: judged here, pooled at the end
            problems, figures = self.verify.judge(expected, actual)
        else:
            problems, figures = explain(self.verify, expected, actual, self.fixed, truth), None
        self.observed.add(expected, actual, truth, self.verify)
        self.observed.batch_sizes.update(
            sample[t.name].shape[0] for t in self.model.io_spec if t.batch_axis is not None
        )
        if problems:
            raise _SampleFailed(sample, label, problems)
        if figures is not None:
            self.agreement.append((label, sample, figures))

    def _conclude(self) -> list[OutputAgreement]:
        """Agreement's verdict over every sample (each passed on its own): raise CorrectnessFailure
        when an output's pooled figures miss the thresholds."""
        if not isinstance(self.verify, Agreement) or not self.agreement:
            return []
        pooled = self.verify.conclude([figures for _, _, figures in self.agreement])
        if any(output.problems for output in pooled):
            raise CorrectnessFailure(self._agreement_message(pooled))
        return pooled

    def _agreement_message(self, pooled: list[OutputAgreement]) -> str:
        context, model, runtime = self.context, self.model, self.runner.runtime
        here, verify = context.invocation_dir, self.verify
        assert isinstance(verify, Agreement)
        lines = [
            f"{runtime} disagrees with the reference ({self.reference.runtime}) on {model.name} in what its outputs "
            f"mean, over {len(self.agreement)} samples, judged by {_verify_name(verify)}:",
            *(f"  {output.describe(verify.thresholds.k)}" for output in pooled),
            f"  the {min(WORST_SAMPLES, len(self.agreement))} worst samples (lowest SQNR of a row), saved for replay:",
        ]
        worst = sorted(self.agreement, key=lambda item: sample_score(item[2]))[:WORST_SAMPLES]
        for label, sample, figures in worst:
            where = shown(Path(label), here) if label.endswith(".npz") else label
            text = ", ".join(f"{name!r} SQNR {f.worst_sqnr:.1f} dB" for name, f in figures.items())
            lines.append(f"    {describe(sample)} ({where}): {text}")
            lines += saved_lines(context.state_dir, model, runtime, sample, here, context.trust_model, "      ")
        # the first samples, not the worst: a fault runs through all, the worst may be unlike the calibration data
        lines += [f"  {line}" for line in self._diagnosis([sample for _, sample, _ in self.agreement[:DIAGNOSED]])]
        return "\n".join(lines)

    def _diagnosis(self, samples: list[Sample]) -> list[str]:
        """Where the error enters, from runtimes that can say (a quantized ONNX graph against fp32)."""
        diagnose = getattr(self.runner, "diagnose", None)
        if diagnose is None or not samples:
            return []
        try:
            return list(diagnose(samples))
        except Exception as exc:  # a diagnosis must never hide the failure it explains
            return [f"where the error enters: the layer-wise diagnosis could not run ({describe_error(exc)})"]

    def _check_given(self, label: str, sample: Sample) -> None:
        try:
            self.check(sample, label)
        except _SampleFailed as failure:
            raise CorrectnessFailure(self._message(failure)) from None

    def _run_hypothesis(self) -> None:
        from hypothesis import given, seed
        from hypothesis.errors import Flaky

        context, observed = self.context, self.observed
        # a quantized runtime is judged on inputs like those it was calibrated on (agreement.py)
        realistic = context.precision in QUANTIZED
        strategy = samples(self.model.io_spec, context.batch_sizes, self.runner.max_batch_size, realistic)

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
        test = seed(context.seed)(test)
        test = hypothesis_settings(context.hypothesis_profile, self.options.examples, context.state_dir)(test)
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
        rng = np.random.default_rng(self.context.seed)
        return [
            (f"random sample at batch size {size}", random_sample(self.model.io_spec, size, rng))
            for size in self.context.batch_sizes
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

    def _crash_message(self, sample: Sample, label: str, crash: RuntimeCrashError) -> str:
        context, runtime, here = self.context, self.runner.runtime, self.context.invocation_dir
        where = label if not label.endswith(".npz") else shown(Path(label), here)
        return "\n".join(
            [
                f"{runtime} on {self.model.name}, on a sample of {describe(sample)} ({where}):",
                f"  {crash}",
                *saved_lines(context.state_dir, self.model, runtime, sample, here, context.trust_model, "  "),
            ]
        )

    def _message(self, failure: _SampleFailed) -> str:
        context, model, runtime = self.context, self.model, self.runner.runtime
        here = context.invocation_dir
        reference = self.reference.runtime
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
            label = shown(Path(failure.label), here) if failure.label.endswith(".npz") else failure.label
            lines.append(f"  sample: {label}: {shape}")
        lines += [f"  {problem}" for problem in failure.problems]
        if getattr(self.verify, "uses_truth", False) and failure.kind == "mismatch":
            lines.append(f"  truth: {describe_truth(self.reference.truth(failure.sample))}")
        if isinstance(self.verify, Agreement) and failure.kind == "mismatch":
            lines += [f"  {line}" for line in self._diagnosis([failure.sample])]
        if failure.label.endswith(".npz") and Path(failure.label).is_file():
            saved = Path(failure.label)
        else:
            saved = save_failure(context.state_dir, model, runtime, failure.sample)
        lines.append(f"  saved: {shown(saved, here)}")
        lines.append(f"  replay: {replay_command(model, runtime, saved, here, context.trust_model)}")
        if failure.label == "generated" and context.seed_drawn:
            lines.append(f"  run seed: {context.seed} (rerun every check alike with {options.SEED}={context.seed})")
        return "\n".join(lines)


def describe_truth(truth: Truth) -> str:
    """What a budget was measured against, and why when it is not the float64 shadow."""
    from pytest_navigator.check.truth import FLOAT64_SHADOW, PERTURBATION

    what = {
        FLOAT64_SHADOW: "the float64 shadow (the reference model in double precision)",
        PERTURBATION: "the reference itself; its own rounding is a perturbation estimate (inputs and weights moved one ulp)",
    }.get(truth.kind, "the reference itself, with no estimate of its rounding: the precision's fixed tolerance judged")
    return what + (f" ({truth.note})" if truth.note else "")


def _verify_name(verify: VerifyFunction) -> str:
    return repr(verify) if isinstance(verify, ExplainingVerify) else getattr(verify, "__qualname__", repr(verify))
