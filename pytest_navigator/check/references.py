"""What every runtime of a model is checked against: the reference's outputs and the truth of each sample.

Both are computed once per distinct sample (by content) and shared by every runtime's check, so a
run's N runtimes cost one reference evaluation and one truth per sample, not N.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from pytest_navigator.check.strategies import digest
from pytest_navigator.check.truth import PLAIN, Truth, TruthSource
from pytest_navigator.config import Sample
from pytest_navigator.errors import describe_error
from pytest_navigator.runtimes.base import Runner

#: Outputs and truths kept for this many distinct samples (a run's samples repeat across runtimes).
CAPACITY = 512

T = TypeVar("T")


class ReferenceOutputs:
    """One model's reference: its outputs and its truth per sample, memoized by sample content."""

    def __init__(self, reference: Runner, truth_source: Callable[[], TruthSource], capacity: int = CAPACITY) -> None:
        self.runner = reference
        self._truth_source = truth_source
        self._source: TruthSource | None = None
        self._capacity = capacity
        self._outputs: OrderedDict[str, Sample] = OrderedDict()
        self._truths: OrderedDict[str, Truth] = OrderedDict()

    @property
    def runtime(self) -> str:
        """The reference's runtime name, for messages: torch-cpu, onnxruntime-cpu-reference."""
        return self.runner.runtime

    @property
    def source(self) -> TruthSource:
        """Where the truth comes from (truth.py), chosen on first use."""
        if self._source is None:
            self._source = self._truth_source()
        return self._source

    def outputs(self, sample: Sample) -> Sample:
        """The reference's outputs for `sample`."""
        key = digest(sample)
        if key in self._outputs:
            self._outputs.move_to_end(key)
            return self._outputs[key]
        found = self.runner.infer(sample)
        self._remember(self._outputs, key, found)
        return found

    def truth(self, sample: Sample) -> Truth:
        """The truth of `sample` and the reference's own rounding against it. A source that fails on
        this sample leaves it to the fixed tolerance, and says why."""
        key = digest(sample)
        if key in self._truths:
            self._truths.move_to_end(key)
            return self._truths[key]
        reference = self.outputs(sample)
        source = self.source
        try:
            found = source.truth(sample, reference)
        except Exception as exc:
            found = Truth(PLAIN, reference, {}, f"the {source.kind} raised {describe_error(exc)}")
        self._remember(self._truths, key, found)
        return found

    def _remember(self, cache: OrderedDict[str, T], key: str, value: T) -> None:
        cache[key] = value
        if len(cache) > self._capacity:
            cache.popitem(last=False)
