"""What a runtime is: a Runner (one built runtime) and the definition that says how to build it."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_navigator.config import Format, Sample
from pytest_navigator.errors import SampleError

if TYPE_CHECKING:
    from pytest_navigator.model.loader import Model
    from pytest_navigator.model.spec import IOSpec

TORCH_FORMATS = frozenset({Format.TORCH, Format.TORCHSCRIPT, Format.TORCH_EXPORTEDPROGRAM})
ALL_FORMATS = TORCH_FORMATS | {Format.ONNX}


class Runner(abc.ABC):
    """One built runtime of one model: `infer(sample) -> sample`.

    `synchronize()` waits for work queued on an accelerator, so a timer read after it is
    honest; CPU runners have nothing to wait for.
    """

    def __init__(self, runtime: str, input_spec: IOSpec, output_names: Iterable[str] = (), device: str = "cpu") -> None:
        self.runtime = runtime
        self.input_spec = input_spec
        self.output_names = tuple(output_names)
        self.device = device

    @abc.abstractmethod
    def infer(self, sample: Sample) -> Sample:
        """Run one request; outputs are numpy arrays on the host, keyed by output name."""

    def synchronize(self) -> None:
        """Wait for queued device work; a no-op on the CPU."""
        return None

    def prepare(self, sample: Sample) -> Any:
        """A request's inputs made ready before any timing starts: converted, bound, and on the
        device for accelerator runners. The profiler times only `run` and `synchronize`."""
        self.check_sample(sample)
        return sample

    def run(self, prepared: Any) -> Any:
        """One request on prepared inputs, as the profiler times it; outputs may stay on the device
        (call `synchronize()` before reading a clock). The default is `infer`."""
        return self.infer(prepared)

    @property
    def max_batch_size(self) -> int | None:
        return self.input_spec.max_batch_size

    #: The runtime option that sets the CPU threads it computes with ("threads"); None: it has none.
    #: Named in the hint when other processes take its cores (profiler.thread_hint).
    thread_option: str | None = None

    def compute_threads(self) -> int | None:
        """CPU threads this runner computes with; None: unknown (every core counts as its own)."""
        return None

    # -- per-batch-size plans (seed 003's memoizing inferer) ----------------------------------------
    # Runners whose plan depends on the input shape (traced TorchScript, static-shape torch.compile,
    # TensorRT profiles) build one plan per batch size on first use and keep it; they override
    # plan_seconds. Everyone else has one plan for all sizes.

    def plan_seconds(self, batch_size: int) -> float | None:
        """How long building the plan for `batch_size` took (None: no plan of its own)."""
        return None

    @property
    def planned_batch_sizes(self) -> tuple[int, ...]:
        """Batch sizes with a plan built (empty for runners with one plan for all sizes)."""
        return ()

    def preload(self, samples: Iterable[Sample]) -> None:
        """Build the plans for these samples' batch sizes now, so no timed request pays for one
        (for a runner with one plan, a request each: harmless)."""
        for sample in samples:
            self.run(self.prepare(sample))
            self.synchronize()

    def select_batch_size(self, max_count: int) -> int:
        """How many requests this runner should take in one batch when `max_count` are waiting: the
        largest size with a plan that fits, else as many as it accepts."""
        fitting = [size for size in self.planned_batch_sizes if size <= max_count]
        if fitting:
            return max(fitting)
        limit = self.max_batch_size
        return max(1, min(max_count, limit) if limit is not None else max_count)

    def accepts_batch_size(self, batch_size: int) -> bool:
        limit = self.max_batch_size
        return limit is None or 1 <= batch_size <= limit

    def diagnose(self, samples: Sequence[Sample]) -> list[str]:
        """Where the error enters, for runtimes that can say (a quantized graph, layer by layer): one
        line per finding on these samples; [] when the runtime has nothing to say (the default)."""
        return []

    def check_sample(self, sample: Mapping[str, Any]) -> None:
        """Raise SampleError naming the input when a sample lacks one the model needs."""
        missing = [name for name in self.input_spec.names if name not in sample]
        if missing:
            raise SampleError(
                f"sample has no input {', '.join(map(repr, missing))}; {self.runtime} needs {', '.join(self.input_spec.names)} (got {', '.join(sample) or 'nothing'})."
            )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.runtime} on {self.device}>"


class CallableRunner(Runner):
    """A runner around any `Sample -> Sample` function: the quickest way to test a serving wrapper."""

    def __init__(
        self, runtime: str, function: Callable[[Sample], Sample], input_spec: IOSpec, device: str = "cpu"
    ) -> None:
        super().__init__(runtime, input_spec, device=device)
        self._function = function

    def infer(self, sample: Sample) -> Sample:
        return dict(self._function(sample))


@dataclass(frozen=True)
class BuildContext:
    """What a build may use: a folder for artifacts, an example request, the reference's output names,
    and for runtimes that calibrate, the samples to calibrate on."""

    workdir: Path
    example: Sample
    output_names: tuple[str, ...] = ()
    batch_sizes: tuple[int, ...] = ()
    #: The runtime's options (its definition's config class, defaults updated by the user's).
    options: Any = None
    #: Built artifacts reused across runs (cache.ArtifactCache); None: build into workdir.
    cache: Any = None
    #: Samples to calibrate on, for runtimes that calibrate (RuntimeDefinition.calibrates; a
    #: quantizer's activation ranges): the users' own, else drawn from the spec (calibration.py).
    calibration: tuple[Sample, ...] = ()

    @property
    def artifacts(self) -> Any:
        """The cache to fetch artifacts from: `cache`, else one under workdir (kept for this run only)."""
        if self.cache is not None:
            return self.cache
        from pytest_navigator.runtimes.cache import ArtifactCache

        return ArtifactCache(self.workdir / "artifacts")


@dataclass(frozen=True)
class RuntimeDefinition:
    """How to build one runtime, which model formats it applies to, and whether it can run here."""

    name: str
    build: Callable[[Model, BuildContext], Runner] = field(repr=False)
    formats: frozenset[Format] = ALL_FORMATS
    device: str = "cpu"
    precision: str = "fp32"
    #: Returns why the runtime cannot exist on this machine (no GPU, library missing), or None.
    requirement: Callable[[], str | None] = field(default=lambda: None, repr=False)
    #: Returns why this model cannot use the runtime although its format is accepted, or None.
    model_check: Callable[[Model], str | None] = field(default=lambda model: None, repr=False)
    description: str = ""
    #: The runtime's options with their defaults (a runtime_options config); None: it takes none.
    options: Any = None
    #: The model formats it is tested for when --navigator-runtimes does not name it (the default
    #: set); None: every format in `formats`. Named, it builds from any format in `formats`.
    default_formats: frozenset[Format] | None = None
    #: Whether its build calibrates on samples: then Builds gives it BuildContext.calibration.
    calibrates: bool = False

    def applies_to(self, model: Model) -> bool:
        return model.format in self.formats

    def in_default_set(self, model: Model) -> bool:
        """Whether a run that names no runtimes tests this one on `model`."""
        return self.default_for(model.format)

    def default_for(self, fmt: Format) -> bool:
        """Whether a run that names no runtimes tests this one on a model of format `fmt`."""
        return fmt in self.formats and (self.default_formats is None or fmt in self.default_formats)

    def unavailable_reason(self, model: Model) -> str | None:
        """Why this runtime is skipped for `model` here, or None when it can be built."""
        if not self.applies_to(model):
            accepted = ", ".join(sorted(f.value for f in self.formats))
            return f"{self.name} builds from {accepted} models; {model.name} is {model.format.value}"
        return self.requirement() or self.model_check(model)
