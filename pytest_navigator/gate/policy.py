"""The performance gate: a measurement judged against its baseline, the policy that turns verdicts
into a test outcome, and --update-baselines writing accepted measurements.

Verdicts come from verdicts.compare (the statistics); this module decides what the run does with
them, without pytest: `decide` returns an Outcome that the pytest glue maps to pass, fail or warn,
and the harness uses exactly as a user's script would.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from pytest_navigator import options
from pytest_navigator.gate.baselines import BaselineError, BaselineFile, BaselineStore, Key
from pytest_navigator.gate.entries import BaselineEntry, entry_for
from pytest_navigator.gate.thresholds import Limit
from pytest_navigator.gate.verdicts import Comparison, Verdict, compare
from pytest_navigator.measure.profiler import BatchProfile, RuntimeProfile


def paired_entry(entry: BaselineEntry, batch: BatchProfile) -> BaselineEntry:
    """An entry with every window's throughput and p95 (A/B runs pair windows, not blocks)."""
    return replace(
        entry,
        paired_throughputs=tuple(w.throughput for w in batch.windows),
        paired_p95_ms=tuple(float(np.percentile(w.latencies_ms, 95)) for w in batch.windows),
    )


@dataclass(frozen=True)
class Judgement:
    """One runtime's profile judged: the verdict per batch size, and its stable measurements as
    baseline entries (what --update-baselines would write)."""

    comparisons: list[Comparison]
    entries: dict[Key, BaselineEntry]
    #: Stored entries that are malformed (baselines.entry_problem): never used for a verdict.
    problems: list[str] = field(default_factory=list)


def judge(
    runtime: str,
    profile: RuntimeProfile,
    stored: BaselineFile,
    limits: Mapping[str, Limit],
    *,
    hardware: str,
    precision: str,
    facts: Mapping[str, Any],
    normalize: bool = False,
    against: tuple[str, RuntimeProfile] | None = None,
) -> Judgement:
    """Compare each measured batch size with the stored entry for (hardware, runtime, size), or, in
    an A/B run, with the old model's profile measured beside it (`against`: its name and profile)."""
    olds = {b.batch_size: b for b in against[1].batches} if against else {}
    comparisons, entries, problems = [], {}, []
    for batch in profile.batches:
        if batch.status == "error":
            continue
        current = entry_for(batch, profile, facts, precision)
        key = (hardware, runtime, batch.batch_size)
        before: BaselineEntry | None
        if against is not None:  # A/B: the old model, measured window by window beside it
            other = olds[batch.batch_size]
            before = (
                paired_entry(entry_for(other, against[1], facts, precision), other) if other.status != "error" else None
            )
            current = paired_entry(current, batch)
        else:
            try:
                before, found_under = stored.lookup(key)
            except BaselineError as malformed:
                problems.append(str(malformed))
                if batch.stable:
                    entries[key] = current
                continue
        judged = compare(
            runtime,
            batch.batch_size,
            current,
            before,
            limits,
            stable=batch.stable,
            normalize=normalize,
            against=against[0] if against else None,
        )
        if against is None and before is not None and found_under != hardware:
            judged = replace(
                judged,
                reason=f"{judged.reason} (against a baseline recorded under the coarser hardware key "
                f"{found_under!r}, from before CPU generations were told apart: it may come from another "
                f"generation; {options.UPDATE_BASELINES} records one under {hardware!r})",
            )
        comparisons.append(judged)
        if batch.stable:
            entries[key] = current
    return Judgement(comparisons, entries, problems)


class Outcome(enum.StrEnum):
    """A str enum, compared with ==: the pytest glue and the session may hold two imports of this module
    (pytester's inline runs re-import what a run imported), and `is` between their members was False:
    a regressed run passed."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    #: Nothing to judge against, said as a skip (--navigator-missing-baseline=skip: "not recorded").
    SKIP = "skip"


@dataclass(frozen=True)
class GateOutcome:
    """What a performance test does: pass, fail with `message`, or pass with a warning (`warning`:
    an inconclusive measurement under inconclusive='warn', which a later failure keeps)."""

    outcome: Outcome
    message: str = ""
    warning: str = ""


def decide(
    runtime: str,
    model: str,
    profile: RuntimeProfile,
    comparisons: Iterable[Comparison],
    *,
    inconclusive: str = "fail",
    update: bool = False,
    require_baseline: bool = False,
    missing: str = "pass",
    judged_against: str = "",
    hardware: str = "",
) -> GateOutcome:
    """The gate's policy. An unstable measurement (INCONCLUSIVE) fails, or warns with
    inconclusive='warn'; nothing measured fails. --update-baselines accepts any stable speed. Else a
    REGRESSED verdict fails with old -> new figures, and NEW fails under require_baseline (or
    missing='fail'), is skipped as not recorded under missing='skip', and passes otherwise; a comparison
    the machine's drift made impossible (calibration_drift), or whose limit is finer than the run-to-run
    spread resolves (unresolved), fails under require_baseline and otherwise warns.
    `judged_against` names the baseline file (or the A/B model) in messages."""
    from pytest_navigator.measure.profiler import PerformanceFailure, check_profile

    comparisons = list(comparisons)
    warning = ""
    try:
        check_profile(profile, model)
    except PerformanceFailure as unstable:
        if inconclusive != "warn":
            return GateOutcome(Outcome.FAIL, str(unstable))
        warning = f"INCONCLUSIVE: {unstable}"
    passing = GateOutcome(Outcome.WARN, warning=warning) if warning else GateOutcome(Outcome.PASS)
    if update:
        return passing
    undecided = [c for c in comparisons if c.verdict == Verdict.INCONCLUSIVE and "instructions" in c.figures]
    if undecided and not warning:  # instruction counts whose repeats straddle the limit
        text = f"{runtime} on {model}: inconclusive against {judged_against}:\n" + "\n".join(
            c.describe() for c in undecided
        )
        if inconclusive != "warn":
            return GateOutcome(Outcome.FAIL, text)
        warning = f"INCONCLUSIVE: {text}"
        passing = GateOutcome(Outcome.WARN, warning=warning)
    regressed = [c for c in comparisons if c.verdict == Verdict.REGRESSED]
    if regressed:
        return GateOutcome(
            Outcome.FAIL,
            f"{runtime} on {model} regressed against {judged_against}:\n"
            + "\n".join(c.describe() for c in regressed)
            + f"\nIf the slowdown is intended, accept it with {options.UPDATE_BASELINES} (and commit the baseline file).",
            warning,
        )
    require_baseline = require_baseline or missing == "fail"
    new = [c for c in comparisons if c.verdict == Verdict.NEW]
    if new and (require_baseline or missing == "skip"):
        sizes = ", ".join(str(c.batch_size) for c in new)
        if require_baseline:
            return GateOutcome(
                Outcome.FAIL,
                f"{runtime} on {model}: no baseline for batch size {sizes} on {hardware} in {judged_against} "
                f"({options.REQUIRE_BASELINE}); record one with {options.UPDATE_BASELINES}.",
                warning,
            )
        return GateOutcome(
            Outcome.SKIP,
            f"not recorded: {runtime} on {model} has no baseline for batch size {sizes} on {hardware} in "
            f"{judged_against}, so nothing was judged ({options.MISSING_BASELINE}=skip); record one with "
            f"{options.UPDATE_BASELINES}.",
            warning,
        )
    # The machine itself changed speed since the recording: like a missing baseline, nothing comparable
    # is stored. Said as a warning (failing would be a false alarm as often as not), a failure only
    # when a judged baseline is required.
    # Likewise a limit finer than this machine's run-to-run spread can resolve (runs.py: the MDE).
    drifted = [
        c
        for c in comparisons
        if c.verdict == Verdict.INCONCLUSIVE and (c.calibration_drift is not None or c.unresolved)
    ]
    if drifted:
        how = "not resolved" if all(c.unresolved for c in drifted) else "not judged"
        text = f"{runtime} on {model}: {how} against {judged_against}:\n" + "\n".join(c.describe() for c in drifted)
        if require_baseline:
            return GateOutcome(Outcome.FAIL, f"{text}\n({options.REQUIRE_BASELINE} needs a judged baseline.)", warning)
        warning = "\n".join(w for w in (warning, f"INCONCLUSIVE: {text}") if w)
        return GateOutcome(Outcome.WARN, warning=warning)
    return passing


def accepted(
    passed: Iterable[tuple[Mapping[Key, Mapping[str, Any]], Iterable[Comparison]]],
) -> tuple[dict[Key, BaselineEntry], set[Key]]:
    """What --update-baselines writes for one model: the stable measurements of runtimes that passed
    correctness in this run (`passed`: each one's measured entries, as the run's records keep them,
    and its verdicts), and which of them were judged against a stored entry (they join its history
    of recordings)."""
    entries: dict[Key, BaselineEntry] = {}
    confirmed: set[Key] = set()
    for measured, comparisons in passed:
        entries.update({key: BaselineEntry.from_dict(entry) for key, entry in measured.items()})
        # Every recording judged against a stored entry joins its history (baselines.poolable decides
        # whether it measured the same way): with the model file, libraries, precision and profiler
        # settings all unchanged, a changed speed is the machine's, and one recording taken on a fast
        # or slow day must not reset the history (measured: MobileNetV3's second recording ran 1.8x
        # its first, replaced it, and 2 of 10 unchanged reruns after it "regressed"). A real change
        # then shows as recordings that disagree, which widens the error (runs.py): INCONCLUSIVE.
        judged = {c.batch_size for c in comparisons if c.against == "baseline" and c.verdict != Verdict.NEW}
        confirmed |= {key for key in measured if key[2] in judged}
    return entries, confirmed


@dataclass(frozen=True)
class Written:
    """What an update did to one model's file: the path and rows written (key, old entry or None,
    new entry, as JSON objects), or the error that stopped the write (the session keeps it as a
    BaselineUpdate)."""

    path: Path | None
    changes: list[tuple[Key, dict[str, Any] | None, dict[str, Any]]] = field(default_factory=list)
    error: str | None = None


def update(
    store: BaselineStore, name: str, fingerprint: str, entries: dict[Key, BaselineEntry], confirmed: set[Key]
) -> Written:
    """Write `entries` into the model's baseline file (keeping every other entry); the rows written,
    or the error that stopped the write."""
    try:
        changes = store.update(name, fingerprint, entries, confirmed)
    except BaselineError as exc:
        return Written(None, error=str(exc))
    except OSError as exc:  # a folder that became unwritable, a full disk: said, not a traceback
        where = store.path_for(name, fingerprint)
        return Written(None, error=f"{where}: cannot write the baseline file ({exc.strerror or exc}).")
    rows = [(key, None if old is None else old.to_dict(), new.to_dict()) for key, old, new in changes]
    return Written(store.path_for(name, fingerprint), rows)


def unused(stored: BaselineFile, used: set[Key], hardware: set[str]) -> list[Key]:
    """Entries for this machine's hardware that no test of this run compared against (kept, listed)."""
    return sorted(key for key in stored.keys() if key[0] in hardware and key not in used)


def unchecked_update(records: Iterable[Any]) -> str:
    """Why --update-baselines wrote nothing for runtimes measured without their correctness check in
    this run (its test deselected, e.g. by -k test_performance), and the command that works; ""
    when there are none. A baseline is only written for a runtime that passed its check."""
    import os

    unchecked = [r for r in records if r.profile is not None and r.status == "built"]
    if not unchecked:
        return ""
    models = dict.fromkeys(os.path.relpath(r.model) for r in unchecked)
    runtimes = ",".join(dict.fromkeys(r.runtime for r in unchecked))
    command = " ".join(
        [
            "pytest",
            *(f"{options.MODEL}={m}" for m in models),
            f"{options.RUNTIMES}={runtimes}",
            "--update-baselines",
        ]
    )
    return (
        f"--update-baselines wrote nothing for {runtimes}: their correctness was not checked in this run (its tests"
        f" were deselected), and a baseline is only written for a runtime that passed its check. Run both: {command}"
    )
