"""Run reports of several shards joined into one: a CI matrix, several machines, several GPUs.

A model is one model when its name and content (sha256) agree. A runtime measured on one hardware
key must come from one shard: two shards that both measured it are a conflict, and the error names
the model, the runtime, the hardware and both files (identical copies are not a conflict). A runtime
one shard could not run (skipped: no GPU there) gives way to another shard's measurement of it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pytest_navigator.errors import NavigatorError

#: When no shard measured a runtime, the record kept is the most telling one (results._RANK's order).
_RANK = {"planned": 0, "skipped": 1, "built": 2, "passed": 3, "failed": 4, "failed-build": 4}


class MergeError(NavigatorError):
    """Shards that cannot be joined: the same measurement twice, with different figures."""


def merge_reports(shards: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """One report of every shard (source name, report): models joined, runtimes joined per hardware key,
    the best runtime chosen again over all of them. Raises MergeError naming every conflict."""
    from pytest_navigator.gate.selection import best_runtime
    from pytest_navigator.measure.telemetry import hardware_key
    from pytest_navigator.report.json_report import SCHEMA_VERSION

    if not shards:
        raise MergeError("nothing to merge: give two or more run reports.")
    models: dict[tuple[str, str], dict[str, Any]] = {}
    #: (model key, runtime, hardware) -> (source, record) of every measured runtime
    measured: dict[tuple[tuple[str, str], str, str], tuple[str, dict[str, Any]]] = {}
    unmeasured: dict[tuple[tuple[str, str], str], tuple[str, dict[str, Any]]] = {}
    conflicts: list[str] = []
    for source, report in shards:
        for model in report["models"]:
            key = (model["name"], model["sha256"])
            merged = models.setdefault(key, {**copy.deepcopy(dict(model)), "runtimes": []})
            _merge_profile(merged, model)
            for runtime in model["runtimes"]:
                if runtime.get("profile") is None:
                    held = unmeasured.get((key, runtime["name"]))
                    if held is None or _RANK[runtime["status"]] > _RANK[held[1]["status"]]:
                        unmeasured[(key, runtime["name"])] = (source, runtime)
                    continue
                # unstable everywhere: no entry names the hardware, the shard's machine does (as baselines key it)
                hardware = runtime.get("hardware") or hardware_key(
                    dict(report["device"]), runtime.get("device") or "cpu"
                )
                where = (key, runtime["name"], hardware)
                held = measured.get(where)
                if held is not None and held[1] != runtime:
                    conflicts.append(
                        f"{model['name']} {runtime['name']} on {where[2]!r} is in both {held[0]} and {source}"
                    )
                measured.setdefault(where, (source, runtime))
    if conflicts:
        raise MergeError(
            "conflicting duplicates: "
            + "; ".join(conflicts)
            + ". Each runtime must be measured on a hardware key by one shard only: drop one of the files, or run "
            "the shards with different --navigator-runtimes."
        )
    for (key, _, _), (_, runtime) in measured.items():
        models[key]["runtimes"].append(copy.deepcopy(runtime))
    names = {(key, runtime) for key, runtime, _ in measured}
    for (key, name), (_, runtime) in unmeasured.items():
        if (key, name) not in names:
            models[key]["runtimes"].append(copy.deepcopy(runtime))
    first = shards[0][1]
    budget = first["settings"].get("latency_budget_ms")
    for model in models.values():
        model["best"] = best_runtime(model, budget)
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": first["device"],
        "settings": {**first["settings"], "latency_budget_ms": budget},
        "models": list(models.values()),
        "shards": [
            {"source": source, "created": report["created"], "device": report["device"], "settings": report["settings"]}
            for source, report in shards
        ],
    }


def _merge_profile(merged: dict[str, Any], model: Mapping[str, Any]) -> None:
    """FLOPs of the batch sizes either shard measured (results.ModelInfo.merge, on report dicts)."""
    other = model.get("profile")
    if not other:
        return
    if not merged.get("profile"):
        merged["profile"] = copy.deepcopy(dict(other))
    else:
        merged["profile"]["flops"] = {**other["flops"], **merged["profile"]["flops"]}
