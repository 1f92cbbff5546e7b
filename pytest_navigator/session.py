"""One navigator run without pytest: loaded models, built runtimes, reference outputs, results.

Every expensive thing is built once per run and shared: a model is loaded once, each runtime
built once (a build error is remembered and re-raised for each of its tests), and the
reference outputs of a sample computed once for all runtimes' checks.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pytest_navigator.config import Sample
from pytest_navigator.errors import NavigatorError, RuntimeBuildError, RuntimeInferenceError
from pytest_navigator.model import Model, load
from pytest_navigator.runtimes import BuildContext, Registry, Runner, RuntimeDefinition
from pytest_navigator.samples import random_sample, random_samples
from pytest_navigator.settings import Settings
from pytest_navigator.spec import parse_io_spec, read_sidecar
from pytest_navigator.verify import DEFAULT_TOLERANCES, OutputComparison, Tolerance, compare_outputs


@dataclass(frozen=True)
class RuntimePlan:
    """A runtime chosen for a model, with the reason it is skipped here (None: it runs)."""

    definition: RuntimeDefinition
    skip_reason: str | None

    @property
    def name(self) -> str:
        return self.definition.name


@dataclass
class RuntimeRecord:
    """What happened to one runtime of one model this run, for the summary."""

    status: str = "planned"  # planned, built, failed-build, skipped, passed, failed
    detail: str = ""
    build_seconds: float | None = None


class CorrectnessFailure(AssertionError):
    """A runtime's outputs disagree with the reference; the message has every figure."""


@dataclass(frozen=True)
class CorrectnessReport:
    runtime: str
    samples: int
    comparisons: tuple[tuple[int, OutputComparison], ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for _, c in self.comparisons)

    @property
    def failures(self) -> list[tuple[int, OutputComparison]]:
        return [(i, c) for i, c in self.comparisons if not c.passed]


@dataclass
class NavigatorSession:
    settings: Settings
    registry: Registry
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="navigator-")))
    models: dict[Path, Model] = field(default_factory=dict)
    records: dict[tuple[Path, str], RuntimeRecord] = field(default_factory=dict)
    _runners: dict[tuple[Path, str], Runner | RuntimeBuildError] = field(default_factory=dict)
    _references: dict[Path, Runner] = field(default_factory=dict)
    _samples: dict[tuple[Path, int], list[Sample]] = field(default_factory=dict)
    _examples: dict[Path, Sample] = field(default_factory=dict)
    _reference_outputs: dict[tuple[Path, int, int], Sample] = field(default_factory=dict)

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
        return list(self.models.values())

    def plan(self, model: Model) -> list[RuntimePlan]:
        """The runtimes to test for a model: the selected ones, or every one its format can use."""
        explicit = self.settings.runtimes is not None
        chosen = self.registry.select(self.settings.runtimes)
        plans = [RuntimePlan(d, d.unavailable_reason(model)) for d in chosen if explicit or d.applies_to(model)]
        for plan in plans:
            record = self.records.setdefault((model.path, plan.name), RuntimeRecord())
            if plan.skip_reason:
                record.status, record.detail = "skipped", plan.skip_reason
        return plans

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
            try:
                reference = self.reference(model)
                built = definition.build(model, self._context(model, reference.output_names))
                if not isinstance(built, Runner):
                    raise RuntimeBuildError(
                        f"{runtime}: build returned {built!r}, not a pytest_navigator.runtimes.Runner"
                    )
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
        found = self._runners[key]
        if isinstance(found, RuntimeBuildError):
            raise found
        return found

    def _context(self, model: Model, output_names: tuple[str, ...]) -> BuildContext:
        return BuildContext(self.workdir, self._example(model), output_names, self.batch_sizes(model))

    def _example(self, model: Model) -> Sample:
        """The request builds trace, compile and export with (batch 2 where allowed), made once per model."""
        if model.path not in self._examples:
            import numpy as np

            limit = model.io_spec.max_batch_size
            size = 2 if limit is None or limit >= 2 else 1
            self._examples[model.path] = random_sample(
                model.io_spec, size, np.random.default_rng(self.settings.seed + 7919)
            )
        return self._examples[model.path]

    def batch_sizes(self, model: Model) -> tuple[int, ...]:
        limit = model.io_spec.max_batch_size
        if limit is None:
            return (1,) if any(t.batch_axis is not None for t in model.io_spec) else ()
        return tuple(b for b in self.settings.batch_sizes if b <= limit) or (min(self.settings.batch_sizes[0], limit),)

    # -- correctness ---------------------------------------------------------------------------

    def samples(self, model: Model) -> list[Sample]:
        key = (model.path, self.settings.seed)
        if key not in self._samples:
            sizes = self.batch_sizes(model) or (1,)
            self._samples[key] = random_samples(
                model.io_spec, sizes, self.settings.samples_per_batch, self.settings.seed
            )
        return self._samples[key]

    def reference_outputs(self, model: Model, index: int) -> Sample:
        key = (model.path, self.settings.seed, index)
        if key not in self._reference_outputs:
            self._reference_outputs[key] = self.reference(model).infer(self.samples(model)[index])
        return self._reference_outputs[key]

    def check_correctness(self, model: Model, runtime: str, tolerance: Tolerance | None = None) -> CorrectnessReport:
        """Run every sample through the runtime and compare with the reference; raise on disagreement."""
        runner = self.runner(model, runtime)
        tolerance = tolerance or DEFAULT_TOLERANCES.get(
            self.registry.get(runtime).precision, DEFAULT_TOLERANCES["fp32"]
        )
        comparisons: list[tuple[int, OutputComparison]] = []
        samples = self.samples(model)
        for index, sample in enumerate(samples):
            expected = self.reference_outputs(model, index)
            try:
                actual = runner.infer(sample)
            except NavigatorError:
                raise
            except Exception as exc:
                shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in sample.items())
                raise RuntimeInferenceError(
                    f"{runtime} raised on sample {index} ({shapes}): {type(exc).__name__}: {_last_line(exc)}"
                ) from exc
            comparisons += [(index, c) for c in compare_outputs(expected, actual, tolerance)]
        report = CorrectnessReport(runtime, len(samples), tuple(comparisons))
        record = self.records.setdefault((model.path, runtime), RuntimeRecord())
        record.status = "passed" if report.passed else "failed"
        record.detail = f"{len(samples)} samples, batch sizes {','.join(map(str, self.batch_sizes(model)))}"
        if not report.passed:
            raise CorrectnessFailure(self._describe_failure(model, report))
        return report

    def _describe_failure(self, model: Model, report: CorrectnessReport) -> str:
        samples = self.samples(model)
        lines = [f"{report.runtime} disagrees with the reference ({self.reference(model).runtime}) on {model.name}:"]
        for index, comparison in report.failures[:8]:
            shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in samples[index].items())
            lines.append(f"  sample {index} ({shapes}): {comparison.describe()}")
        if len(report.failures) > 8:
            lines.append(f"  ... and {len(report.failures) - 8} more failing outputs")
        return "\n".join(lines)

    def close(self) -> None:
        """Remove the run's temporary artifacts."""
        shutil.rmtree(self.workdir, ignore_errors=True)


def _last_line(exc: BaseException) -> str:
    """The informative end of an exception's text (TorchScript puts its own traceback first)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
