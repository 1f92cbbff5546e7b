"""The gate of one run: which hardware a runtime's baselines are keyed by, its stored entries, a
profile judged against them (or the A/B model), the policy's outcome, the model constraints and the
entries no test used.

Given the settings, the builds (a runtime's device and precision), the run's baseline store and the
A/B model, it gives values back (`Judged`, a GateOutcome, a message); the session records them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_navigator.config import MeasurementMode
from pytest_navigator.gate import policy
from pytest_navigator.gate.baselines import BaselineError, BaselineFile, BaselineStore, Key
from pytest_navigator.gate.constraints import constraint_failure
from pytest_navigator.gate.entries import BaselineEntry
from pytest_navigator.gate.policy import GateOutcome
from pytest_navigator.gate.thresholds import Limit
from pytest_navigator.gate.verdicts import Comparison
from pytest_navigator.measure.profiler import RuntimeProfile
from pytest_navigator.model.loader import Model
from pytest_navigator.runtimes.builds import Builds
from pytest_navigator.settings import Settings


@dataclass(frozen=True)
class Judged:
    """A profile's verdicts, its stable measurements as entries (JSON, as the run's records keep them),
    and the error to raise once they are recorded (a baseline file that cannot be used)."""

    comparisons: list[Comparison]
    measured: dict[Key, dict[str, Any]]
    error: Exception | None = None


@dataclass
class Gatekeeper:
    settings: Settings
    builds: Builds
    store: BaselineStore
    against_model: Model | None = None

    def hardware(self, runtime: str, counted: bool = False) -> str:
        """The hardware a runtime's baselines are keyed by: its GPU, or the CPU; instruction counts
        (`counted`) by the CPU model alone, as "instructions on MODEL" (they use one core)."""
        from pytest_navigator.measure.telemetry import fingerprint, hardware_key

        if counted:
            return f"instructions on {fingerprint()['cpu']['model']}"
        device = self.builds.registry.get(runtime).device if runtime in self.builds.registry else "cpu"
        return hardware_key(fingerprint(), device)

    def judged_against(self, model: Model) -> str:
        """What a verdict compares with, for messages: the baseline file, or the A/B model."""
        if self.against_model is not None:
            return f"{self.against_model.path} (A/B, measured side by side)"
        return str(self.store.path_for(model.name, model.fingerprint))

    def stored_entries(self, model: Model, runtime: str) -> Mapping[str, Any]:
        """This runtime's stored baseline entries on this hardware, by batch size ({} when none or unreadable)."""
        try:
            stored = self.store.load(model.name, model.fingerprint)
        except BaselineError:
            return {}
        return stored.runtime_entries(self.hardware(runtime), runtime)

    def judge(
        self,
        model: Model,
        runtime: str,
        profile: RuntimeProfile,
        limits: Mapping[str, Limit],
        old: RuntimeProfile | None = None,
        figures: Mapping[str, Any] | None = None,
    ) -> Judged:
        """Compare each measured batch size with the stored baseline for this hardware (or the A/B
        model); keep the stable ones as entries for --update-baselines. An unreadable baseline file
        raises BaselineError after the measurement is kept."""
        from pytest_navigator.measure.telemetry import fingerprint

        unreadable: BaselineError | None = None
        try:
            stored = self.store.load(model.name, model.fingerprint)
        except BaselineError as exc:  # still keep the measurement: --update-baselines reports the file
            unreadable, stored = exc, BaselineFile(Path(), {}, {})
        against = None
        if self.against_model is not None and old is not None:
            against = (self.against_model.name, old)
        counted = profile.config.measurement_mode is MeasurementMode.INSTRUCTIONS
        facts = fingerprint()
        if counted and profile.tool:  # a new valgrind may count differently: "versions changed", said
            facts = {**facts, "libraries": {**facts["libraries"], "valgrind": profile.tool.removeprefix("valgrind-")}}
        found = policy.judge(
            profile.runtime if counted else runtime,
            profile,
            stored,
            limits,
            hardware=self.hardware(runtime, counted),
            precision=self.builds.precision(runtime),
            facts=facts,
            normalize=self.settings.normalize,
            against=against,
        )
        measured = {key: entry.to_dict() for key, entry in found.entries.items()}  # the run's records keep JSON
        for (_, _, size), entry in measured.items():  # the model profile travels with each entry
            if figures is not None and str(size) in figures["flops"]:
                entry["model"] = {"flops": figures["flops"][str(size)], "parameters": figures["parameters"]}
        error: Exception | None = unreadable
        if error is None and found.problems and not self.settings.update_baselines:  # an update replaces them
            error = BaselineError("\n".join(found.problems))
        return Judged(found.comparisons, measured, error)

    def outcome(
        self, model: Model, runtime: str, profile: RuntimeProfile, comparisons: list[Comparison]
    ) -> GateOutcome:
        """The gate's policy on these verdicts (policy.decide), with this run's settings."""
        counted = profile.config.measurement_mode is MeasurementMode.INSTRUCTIONS
        return policy.decide(
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

    def constraint_failure(
        self,
        model: Model,
        runtime: str,
        profile: RuntimeProfile,
        constraints: list[Any],
        found: Any,
        against: Any = None,
        profile_error: str = "",
    ) -> str:
        """The model constraints judged (gate/constraints.py) with the figures a percentage is of: the
        A/B model's profile, else this runtime's stored baseline entries by batch size."""
        entries: dict[int, BaselineEntry | None] = {}
        if self.against_model is not None:
            source = f"the A/B model {self.against_model.name}"
        else:
            source = str(self.store.path_for(model.name, model.fingerprint))
        if found is not None and self.against_model is None:
            counted = profile.config.measurement_mode is MeasurementMode.INSTRUCTIONS
            hardware, key = self.hardware(runtime, counted), profile.runtime if counted else runtime
            with contextlib.suppress(BaselineError):  # an unreadable file fails the gate already
                stored = self.store.load(model.name, model.fingerprint)
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
            profile_error=profile_error,
            require_baseline=self.settings.require_baseline,
        )

    def unused(self, model: Model, records: Iterable[Any]) -> list[Key]:
        """Entries for this machine's hardware that no test of this run compared against (kept, listed)."""
        try:
            stored = self.store.load(model.name, model.fingerprint)
        except BaselineError:
            return []
        used = set()
        for record in records:
            counted = record.profile is not None and record.profile.counted
            runtime = (record.profile.runtime or record.runtime) if counted and record.profile else record.runtime
            used |= {(self.hardware(record.runtime, counted), runtime, c.batch_size) for c in record.comparisons}
        hardware = {key[0] for key in used} or {self.hardware(r) for r in self.builds.registry.names}
        return policy.unused(stored, used, hardware)

    def update(self, model: Model, records: Iterable[Any]) -> policy.Written | None:
        """--update-baselines for one model: the stable measurements of its runtimes that passed their
        check this run written, every other entry kept (policy.accepted, policy.update); None when
        there is nothing to write."""
        passed = [(r.measured, r.comparisons) for r in records if r.status == "passed"]
        entries, confirmed = policy.accepted(passed)
        if not entries:
            return None
        return policy.update(self.store, model.name, model.fingerprint, entries, confirmed)
