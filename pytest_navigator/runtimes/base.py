"""What a runtime is: a Runner (one built runtime) and the definition that says how to build it."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_navigator.config import Format, Sample
from pytest_navigator.errors import SampleError

if TYPE_CHECKING:
    from pytest_navigator.model import Model
    from pytest_navigator.spec import IOSpec

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

    def accepts_batch_size(self, batch_size: int) -> bool:
        limit = self.max_batch_size
        return limit is None or 1 <= batch_size <= limit

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
    """What a build may use: a folder for artifacts, an example request, the reference's output names."""

    workdir: Path
    example: Sample
    output_names: tuple[str, ...] = ()
    batch_sizes: tuple[int, ...] = ()


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

    def applies_to(self, model: Model) -> bool:
        return model.format in self.formats

    def unavailable_reason(self, model: Model) -> str | None:
        """Why this runtime is skipped for `model` here, or None when it can be built."""
        if not self.applies_to(model):
            accepted = ", ".join(sorted(f.value for f in self.formats))
            return f"{self.name} builds from {accepted} models; {model.name} is {model.format.value}"
        return self.requirement() or self.model_check(model)
