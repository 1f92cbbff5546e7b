"""How well each performance gate tells a real 10% slowdown from machine noise.

    python -m harness.bench_detection [--runs 10] [--runtime onnxruntime-cpu] [--slowdown 0.10]

On the demo ResNet (exported to ONNX once): `--recordings` processes record the baseline, as
repeated `--update-baselines` runs do (each one that confirms the stored speed is pooled with it);
then `--runs` processes measure the unchanged runtime and `--runs` processes measure it with a
slowdown injected (real extra CPU work after each request: a busy wait of `slowdown` x the
baseline's p50), alternating unchanged and slowed so both see the same machine drift. Each process
judges its measurement with every gate:

- pytest-benchmark: its `--benchmark-compare-fail=mean:5%` rule on the same measurement (mean
  latency more than 5% above the last recording's), for a side-by-side comparison;
- raw: against the stored baseline (threshold effect + Mann-Whitney significance);
- normalized: the same, after dividing by the calibration workload measured beside it;
- A/B: against a second, unchanged instance of the runtime measured in the same process with
  windows interleaved (paired Wilcoxon), no stored baseline.

Printed per gate: false alarms (REGRESSED on unchanged runs) and detections (REGRESSED on slowed
runs). Separate processes matter: drift between processes is what a stored baseline must survive.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GATES = ("pytest-benchmark", "raw", "normalized", "ab")


def _session(model_path: Path, baselines: Path) -> Any:
    from pytest_navigator.runtimes import default_registry
    from pytest_navigator.session import NavigatorSession
    from pytest_navigator.settings import Settings

    session = NavigatorSession(Settings(models=(model_path,), baselines_dir=baselines), default_registry())
    session.load_models()
    return session


class _Slowed:
    """A runner doing `extra_s` of busy work after each request: a slowdown the CPU really spends."""

    def __init__(self, runner: Any, extra_s: float) -> None:
        self._runner, self._extra = runner, extra_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    def run(self, prepared: Any) -> Any:
        out = self._runner.run(prepared)
        end = time.perf_counter() + self._extra
        while time.perf_counter() < end:
            pass
        return out


def one_run(
    model_path: Path, baselines: Path, runtime: str, extra_s: float, record: bool, config: Any = None
) -> dict[str, Any]:
    """Measure once in this process (the default ProfilerConfig unless `config`); record the
    baseline, or return each gate's verdict."""
    from dataclasses import replace

    from pytest_navigator.baselines import entry_for
    from pytest_navigator.calibration import calibration_score
    from pytest_navigator.profiler import RuntimeProfile, profile_batch, profile_pair
    from pytest_navigator.session import paired_entry
    from pytest_navigator.telemetry import fingerprint
    from pytest_navigator.verdicts import compare, parse_thresholds

    session = _session(model_path, baselines)
    (model,) = session.models.values()
    config = config or session.settings.profiler
    runner = session.runner(model, runtime)
    inputs = session.profiling_inputs(model, 1)
    key = (session.hardware(runtime), runtime, 1)
    measured = _Slowed(runner, extra_s) if extra_s else runner
    before = calibration_score()
    batch = profile_batch(measured, inputs, 1, config)  # type: ignore[arg-type]
    after = calibration_score()
    scores = [s for s in (before, after) if s]
    profile = RuntimeProfile(runtime, (batch,), "", config, sum(scores) / len(scores) if scores else None)
    current = entry_for(batch, profile, fingerprint(), "fp32")
    limits = parse_thresholds(None)
    stored = session.baseline_store.load(model.name, model.fingerprint).get(key)
    if record:  # like --update-baselines: a recording that confirms the stored speed is pooled with it
        confirmed = stored is not None and compare(runtime, 1, current, stored, limits).verdict.value == "pass"
        session.baseline_store.update(model.name, model.fingerprint, {key: current}, {key} if confirmed else set())
        return {"p50_ms": batch.percentile(50), "throughput": batch.throughput, "pooled": confirmed}
    assert stored is not None
    last = (stored.get("recordings") or [stored])[-1]["throughput"]
    verdicts = {
        "pytest-benchmark": "regressed" if 1 / batch.throughput > 1.05 / last else "pass",
        "raw": compare(runtime, 1, current, stored, limits, batch.stable).verdict.value,
        "normalized": compare(runtime, 1, current, stored, limits, batch.stable, normalize=True).verdict.value,
    }
    # a second, independent instance of the same runtime: the "old" side of the A/B pair
    old_runner = session.builds.build(model, runtime)
    new_batch, old_batch = profile_pair(measured, old_runner, inputs, 1, config)  # type: ignore[arg-type]
    pair = replace(profile, batches=(new_batch,))
    verdicts["ab"] = compare(
        runtime,
        1,
        paired_entry(entry_for(new_batch, pair, fingerprint(), "fp32"), new_batch),
        paired_entry(entry_for(old_batch, replace(profile, batches=(old_batch,)), fingerprint(), "fp32"), old_batch),
        limits,
        new_batch.stable,
        against="old",
    ).verdict.value
    session.close()
    return {"verdicts": verdicts, "throughput": batch.throughput, "calibration": profile.calibration}


def _child(args: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "harness.bench_detection", "--child", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="unchanged and slowed runs each")
    parser.add_argument("--runtime", default="onnxruntime-cpu")
    parser.add_argument("--slowdown", type=float, default=0.10)
    parser.add_argument("--recordings", type=int, default=3, help="baseline recordings (pooled when they agree)")
    parser.add_argument(
        "--child", nargs=5, metavar=("MODEL", "BASELINES", "RUNTIME", "EXTRA_S", "RECORD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        model, baselines, runtime, extra, record = args.child
        print(json.dumps(one_run(Path(model), Path(baselines), runtime, float(extra), record == "1")))
        return
    from harness import zoo

    with tempfile.TemporaryDirectory(prefix="bench-detection-") as folder:
        model = Path(folder) / "resnet.onnx"
        zoo.main(["resnet", "--out", str(model)])
        baselines = Path(folder) / "baselines"
        for _ in range(args.recordings):
            recorded = _child([str(model), str(baselines), args.runtime, "0", "1"])
            print(
                f"  recording: {recorded['throughput']:.1f} samples/s, pooled with the stored ones: {recorded['pooled']}"
            )
        extra = args.slowdown * recorded["p50_ms"] / 1000
        print(
            f"baseline: {args.runtime} batch 1, p50 {recorded['p50_ms']:.3f} ms, {recorded['throughput']:.1f} samples/s; "
            f"injected slowdown: {extra * 1e6:.0f} us busy work per request ({args.slowdown:.0%} of p50)"
        )
        outcomes: dict[str, list[dict[str, Any]]] = {"unchanged": [], "slowed": []}
        for run in range(args.runs):
            for condition, seconds in (("unchanged", 0.0), ("slowed", extra)):
                found = _child([str(model), str(baselines), args.runtime, repr(seconds), "0"])
                outcomes[condition].append(found)
                print(
                    f"  run {run + 1} {condition:9s}: {found['throughput']:8.1f} samples/s, verdicts {found['verdicts']}"
                )
        print(f"{args.runs} unchanged and {args.runs} slowed runs, each in its own process:")
        for gate in GATES:
            alarms = sum(o["verdicts"][gate] == "regressed" for o in outcomes["unchanged"])
            caught = sum(o["verdicts"][gate] == "regressed" for o in outcomes["slowed"])
            print(
                f"  {gate:16s}: false alarms {alarms}/{args.runs} ({alarms / args.runs:.0%}), "
                f"detected {caught}/{args.runs} ({caught / args.runs:.0%})"
            )


if __name__ == "__main__":
    main()
