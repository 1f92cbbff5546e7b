"""The vocabulary shared with Triton Model Navigator: formats, samples, verify functions, configs."""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Protocol, Union

from pytest_navigator.errors import NavigatorError

if TYPE_CHECKING:
    import numpy

#: One inference request: input or output name -> array (batch axis first).
Sample = dict[str, "numpy.ndarray"]

#: Seed 000's signature: (reference outputs, runtime outputs) -> whether they agree.
VerifyFunction = Callable[[Iterable[Sample], Iterable[Sample]], bool]


class SizedIterable(Protocol):
    """An iterable that knows its length; what a dataloader must be."""

    def __iter__(self) -> Iterator[Any]: ...

    def __len__(self) -> int: ...


#: Seed 000's dataloader: anything sized that yields samples (a list of Samples works).
SizedDataLoader = Union[SizedIterable, Sequence[Any]]  # noqa: UP007 - keep Model Navigator's alias


class Format(enum.Enum):
    """Model formats: the ones a model file can come in and the ones runtimes build."""

    TORCH = "torch"
    TORCHSCRIPT = "torchscript"
    TORCH_EXPORTEDPROGRAM = "torch-exportedprogram"
    ONNX = "onnx"
    TENSORRT = "trt"


class CustomConfig(abc.ABC):
    """Base class of per-runtime options (Model Navigator's CustomConfig)."""

    def defaults(self) -> None:
        """Update parameters to defaults."""
        return None

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any]) -> CustomConfig:
        """Instantiate the config from a dictionary."""
        return cls(**config_dict)

    @classmethod
    @abc.abstractmethod
    def name(cls) -> str:
        """Name of the config."""


class CustomConfigForFormat(CustomConfig):
    """A CustomConfig that belongs to one model format."""

    @property
    @abc.abstractmethod
    def format(self) -> Format:
        """Format represented by this config."""


class MeasurementMode(enum.Enum):
    """TIME_WINDOWS: each window lasts measurement_interval ms; COUNT_WINDOWS: measurement_request_count requests.
    INSTRUCTIONS (not Model Navigator's): no windows; instructions per request counted under callgrind
    (instructions.py), for CPU runtimes."""

    TIME_WINDOWS = "time_windows"
    COUNT_WINDOWS = "count_windows"
    INSTRUCTIONS = "instructions"


#: Model Navigator's default: a batch size must raise throughput by 5% for the sweep to go on.
DEFAULT_PROFILING_THROUGHPUT_CUTOFF_THRESHOLD = 0.05
#: Seconds one runtime's measurement may take by default (docs/explanation/cost.md):
#: on 2 cores a MobileNet-sized runtime measures batch 1 and about two more sizes in it, and the
#: demo's default run stays near issue 18's 90 s (10 s cost every default run about 15 s more).
DEFAULT_TIME_BUDGET = 5.0


class ProfilerConfigError(NavigatorError):
    """A profiler setting outside what it accepts."""


@dataclass(frozen=True, slots=True)
class ProfilerConfig:
    """Profiler configuration, with Model Navigator's field names and defaults.

    For each batch size (ascending) the profiler measures windows until the last
    `stabilization_windows` agree within `stability_percentage` of their mean, after at least
    `min_trials` and at most `max_trials` windows; the sweep stops when throughput fails to grow
    by `throughput_cutoff_threshold` for `throughput_backoff_limit` batch sizes in a row.
    """

    run_profiling: bool = True
    batch_sizes: tuple[int | None, ...] | None = None
    measurement_mode: MeasurementMode = MeasurementMode.COUNT_WINDOWS
    measurement_interval: float = 5000
    measurement_request_count: int = 50
    stability_percentage: float = 10.0
    max_trials: int = 10
    throughput_cutoff_threshold: float = DEFAULT_PROFILING_THROUGHPUT_CUTOFF_THRESHOLD
    min_trials: int = 3
    stabilization_windows: int = 3
    throughput_backoff_limit: int = 2
    #: Not Model Navigator's: seconds one runtime's measurement may take (the sweep, and windows past
    #: max_trials while converging); None: unbounded. See profiler.profile_runner.
    time_budget: float | None = DEFAULT_TIME_BUDGET
    #: Not Model Navigator's: windows during which other processes took the runtime's cores are left
    #: out of the stable set ("exclude") or only named ("report"). See interference.py.
    interference: str = "exclude"

    def __post_init__(self) -> None:
        if not isinstance(self.measurement_mode, MeasurementMode):
            try:
                object.__setattr__(self, "measurement_mode", MeasurementMode(self.measurement_mode))
            except ValueError:
                _reject("measurement_mode", self.measurement_mode, "'count_windows', 'time_windows' or 'instructions'")
        if self.batch_sizes is not None:
            object.__setattr__(self, "batch_sizes", tuple(self.batch_sizes))
            for size in self.batch_sizes:
                if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
                    _reject("batch_sizes", self.batch_sizes, "positive integers (None: the model does not batch)")
        _check(self.measurement_interval > 0, "measurement_interval", self.measurement_interval, "milliseconds > 0")
        _check(
            self.measurement_request_count >= 1,
            "measurement_request_count",
            self.measurement_request_count,
            "an integer >= 1",
        )
        _check(
            0 < self.stability_percentage <= 100,
            "stability_percentage",
            self.stability_percentage,
            "a percentage in (0, 100]",
        )
        _check(self.stabilization_windows >= 2, "stabilization_windows", self.stabilization_windows, "an integer >= 2")
        _check(self.min_trials >= 1, "min_trials", self.min_trials, "an integer >= 1")
        _check(
            self.max_trials >= max(self.min_trials, self.stabilization_windows),
            "max_trials",
            self.max_trials,
            f"an integer >= min_trials ({self.min_trials}) and >= stabilization_windows ({self.stabilization_windows})",
        )
        _check(
            self.throughput_cutoff_threshold >= 0,
            "throughput_cutoff_threshold",
            self.throughput_cutoff_threshold,
            "a fraction >= 0 (0.05 = 5%)",
        )
        _check(
            self.throughput_backoff_limit >= 1,
            "throughput_backoff_limit",
            self.throughput_backoff_limit,
            "an integer >= 1",
        )
        _check(
            self.time_budget is None or self.time_budget > 0, "time_budget", self.time_budget, "seconds > 0, or None"
        )
        _check(self.interference in ("exclude", "report"), "interference", self.interference, "'exclude' or 'report'")

    @classmethod
    def from_dict(cls, profiler_config_dict: Mapping[str, Any]) -> ProfilerConfig:
        """Instantiate from a dictionary; missing keys take the field defaults.

        (Model Navigator's own from_dict falls back to TIME_WINDOWS and a cutoff of -2 for
        missing keys, unlike its field defaults; here one set of defaults holds everywhere.)
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(profiler_config_dict) - known)
        if unknown:
            raise ProfilerConfigError(
                f"ProfilerConfig has no setting {', '.join(map(repr, unknown))}; settings: {', '.join(sorted(known))}."
            )
        return cls(**dict(profiler_config_dict))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values: the mode by its value, batch sizes as a list."""
        data = asdict(self)
        data["measurement_mode"] = self.measurement_mode.value
        data["batch_sizes"] = None if self.batch_sizes is None else list(self.batch_sizes)
        return data


def _check(ok: bool, field: str, value: object, accepted: str) -> None:
    if not ok:
        _reject(field, value, accepted)


def _reject(field: str, value: object, accepted: str) -> None:
    raise ProfilerConfigError(f"ProfilerConfig.{field}={value!r} is not accepted; expected {accepted}.")
