"""One navigator run without pytest: loaded models, built runtimes, reference outputs, results.

Every expensive thing is built once per run and shared: a model is loaded once, each runtime
built once (a build error is remembered and re-raised for each of its tests), and the
reference outputs of a sample computed once for all runtimes' checks.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pytest_navigator.baselines import BaselineError, BaselineFile, BaselineStore, Key, entry_for
from pytest_navigator.cache import ArtifactCache
from pytest_navigator.config import ProfilerConfig, Sample
from pytest_navigator.correctness import CheckOptions, CorrectnessReport
from pytest_navigator.errors import NavigatorError, RuntimeBuildError, last_line
from pytest_navigator.model import Model, load
from pytest_navigator.profiler import BatchProfile, RuntimeProfile
from pytest_navigator.runtime_options import RuntimeOptionError, split_runtime_id, with_options
from pytest_navigator.runtime_options import runtime_id as format_runtime_id
from pytest_navigator.runtimes import BuildContext, Registry, Runner, RuntimeDefinition
from pytest_navigator.samples import digest, random_sample
from pytest_navigator.settings import Settings
from pytest_navigator.spec import parse_io_spec, read_sidecar
from pytest_navigator.truth import PLAIN, Truth, TruthSource
from pytest_navigator.user_samples import LabeledSample, check_samples, load_sample_files
from pytest_navigator.verdicts import Comparison, Limit, Verdict, compare

#: Reference outputs kept for this many distinct samples (a run's samples repeat across runtimes).
REFERENCE_CACHE_SIZE = 512
#: The profiler rotates up to this many distinct samples per batch size ...
PROFILE_INPUTS = 8
#: ... as long as they fit in this many bytes (at least 2 samples are always made).
PROFILE_INPUT_BYTES = 256 * 2**20


@dataclass(frozen=True)
class RuntimePlan:
    """A runtime chosen for a model, with the reason it is skipped here (None: it runs)."""

    definition: RuntimeDefinition
    skip_reason: str | None

    #: The runtime id: its name, plus the options that differ from its defaults.
    runtime_id: str = ""

    @property
    def name(self) -> str:
        return self.runtime_id or self.definition.name


@dataclass
class RuntimeRecord:
    """What happened to one runtime of one model this run, for the summary."""

    status: str = "planned"  # planned, built, failed-build, skipped, passed, failed
    detail: str = ""
    build_seconds: float | None = None
    #: What the build did with cached artifacts: "restored onnx-export 0.02 s", "built tensorrt-engine 41 s".
    artifacts: list[str] = field(default_factory=list)

    @property
    def cache_summary(self) -> str:
        return "; ".join(self.artifacts)


def paired_entry(entry: dict[str, Any], batch: BatchProfile) -> dict[str, Any]:
    """An entry with every window's throughput and p95 (A/B runs pair windows, not blocks)."""
    return entry | {
        "paired_throughputs": [w.throughput for w in batch.windows],
        "paired_p95_ms": [float(np.percentile(w.latencies_ms, 95)) for w in batch.windows],
    }


@dataclass
class NavigatorSession:
    settings: Settings
    registry: Registry
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="navigator-")))
    models: dict[Path, Model] = field(default_factory=dict)
    records: dict[tuple[Path, str], RuntimeRecord] = field(default_factory=dict)
    correctness: dict[tuple[Path, str], CorrectnessReport] = field(default_factory=dict)
    profiles: dict[tuple[Path, str], RuntimeProfile] = field(default_factory=dict)
    comparisons: dict[tuple[Path, str], list[Comparison]] = field(default_factory=dict)
    #: Stable measurements as baseline entries, waiting for --update-baselines: (model, runtime) -> key -> entry
    measured: dict[tuple[Path, str], dict[Key, dict[str, Any]]] = field(default_factory=dict)
    #: After --update-baselines: model file -> (baseline file, [(key, old, new)]) or the error that stopped it
    baseline_updates: dict[Path, tuple[Path, list[tuple[Key, Any, Any]]] | BaselineError] = field(default_factory=dict)
    _runners: dict[tuple[Path, str], Runner | RuntimeBuildError] = field(default_factory=dict)
    _references: dict[Path, Runner] = field(default_factory=dict)
    _examples: dict[Path, Sample] = field(default_factory=dict)
    _reference_outputs: OrderedDict[tuple[Path, str], Sample] = field(default_factory=OrderedDict)
    _truth_sources: dict[Path, TruthSource] = field(default_factory=dict)
    _truths: OrderedDict[tuple[Path, str], Truth] = field(default_factory=OrderedDict)
    _run_seed: int | None = None
    #: --navigator-against: the old model every runtime is also measured on, window by window.
    against_model: Model | None = None
    against_profiles: dict[tuple[Path, str], RuntimeProfile] = field(default_factory=dict)
    _user_samples: dict[Path, list[LabeledSample]] = field(default_factory=dict)
    _cache: ArtifactCache | None = None

    def load_models(self) -> list[Model]:
        """Load every model of the settings; the first bad one raises its NavigatorError."""
        cli = parse_io_spec(self.settings.cli_inputs, "--navigator-input") if self.settings.cli_inputs else None
        ini = (
            parse_io_spec(self.settings.ini_inputs, "ini option navigator_inputs") if self.settings.ini_inputs else None
        )
        for path in self.settings.models:
            if path not in self.models:
                self.models[path] = load(
                    path, trust=self.settings.trust_model, user_specs=[cli, ini, read_sidecar(path)]
                )
        against = self.settings.against
        if against is not None and self.against_model is None:
            if len(self.settings.models) != 1:
                raise NavigatorError(
                    f"--navigator-against={against} compares with one model; {len(self.settings.models)} are given."
                )
            (model,) = self.models.values()
            old = load(against, trust=self.settings.trust_model, user_specs=[cli, ini, read_sidecar(against)])
            if old.format is not model.format:
                raise NavigatorError(
                    f"--navigator-against={against} is {old.format.value} and {model.name} is {model.format.value}: "
                    "an A/B run builds the same runtimes from both, so give the old model in the same format."
                )
            if str(old.io_spec) != str(model.io_spec):
                raise NavigatorError(
                    f"--navigator-against={against}: its inputs ({old.io_spec}) differ from {model.name}'s ({model.io_spec})."
                )
            self.against_model = old
        return list(self.models.values())

    def plan(self, model: Model) -> list[RuntimePlan]:
        """The runtimes to test for a model: the selected ones, or every one its format can use."""
        explicit = self.settings.runtimes is not None
        chosen = self.registry.select(self.settings.runtimes)
        plans = [
            RuntimePlan(d, d.unavailable_reason(model), self.runtime_id(d.name))
            for d in chosen
            if explicit or d.applies_to(model)
        ]
        for plan in plans:
            record = self.records.setdefault((model.path, plan.name), RuntimeRecord())
            if plan.skip_reason:
                record.status, record.detail = "skipped", plan.skip_reason
        return plans

    # -- runtime options -----------------------------------------------------------------------

    def runtime_id(self, name: str, overrides: Mapping[str, Any] | None = None, where: str = "") -> str:
        """The id of runtime `name` with this run's options (--navigator-runtime-option, ini) updated
        by `overrides` (a marker's): `name` or `name:key=value,...`. Bad options raise RuntimeOptionError."""
        if name not in self.registry:
            raise RuntimeOptionError(
                f"{where or '--navigator-runtime-option'}: unknown runtime {name!r}; known runtimes: {', '.join(self.registry.names)}."
            )
        definition = self.registry.get(name)
        values = dict(self.settings.runtime_options.get(definition.name, {}))
        values.update(overrides or {})
        if definition.options is None:
            if values:
                raise RuntimeOptionError(
                    f"{where or '--navigator-runtime-option'}: {definition.name} takes no options "
                    f"(got {', '.join(sorted(values))})."
                )
            return definition.name
        options = with_options(definition.options, values, where or "--navigator-runtime-option", definition.name)
        return format_runtime_id(definition.name, options, definition.options)

    def options(self, runtime: str) -> Any:
        """The options config of a runtime id (None for runtimes that take none)."""
        definition = self.registry.get(runtime)
        if definition.options is None:
            return None
        return with_options(definition.options, split_runtime_id(runtime)[1], runtime, definition.name)

    def precision(self, runtime: str) -> str:
        """fp32/tf32/fp16/...: the definition's, or what an option turns on (fp16; TF32 on a CUDA
        device, where matmuls and convolutions then round their inputs to 10 mantissa bits)."""
        if runtime not in self.registry:
            return "fp32"
        options = self.options(runtime)
        definition = self.registry.get(runtime)
        if getattr(options, "fp16", False) or getattr(options, "trt_fp16", False):
            return "fp16"
        if getattr(options, "tf32", False) and definition.device.startswith("cuda") and definition.precision == "fp32":
            return "tf32"
        return definition.precision

    # -- building ------------------------------------------------------------------------------

    def reference(self, model: Model) -> Runner:
        """The runner every runtime is checked against: torch eager fp32, or unoptimized ORT for ONNX."""
        if model.path not in self._references:
            if model.format.value == "onnx":
                from pytest_navigator.runtimes.onnx_runtimes import build_reference

                builder: Callable[[Model, BuildContext], Runner] = build_reference
            else:
                from pytest_navigator.runtimes.torch_runtimes import build_eager

                builder = build_eager
            try:
                runner = builder(model, self._context(model, ()))
                runner.infer(self._example(model))
            except NavigatorError:
                raise
            except Exception as exc:
                raise RuntimeBuildError(
                    f"the reference run of {model.name} failed: {type(exc).__name__}: {exc}"
                ) from exc
            self._references[model.path] = runner
        return self._references[model.path]

    def runner(self, model: Model, runtime: str) -> Runner:
        """The built runtime; a build error is raised for this and every later request."""
        key = (model.path, runtime)
        if key not in self._runners:
            record = self.records.setdefault(key, RuntimeRecord())
            definition = self.registry.get(runtime)
            started = time.perf_counter()
            seen = len(self.cache.events)
            try:
                reference = self.reference(model)
                context = replace(self._context(model, reference.output_names), options=self.options(runtime))
                built = definition.build(model, context)
                if not isinstance(built, Runner):
                    raise RuntimeBuildError(
                        f"{runtime}: build returned {built!r}, not a pytest_navigator.runtimes.Runner"
                    )
                built.runtime = runtime
                self._runners[key] = built
                record.status = "built"
            except Exception as exc:
                error = (
                    exc
                    if isinstance(exc, RuntimeBuildError)
                    else RuntimeBuildError(f"building {runtime} for {model.name} failed: {type(exc).__name__}: {exc}")
                )
                if error is not exc:
                    error.__cause__ = exc
                self._runners[key] = error
                record.status, record.detail = "failed-build", str(error).splitlines()[0]
            record.build_seconds = time.perf_counter() - started
            record.artifacts = [
                f"{e.action} {e.mode} {e.seconds:.2f} s" + (f" ({e.detail})" if e.detail else "")
                for e in self.cache.events[seen:]
            ]
        found = self._runners[key]
        if isinstance(found, RuntimeBuildError):
            raise found
        return found

    def _context(self, model: Model, output_names: tuple[str, ...]) -> BuildContext:
        return BuildContext(self.workdir, self._example(model), output_names, self.batch_sizes(model), cache=self.cache)

    @property
    def cache(self) -> ArtifactCache:
        """The run's artifact cache (--navigator-cache; a throwaway folder with 'none')."""
        if self._cache is None:
            self._cache = ArtifactCache(self.settings.cache_dir, self.settings.rebuild)
        return self._cache

    def _example(self, model: Model) -> Sample:
        """The request builds trace, compile and export with (batch 2 where allowed), made once per model."""
        if model.path not in self._examples:
            limit = model.io_spec.max_batch_size
            size = 2 if limit is None or limit >= 2 else 1
            self._examples[model.path] = random_sample(model.io_spec, size, np.random.default_rng(7919))
        return self._examples[model.path]

    def batch_sizes(self, model: Model) -> tuple[int, ...]:
        limit = model.io_spec.max_batch_size
        if limit is None:
            return (1,) if any(t.batch_axis is not None for t in model.io_spec) else ()
        return tuple(b for b in self.settings.batch_sizes if b <= limit) or (min(self.settings.batch_sizes[0], limit),)

    def build_batch_sizes(self, model: Model) -> tuple[int, ...]:
        """Every batch size a built runtime will serve this run: the generated samples' range ends, the
        configured sizes, and the profiler's (explicit, else its sweep). TensorRT's optimization
        profile covers them all; per-size plans are built for them."""
        from pytest_navigator.profiler import sweep_sizes
        from pytest_navigator.samples import batch_bounds

        sizes = set(self.batch_sizes(model))
        bounds = batch_bounds(model.io_spec, sizes)
        if bounds is not None:
            sizes |= set(bounds)
        profiler = self.settings.profiler
        if profiler.run_profiling:
            explicit = [b for b in profiler.batch_sizes or () if b is not None]
            limit = model.io_spec.max_batch_size
            sizes |= {b for b in explicit if limit is None or b <= limit} if explicit else set(sweep_sizes(limit))
        return tuple(sorted(sizes))

    # -- correctness ---------------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """Where failing samples and the Hypothesis example database are kept between runs."""
        return self.settings.state_dir

    @property
    def run_seed(self) -> int:
        """The seed every runtime's generated samples come from this run: --navigator-seed, 0 under a
        derandomized profile (CI), else a fresh one per run."""
        if self._run_seed is None:
            from pytest_navigator.correctness import derandomized

            if self.settings.seed is not None:
                self._run_seed = self.settings.seed
            elif derandomized(self.settings.hypothesis_profile):
                self._run_seed = 0
            else:
                self._run_seed = secrets.randbelow(2**32)
        return self._run_seed

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

    def reference_outputs(self, model: Model, sample: Sample) -> Sample:
        """The reference's outputs for a sample, computed once per distinct sample for all runtimes."""
        key = (model.path, digest(sample))
        if key in self._reference_outputs:
            self._reference_outputs.move_to_end(key)
            return self._reference_outputs[key]
        outputs = self.reference(model).infer(sample)
        self._reference_outputs[key] = outputs
        if len(self._reference_outputs) > REFERENCE_CACHE_SIZE:
            self._reference_outputs.popitem(last=False)
        return outputs

    def truth_source(self, model: Model) -> TruthSource:
        """Where this model's truth comes from (truth.py): a float64 shadow, else a perturbation
        estimate, else the plain reference; chosen once per model."""
        if model.path not in self._truth_sources:
            from pytest_navigator.truth import truth_source

            self._truth_sources[model.path] = truth_source(model, self.reference(model), self._example(model))
        return self._truth_sources[model.path]

    def truth(self, model: Model, sample: Sample) -> Truth:
        """The truth of a sample and the reference's own rounding against it, computed once per
        distinct sample for all runtimes (like reference outputs). A source that fails on this
        sample leaves it to the fixed tolerance, and says why."""
        key = (model.path, digest(sample))
        if key in self._truths:
            self._truths.move_to_end(key)
            return self._truths[key]
        reference = self.reference_outputs(model, sample)
        source = self.truth_source(model)
        try:
            found = source.truth(sample, reference)
        except Exception as exc:
            found = Truth(PLAIN, reference, {}, f"the {source.kind} raised {type(exc).__name__}: {last_line(exc)}")
        self._truths[key] = found
        if len(self._truths) > REFERENCE_CACHE_SIZE:
            self._truths.popitem(last=False)
        return found

    def check_correctness(self, model: Model, runtime: str, options: CheckOptions | None = None) -> CorrectnessReport:
        """Check a runtime against the reference (users' samples, then generated ones); raise on disagreement."""
        from pytest_navigator.correctness import check_runtime

        report = None
        record = self.records.setdefault((model.path, runtime), RuntimeRecord())
        try:
            report = check_runtime(self, model, runtime, options or CheckOptions(examples=self.settings.examples))
        finally:
            if record.status != "failed-build":
                record.status = "passed" if report else "failed"
            if report:
                worst = max((o.max_abs_error for o in report.outputs), default=0.0)
                given = f" ({report.explicit} given)" if report.explicit else ""
                sizes = report.batch_sizes
                batches = f" at batch sizes {sizes[0]}-{sizes[-1]}" if len(sizes) > 1 else ""
                record.detail = f"{report.samples} samples{given}{batches}, max abs error {worst:.2g}"
                ratios = [o for o in report.outputs if o.budget_ratio is not None]
                if ratios and report.budget_multiple is not None:
                    top = max(ratios, key=lambda o: o.budget_ratio or 0.0)
                    record.detail += (
                        f", error up to {top.budget_ratio:.2g}x the reference's own rounding "
                        f"({report.budget_multiple:g}x allowed; truth: {top.truth})"
                    )
                self.correctness[(model.path, runtime)] = report
        return report

    # -- performance ---------------------------------------------------------------------------

    def profiling_inputs(self, model: Model, batch_size: int) -> list[Sample]:
        """Distinct random samples of one batch size for the profiler to rotate through: up to
        PROFILE_INPUTS of them within PROFILE_INPUT_BYTES, the same ones in every run (seeded by size)."""
        rng = np.random.default_rng(batch_size)  # the stream random_samples(seed=batch_size) draws from
        samples = [random_sample(model.io_spec, batch_size, rng)]
        size = max(sum(a.nbytes for a in samples[0].values()), 1)
        count = max(2, min(PROFILE_INPUTS, PROFILE_INPUT_BYTES // size))
        samples += [random_sample(model.io_spec, batch_size, rng) for _ in range(count - 1)]
        return samples

    def profile(self, model: Model, runtime: str, config: ProfilerConfig | None = None) -> RuntimeProfile:
        """Measure a runtime: config.batch_sizes (those the runner accepts), else a sweep of powers of two."""
        from pytest_navigator.calibration import calibration_score
        from pytest_navigator.profiler import profile_pair, profile_runner
        from pytest_navigator.telemetry import gpu_monitor

        config = config or self.settings.profiler
        runner = self.runner(model, runtime)
        sizes = None
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
        before = calibration_score(runner.device)
        measure = None
        olds: dict[int, BatchProfile] = {}
        if self.against_model is not None:
            old_runner = self.runner(self.against_model, runtime)

            def measure(size: int) -> BatchProfile:
                new, olds[size] = profile_pair(runner, old_runner, self.profiling_inputs(model, size), size, config)
                return new

        profile = profile_runner(
            runner,
            lambda size: self.profiling_inputs(model, size),
            config,
            sizes,
            monitor=gpu_monitor(runner.device),
            measure=measure,
        )
        if self.against_model is not None:
            self.against_profiles[(model.path, runtime)] = replace(
                profile, batches=tuple(olds[b.batch_size] for b in profile.batches)
            )
        scores = [s for s in (before, calibration_score(runner.device)) if s is not None]
        profile = replace(profile, calibration=sum(scores) / len(scores) if scores else None)
        self.profiles[(model.path, runtime)] = profile
        return profile

    # -- baselines -----------------------------------------------------------------------------

    @property
    def baseline_store(self) -> BaselineStore:
        return BaselineStore(self.settings.baselines_dir)

    def hardware(self, runtime: str) -> str:
        """The hardware a runtime's baselines are keyed by: its GPU, or the CPU."""
        from pytest_navigator.telemetry import fingerprint, hardware_key

        device = self.registry.get(runtime).device if runtime in self.registry else "cpu"
        return hardware_key(fingerprint(), device)

    def judge(self, model: Model, runtime: str, profile: RuntimeProfile, limits: dict[str, Limit]) -> list[Comparison]:
        """Compare each measured batch size with the stored baseline for this hardware (BaselineError
        for an unreadable file); keep the stable ones as entries for --update-baselines."""
        from pytest_navigator.telemetry import fingerprint

        unreadable: BaselineError | None = None
        try:
            stored = self.baseline_store.load(model.name, model.fingerprint)
        except BaselineError as exc:  # still keep the measurement: --update-baselines reports the file
            unreadable, stored = exc, BaselineFile(Path(), {}, {})
        hardware = self.hardware(runtime)
        precision = self.precision(runtime)
        old = self.against_profiles.get((model.path, runtime))
        olds = {b.batch_size: b for b in old.batches} if old else {}
        results, entries = [], {}
        for batch in profile.batches:
            if batch.status == "error":
                continue
            current = entry_for(batch, profile, fingerprint(), precision)
            key = (hardware, runtime, batch.batch_size)
            if old is not None and self.against_model is not None:  # A/B: the old model, measured beside it
                other = olds[batch.batch_size]
                before = (
                    paired_entry(entry_for(other, old, fingerprint(), precision), other)
                    if other.status != "error"
                    else None
                )
                current = paired_entry(current, batch)
                against: str | None = self.against_model.name
            else:
                before, against = stored.get(key), None
            results.append(
                compare(
                    runtime,
                    batch.batch_size,
                    current,
                    before,
                    limits,
                    stable=batch.stable,
                    normalize=self.settings.normalize,
                    against=against,
                )
            )
            if batch.stable:
                entries[key] = current
        self.comparisons[(model.path, runtime)] = results
        self.measured[(model.path, runtime)] = entries
        if unreadable is not None:
            raise unreadable
        return results

    def update_baselines(self) -> None:
        """Write this run's stable measurements of runtimes that passed correctness in this run; keep
        every other entry. Each model's outcome (changes, or the error) lands in baseline_updates."""
        for model in self.models.values():
            entries: dict[Key, dict[str, Any]] = {}
            confirmed: set[Key] = set()  # measurements that matched the stored speed: pooled with it
            for (path, runtime), measured in self.measured.items():
                if path == model.path and self.records.get((path, runtime), RuntimeRecord()).status == "passed":
                    entries.update(measured)
                    passed = {
                        c.batch_size
                        for c in self.comparisons.get((path, runtime), [])
                        if c.verdict is Verdict.PASS and c.against == "baseline"
                    }
                    confirmed |= {key for key in measured if key[2] in passed}
            if not entries:
                continue
            try:
                changes = self.baseline_store.update(model.name, model.fingerprint, entries, confirmed)
                self.baseline_updates[model.path] = (
                    self.baseline_store.path_for(model.name, model.fingerprint),
                    changes,
                )
            except BaselineError as exc:
                self.baseline_updates[model.path] = exc

    def worker_results(self) -> str:
        """What an xdist worker hands the controller (JSON): runtime outcomes and measured entries."""
        import json

        from pytest_navigator.profiler import profile_to_dict

        return json.dumps(
            {
                "records": [
                    [str(path), runtime, record.status, record.detail, record.build_seconds, record.artifacts]
                    for (path, runtime), record in self.records.items()
                ],
                "profiles": [[str(p), r, profile_to_dict(x)] for (p, r), x in self.profiles.items()],
                "against_profiles": [[str(p), r, profile_to_dict(x)] for (p, r), x in self.against_profiles.items()],
                "comparisons": [
                    [str(p), r, [c.to_dict() for c in found]] for (p, r), found in self.comparisons.items()
                ],
                "measured": [
                    [str(path), runtime, [[list(key), entry] for key, entry in entries.items()]]
                    for (path, runtime), entries in self.measured.items()
                ],
            }
        )

    def merge_worker_results(self, text: str) -> None:
        """Merge a worker's results: a runtime passed if some worker saw it pass and none saw it fail."""
        import json

        from pytest_navigator.profiler import profile_from_dict

        data = json.loads(text)
        for path, runtime, status, detail, build_seconds, artifacts in data["records"]:
            record = self.records.setdefault((Path(path), runtime), RuntimeRecord())
            if status in ("failed", "failed-build") or (
                status in ("passed", "built", "skipped") and record.status not in ("failed", "failed-build", "passed")
            ):
                record.status = status
            record.detail = detail or record.detail
            record.build_seconds = build_seconds if build_seconds is not None else record.build_seconds
            record.artifacts = artifacts or record.artifacts
        for path, runtime, profile in data["profiles"]:
            self.profiles[(Path(path), runtime)] = profile_from_dict(profile)
        for path, runtime, profile in data["against_profiles"]:
            self.against_profiles[(Path(path), runtime)] = profile_from_dict(profile)
        for path, runtime, found in data["comparisons"]:
            self.comparisons[(Path(path), runtime)] = [Comparison.from_dict(runtime, c) for c in found]
        for path, runtime, entries in data["measured"]:
            merged = self.measured.setdefault((Path(path), runtime), {})
            for key, entry in entries:
                merged[(key[0], key[1], int(key[2]))] = entry

    def unused_baselines(self, model: Model) -> list[Key]:
        """Entries for this machine's hardware that no test of this run compared against (kept, listed)."""
        try:
            stored = self.baseline_store.load(model.name, model.fingerprint)
        except BaselineError:
            return []
        used = {
            (self.hardware(runtime), runtime, c.batch_size)
            for (path, runtime), comparisons in self.comparisons.items()
            if path == model.path
            for c in comparisons
        }
        hardware = {key[0] for key in used} or {self.hardware(r) for r in self.registry.names}
        return sorted(key for key in stored.keys() if key[0] in hardware and key not in used)

    def close(self) -> None:
        """Remove the run's temporary artifacts."""
        shutil.rmtree(self.workdir, ignore_errors=True)
        if self._cache is not None:
            self._cache.close()
