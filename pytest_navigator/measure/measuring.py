"""Measuring one runtime of a model for the run: the timed profile with its runs in fresh processes,
the calibration around it, peak memory and traces after it, or instruction counts under callgrind.

Given values (the settings, the builds, the stored baseline entries that decide the sizes and the
runs, the thresholds), it gives values back (`Measured`); the session records them. Where a runtime
runs is the Executor's business (executor.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pytest_navigator import options
from pytest_navigator.config import ProfilerConfig
from pytest_navigator.errors import NavigatorError, describe_error
from pytest_navigator.measure.profiler import BatchProfile, RuntimeProfile
from pytest_navigator.model.draws import profiling_inputs
from pytest_navigator.model.loader import Model
from pytest_navigator.runtimes import Runner
from pytest_navigator.runtimes.builds import Builds
from pytest_navigator.settings import Settings


@dataclass(frozen=True)
class Measured:
    """A runtime's profile; with --navigator-against the old model's, measured beside it; the traces
    written (--navigator-trace), else None."""

    profile: RuntimeProfile
    old: RuntimeProfile | None = None
    traces: list[str] | None = None


@dataclass
class Measurement:
    """How this run measures: its settings, builds, thresholds (an absolute limit judges any run) and
    the A/B model."""

    settings: Settings
    builds: Builds
    limits: Mapping[str, Any]
    against_model: Model | None = None
    progress: Callable[[str], None] | None = None

    def profile(self, model: Model, runtime: str, config: ProfilerConfig, stored: Mapping[str, Any]) -> Measured:
        """Measure a runtime: config.batch_sizes (those the runner accepts), else a sweep of powers of
        two; with --navigator-against, the old model beside it, window by window. `stored`: the
        runtime's baseline entries on this hardware by batch size (they decide the sizes, the
        calibration and the runs)."""

        from pytest_navigator.measure.calibration import calibration_score
        from pytest_navigator.measure.executor import executor_for

        runner = self.builds.runner(model, runtime)
        sizes = None
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
                runner.preload(profiling_inputs(model.io_spec, size)[0] for size in sizes)
        calibrate = self._calibrates(stored)
        before = calibration_score(runner.device) if calibrate else None
        old_runner = self.builds.runner(self.against_model, runtime) if self.against_model is not None else None
        # the timing loop runs where the runtime runs: in its own worker process, or here
        profile, olds = executor_for(runner, model.io_spec).measure(config, sizes, old_runner, self.progress)
        profile, olds = self._runs(model, runtime, runner, old_runner, config, profile, olds, stored)
        old = None
        if self.against_model is not None:
            old = replace(profile, batches=tuple(olds[b.batch_size] for b in profile.batches))
        scores = [s for s in (before, calibration_score(runner.device) if calibrate else None) if s is not None]
        profile = replace(profile, calibration=sum(scores) / len(scores) if scores else None)
        profile = self._with_peak_memory(model, runner, profile)
        if baselined and not any(b.status == "error" for b in profile.batches):  # an error's reason stays
            profile = replace(
                profile,
                stop_reason=f"measured the batch sizes of the stored baseline ({', '.join(map(str, baselined))}), "
                f"so every one is judged; {options.UPDATE_BASELINES} sweeps again",
            )
        traces = None
        if self.settings.trace_dir is not None:  # after every timed window: tracing never runs inside one
            traces = self._traces(model, runner, profile)
        return Measured(profile, old, traces)

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

        definition = self.builds.registry.get(runtime)
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
        return profile
