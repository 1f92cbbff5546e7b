"""What every runtime's check of a run shares: the run's seed, the users' samples, and each model's
reference outputs and truth, made once; and the context one runtime's check runs in.

Given the settings and the builds, it gives values; the session records what a check found.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pytest_navigator import options as option_names
from pytest_navigator.check.agreement import thresholds_for
from pytest_navigator.check.correctness import CheckContext, CheckOptions
from pytest_navigator.check.references import ReferenceOutputs
from pytest_navigator.check.summary import CorrectnessReport
from pytest_navigator.check.user_samples import LabeledSample, check_samples, load_sample_files
from pytest_navigator.model.loader import Model
from pytest_navigator.runtimes.builds import Builds
from pytest_navigator.settings import Settings


@dataclass
class Checking:
    settings: Settings
    builds: Builds
    _references: dict[Path, ReferenceOutputs] = field(default_factory=dict)
    _user_samples: dict[Path, list[LabeledSample]] = field(default_factory=dict)
    _run_seed: int | None = None

    @property
    def run_seed(self) -> int:
        """The seed every runtime's generated samples come from this run: --navigator-seed, 0 under a
        derandomized profile (CI), else a fresh one per run."""
        if self._run_seed is None:
            self._run_seed = (
                self.settings.seed
                if self.settings.seed is not None
                else 0
                if self.derandomized
                else secrets.randbelow(2**32)
            )
        return self._run_seed

    @property
    def derandomized(self) -> bool:
        from pytest_navigator.check.hypothesis_profiles import derandomized

        return derandomized(self.settings.hypothesis_profile)

    def load_user_samples(self, models: Iterable[Model]) -> None:
        """Read --navigator-samples once and check it against every model's spec (SampleError names the field)."""
        if self.settings.samples_path is None:
            return
        loaded = load_sample_files(self.settings.samples_path)
        for model in models:
            self._user_samples[model.path] = check_samples(loaded, model.io_spec)

    def user_samples(self, model: Model, models: Callable[[], Iterable[Model]]) -> list[LabeledSample]:
        """The samples of --navigator-samples, checked against this model's spec."""
        if self.settings.samples_path is not None and model.path not in self._user_samples:
            self.load_user_samples(models())
        return self._user_samples.get(model.path, [])

    def references(self, model: Model) -> ReferenceOutputs:
        """The model's reference outputs and truth per sample, shared by every runtime's check and kept
        in the artifact cache across runs (truth_store.py)."""
        if model.path not in self._references:
            from pytest_navigator.check.truth import truth_source
            from pytest_navigator.check.truth_store import TruthStore

            reference, example = self.builds.reference(model), self.builds.example(model)
            self._references[model.path] = ReferenceOutputs(
                reference,
                lambda: truth_source(model, reference, example),
                store=TruthStore.open(self.builds.cache, model, reference, example),
            )
        return self._references[model.path]

    def truth_artifacts(self, model: Model) -> list[str]:
        """What the model's stored outputs and truths did since last asked, in the runtimes table's
        "artifacts" words ("restored truth 0.02 s (27 of 27 samples)"): the check that just ran."""
        found = self._references.get(model.path)
        return [] if found is None else [event.summary for event in found.take_events()]

    def context(self, model: Model, runtime: str) -> CheckContext:
        """What one runtime's check runs with (correctness.check_runtime): built here, the runner included."""
        return CheckContext(
            model,
            self.builds.runner(model, runtime),
            self.references(model),
            precision=self.builds.precision(runtime),
            batch_sizes=self.builds.batch_sizes(model),
            seed=self.run_seed,
            seed_drawn=self.settings.seed is None and not self.derandomized,
            state_dir=self.settings.state_dir,
            hypothesis_profile=self.settings.hypothesis_profile,
            invocation_dir=self.settings.invocation_dir,
            trust_model=self.settings.trust_model,
            thresholds=thresholds_for(
                runtime,
                [
                    (self.settings.ini_agreement, "navigator_agreement"),
                    (self.settings.cli_agreement, option_names.AGREEMENT),
                ],
            ),
        )

    def options(self) -> CheckOptions:
        """The run's options, for a check that no test's marker refines (`navigator profile`)."""
        settings = self.settings
        return CheckOptions(
            examples=settings.examples, strict=settings.strict, allow_nonfinite=settings.allow_nonfinite
        )


def correctness_detail(report: CorrectnessReport) -> str:
    """The runtimes summary's one line about a passed check."""
    worst = max((o.max_abs_error for o in report.outputs), default=0.0)
    given = f" ({report.explicit} given)" if report.explicit else ""
    sizes = report.batch_sizes
    batches = f" at batch sizes {sizes[0]}-{sizes[-1]}" if len(sizes) > 1 else ""
    detail = f"{report.samples} samples{given}{batches}, max abs error {worst:.2g}"
    judged = [o for o in report.outputs if o.median_sqnr is not None]
    if judged:  # agreement (a quantized runtime): what the outputs mean, not how far they are
        lowest = min(judged, key=lambda o: o.median_sqnr or 0.0)
        classes = [o for o in judged if o.top1 is not None]
        top1 = f"top-1 agrees in {min(o.top1 or 0.0 for o in classes):.1%}, " if classes else ""
        return (
            f"{report.samples} samples{given}{batches}, {top1}SQNR median {lowest.median_sqnr:.1f} dB "
            f"(worst row {min(o.worst_sqnr or 0.0 for o in judged):.1f} dB), cosine median {lowest.median_cosine:.4f}"
        )
    ratios = [o for o in report.outputs if o.budget_ratio is not None]
    if ratios and report.budget_multiple is not None:
        top = max(ratios, key=lambda o: o.budget_ratio or 0.0)
        detail += (
            f", error up to {top.budget_ratio:.2g}x the reference's own rounding "
            f"({report.budget_multiple:g}x allowed; truth: {top.truth})"
        )
    return detail
