"""One navigator run without pytest: load the models, build the runtimes, check, profile, judge; the
findings land in one RunResults.

The session orchestrates and owns no policy of its own: runtime identity and builds are
builds.Builds, the reference's outputs and truth references.ReferenceOutputs, the property check
correctness.check_runtime (given values, not the session), measurement profiler.profile_runner,
and judging and writing baselines gate.py. Every expensive thing is built once per run and shared.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pytest_navigator import options
from pytest_navigator.check.correctness import CheckContext, CheckOptions, CorrectnessReport
from pytest_navigator.check.references import ReferenceOutputs
from pytest_navigator.check.truth import Truth, TruthSource
from pytest_navigator.check.user_samples import LabeledSample, check_samples, load_sample_files
from pytest_navigator.config import MeasurementMode, ProfilerConfig, Sample
from pytest_navigator.errors import NavigatorError, describe_error
from pytest_navigator.gate import policy as gate
from pytest_navigator.gate.baselines import BaselineError, BaselineFile, BaselineStore, Key
from pytest_navigator.gate.constraints import Constraint, constraint_failure, parse_constraints
from pytest_navigator.gate.entries import BaselineEntry
from pytest_navigator.gate.thresholds import Limit, parse_thresholds
from pytest_navigator.gate.verdicts import Comparison
from pytest_navigator.measure.profiler import BatchProfile, RuntimeProfile
from pytest_navigator.measure.summary import ProfileSummary
from pytest_navigator.model.loader import Model, load
from pytest_navigator.model.spec import parse_io_spec, read_sidecar
from pytest_navigator.report.results import BaselineUpdate, ModelInfo, RunResults, RuntimeResult, Status
from pytest_navigator.report.run_report import RunReport
from pytest_navigator.runtimes import Registry, Runner
from pytest_navigator.runtimes.builds import Building, BuildRecord, Builds, Planned, RuntimePlan
from pytest_navigator.runtimes.runtime_options import configured_options
from pytest_navigator.settings import Settings

__all__ = ["NavigatorSession", "RuntimePlan"]


@dataclass
class NavigatorSession:
    settings: Settings
    registry: Registry
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="navigator-")))
    models: dict[Path, Model] = field(default_factory=dict)
    results: RunResults = field(default_factory=RunResults)
    #: --navigator-against: the old model every runtime is also measured on, window by window.
    against_model: Model | None = None
    _builds: Builds | None = None
    _references: dict[Path, ReferenceOutputs] = field(default_factory=dict)
    _user_samples: dict[Path, list[LabeledSample]] = field(default_factory=dict)
    _run_seed: int | None = None
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

    # -- models ----------------------------------------------------------------------------------

    def load_models(self) -> list[Model]:
        """Load every model of the settings; the first bad one raises its NavigatorError."""
        cli = parse_io_spec(self.settings.cli_inputs, options.INPUT) if self.settings.cli_inputs else None
        ini = (
            parse_io_spec(self.settings.ini_inputs, "ini option navigator_inputs") if self.settings.ini_inputs else None
        )
        for path in self.settings.models:
            if path not in self.models:
                model = load(path, trust=self.settings.trust_model, user_specs=[cli, ini, read_sidecar(path)])
                self.models[path] = model
                self.results.models[path] = ModelInfo(
                    path, model.name, model.fingerprint, model.format.value, str(model.io_spec)
                )
        against = self.settings.against
        if against is not None and self.against_model is None:
            if len(self.settings.models) != 1:
                raise NavigatorError(
                    f"{options.AGAINST}={against} compares with one model; {len(self.settings.models)} are given."
                )
            (model,) = self.models.values()
            old = load(against, trust=self.settings.trust_model, user_specs=[cli, ini, read_sidecar(against)])
            if old.format is not model.format:
                raise NavigatorError(
                    f"{options.AGAINST}={against} is {old.format.value} and {model.name} is {model.format.value}: "
                    "an A/B run builds the same runtimes from both, so give the old model in the same format."
                )
            if str(old.io_spec) != str(model.io_spec):
                raise NavigatorError(
                    f"{options.AGAINST}={against}: its inputs ({old.io_spec}) differ from {model.name}'s ({model.io_spec})."
                )
            self.against_model = old
        return list(self.models.values())

    # -- runtimes (builds.Builds) ------------------------------------------------------------------

    @property
    def builds(self) -> Builds:
        if self._builds is None:
            from pytest_navigator.measure.profiler import sweep_sizes

            self._builds = Builds(
                self.settings, self.registry, self.workdir, sweep=sweep_sizes, record=self._record_build
            )
            if self.progress is not None:
                self._builds.progress = self.progress
        return self._builds

    def _record_build(self, record: BuildRecord) -> None:
        """What the builds planned and built, written into the run's results (Builds does not know them)."""
        result = self.results.result(record.model, record.runtime)
        if isinstance(record, Planned):
            result.device, result.precision = record.device, record.precision
            if record.skip_reason:
                result.status, result.detail = Status.SKIPPED, record.skip_reason
        elif isinstance(record, Building):
            result.device = result.device or record.device
            result.precision = result.precision or record.precision
        else:
            if record.error is None:
                result.status = Status.BUILT
            else:
                result.status, result.detail = Status.FAILED_BUILD, record.error
            result.build_seconds, result.artifacts = record.seconds, list(record.artifacts)

    def watch(self, progress: Callable[[str], None]) -> None:
        """Let `progress` hear what builds and measurements are doing."""
        self.progress = progress
        self.builds.progress = progress

    def plan(self, model: Model) -> list[RuntimePlan]:
        return self.builds.plan(model)

    def runtime_id(self, name: str, overrides: Mapping[str, Any] | None = None, where: str = "") -> str:
        return self.builds.runtime_id(name, overrides, where)

    def options(self, runtime: str) -> Any:
        return self.builds.options(runtime)

    def precision(self, runtime: str) -> str:
        return self.builds.precision(runtime)

    def reference(self, model: Model) -> Runner:
        return self.builds.reference(model)

    def runner(self, model: Model, runtime: str) -> Runner:
        return self.builds.runner(model, runtime)

    def batch_sizes(self, model: Model) -> tuple[int, ...]:
        return self.builds.batch_sizes(model)

    def build_batch_sizes(self, model: Model) -> tuple[int, ...]:
        return self.builds.build_batch_sizes(model)

    # -- correctness -------------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """Where failing samples and the Hypothesis example database are kept between runs."""
        return self.settings.state_dir

    @property
    def run_seed(self) -> int:
        """The seed every runtime's generated samples come from this run: --navigator-seed, 0 under a
        derandomized profile (CI), else a fresh one per run."""
        if self._run_seed is None:
            self._run_seed = (
                self.settings.seed
                if self.settings.seed is not None
                else 0
                if self._derandomized
                else secrets.randbelow(2**32)
            )
        return self._run_seed

    @property
    def _derandomized(self) -> bool:
        from pytest_navigator.check.hypothesis_profiles import derandomized

        return derandomized(self.settings.hypothesis_profile)

    def load_user_samples(self) -> None:
        """Read --navigator-samples once and check it against every model's spec (SampleError names the field)."""
        if self.settings.samples_path is None:
            return
        loaded = load_sample_files(self.settings.samples_path)
        for model in self.load_models():
            self._user_samples[model.path] = check_samples(loaded, model.io_spec)

    def user_samples(self, model: Model) -> list[LabeledSample]:
        """The samples of --navigator-samples, checked against this model's spec."""
        if self.settings.samples_path is not None and model.path not in self._user_samples:
            self.load_user_samples()
        return self._user_samples.get(model.path, [])

    def references(self, model: Model) -> ReferenceOutputs:
        """The model's reference outputs and truth per sample, shared by every runtime's check."""
        if model.path not in self._references:
            from pytest_navigator.check.truth import truth_source

            reference = self.reference(model)
            self._references[model.path] = ReferenceOutputs(
                reference, lambda: truth_source(model, reference, self.builds.example(model))
            )
        return self._references[model.path]

    def reference_outputs(self, model: Model, sample: Sample) -> Sample:
        return self.references(model).outputs(sample)

    def truth_source(self, model: Model) -> TruthSource:
        return self.references(model).source

    def truth(self, model: Model, sample: Sample) -> Truth:
        return self.references(model).truth(sample)

    def check_correctness(self, model: Model, runtime: str, options: CheckOptions | None = None) -> CorrectnessReport:
        """Check a runtime against the reference (users' samples, then generated ones); raise on disagreement."""
        from pytest_navigator.check.correctness import check_runtime

        report = None
        result = self.results.result(model.path, runtime)
        try:
            context = CheckContext(
                model,
                self.runner(model, runtime),
                self.references(model),
                precision=self.precision(runtime),
                batch_sizes=self.batch_sizes(model),
                seed=self.run_seed,
                seed_drawn=self.settings.seed is None and not self._derandomized,
                state_dir=self.state_dir,
                hypothesis_profile=self.settings.hypothesis_profile,
                invocation_dir=self.settings.invocation_dir,
                trust_model=self.settings.trust_model,
            )
            report = check_runtime(context, options or CheckOptions(examples=self.settings.examples))
        except Exception as exc:
            if result.status != Status.FAILED_BUILD:
                result.detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise
        finally:
            if result.status != Status.FAILED_BUILD:
                result.status = Status.PASSED if report else Status.FAILED
            if report:
                result.correctness, result.detail = report, correctness_detail(report)
        return report

    # -- performance -------------------------------------------------------------------------------

    def profiling_inputs(self, model: Model, batch_size: int) -> list[Sample]:
        from pytest_navigator.check.strategies import profiling_inputs

        return profiling_inputs(model.io_spec, batch_size)

    def profile(self, model: Model, runtime: str, config: ProfilerConfig | None = None) -> RuntimeProfile:
        """Measure a runtime: config.batch_sizes (those the runner accepts), else a sweep of powers of
        two; with --navigator-against, the old model beside it, window by window. In instruction mode,
        count instead (count_instructions)."""

        from pytest_navigator.measure.calibration import calibration_score
        from pytest_navigator.measure.executor import executor_for

        config = config or self.settings.profiler
        if config.measurement_mode is MeasurementMode.INSTRUCTIONS:
            return self.count_instructions(model, runtime, config)
        runner = self.runner(model, runtime)
        sizes = None
        stored = self._baseline_entries(model, runtime)  # read once: it decides the sizes and the calibration
        baselined = self._baselined_sizes(stored, runner) if config.batch_sizes is None else []
        if baselined:
            config = replace(config, batch_sizes=tuple(baselined))
        if config.batch_sizes is not None:
            sizes = [b for b in config.batch_sizes if b is not None and runner.accepts_batch_size(b)]
            if not sizes:
                limit = runner.max_batch_size
                raise NavigatorError(
                    f"{runtime}: none of the batch sizes {', '.join(map(str, config.batch_sizes))} fits "
                    + (
                        f"{model.name}, whose largest batch is {limit}."
                        if limit
                        else f"{model.name}, which has no batch axis."
                    )
                )
            # build every size's plan now (per-batch-size runners); each build is its size's cold start.
            # A size that fails (out of memory) fails again in its own measurement, where it is shown.
            with contextlib.suppress(Exception):
                runner.preload(self.profiling_inputs(model, size)[0] for size in sizes)
        calibrate = self._calibrates(stored)
        before = calibration_score(runner.device) if calibrate else None
        old_runner = self.runner(self.against_model, runtime) if self.against_model is not None else None
        # the timing loop runs where the runtime runs: in its own worker process, or here
        profile, olds = executor_for(runner, model.io_spec).measure(config, sizes, old_runner, self.progress)
        profile, olds = self._runs(model, runtime, runner, old_runner, config, profile, olds, stored)
        result = self.results.result(model.path, runtime)
        if self.against_model is not None:
            old = replace(profile, batches=tuple(olds[b.batch_size] for b in profile.batches))
            self._against_profiles[(model.path, runtime)] = old  # judge() compares the windows
            result.against_profile = ProfileSummary.of(old)
        scores = [s for s in (before, calibration_score(runner.device) if calibrate else None) if s is not None]
        profile = replace(profile, calibration=sum(scores) / len(scores) if scores else None)
        profile = self._with_peak_memory(model, runner, profile)
        if baselined and not any(b.status == "error" for b in profile.batches):  # an error's reason stays
            profile = replace(
                profile,
                stop_reason=f"measured the batch sizes of the stored baseline ({', '.join(map(str, baselined))}), "
                f"so every one is judged; {options.UPDATE_BASELINES} sweeps again",
            )
        if self.settings.trace_dir is not None:  # after every timed window: tracing never runs inside one
            result.traces = self._traces(model, runner, profile)
        result.profile = ProfileSummary.of(profile)
        return profile

    def _runs(
        self,
        model: Model,
        runtime: str,
        runner: Runner,
        old_runner: Runner | None,
        config: ProfilerConfig,
        profile: RuntimeProfile,
        olds: dict[int, BatchProfile],
        stored: Mapping[str, Any],
    ) -> tuple[RuntimeProfile, dict[int, BatchProfile]]:
        """`profile` (and the A/B side's `olds`) with each batch size's figures per run (runs.py): the
        measurement just taken, then, where a verdict or a recording depends on it, the same sizes
        measured again in fresh worker processes, up to --navigator-processes runs. A run that fails
        leaves the others standing, said in the stop reason. Under --navigator-isolation=none the runs
        repeat in this process, which the stop reason says: the spread between processes is not seen."""
        from pytest_navigator.measure.executor import executor_for

        new_runs = {b.batch_size: [b.figures()] if b.stable else [] for b in profile.batches}
        old_runs = {size: [b.figures()] if b.stable else [] for size, b in olds.items()}
        count = self.settings.processes if self._judged_or_kept(stored) else 1
        sizes = [b.batch_size for b in profile.batches if b.status != "error"]
        notes = []
        isolated = executor_for(runner, model.io_spec).isolated
        for number in range(2, count + 1 if sizes else 0):
            if self.progress is not None:
                where = "a fresh process" if isolated else "this process"
                self.progress(f"measuring {runtime} for {model.name}: run {number} of {count}, in {where}")
            again = replace(config, batch_sizes=tuple(sizes))
            try:
                if isolated:
                    models = [model] + ([self.against_model] if self.against_model is not None else [])
                    built, worker = self.builds.fresh_runners(models, runtime, f"run {number}")
                    try:
                        fresh = executor_for(built[0], model.io_spec)
                        more, more_olds = fresh.measure(again, sizes, built[1] if len(built) > 1 else None)
                    finally:
                        self.builds.close_counting([worker])
                else:
                    more, more_olds = executor_for(runner, model.io_spec).measure(again, sizes, old_runner)
            except NavigatorError as failed:
                notes.append(f"run {number} of {count} failed ({describe_error(failed).splitlines()[0]})")
                continue
            for batch in more.batches:
                old = more_olds.get(batch.batch_size)
                if batch.stable and batch.batch_size in new_runs and (old is None or old.stable):
                    new_runs[batch.batch_size].append(batch.figures())
                    if old is not None and batch.batch_size in old_runs:
                        old_runs[batch.batch_size].append(old.figures())
        if count > 1 and not isolated:
            notes.append(
                f"{options.ISOLATION}=none: the {count} runs share this process, so the spread between processes "
                "is not seen"
            )
        batches = tuple(replace(b, runs=tuple(new_runs.get(b.batch_size, ()))) for b in profile.batches)
        reason = "; ".join([profile.stop_reason, *notes]) if notes else profile.stop_reason
        olds = {size: replace(b, runs=tuple(old_runs.get(size, ()))) for size, b in olds.items()}
        return replace(profile, batches=batches, stop_reason=reason), olds

    def _judged_or_kept(self, stored: Mapping[str, Any]) -> bool:
        """Whether a timed verdict or a recording depends on this measurement: a stored baseline for it
        (`stored`: _baseline_entries), --update-baselines, a report (`navigator profile -o` included),
        an A/B run, or an absolute limit in --navigator-thresholds."""
        absolute = any(not limit.relative for limit in self.limits.values())  # an SLA judges any run
        return self._kept() or self.against_model is not None or bool(stored) or absolute

    def _kept(self) -> bool:
        """Whether this run's measurements are recorded (--update-baselines) or kept in a report."""
        settings = self.settings
        kept = (settings.report_path, settings.html_path, settings.markdown_path, settings.benchmark_json_path)
        return settings.update_baselines or any(kept)

    def _baselined_sizes(self, stored: Mapping[str, Any], runner: Runner) -> list[int]:
        """The batch sizes this runtime has baselines for on this hardware, which the sweep must not
        leave unjudged (a time budget spent early, a busy machine); none while baselines are updated,
        in an A/B run, or where the file cannot be read (the judgement reports that). `stored`: _baseline_entries."""
        if self.settings.update_baselines or self.against_model is not None:
            return []
        return sorted(int(b) for b in stored if str(b).isdigit() and runner.accepts_batch_size(int(b)))

    def _baseline_entries(self, model: Model, runtime: str) -> Mapping[str, Any]:
        """This runtime's stored baseline entries on this hardware, by batch size ({} when none or unreadable)."""
        try:
            stored = self.baseline_store.load(model.name, model.fingerprint)
        except BaselineError:
            return {}
        return stored.runtime_entries(self.hardware(runtime), runtime)

    def _calibrates(self, stored: Mapping[str, Any]) -> bool:
        """Whether to run the calibration workload around this profile (calibration.py: about 2 s,
        before and after). Its score only matters where the figures are judged against a baseline
        (machine drift, --navigator-normalize), recorded (--update-baselines) or kept for a later
        comparison (a report: `--navigator-report`, `navigator profile -o`); a plain local run skips it."""
        if self.settings.normalize or self._kept():
            return True
        return self.against_model is None and bool(stored)

    def _traces(self, model: Model, runner: Runner, profile: RuntimeProfile) -> list[str]:
        """--navigator-trace: each measured batch size traced by the runtime's own profiler (trace.py)."""
        from pytest_navigator.measure.executor import executor_for
        from pytest_navigator.measure.trace import folder_for

        assert self.settings.trace_dir is not None
        folder = folder_for(self.settings.trace_dir, model.name, profile.runtime)
        sizes = [b.batch_size for b in profile.batches if b.status != "error"]
        return executor_for(runner, model.io_spec).trace(sizes, folder)

    def _with_peak_memory(self, model: Model, runner: Runner, profile: RuntimeProfile) -> RuntimeProfile:
        """`profile` with each measured batch size's peak memory, from an untimed pass after all the
        timed windows (memory.py), in the runtime's own process."""
        from pytest_navigator.measure.executor import executor_for

        sizes = [b.batch_size for b in profile.batches if b.status != "error"]
        if not sizes:
            return profile
        try:
            peaks = executor_for(runner, model.io_spec).peak_memory(sizes)
        except NavigatorError:  # a worker that died here: its measurement stands, without peaks
            return profile
        batches = tuple(
            replace(
                b,
                peak_rss=peaks[b.batch_size].rss,
                peak_cuda=peaks[b.batch_size].cuda,
                rss_scope=peaks[b.batch_size].rss_scope,
                gpu_process=peaks[b.batch_size].gpu_process,
                engine_memory=peaks[b.batch_size].engine,
            )
            if b.batch_size in peaks
            else b
            for b in profile.batches
        )
        return replace(profile, batches=batches)

    def count_instructions(self, model: Model, runtime: str, config: ProfilerConfig) -> RuntimeProfile:
        """Instructions per request of a CPU runtime, built with one thread and no spinning, in
        separate processes under callgrind (instructions.py). CannotCount says why a runtime cannot
        be counted here (no valgrind, a GPU runtime)."""
        from pytest_navigator.measure import instructions, valgrind
        from pytest_navigator.measure.executor import executor_for
        from pytest_navigator.runtimes.runtime_options import split_runtime_id

        definition = self.registry.get(runtime)
        if definition.device != "cpu":
            raise instructions.CannotCount(
                f"{runtime} runs on {definition.device}: instruction counts see only work on the CPU (valgrind cannot "
                "see a GPU's); gate it in time mode (--navigator-mode=count) on a dedicated machine"
            )
        found = valgrind.find()
        if isinstance(found, str):
            raise instructions.CannotCount(found)
        if self.against_model is not None:
            raise NavigatorError(
                f"{options.AGAINST} measures two models side by side in time; instruction counts need no "
                "side-by-side run: record a baseline of the old model, or count both and compare the figures."
            )
        name, values = split_runtime_id(runtime)
        counted = self.builds.runtime_id(name, values, counted=True)
        limit = model.io_spec.max_batch_size
        wanted = [b for b in (config.batch_sizes or instructions.DEFAULT_BATCH_SIZES) if b is not None]
        sizes = [b for b in wanted if limit is None or b <= limit] or [1]
        runners = self.builds.counting_runners(model, counted, found.wrapper(), instructions.REPEATS)
        try:
            executors = [executor_for(r, model.io_spec) for r in runners]
            profile = instructions.measure(executors, sizes, config, found.version_text, self.progress, found.slow_fma)
        finally:
            self.builds.close_counting([r.worker for r in runners])
        self.results.result(model.path, runtime).profile = ProfileSummary.of(profile)
        return profile

    def model_profile(self, model: Model, batch_sizes: list[int]) -> Any:
        """The model's parameters and FLOPs per request at `batch_sizes` (model_profile.py), computed
        once per model and batch size and kept in results.models; None, with the reason kept as
        profile_error, when it cannot be computed."""
        from pytest_navigator.model.profile import ModelProfile, profile_model

        info = self.results.models[model.path]
        known = info.profile or {}
        wanted = [b for b in dict.fromkeys(batch_sizes) if str(b) not in known.get("flops", {})]
        if wanted and not info.profile_error:
            try:
                found = profile_model(model, {b: self.profiling_inputs(model, b)[0] for b in wanted})
            except Exception as exc:  # a model the counters cannot run: said in the summary, not fatal
                info.profile_error = describe_error(exc)
            else:
                fresh = found.as_json()
                info.profile = {**fresh, "flops": {**known.get("flops", {}), **fresh["flops"]}}
        if info.profile is None:
            return None
        return ModelProfile.from_json(info.profile)

    # -- the gate (gate.py) ------------------------------------------------------------------------

    @functools.cached_property
    def baseline_store(self) -> BaselineStore:
        """One store for the run: it reads each model's baseline file once, for every step that asks."""
        return BaselineStore(self.settings.baselines_dir)

    def hardware(self, runtime: str, counted: bool = False) -> str:
        """The hardware a runtime's baselines are keyed by: its GPU, or the CPU; instruction counts
        (`counted`) by the CPU model alone, as "instructions on MODEL" (they use one core)."""
        from pytest_navigator.measure.telemetry import fingerprint, hardware_key

        if counted:
            return f"instructions on {fingerprint()['cpu']['model']}"
        device = self.registry.get(runtime).device if runtime in self.registry else "cpu"
        return hardware_key(fingerprint(), device)

    def judged_against(self, model: Model) -> str:
        """What a verdict compares with, for messages: the baseline file, or the A/B model."""
        if self.against_model is not None:
            return f"{self.against_model.path} (A/B, measured side by side)"
        return str(self.baseline_store.path_for(model.name, model.fingerprint))

    def judge(
        self, model: Model, runtime: str, profile: RuntimeProfile, limits: Mapping[str, Limit]
    ) -> list[Comparison]:
        """Compare each measured batch size with the stored baseline for this hardware (or the A/B
        model); keep the stable ones as entries for --update-baselines. An unreadable baseline file
        raises BaselineError after the measurement is kept."""
        from pytest_navigator.measure.telemetry import fingerprint

        unreadable: BaselineError | None = None
        try:
            stored = self.baseline_store.load(model.name, model.fingerprint)
        except BaselineError as exc:  # still keep the measurement: --update-baselines reports the file
            unreadable, stored = exc, BaselineFile(Path(), {}, {})
        result = self.results.result(model.path, runtime)
        against = None
        old = self._against_profiles.get((model.path, runtime))
        if self.against_model is not None and old is not None:
            against = (self.against_model.name, old)
        counted = profile.config.measurement_mode is MeasurementMode.INSTRUCTIONS
        facts = fingerprint()
        if counted and profile.tool:  # a new valgrind may count differently: "versions changed", said
            facts = {**facts, "libraries": {**facts["libraries"], "valgrind": profile.tool.removeprefix("valgrind-")}}
        found = gate.judge(
            profile.runtime if counted else runtime,
            profile,
            stored,
            limits,
            hardware=self.hardware(runtime, counted),
            precision=self.precision(runtime),
            facts=facts,
            normalize=self.settings.normalize,
            against=against,
        )
        figures = self.results.models[model.path].profile if model.path in self.results.models else None
        measured = {key: entry.to_dict() for key, entry in found.entries.items()}  # the run's records keep JSON
        for (_, _, size), entry in measured.items():  # the model profile travels with each entry
            if figures is not None and str(size) in figures["flops"]:
                entry["model"] = {"flops": figures["flops"][str(size)], "parameters": figures["parameters"]}
        result.comparisons, result.measured = found.comparisons, measured
        if unreadable is not None:
            raise unreadable
        if found.problems and not self.settings.update_baselines:  # an update replaces malformed entries
            raise BaselineError("\n".join(found.problems))
        return found.comparisons

    def check_performance(
        self,
        model: Model,
        runtime: str,
        config: ProfilerConfig | None = None,
        limits: Mapping[str, Limit] | None = None,
        constraints: list[Any] | None = None,
    ) -> tuple[RuntimeProfile, gate.GateOutcome, str]:
        """A performance test's work without pytest: profile, the model profile, judge, the gate's
        policy (gate.decide), and the model constraints. Returns the profile, the gate's outcome and the
        broken constraints' message ("" when none). The plugin's test and `navigator profile` both call it."""
        config = config or self.settings.profiler
        profile = self.profile(model, runtime, config)
        constraints = self.constraints if constraints is None else constraints
        figures = self.model_profile(model, [b.batch_size for b in profile.batches if b.status != "error"])
        comparisons = self.judge(model, runtime, profile, self.limits if limits is None else limits)
        counted = config.measurement_mode is MeasurementMode.INSTRUCTIONS
        outcome = gate.decide(
            runtime,
            model.name,
            profile,
            comparisons,
            inconclusive=self.settings.inconclusive,
            update=self.settings.update_baselines,
            require_baseline=self.settings.require_baseline,
            missing=self.settings.missing_baseline,
            judged_against=self.judged_against(model),
            hardware=self.hardware(runtime, counted),
        )
        broken = self._constraint_failure(model, runtime, profile, constraints, figures) if constraints else ""
        return profile, outcome, broken

    def _constraint_failure(
        self, model: Model, runtime: str, profile: RuntimeProfile, constraints: list[Any], found: Any
    ) -> str:
        """The model constraints judged (gate/constraints.py) with the figures a percentage is of: the
        A/B model's profile, else this runtime's stored baseline entries by batch size."""
        entries: dict[int, BaselineEntry | None] = {}
        against = None
        if self.against_model is not None:
            source = f"the A/B model {self.against_model.name}"
        else:
            source = str(self.baseline_store.path_for(model.name, model.fingerprint))
        if found is not None and self.against_model is not None:
            against = self.model_profile(self.against_model, sorted(found.flops))
        elif found is not None:
            counted = profile.config.measurement_mode is MeasurementMode.INSTRUCTIONS
            hardware, key = self.hardware(runtime, counted), profile.runtime if counted else runtime
            with contextlib.suppress(BaselineError):  # an unreadable file fails the gate already
                stored = self.baseline_store.load(model.name, model.fingerprint)
                for size in sorted(found.flops):
                    entries[size] = stored.get((hardware, key, size))
        return constraint_failure(
            f"{runtime} on {model.name}",
            constraints,
            found,
            {b.batch_size: b.peak_rss for b in profile.batches},
            source=source,
            entries=entries,
            against=against,
            profile_error=self.results.models[model.path].profile_error,
            require_baseline=self.settings.require_baseline,
        )

    def update_baselines(self) -> None:
        """Write this run's stable measurements of runtimes that passed correctness in this run; keep
        every other entry. Each model's outcome lands in results.baseline_updates."""
        for model in self.models.values():
            passed = [
                (r.measured, r.comparisons) for r in self.results.of_model(model.path) if r.status == Status.PASSED
            ]
            entries, confirmed = gate.accepted(passed)
            if entries:
                written = gate.update(self.baseline_store, model.name, model.fingerprint, entries, confirmed)
                self.results.baseline_updates[model.path] = BaselineUpdate(written.path, written.changes, written.error)

    def unused_baselines(self, model: Model) -> list[Key]:
        """Entries for this machine's hardware that no test of this run compared against (kept, listed)."""
        try:
            stored = self.baseline_store.load(model.name, model.fingerprint)
        except BaselineError:
            return []
        used = set()
        for record in self.results.of_model(model.path):
            counted = record.profile is not None and record.profile.counted
            runtime = (record.profile.runtime or record.runtime) if counted and record.profile else record.runtime
            used |= {(self.hardware(record.runtime, counted), runtime, c.batch_size) for c in record.comparisons}
        hardware = {key[0] for key in used} or {self.hardware(r) for r in self.registry.names}
        return gate.unused(stored, used, hardware)

    # -- a whole run without pytest ----------------------------------------------------------------

    def run(self, say: Callable[[str], None]) -> list[str]:
        """Every model's runtimes checked, then the ones that passed measured and judged, in the order the
        plugin's tests run (`navigator profile`). `say` hears the steps; returns one line per failure."""
        from pytest_navigator.check.correctness import CorrectnessFailure
        from pytest_navigator.gate.policy import Outcome
        from pytest_navigator.measure.instructions import CannotCount
        from pytest_navigator.measure.profiler import PerformanceFailure

        self.registry.select(self.settings.runtimes)
        for name in self.runtime_options:
            self.runtime_id(name)
        models = self.load_models()
        for model in models:
            self.builds.check_batch_sizes(model)
        self.load_user_samples()
        failures: list[str] = []
        for model in models:
            plans = [p for p in self.plan(model) if not p.skip_reason]
            for plan in plans:  # every check first, as the plugin orders its tests: they build the runtimes
                say(f"{model.name} {plan.name}: checking correctness")
                try:
                    self.check_correctness(model, plan.name)
                except (CorrectnessFailure, NavigatorError) as failure:
                    failures.append(f"{model.name} {plan.name}: correctness failed: {failure}")
            if not self.settings.profiler.run_profiling:
                continue
            for plan in plans:
                if self.results.result(model.path, plan.name).status != "passed":
                    continue  # a wrong runtime's speed is not worth measuring
                say(f"{model.name} {plan.name}: measuring")
                try:
                    _, outcome, broken = self.check_performance(model, plan.name)
                except CannotCount as reason:
                    say(f"{model.name} {plan.name}: skipped: instruction counts: {reason}")
                    continue
                except (PerformanceFailure, NavigatorError) as failure:
                    failures.append(f"{model.name} {plan.name}: performance failed: {failure}")
                    continue
                if outcome.warning:
                    say(f"warning: {outcome.warning}")
                if outcome.outcome == Outcome.FAIL:
                    failures.append(outcome.message + (f"\n{broken}" if broken else ""))
                elif broken:
                    failures.append(broken)
                elif outcome.outcome == Outcome.SKIP:
                    say(f"{model.name} {plan.name}: skipped: {outcome.message}")
        return failures

    # -- the end of a run -------------------------------------------------------------------------

    def report(self) -> RunReport:
        """The run's report, built once (after the baseline update, so it carries it): every view reads it."""
        if self._report is None:
            from datetime import UTC, datetime

            from pytest_navigator.gate.selection import best_runtime
            from pytest_navigator.measure.telemetry import fingerprint
            from pytest_navigator.report.json_report import settings_snapshot

            for record in self.results.runtimes.values():  # a skipped runtime still names its device
                if record.device is None and record.runtime in self.registry:
                    record.device = self.registry.get(record.runtime).device
            for path, info in self.results.models.items():
                info.baseline_file = str(self.baseline_store.path_for(info.name, info.fingerprint))
                info.best = best_runtime(self.results.of_model(path), self.settings.latency_budget_ms)
                if path in self.models:
                    self.results.unused[path] = self.unused_baselines(self.models[path])
            self._report = RunReport(
                self.results,
                fingerprint(),
                settings_snapshot(self.settings, self.limits, self.against_model),
                datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
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
        settings = self.settings
        views = (settings.html_path, settings.markdown_path, settings.benchmark_json_path)
        summary = bool(os.environ.get("GITHUB_STEP_SUMMARY")) and bool(self.results.runtimes)
        if settings.report_path is not None or any(views) or summary:
            from pytest_navigator.report.json_report import write_report
            from pytest_navigator.report.views import write_views

            report = self.report()
            problems = []
            if settings.report_path is not None:
                try:
                    write_report(report, settings.report_path)
                except OSError as exc:  # checked at the start; a disk can still fill up since
                    problems.append(f"{options.REPORT}={settings.report_path}: not written ({exc.strerror or exc}).")
            problems += write_views(report, *views)
            if problems:
                self.problems.insert(0, "\n".join(problems))
                failed = 1
        return int(failed)

    # -- results -----------------------------------------------------------------------------------

    def worker_results(self) -> str:
        """What an xdist worker hands the controller: its RunResults, as JSON."""
        return self.results.to_json()

    def merge_worker_results(self, text: str) -> None:
        """Merge a worker's results: a runtime passed if some worker saw it pass and none saw it fail."""
        self.results.merge(RunResults.from_json(text))

    @property
    def records(self) -> dict[tuple[Path, str], RuntimeResult]:
        """Every runtime's record by (model path, runtime id) (results.RunResults.runtimes)."""
        return self.results.runtimes

    def close(self) -> None:
        """Remove the run's temporary artifacts."""
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._builds is not None:
            self._builds.close()


def correctness_detail(report: CorrectnessReport) -> str:
    """The runtimes summary's one line about a passed check."""
    worst = max((o.max_abs_error for o in report.outputs), default=0.0)
    given = f" ({report.explicit} given)" if report.explicit else ""
    sizes = report.batch_sizes
    batches = f" at batch sizes {sizes[0]}-{sizes[-1]}" if len(sizes) > 1 else ""
    detail = f"{report.samples} samples{given}{batches}, max abs error {worst:.2g}"
    ratios = [o for o in report.outputs if o.budget_ratio is not None]
    if ratios and report.budget_multiple is not None:
        top = max(ratios, key=lambda o: o.budget_ratio or 0.0)
        detail += (
            f", error up to {top.budget_ratio:.2g}x the reference's own rounding "
            f"({report.budget_multiple:g}x allowed; truth: {top.truth})"
        )
    return detail
