"""One navigator run without pytest: load the models, build the runtimes, check, measure, judge, and
finish: the baseline update, the report, the exit status. `run()` is the whole run (`navigator
profile`); the plugin's items call the steps.

The session orchestrates and owns no policy: builds are runtimes.builds.Builds, what the checks share
check.checking.Checking, measuring measure.measuring.Measurement, judging gate.gatekeeping.Gatekeeper,
the report report.run_report. Each is given values and gives values back; the session records them
in the run's RunResults. Every expensive thing is built once per run and shared.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_navigator.check.checking import Checking
from pytest_navigator.check.correctness import CheckOptions, CorrectnessReport
from pytest_navigator.check.references import ReferenceOutputs
from pytest_navigator.config import MeasurementMode, ProfilerConfig, Sample
from pytest_navigator.gate import policy as gate
from pytest_navigator.gate.baselines import BaselineStore, Key
from pytest_navigator.gate.constraints import Constraint, parse_constraints
from pytest_navigator.gate.gatekeeping import Gatekeeper
from pytest_navigator.gate.thresholds import Limit, parse_thresholds
from pytest_navigator.gate.verdicts import Comparison
from pytest_navigator.locations import scratch_folder
from pytest_navigator.measure.measuring import Measurement
from pytest_navigator.measure.profiler import RuntimeProfile
from pytest_navigator.measure.summary import ProfileSummary
from pytest_navigator.model.loader import Model, load_against, load_models
from pytest_navigator.report.results import BaselineUpdate, ModelInfo, RunResults
from pytest_navigator.report.run_report import RunReport
from pytest_navigator.runtimes import Registry, Runner
from pytest_navigator.runtimes.builds import Builds, RuntimePlan
from pytest_navigator.runtimes.runtime_options import configured_options
from pytest_navigator.settings import Settings

__all__ = ["NavigatorSession", "RuntimePlan"]


@dataclass
class NavigatorSession:
    settings: Settings
    registry: Registry
    workdir: Path = field(default_factory=lambda: scratch_folder("navigator-"))
    models: dict[Path, Model] = field(default_factory=dict)
    results: RunResults = field(default_factory=RunResults)
    #: --navigator-against: the old model every runtime is also measured on, window by window.
    against_model: Model | None = None
    _builds: Builds | None = None
    _checking: Checking | None = None
    #: --navigator-against: the old model's raw profile per (model, runtime), for judge()'s windows
    _against_profiles: dict[tuple[Path, str], RuntimeProfile] = field(default_factory=dict)
    _report: RunReport | None = None
    #: What finish() could not do, one message each (shown in red by the plugin, printed by the CLI).
    problems: list[str] = field(default_factory=list)
    #: Hears what a long step is doing (builds, measurement windows): the plugin's progress line.
    progress: Callable[[str], None] | None = None
    #: What Settings keeps as given, parsed by its own domain when the session starts (__post_init__).
    limits: dict[str, Limit] = field(init=False)
    constraints: list[Constraint] = field(init=False)
    runtime_options: dict[str, dict[str, str]] = field(init=False)

    def __post_init__(self) -> None:
        """A bad threshold, constraint or runtime option stops the run here, naming its option,
        before a model is loaded or a runtime built."""
        self.limits = parse_thresholds(self.settings.thresholds)
        self.constraints = parse_constraints(self.settings.constraints)
        self.runtime_options = configured_options(self.settings)

    def load_models(self) -> list[Model]:
        """Load every model of the settings (and --navigator-against's); the first bad one raises its NavigatorError."""
        for path, model in load_models(self.settings, self.models).items():
            if path not in self.models:
                self.models[path] = model
                self.results.models[path] = ModelInfo(
                    path, model.name, model.fingerprint, model.format.value, str(model.io_spec)
                )
        if self.settings.against is not None and self.against_model is None:
            self.against_model = load_against(self.settings, list(self.models.values()))
        return list(self.models.values())

    @property
    def builds(self) -> Builds:
        if self._builds is None:
            from pytest_navigator.measure.profiler import sweep_sizes

            self._builds = Builds(
                self.settings, self.registry, self.workdir, sweep=sweep_sizes, record=self.results.record_build
            )
            self._builds.user_samples = self._user_samples
            if self.progress is not None:
                self._builds.progress = self.progress
        return self._builds

    def watch(self, progress: Callable[[str], None]) -> None:
        """Let `progress` hear what builds and measurements are doing."""
        self.progress = progress
        self.builds.progress = progress

    def runner(self, model: Model, runtime: str) -> Runner:
        return self.builds.runner(model, runtime)

    @property
    def checking(self) -> Checking:
        if self._checking is None:
            self._checking = Checking(self.settings, self.builds)
        return self._checking

    def load_user_samples(self) -> None:
        self.checking.load_user_samples(self.load_models())

    def _user_samples(self, model: Model, runtime: str) -> list[Sample]:
        """--navigator-samples' samples of `model` (--navigator-against's too): what calibrating runtimes use."""
        return [sample for _, sample in self.checking.user_samples(model, lambda: [*self.load_models(), model])]

    def references(self, model: Model) -> ReferenceOutputs:
        return self.checking.references(model)

    def check_correctness(self, model: Model, runtime: str, options: CheckOptions | None = None) -> CorrectnessReport:
        """Check a runtime against the reference (users' samples, then generated ones) and record it;
        raise on disagreement."""
        from pytest_navigator.check.correctness import check_runtime

        report, error = None, None
        try:
            report = check_runtime(self.checking.context(model, runtime), options or self.checking.options())
        except Exception as exc:
            error = exc
            raise
        finally:
            self.results.record_check(model.path, runtime, report, error, self.checking.truth_artifacts(model))
        return report

    def profiling_inputs(self, model: Model, batch_size: int) -> list[Sample]:
        from pytest_navigator.check.strategies import profiling_inputs

        return profiling_inputs(model.io_spec, batch_size)

    @property
    def measurement(self) -> Measurement:
        return Measurement(self.settings, self.builds, self.limits, self.against_model, self.progress)

    def profile(self, model: Model, runtime: str, config: ProfilerConfig | None = None) -> RuntimeProfile:
        """Measure a runtime (measure/measuring.py) and record it; in instruction mode, count instead."""
        config = config or self.settings.profiler
        if config.measurement_mode is MeasurementMode.INSTRUCTIONS:
            return self.count_instructions(model, runtime, config)
        measured = self.measurement.profile(model, runtime, config, self.gatekeeper.stored_entries(model, runtime))
        result = self.results.result(model.path, runtime)
        if measured.old is not None:
            self._against_profiles[(model.path, runtime)] = measured.old  # judge() compares the windows
            result.against_profile = ProfileSummary.of(measured.old)
        if measured.traces is not None:
            result.traces = measured.traces
        result.profile = ProfileSummary.of(measured.profile)
        return measured.profile

    def count_instructions(self, model: Model, runtime: str, config: ProfilerConfig) -> RuntimeProfile:
        """Instructions per request under callgrind (measure/measuring.py), recorded."""
        profile = self.measurement.count_instructions(model, runtime, config)
        self.results.result(model.path, runtime).profile = ProfileSummary.of(profile)
        return profile

    def model_profile(self, model: Model, batch_sizes: list[int]) -> Any:
        """The model's parameters and FLOPs per request at `batch_sizes` (model/profile.py), computed once per
        model and batch size and kept in results.models; None, with the reason kept, when it cannot be."""
        from pytest_navigator.model.profile import profile_for, remembered, to_store

        info, parts = self.results.models[model.path], {"model": model.fingerprint, "spec": str(model.io_spec)}
        stored = self.builds.cache.stored_figures("model-profile", parts)  # a past run's counts
        known = remembered(info.profile, stored, batch_sizes)
        found, info.profile, info.profile_error = profile_for(model, batch_sizes, known, info.profile_error)
        self.builds.cache.store_figures("model-profile", parts, to_store(stored, info.profile))
        return found

    @functools.cached_property
    def baseline_store(self) -> BaselineStore:
        """One store for the run: it reads each model's baseline file once, for every step that asks."""
        return BaselineStore(self.settings.baselines_dir)

    @property
    def gatekeeper(self) -> Gatekeeper:
        return Gatekeeper(self.settings, self.builds, self.baseline_store, self.against_model)

    def hardware(self, runtime: str, counted: bool = False) -> str:
        return self.gatekeeper.hardware(runtime, counted)

    def judge(
        self, model: Model, runtime: str, profile: RuntimeProfile, limits: Mapping[str, Limit]
    ) -> list[Comparison]:
        """Judge a profile against its baseline or the A/B model (gatekeeping.judge) and record the
        verdicts and the stable measurements; a baseline file that cannot be used raises after that."""
        info = self.results.models.get(model.path)
        old = self._against_profiles.get((model.path, runtime))
        judged = self.gatekeeper.judge(model, runtime, profile, limits, old, info.profile if info else None)
        result = self.results.result(model.path, runtime)
        result.comparisons, result.measured = judged.comparisons, judged.measured
        if judged.error is not None:
            raise judged.error
        return judged.comparisons

    def check_performance(
        self,
        model: Model,
        runtime: str,
        config: ProfilerConfig | None = None,
        limits: Mapping[str, Limit] | None = None,
        constraints: list[Any] | None = None,
    ) -> tuple[RuntimeProfile, gate.GateOutcome, str]:
        """A performance test's work without pytest: profile, the model profile, judge, the gate's
        policy and the model constraints. Returns the profile, the gate's outcome and the broken
        constraints' message ("" when none). The plugin's test and `navigator profile` both call it."""
        profile = self.profile(model, runtime, config or self.settings.profiler)
        constraints = self.constraints if constraints is None else constraints
        figures = self.model_profile(model, [b.batch_size for b in profile.batches if b.status != "error"])
        comparisons = self.judge(model, runtime, profile, self.limits if limits is None else limits)
        keeper = self.gatekeeper
        outcome = keeper.outcome(model, runtime, profile, comparisons)
        if not constraints:
            return profile, outcome, ""
        against = None
        if figures is not None and self.against_model is not None:
            against = self.model_profile(self.against_model, sorted(figures.flops))
        error = self.results.models[model.path].profile_error
        return (
            profile,
            outcome,
            keeper.constraint_failure(model, runtime, profile, constraints, figures, against, error),
        )

    def update_baselines(self) -> None:
        """Write the stable measurements of runtimes that passed their check this run (gatekeeping.update);
        each model's outcome lands in results.baseline_updates."""
        for model in self.models.values():
            written = self.gatekeeper.update(model, self.results.of_model(model.path))
            if written is not None:
                self.results.baseline_updates[model.path] = BaselineUpdate(written.path, written.changes, written.error)

    def unused_baselines(self, model: Model) -> list[Key]:
        """Entries for this machine's hardware that no test of this run compared against (kept, listed)."""
        return self.gatekeeper.unused(model, self.results.of_model(model.path))

    def run(self, say: Callable[[str], None], freeze_heap: bool = False) -> list[str]:
        """The whole run, in the order the plugin's tests run (loop.py): `navigator profile`'s. `say` hears
        the steps; returns one line per failure. `freeze_heap`: the process is the run's own (loop.py)."""
        from pytest_navigator.loop import run_all

        return run_all(self, say, freeze_heap)

    def report(self) -> RunReport:
        """The run's report, built once (after the baseline update, so it carries it): every view reads it."""
        if self._report is None:
            from pytest_navigator.report.json_report import settings_snapshot
            from pytest_navigator.report.run_report import build_report

            for path in self.results.models:
                if path in self.models:
                    self.results.unused[path] = self.unused_baselines(self.models[path])
            snapshot = settings_snapshot(self.settings, self.limits, self.against_model)
            self._report = build_report(self.results, snapshot, self.registry, self.baseline_store.path_for)
        return self._report

    def finish(self) -> int:
        """End the run: the baseline update (--update-baselines), then the report and every file asked
        for. Returns 1 when something the user asked for could not be done (a file not written, an
        update refused), else 0; `problems` says what."""
        failed = 0
        if self.settings.update_baselines:
            self.update_baselines()
            failed |= any(u.error is not None for u in self.results.baseline_updates.values())
            unchecked = gate.unchecked_update(self.results.runtimes.values())
            if unchecked:
                self.problems.append(unchecked)
                failed = 1
        summary = bool(os.environ.get("GITHUB_STEP_SUMMARY")) and bool(self.results.runtimes)
        if self.settings.report_path is not None or any(self._views) or summary:
            from pytest_navigator.report.views import write_all

            problems = write_all(self.report(), self.settings.report_path, *self._views)
            if problems:
                self.problems.insert(0, "\n".join(problems))
                failed = 1
        return int(failed)

    @property
    def _views(self) -> tuple[Path | None, Path | None, Path | None]:
        return (self.settings.html_path, self.settings.markdown_path, self.settings.benchmark_json_path)

    def close(self) -> None:
        """Remove the run's temporary artifacts."""
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._builds is not None:
            self._builds.close()
