"""The vocabulary shared with Triton Model Navigator: formats, samples, verify functions, configs."""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Union

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
