"""Run reports of several shards joined into one: a CI matrix, several machines, several GPUs.

A model is one model when its name and content (sha256) agree. A runtime measured on one hardware
key must come from one shard: two shards that both measured it are a conflict, and the error names
the model, the runtime, the hardware and both files (identical copies are not a conflict). A runtime
one shard could not run (skipped: no GPU there) gives way to another shard's measurement of it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from datetime import UTC, datetime

from pytest_navigator.errors import NavigatorError
from pytest_navigator.report.results import RANK, ModelInfo, RunResults, RuntimeResult
from pytest_navigator.report.run_report import RunReport


class MergeError(NavigatorError):
    """Shards that cannot be joined: the same measurement twice, with different figures."""


def merge_reports(shards: Sequence[tuple[str, RunReport]]) -> RunReport:
    """One report of every shard (source name, report): models joined (ModelInfo.merge), runtimes
    joined per hardware key, the best runtime chosen again over all of them. Raises MergeError naming
    every conflict."""
    from pytest_navigator.gate.selection import best_runtime
    from pytest_navigator.measure.telemetry import hardware_key

    if not shards:
        raise MergeError("nothing to merge: give two or more run reports.")
    models: dict[tuple[str, str], ModelInfo] = {}
    #: (model key, runtime, hardware) -> (source, record) of every measured runtime
    measured: dict[tuple[tuple[str, str], str, str], tuple[str, RuntimeResult]] = {}
    unmeasured: dict[tuple[tuple[str, str], str], tuple[str, RuntimeResult]] = {}
    conflicts: list[str] = []
    for source, report in shards:
        for info, runtimes in report.models():
            key = (info.name, info.fingerprint)
            if key in models:
                models[key].merge(info)
            else:
                models[key] = copy.deepcopy(info)
            for runtime in runtimes:
                if runtime.profile is None:
                    held = unmeasured.get((key, runtime.runtime))
                    if held is None or RANK[runtime.status] > RANK[held[1].status]:
                        unmeasured[(key, runtime.runtime)] = (source, runtime)
                    continue
                # unstable everywhere: no entry names the hardware, the shard's machine does (as baselines key it)
                hardware = runtime.hardware or hardware_key(dict(report.device), runtime.device or "cpu")
                where = (key, runtime.runtime, hardware)
                held = measured.get(where)
                if held is not None and _json(held[1]) != _json(runtime):
                    conflicts.append(f"{info.name} {runtime.runtime} on {hardware!r} is in both {held[0]} and {source}")
                measured.setdefault(where, (source, runtime))
    if conflicts:
        raise MergeError(
            "conflicting duplicates: "
            + "; ".join(conflicts)
            + ". Each runtime must be measured on a hardware key by one shard only: drop one of the files, or run "
            "the shards with different --navigator-runtimes."
        )
    results = RunResults()
    for info in models.values():
        results.models[info.path] = info
    paths = {key: info.path for key, info in models.items()}
    for (key, _, hardware), (_, runtime) in measured.items():
        record = copy.deepcopy(runtime)
        record.model = paths[key]
        # two hardware keys of one runtime: both records are kept, told apart by the key
        name = (
            record.runtime if (paths[key], record.runtime) not in results.runtimes else f"{record.runtime}@{hardware}"
        )
        results.runtimes[(paths[key], name)] = record
    names = {(key, runtime) for key, runtime, _ in measured}
    for (key, name), (_, runtime) in unmeasured.items():
        if (key, name) not in names:
            record = copy.deepcopy(runtime)
            record.model = paths[key]
            results.runtimes[(paths[key], name)] = record
    first = shards[0][1]
    budget = first.latency_budget_ms
    for path, info in results.models.items():
        info.best = best_runtime(results.of_model(path), budget)
    return RunReport(
        results,
        first.device,
        {**first.settings, "latency_budget_ms": budget},
        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        [
            {"source": source, "created": report.created, "device": report.device, "settings": report.settings}
            for source, report in shards
        ],
    )


def _json(record: RuntimeResult) -> str:
    """A record as its JSON text: identical copies of one shard compare equal (NaN included)."""
    return json.dumps(record.to_dict(), sort_keys=True)
