"""Baseline files and verdicts, on synthetic measurements with known properties."""

from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from pytest_navigator.config import ProfilerConfig
from pytest_navigator.gate.baselines import SCHEMA_VERSION, BaselineError, BaselineStore
from pytest_navigator.gate.entries import BaselineEntry, blocks, entry_for, entry_problem
from pytest_navigator.gate.thresholds import DEFAULT_THRESHOLDS, ThresholdError, parse_thresholds
from pytest_navigator.gate.verdicts import ALPHA, Verdict, compare
from pytest_navigator.measure.profiler import BatchProfile, RuntimeProfile, WindowResult

LIMITS = parse_thresholds(None)
#: A runtime of a family whose speed the calibration workload predicts (verdicts.DRIFT_PREDICTS).
ORT = "onnxruntime-cpu"


T = TypeVar("T")


def _got(value: T | None) -> T:
    """An optional field the test has just written."""
    assert value is not None
    return value


def entry(
    throughput: float,
    p95: float = 10.0,
    seed: int = 0,
    spread: float = 0.02,
    runs: int = 3,
    run_spread: float = 0.005,
    **extra: Any,
) -> BaselineEntry:
    """A stored entry: `runs` processes scattered by `run_spread` (relative, log normal) around the
    given figures, and 15 blocks scattered by `spread` (the window rule's samples)."""
    rng = np.random.default_rng(seed)
    scatter = np.exp(run_spread * np.random.default_rng(seed + 1000).standard_normal(runs))
    return BaselineEntry.from_dict(
        {
            "throughput": throughput,
            "latency_ms": {"p50": p95 / 2, "p90": p95 * 0.9, "p95": p95, "p99": p95 * 1.1},
            "runs": [
                {"throughput": throughput * f, "p50": p95 / 2 / f, "p95": p95 / f, "p99": p95 * 1.1 / f}
                for f in scatter
            ],
            "block_throughputs": list(throughput * (1 + spread * rng.standard_normal(15))),
            "block_p95_ms": list(p95 * (1 + spread * rng.standard_normal(15))),
            "libraries": {"torch": "2.13.0"},
            **extra,
        }
    )


def test_an_unchanged_measurement_passes() -> None:
    result = compare("r", 1, entry(1000, seed=1), entry(1000), LIMITS)
    assert result.verdict is Verdict.PASS and result.reason == "within the limits over 3 runs against 3 recorded"
    assert result.runs == (3, 3) and 0 < result.mde["throughput"] < 0.05


def test_a_large_significant_slowdown_regresses_with_its_figures() -> None:
    result = compare("r", 4, entry(850, seed=1), entry(1000), LIMITS)
    assert result.verdict is Verdict.REGRESSED
    assert result.figures["throughput"] == (1000.0, 850.0, 950.0)
    assert result.p_values["throughput"] < 0.01
    text = result.describe()
    assert (
        "r batch 4: REGRESSED: throughput significantly beyond the limit (throughput=95%) over 3 runs against 3 "
        "recorded (p < 0.0033" in text
    )
    assert "throughput 1000 -> 850 samples/s (-15.0%), limit 950" in text
    assert "smallest change resolved (MDE, 3 runs against 3): throughput " in text


def test_between_process_spread_widens_the_verdict() -> None:
    """The same 10% slowdown, with every process's windows tight: runs 0.5% apart regress; runs that
    scatter as this project's VM does between processes (15%) cannot tell it from noise, and the
    verdict says so with the MDE instead of passing. The window rule, blind to the spread between
    processes, calls both regressed."""
    tight = compare("r", 1, entry(900, seed=1), entry(1000), LIMITS)
    assert tight.verdict is Verdict.REGRESSED
    noisy = compare("r", 1, entry(900, seed=1, run_spread=0.15), entry(1000, run_spread=0.15), LIMITS)
    assert noisy.verdict is Verdict.INCONCLUSIVE and noisy.unresolved
    assert noisy.mde["throughput"] > 0.25 and noisy.p_values["throughput"] > ALPHA
    assert "this machine's run-to-run spread resolves only throughput changes beyond" in noisy.reason
    for remedy in ("--navigator-processes", "quieter or dedicated runner", "--navigator-mode=instructions", "A/B"):
        assert remedy in noisy.reason
    for spread in (0.005, 0.15):
        old_rule = compare("r", 1, entry(900, seed=1, run_spread=spread), entry(1000), LIMITS, unit="window")
        assert old_rule.verdict is Verdict.REGRESSED and not old_rule.mde


def test_a_large_true_change_regresses_whatever_the_spread() -> None:
    # a 3x slowdown on a machine whose runs scatter by 15%: beyond any doubt, so no MDE excuse
    result = compare("r", 1, entry(333, seed=1, run_spread=0.15), entry(1000, run_spread=0.15), LIMITS)
    assert result.verdict is Verdict.REGRESSED and result.mde["throughput"] > 0.25


def test_one_run_on_each_side_claims_nothing() -> None:
    result = compare("r", 1, entry(333, seed=1, runs=1), entry(1000, runs=1), LIMITS)
    assert result.verdict is Verdict.INCONCLUSIVE and result.unresolved
    assert result.reason.startswith("one run on each side (1 run against 1 recorded): the run-to-run spread is unknown")
    assert math.isinf(result.mde["throughput"]) and "throughput unknown (one run on each side)" in result.describe()
    # an entry from before runs were kept is one run: judged against three new runs, their spread decides
    old = replace(entry(1000), runs=None)
    assert compare("r", 1, entry(333, seed=1), old, LIMITS).verdict is Verdict.REGRESSED


def test_a_small_significant_slowdown_within_the_threshold_passes() -> None:
    result = compare("r", 1, entry(970, seed=1, run_spread=0.001), entry(1000, run_spread=0.001), LIMITS)
    assert result.verdict is Verdict.PASS and result.reason == "within the limits over 3 runs against 3 recorded"


def test_a_drift_just_past_the_limit_is_not_a_regression() -> None:
    """An unchanged runtime's run drifted 6% from its baseline's, each run's blocks tight (2%): the
    change is certain, but not that it is beyond the 95% limit. The old rule (any significant change
    plus an effect past the limit) called it a regression; the rule now asks the test to show the
    slowdown is beyond the limit."""
    drifted, stored = entry(940, seed=1), entry(1000)
    old_rule = compare("r", 1, drifted, stored, LIMITS, significance="difference", unit="window")
    assert old_rule.verdict is Verdict.REGRESSED
    assert compare("r", 1, drifted, stored, LIMITS).verdict is Verdict.PASS
    # p95 12% up (limit 110%): the same story for latencies
    assert compare("r", 1, entry(1000, p95=11.2, seed=1), entry(1000), LIMITS).verdict is Verdict.PASS
    old_rule = compare(
        "r", 1, entry(1000, p95=11.2, seed=1), entry(1000), LIMITS, significance="difference", unit="window"
    )
    assert old_rule.verdict is Verdict.REGRESSED


def test_slowdowns_well_past_the_limit_still_regress_and_speedups_improve() -> None:
    assert compare("r", 1, entry(880, seed=1), entry(1000), LIMITS).verdict is Verdict.REGRESSED
    assert compare("r", 1, entry(1000, p95=12.5, seed=1), entry(1000), LIMITS).verdict is Verdict.REGRESSED
    assert compare("r", 1, entry(1120, seed=1), entry(1000), LIMITS).verdict is Verdict.IMPROVED
    # a speedup that is certain but not beyond 1/0.95 of the baseline is a pass, not an improvement
    assert compare("r", 1, entry(1060, seed=1), entry(1000), LIMITS).verdict is Verdict.PASS
    with pytest.raises(ValueError, match="significance='sometimes'"):
        compare("r", 1, entry(1000), entry(1000), LIMITS, significance="sometimes")
    with pytest.raises(ValueError, match="unit='request'"):
        compare("r", 1, entry(1000), entry(1000), LIMITS, unit="request")


def test_latency_regressions_count_too() -> None:
    result = compare("r", 1, entry(1000, p95=13.0, seed=1), entry(1000, p95=10.0), LIMITS)
    assert result.verdict is Verdict.REGRESSED and "p95" in result.reason


def test_improved_new_and_inconclusive() -> None:
    assert compare("r", 1, entry(1200, seed=1), entry(1000), LIMITS).verdict is Verdict.IMPROVED
    assert compare("r", 1, entry(1000), None, LIMITS).verdict is Verdict.NEW
    assert compare("r", 1, entry(1000), entry(1000), LIMITS, stable=False).verdict is Verdict.INCONCLUSIVE
    few = entry(1000, block_throughputs=[1000.0, 1001.0])
    assert compare("r", 1, few, entry(1000), LIMITS, unit="window").verdict is Verdict.INCONCLUSIVE


def test_absolute_limits_judge_without_a_baseline() -> None:
    limits = parse_thresholds({"throughput": 1100.0, "p95": None, "p99": None})
    result = compare("r", 1, entry(1000), None, limits)
    assert result.verdict is Verdict.REGRESSED and result.figures["throughput"] == (None, 1000.0, 1100.0)
    assert result.runs == (3, 0) and "over 3 runs (p <" in result.reason
    assert compare("r", 1, entry(1000), None, parse_thresholds({"throughput": 900.0})).verdict is Verdict.PASS
    # one run cannot show that it is below an SLA either
    alone = compare("r", 1, entry(1000, runs=1), None, limits)
    assert alone.verdict is Verdict.INCONCLUSIVE and alone.unresolved


def test_version_changes_are_reported() -> None:
    result = compare("r", 1, entry(800, seed=1, libraries={"torch": "2.14.0"}), entry(1000), LIMITS)
    assert result.version_changes == {"torch": ("2.13.0", "2.14.0")}
    assert "versions changed since the baseline: torch 2.13.0 -> 2.14.0" in result.describe()


def test_thresholds_parse_strings_and_seed_002_dicts() -> None:
    parsed = parse_thresholds("throughput=90%,p99=150%,p50=4.5")
    assert {m: (limit.value, limit.relative) for m, limit in parsed.items()} == {
        "throughput": (0.9, True),
        "p95": (1.1, True),
        "p99": (1.5, True),
        "p50": (4.5, False),
        "instructions": (1.02, True),
    }
    assert set(parse_thresholds({"p99": None})) == set(DEFAULT_THRESHOLDS) - {"p99"}
    for bad, message in [
        ("speed=5%", "unknown metric 'speed'; accepted: throughput, p50, p90, p95, p99"),
        ("throughput=105%", "a relative throughput limit is at most 100% of the baseline"),
        ("p95=90%", "a relative p95 limit is at least 100% of the baseline"),
        ("throughput", "'throughput' is not METRIC=LIMIT"),
        ("p95=fast", "p95='fast' is not a positive number or percentage"),
    ]:
        with pytest.raises(ThresholdError, match=re.escape(message)):
            parse_thresholds(bad)


def _profile(latency_ms: float, windows: int = 3, requests: int = 10) -> tuple[RuntimeProfile, BatchProfile]:
    window = WindowResult(2, (latency_ms,) * requests, latency_ms * requests)
    batch = BatchProfile(2, "stable", 5.0, (window,) * windows, tuple(range(windows)))
    return RuntimeProfile("torch-cpu", (batch,), "done", ProfilerConfig()), batch


def test_entries_hold_blocks_of_the_stable_windows() -> None:
    profile, batch = _profile(2.0)
    throughputs, p95s = blocks(batch)
    assert len(p95s) == 15 and all(p == pytest.approx(2.0) for p in p95s)
    assert len(throughputs) == 15 and all(t == pytest.approx(1000.0) for t in throughputs)
    stored = entry_for(batch, profile, {"libraries": {"numpy": "2.0"}}, "fp32").to_dict()
    assert stored["throughput"] == 1000.0 and stored["window_throughputs"] == [1000.0] * 3
    assert stored["libraries"] == {"numpy": "2.0"} and stored["profiler"]["measurement_request_count"] == 50
    assert stored["date"].endswith("Z") and stored["cold_start_ms"] == 5.0


def test_update_keeps_other_entries_and_writes_sorted_rounded_json(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path / "baselines")
    first = store.update("m.pt2", "ab" * 32, {("cpu x2", "torch-cpu", 1): BaselineEntry(throughput=1 / 3)})
    assert first == [(("cpu x2", "torch-cpu", 1), None, BaselineEntry(throughput=1 / 3))]
    store.update("m.pt2", "ab" * 32, {("cpu x2", "onnxruntime-cpu", 4): BaselineEntry(throughput=2.0)})
    path = tmp_path / "baselines" / f"m-{'ab' * 6}.json"
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA_VERSION and data["model"] == {"name": "m.pt2", "sha256": "ab" * 32}
    assert sorted(store.load("m.pt2", "ab" * 32).keys()) == [
        ("cpu x2", "onnxruntime-cpu", 4),
        ("cpu x2", "torch-cpu", 1),
    ]
    assert path.read_text() == json.dumps(data, indent=2, sort_keys=True) + "\n"
    assert not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read the baseline file (JSONDecodeError"),
        ('{"schema": 99, "model": {}, "entries": {}}', "baseline schema 99 is newer than this pytest-navigator reads"),
        ('{"schema": 1, "entries": []}', "not a pytest-navigator baseline file (schema 1)"),
    ],
)
def test_a_corrupt_or_newer_file_is_never_overwritten(tmp_path: Path, content: str, message: str) -> None:
    store = BaselineStore(tmp_path)
    path = store.path_for("m.pt2", "cd" * 32)
    path.write_text(content)
    with pytest.raises(BaselineError, match=re.escape(message)) as failure:
        store.update("m.pt2", "cd" * 32, {("cpu", "torch-cpu", 1): BaselineEntry(throughput=1.0)})
    assert str(path) in str(failure.value)
    assert path.read_text() == content


def test_concurrent_updates_lose_nothing(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)

    def write(worker: int) -> None:
        for batch in range(5):
            BaselineStore(tmp_path).update(
                "m.pt2", "ef" * 32, {("cpu", f"runtime-{worker}", batch): BaselineEntry(throughput=1.0)}
            )

    threads = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(list(store.load("m.pt2", "ef" * 32).keys())) == 20


def test_normalization_takes_machine_drift_out_of_the_verdict() -> None:
    # The whole machine is 20% slower today: the runtime and the calibration workload alike.
    baseline = entry(1000, calibration=5000.0)
    today = entry(800, p95=12.5, seed=1, calibration=4000.0)
    raw = compare(ORT, 1, today, baseline, LIMITS)
    normalized = compare(ORT, 1, today, baseline, LIMITS, normalize=True)
    assert raw.verdict is Verdict.INCONCLUSIVE and not raw.normalized and raw.calibration_drift == pytest.approx(0.8)
    assert normalized.verdict is Verdict.PASS and normalized.normalized and normalized.calibration_drift is None
    assert raw.raw_ratio == pytest.approx(0.8) and raw.normalized_ratio == pytest.approx(1.0)
    assert "throughput ratio vs baseline: raw 0.800, calibration-normalized 1.000" in raw.describe()
    # ... while a slowdown of the runtime alone still regresses after normalization.
    slowed = compare(ORT, 1, entry(800, seed=1, calibration=5000.0), baseline, LIMITS, normalize=True)
    assert slowed.verdict is Verdict.REGRESSED


def test_a_machine_that_changed_speed_is_not_judged_against_a_stored_number() -> None:
    """Measured on this project's shared VM: 8 runs of an unchanged MLP, every pair as baseline and rerun
    (504 comparisons), regressed 26% of the time; the calibration workload had moved by up to 35%
    between runs. Widening the limits by the square of that drift when it exceeds 5% left 8%."""
    from pytest_navigator.gate.policy import Outcome, decide

    baseline = entry(1000, calibration=5000.0)
    slower_machine = compare(ORT, 1, entry(880, seed=1, calibration=4500.0), baseline, LIMITS)  # machine -10%
    assert slower_machine.verdict is Verdict.INCONCLUSIVE and slower_machine.calibration_drift == pytest.approx(0.9)
    assert slower_machine.reason.startswith("beyond the limit, but this machine ran the calibration workload at 0.90x")
    assert "(throughput=77%, p95=136%, p99=136%)" in slower_machine.reason
    assert "--navigator-against" in slower_machine.reason
    # a slowdown the drift cannot explain still regresses, saying the limits were widened
    gross = compare(ORT, 1, entry(330, seed=1, calibration=4500.0), baseline, LIMITS)
    assert gross.verdict is Verdict.REGRESSED and gross.calibration_drift == pytest.approx(0.9)
    assert gross.reason.startswith(
        "throughput significantly beyond the limit (throughput=95%) over 3 runs against 3 recorded (p < 0.0033"
    )
    assert "beyond even the limits the drift of a machine that ran the calibration workload at 0.90x" in gross.reason
    assert "widens them to (throughput=77%, p95=136%, p99=136%)" in gross.reason
    # within the limits a drifted machine is simply judged (nothing to explain away)
    assert compare(ORT, 1, entry(1000, seed=1, calibration=4500.0), baseline, LIMITS).verdict is Verdict.PASS
    assert slower_machine.figures["throughput"][:2] == (1000.0, 880.0)  # the figures are still shown
    # a family whose speed the calibration was not shown to predict is judged at the normal limits
    assert (
        compare("my-server", 1, entry(880, seed=1, calibration=4500.0), baseline, LIMITS).verdict is Verdict.REGRESSED
    )
    # within the tolerance (the throughput limit's 5%), the same slowdown is judged
    same_machine = compare(ORT, 1, entry(880, seed=1, calibration=4900.0), baseline, LIMITS)
    assert same_machine.verdict is Verdict.REGRESSED and same_machine.calibration_drift is None
    # a looser throughput limit tolerates more drift; an absolute limit (an SLA) holds whatever the speed
    loose = parse_thresholds("throughput=85%")
    assert compare(ORT, 1, entry(950, seed=1, calibration=4500.0), baseline, loose).verdict is Verdict.PASS
    sla = parse_thresholds("throughput=950")
    assert compare(ORT, 1, entry(880, seed=1, calibration=4000.0), baseline, sla).verdict is Verdict.REGRESSED
    # the gate: a warning naming the drift, a failure only when a judged baseline is required
    profile, _ = _profile(2.0)
    warned = decide("r", "m.pt2", profile, [slower_machine], judged_against="baselines/m.json")
    assert warned.outcome is Outcome.WARN and "not judged against baselines/m.json" in warned.warning
    required = decide("r", "m.pt2", profile, [slower_machine], require_baseline=True)
    assert (
        required.outcome is Outcome.FAIL and "--navigator-require-baseline needs a judged baseline" in required.message
    )


def test_ab_comparisons_are_paired() -> None:
    # Both sides drift together process by process (a noisy machine); the new one is 8% slower in each.
    drift = np.random.default_rng(3).uniform(0.6, 1.4, 5)

    def side(throughput: float) -> BaselineEntry:
        runs = tuple({"throughput": throughput * d, "p50": 1 / d, "p95": 2 / d, "p99": 3 / d} for d in drift)
        return replace(entry(throughput), runs=runs)

    old, new = side(1000), side(920)
    paired = compare("r", 1, new, old, LIMITS, against="old.pt2")
    assert paired.verdict is Verdict.REGRESSED and paired.against == "A/B against old.pt2"
    assert paired.runs == (5, 5) and paired.mde["throughput"] < 0.05
    unpaired = compare("r", 1, new, old, LIMITS)  # unpaired, the drift between processes hides it
    assert unpaired.verdict is Verdict.INCONCLUSIVE and unpaired.mde["throughput"] > 0.3
    alone = compare(
        "r", 1, replace(new, runs=_got(new.runs)[:1]), replace(old, runs=_got(old.runs)[:1]), LIMITS, against="o"
    )
    assert alone.verdict is Verdict.INCONCLUSIVE and "one run on each side" in alone.reason


def test_comparisons_survive_the_trip_from_an_xdist_worker() -> None:
    from pytest_navigator.gate.verdicts import Comparison

    result = compare("r", 4, entry(800, seed=1, libraries={"torch": "2.14.0"}), entry(1000), LIMITS)
    assert Comparison.from_dict("r", json.loads(json.dumps(result.to_dict()))) == result


def test_a_confirming_update_pools_recordings_and_drops_the_oldest_beyond_the_pool() -> None:
    from pytest_navigator.gate.baselines import POOL_SIZE, pool

    recorded = [entry(900 + 10 * i, seed=i, window_throughputs=[900.0 + i] * 3, profiler={"w": 1}) for i in range(7)]
    merged = recorded[0]
    for new in recorded[1:]:
        merged = pool(merged, new)
    assert len(_got(merged.recordings)) == POOL_SIZE
    kept = recorded[-POOL_SIZE:]
    assert _got(merged.block_throughputs) == pytest.approx(
        [x for e in kept for x in _got(e.block_throughputs)], rel=1e-5
    )
    assert _got(merged.window_throughputs) == pytest.approx([x for e in kept for x in _got(e.window_throughputs)])
    assert merged.throughput == pytest.approx(np.median([e.throughput for e in kept]))
    assert [r["throughput"] for r in _got(merged.recordings)] == [e.throughput for e in kept]


def test_update_pools_only_confirmed_entries_measured_the_same_way(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path)
    key, other = ("hw", "r", 1), ("hw", "r", 2)
    store.update("m.onnx", "f" * 64, {key: entry(1000), other: entry(1000)})
    store.update("m.onnx", "f" * 64, {key: entry(1010, seed=2), other: entry(1010, seed=2)}, pool_keys={key})
    stored = store.load("m.onnx", "f" * 64)
    pooled, replaced = stored.get(key), stored.get(other)
    assert pooled is not None and replaced is not None
    assert len(_got(pooled.recordings)) == 2 and len(_got(pooled.block_throughputs)) == 30
    assert replaced.recordings is None  # not confirmed: today's speed replaces it
    upgraded = entry(1005, seed=3, libraries={"torch": "2.14.0"})
    store.update("m.onnx", "f" * 64, {key: upgraded}, pool_keys={key})
    again = store.load("m.onnx", "f" * 64).get(key)
    assert again is not None and again.recordings is None  # another torch: the pool starts again


def test_pooled_baselines_judge_on_every_recording() -> None:
    from pytest_navigator.gate.baselines import pool

    stored = pool(pool(entry(1000, seed=1), entry(1000, seed=2)), entry(1000, seed=3))
    assert compare("r", 1, entry(1000, seed=4), stored, LIMITS).verdict is Verdict.PASS
    slow = compare("r", 1, entry(850, seed=4), stored, LIMITS)
    assert slow.verdict is Verdict.REGRESSED and slow.figures["throughput"][0] == pytest.approx(1000, rel=1e-3)


def test_the_calibration_score_is_a_median_of_windows_and_never_fails_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_navigator.measure import calibration

    monkeypatch.setattr(calibration, "WINDOWS", 3)
    score = calibration.calibration_score()
    assert score is not None and score > 0

    def broken() -> Any:
        raise RuntimeError("no torch today")

    monkeypatch.setattr(calibration, "_cpu_workload", broken)
    assert calibration.calibration_score() is None


def test_a_different_time_budget_still_pools_but_a_different_window_does_not() -> None:
    from pytest_navigator.gate.baselines import poolable

    old = entry(1000, profiler={"measurement_request_count": 50, "time_budget": 10.0})
    assert poolable(old, entry(1010, seed=2, profiler={"measurement_request_count": 50, "time_budget": None}))
    assert poolable(old, entry(1010, seed=2, profiler={"measurement_request_count": 50}))  # recorded before budgets
    assert not poolable(old, entry(1010, seed=2, profiler={"measurement_request_count": 200, "time_budget": 10.0}))


def test_the_calibration_workload_runs_only_where_its_score_is_used(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny_models: dict[str, Path]
) -> None:
    """About 2 s before and 2 s after every profile: a plain local run, judged against nothing and
    keeping nothing, skips it; a baseline to judge against, an update, normalization or a report run it."""
    import importlib

    from pytest_navigator.runtimes import default_registry
    from pytest_navigator.session import NavigatorSession
    from pytest_navigator.settings import Settings

    # the module the session imports from (sys.modules): pytester runs earlier in the suite may have
    # left the package attribute `pytest_navigator.measure.calibration` pointing at an older copy
    calibration = importlib.import_module("pytest_navigator.measure.calibration")
    calls: list[str] = []

    def score(device: str = "cpu") -> float:
        calls.append(device)
        return 100.0

    monkeypatch.setattr(calibration, "calibration_score", score)
    config = ProfilerConfig(measurement_request_count=5, max_trials=3, stability_percentage=90, batch_sizes=(1,))

    def profile(**settings: Any) -> RuntimeProfile:
        calls.clear()
        session = NavigatorSession(
            Settings(models=(tiny_models[".pt2"],), baselines_dir=tmp_path / "baselines", **settings),
            default_registry(),
        )
        (model,) = session.load_models()
        return session.profile(model, "torch-cpu", config)

    assert profile().calibration is None and calls == []
    for settings in ({"update_baselines": True}, {"normalize": True}, {"report_path": tmp_path / "run.json"}):
        assert profile(**settings).calibration == 100.0 and calls == ["cpu", "cpu"], settings
    session = NavigatorSession(
        Settings(models=(tiny_models[".pt2"],), baselines_dir=tmp_path / "baselines"), default_registry()
    )
    (model,) = session.load_models()
    stored = session.baseline_store.load(model.name, model.fingerprint)
    stored.put((session.hardware("torch-cpu"), "torch-cpu", 1), BaselineEntry())  # any entry to judge against
    (tmp_path / "baselines").mkdir()
    session.baseline_store.path_for(model.name, model.fingerprint).write_text(stored.dumps())
    assert profile().calibration == 100.0 and calls == ["cpu", "cpu"]


def _pooled(*recordings: BaselineEntry) -> BaselineEntry:
    from pytest_navigator.gate.baselines import pool

    merged = recordings[0]
    for new in recordings[1:]:
        merged = pool(merged, new)
    return merged


def test_the_history_pools_runs_and_one_outlier_recording_does_not_reset_it(tmp_path: Path) -> None:
    """Four recordings of an unchanged runtime, runs 10% apart, then one taken on a bad day (15% slow):
    it joins the pool instead of replacing it; the medians keep the baseline where it was, and the
    verdicts after it still judge against every run."""
    from pytest_navigator.gate.baselines import pool
    from pytest_navigator.gate.policy import accepted
    from pytest_navigator.report.results import RuntimeResult, Status

    store, key = BaselineStore(tmp_path), ("hw", "r", 1)
    history = [entry(1000, seed=i, run_spread=0.10) for i in range(4)]
    store.update("m.onnx", "f" * 64, {key: history[0]})
    for recording in history[1:]:
        store.update("m.onnx", "f" * 64, {key: recording}, pool_keys={key})
    stored = store.load("m.onnx", "f" * 64).get(key)
    assert stored is not None and len(_got(stored.recordings)) == 4 and len(_got(stored.runs)) == 12
    outlier = entry(850, seed=9, run_spread=0.10)
    judged = compare("r", 1, outlier, stored, LIMITS)
    assert judged.verdict is Verdict.INCONCLUSIVE and judged.unresolved and judged.runs == (3, 12)
    measured = {key: outlier.to_dict()}
    result = RuntimeResult(Path("m.onnx"), "r", status=Status.PASSED, comparisons=[judged], measured=measured)
    entries, confirmed = accepted([(result.measured, result.comparisons)])
    assert confirmed == {key}  # judged against the stored entry: the recording joins the pool
    store.update("m.onnx", "f" * 64, entries, pool_keys=confirmed)
    after = store.load("m.onnx", "f" * 64).get(key)
    assert after is not None and len(_got(after.recordings)) == 5 and len(_got(after.runs)) == 15
    assert after.throughput == pytest.approx(np.median([1000, 1000, 1000, 1000, 850]))
    assert _got(after.runs)[:12] == _got(stored.runs)
    # a recording 3x slower under the same setup is the machine's day, or an untracked change: it
    # joins the history too, and the disagreement of the recordings then widens the error
    slower = entry(333, seed=10, run_spread=0.10)
    regressed = compare("r", 1, slower, after, LIMITS)
    assert regressed.verdict is Verdict.REGRESSED
    measured = {key: slower.to_dict()}
    result = RuntimeResult(Path("m.onnx"), "r", status=Status.PASSED, comparisons=[regressed], measured=measured)
    assert accepted([(result.measured, result.comparisons)])[1] == {key}
    both = pool(after, slower)
    assert len(_got(both.recordings)) == 5  # bounded: the oldest left
    assert compare("r", 1, entry(333, seed=11, run_spread=0.10), both, LIMITS).verdict is Verdict.INCONCLUSIVE


def test_only_runtimes_that_passed_correctness_in_this_run_are_written(tmp_path: Path) -> None:
    """The session hands the gate's update the runtimes that passed their check in this run (the gate
    takes values, not the run's records); a runtime only built, its check deselected, is not recorded."""
    from types import SimpleNamespace

    from pytest_navigator.report.results import Status
    from pytest_navigator.runtimes import default_registry
    from pytest_navigator.session import NavigatorSession
    from pytest_navigator.settings import Settings

    session = NavigatorSession(Settings(models=(), baselines_dir=tmp_path), default_registry())
    model = SimpleNamespace(path=Path("m.onnx"), name="m.onnx", fingerprint="f" * 64)
    session.models[model.path] = model  # type: ignore[assignment]
    for runtime, status in (("onnxruntime-cpu", Status.PASSED), ("torchscript-cpu", Status.BUILT)):
        record = session.results.result(model.path, runtime)
        record.status, record.measured = status, {("hw", runtime, 2): entry(1000).to_dict()}
    session.update_baselines()
    store = BaselineStore(tmp_path)
    assert list(store.load("m.onnx", "f" * 64).keys()) == [("hw", "onnxruntime-cpu", 2)]
    written = session.results.baseline_updates[model.path]
    assert written.path == store.path_for("m.onnx", "f" * 64) and written.error is None


def test_stale_recordings_leave_the_pool() -> None:
    from pytest_navigator.gate.baselines import STALE_DAYS

    old = entry(1000, seed=1, date="2026-01-01T00:00:00Z")
    recent = entry(1010, seed=2, date="2026-05-01T00:00:00Z")
    now = entry(1020, seed=3, date="2026-05-02T00:00:00Z")
    merged = _pooled(old, recent, now)
    assert STALE_DAYS == 90 and [r["date"] for r in _got(merged.recordings)] == [recent.date, now.date]
    kept = [r["throughput"] for r in [*_got(recent.runs), *_got(now.runs)]]
    assert [r["throughput"] for r in _got(merged.runs)] == pytest.approx(kept, rel=1e-5)


def test_runs_in_a_stored_entry_are_checked() -> None:
    assert entry_problem(entry(1000).to_dict()) is None
    assert entry_problem(entry(1000).to_dict() | {"runs": {"a": 1}}) == "field 'runs' is not a list"
    broken = entry(1000).to_dict()
    broken["runs"][1]["throughput"] = -1.0
    assert entry_problem(broken) == "run 2 of field 'runs' has throughput -1.0; a throughput is a positive number"


def test_an_unresolved_verdict_warns_and_fails_only_when_a_judged_baseline_is_required() -> None:
    """INCONCLUSIVE because the runs cannot resolve the limit is not a failure of the runtime: the
    gate passes with a warning that carries the MDE, unless --navigator-require-baseline asks for a
    judged baseline."""
    from pytest_navigator.gate.policy import Outcome, decide

    noisy = compare("r", 1, entry(950, seed=1, run_spread=0.15), entry(1000, run_spread=0.15), LIMITS)
    assert noisy.verdict is Verdict.INCONCLUSIVE and noisy.unresolved
    profile, _ = _profile(2.0)
    warned = decide("r", "m.pt2", profile, [noisy], judged_against="baselines/m.json")
    assert warned.outcome is Outcome.WARN and "not resolved against baselines/m.json" in warned.warning
    assert "smallest change resolved (MDE, 3 runs against 3): throughput " in warned.warning
    required = decide("r", "m.pt2", profile, [noisy], require_baseline=True)
    assert required.outcome is Outcome.FAIL and "needs a judged baseline" in required.message


def test_entries_keep_each_runs_figures_and_the_median_run_as_the_headline() -> None:
    from dataclasses import replace

    profile, batch = _profile(2.0)
    runs = tuple(
        {"throughput": t, "p50": 2.0, "p95": p, "p99": p} for t, p in ((900.0, 3.0), (1100.0, 2.0), (1000.0, 2.5))
    )
    stored = entry_for(replace(batch, runs=runs), profile, {}, "fp32")
    assert [r["throughput"] for r in _got(stored.runs)] == [900.0, 1100.0, 1000.0]
    assert stored.throughput == 1000.0 and stored.figure("p95") == 2.5
    alone = entry_for(batch, profile, {}, "fp32")  # measured once: its own figures are its one run
    assert alone.to_dict()["runs"] == [{"throughput": 1000.0, "p50": 2.0, "p95": 2.0, "p99": 2.0}]


def test_recordings_that_disagree_widen_the_error_as_one_more_day_would() -> None:
    """Runs of one recording share that day's machine: five recordings alternating 1000 and 1200
    samples/s, each of three tight runs, say the machine moves 20% from day to day. A new group of
    runs 28% above their mean is within that movement: INCONCLUSIVE. Judged as if the 15 runs were
    independent (no recordings kept), the same figures were called IMPROVED."""
    days = [entry(1000 if i % 2 else 1200, seed=i, run_spread=0.005) for i in range(5)]
    stored = _pooled(*days)
    assert stored.recorded_runs == [3] * 5
    today = entry(1400, seed=9, runs=5, run_spread=0.005)
    judged = compare("r", 1, today, stored, LIMITS)
    assert judged.verdict is Verdict.INCONCLUSIVE and judged.runs == (5, 15)
    as_if_independent = compare("r", 1, today, replace(stored, recordings=None), LIMITS)
    assert as_if_independent.verdict is Verdict.IMPROVED
    assert judged.mde["throughput"] > 1.5 * as_if_independent.mde["throughput"]
    # a 3x slowdown is still beyond any day's movement
    assert compare("r", 1, entry(400, seed=9, runs=5, run_spread=0.005), stored, LIMITS).verdict is Verdict.REGRESSED
