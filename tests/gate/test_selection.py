"""The best runtime under a latency budget (selection.py), on a real report's figures."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from pytest_navigator.gate.selection import best_runtime as best_of
from pytest_navigator.gate.selection import describe
from pytest_navigator.report.results import RunResults

DATA = Path(__file__).resolve().parents[1] / "data" / "run-mlp.json"


def _model() -> dict[str, Any]:
    model: dict[str, Any] = json.loads(DATA.read_text())["models"][0]
    return model


def best_runtime(model: dict[str, Any], budget: float | None) -> dict[str, Any] | None:
    """The best of a report's model object, read as the run's typed records."""
    return best_of(RunResults.from_model_dicts([model]).runtimes.values(), budget)


def _measurements(model: dict[str, Any]) -> list[tuple[str, int, float, float]]:
    return [
        (r["name"], b["batch_size"], b["throughput"], b["latency_ms"]["p99"])
        for r in model["runtimes"]
        if r["profile"]
        for b in r["profile"]["batches"]
    ]


def test_without_a_budget_the_highest_throughput_wins() -> None:
    model = _model()
    name, size, throughput, _ = max(_measurements(model), key=lambda m: m[2])
    best = best_runtime(model, None)
    assert best is not None
    assert (best["runtime"], best["batch_size"], best["throughput"]) == (name, size, throughput)
    assert best["within_budget"] is None and "highest throughput among 9" in best["reason"]
    assert describe(best).startswith(f"best: {name} at batch {size}")


def test_the_budget_excludes_measurements_whose_p99_exceeds_it() -> None:
    model = _model()
    rows = _measurements(model)
    fastest = max(rows, key=lambda m: m[2])
    budget = fastest[3] * 0.999  # the fastest one's p99 is just over budget
    expected = max((m for m in rows if m[3] <= budget), key=lambda m: m[2])
    best = best_runtime(model, budget)
    assert best is not None and (best["runtime"], best["batch_size"]) == expected[:2]
    assert best["p99_ms"] <= budget and best["within_budget"] is True
    assert f"p99 within {budget:g} ms" in best["reason"]


def test_nothing_within_budget_says_what_came_closest() -> None:
    model = _model()
    lowest = min(_measurements(model), key=lambda m: m[3])
    best = best_runtime(model, lowest[3] / 2)
    assert best is not None and best["runtime"] is None and best["within_budget"] is False
    assert f"lowest: {lowest[0]} at batch {lowest[1]}" in best["reason"]
    assert describe(best).startswith("best: none (no stable measurement keeps p99 within")


def test_failed_runtimes_and_unstable_measurements_never_win() -> None:
    model = copy.deepcopy(_model())
    name, size, _, _ = max(_measurements(model), key=lambda m: m[2])
    runtime = next(r for r in model["runtimes"] if r["name"] == name)
    runtime["status"] = "failed"
    best = best_runtime(model, None)
    assert best is not None and best["runtime"] != name
    runtime["status"] = "passed"
    next(b for b in runtime["profile"]["batches"] if b["batch_size"] == size)["status"] = "unstable"
    best = best_runtime(model, None)
    assert best is not None and (best["runtime"], best["batch_size"]) != (name, size)
    for r in model["runtimes"]:
        r["profile"] = None
    assert best_runtime(model, None) is None and describe(None) == "best: none (no throughput was measured)"
