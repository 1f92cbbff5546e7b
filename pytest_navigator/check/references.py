"""What every runtime of a model is checked against: the reference's outputs and the truth of each sample.

Both are computed once per distinct sample (by content) and shared by every runtime's check, so a
run's N runtimes cost one reference evaluation and one truth per sample, not N; with an artifact
cache (truth_store.py), once across runs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from pytest_navigator.check.strategies import digest
from pytest_navigator.check.truth import PLAIN, Truth, TruthSource
from pytest_navigator.config import Sample
from pytest_navigator.errors import describe_error
from pytest_navigator.runtimes.base import Runner

if TYPE_CHECKING:
    from pytest_navigator.check.truth_store import TruthStore
    from pytest_navigator.runtimes.cache import CacheEvent

#: Outputs and truths kept for this many distinct samples (a run's samples repeat across runtimes).
CAPACITY = 512

T = TypeVar("T")


class ReferenceOutputs:
    """One model's reference: its outputs and its truth per sample, memoized by sample content, and
    kept across runs in `store` (None: this run only). The truth source is built on the first truth
    the store does not have."""

    def __init__(
        self,
        reference: Runner,
        truth_source: Callable[[], TruthSource],
        capacity: int = CAPACITY,
        store: TruthStore | None = None,
    ) -> None:
        self.runner = reference
        self._truth_source = truth_source
        self._store = store
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

    def outputs(self, sample: Sample, key: str | None = None) -> Sample:
        """The reference's outputs for `sample` (`key`: its digest, when the caller has it)."""
        key = key or digest(sample)
        if key in self._outputs:
            self._outputs.move_to_end(key)
            return self._outputs[key]
        if self._store is None:
            found = self.runner.infer(sample)
        else:
            found = self._store.outputs(key, lambda: self.runner.infer(sample))
        self._remember(self._outputs, key, found)
        return found

    def truth(self, sample: Sample, key: str | None = None) -> Truth:
        """The truth of `sample` (`key`: its digest, when the caller has it) and the reference's own
        rounding against it. A source that fails on this sample leaves it to the fixed tolerance, and
        says why."""
        key = key or digest(sample)
        if key in self._truths:
            self._truths.move_to_end(key)
            return self._truths[key]
        reference = self.outputs(sample, key)
        if self._store is None:
            found = self._compute(sample, reference)[0]
        else:
            found = self._store.truth(key, reference, lambda: self._compute(sample, reference))
        self._remember(self._truths, key, found)
        return found

    def take_events(self) -> list[CacheEvent]:
        """What the store did since last asked ("restored truth 0.02 s (27 of 27 samples)"); none without one."""
        return [] if self._store is None else self._store.take_events()

    def _compute(self, sample: Sample, reference: Sample) -> tuple[Truth, bool]:
        """The truth, and whether it may be kept across runs: not when the source raised on this sample
        or there is no source (its candidates failed, perhaps for want of memory: next time may differ)."""
        source = self.source
        try:
            return source.truth(sample, reference), source.kind != PLAIN
        except Exception as exc:
            return Truth(PLAIN, reference, {}, f"the {source.kind} raised {describe_error(exc)}"), False

    def _remember(self, cache: OrderedDict[str, T], key: str, value: T) -> None:
        cache[key] = value
        if len(cache) > self._capacity:
            cache.popitem(last=False)
