"""How well each performance gate tells real slowdowns from run-to-run noise, across fresh processes.

    python -m harness.bench_detection [--architecture bert] [--runtime onnxruntime-cpu] [--runs 10]
                                      [--processes 3] [--recordings 2] [--slowdowns 0.1,0.25,2]
                                      [--work wait|matmul] [--hog]

On the demo ResNet (exported to ONNX once), or with `--architecture` a real one from
harness/architectures.py (transformers' BERT and GPT-2, torchvision's MobileNetV3-Small and
ResNet-18, seeded weights with BatchNorm statistics re-estimated, saved as .pt2), at batch 1.

Every measurement is one fresh process (the run is the unit of evidence): it builds the runtime
(from a shared artifact cache), measures it unchanged and with each slowdown injected (real extra
CPU work after each request: a busy wait of `slowdown` x the recorded p50, or `--work matmul`'s
64x64 matmuls), each with the default profiler, and each once more beside a second, unchanged
instance window by window (the A/B side). First `--recordings` x `--processes` processes record the
baseline, as that many `--update-baselines` runs would (a recording that confirms the stored speed
pools with it); then `--runs` verdicts, each from `--processes` new processes, judge every
condition. Gates, each scored on the same processes:

- stored (runs): the plugin's stored gate: the verdict's runs against the pooled recordings' runs;
- A/B (runs): the plugin's `--navigator-against`: per-process ratios of the two sides;
- stored (windows, before): the rule before, per process: its windows' blocks against the stored
  blocks (Mann-Whitney) - what this bench measured before the run became the unit;
- pytest-benchmark `mean:5%`: per process, its mean latency more than 5% above the last
  recording's mean, the peer's `--benchmark-compare-fail=mean:5%` rule.

The per-process gates judge `--runs` x `--processes` comparisons per condition, the run gates
`--runs`. Printed per gate and condition: REGRESSED or IMPROVED verdicts (false alarms when
unchanged; detections when slowed), INCONCLUSIVE ones, and the median MDE of the run gates. Also the
correlation, over the processes, of the calibration workload's score with the runtime's unchanged
throughput: whether the machine's measured speed predicts the runtime's.

`--hog` runs a busy loop pinned to one core beside every process (recordings included), as a
shared CI runner's neighbour would: what a user of a busy machine sees.

The instruction gate is measured by harness/bench_counts.py (valgrind, separate processes).
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from pytest_navigator.runtimes.base import Runner, RuntimeDefinition

#: The side of the matrices `--work matmul` multiplies.
SIDE = 64


def _session(model_path: Path, baselines: Path, cache: Path | None = None) -> Any:
    from pytest_navigator.runtimes import default_registry
    from pytest_navigator.session import NavigatorSession
    from pytest_navigator.settings import Settings

    settings = Settings(models=(model_path,), baselines_dir=baselines, cache_dir=cache)
    session = NavigatorSession(settings, default_registry())
    session.load_models()
    return session


class _Slowed:
    """A runner doing extra work after each request: `extra` seconds of busy waiting, or (a whole
    number with `matmuls`) that many SIDE x SIDE matmuls: a slowdown the CPU really spends."""

    def __init__(self, runner: Any, extra: float, matmuls: bool = False) -> None:
        self._runner, self._extra, self._matmuls = runner, extra, matmuls
        self._square = np.ones((SIDE, SIDE), np.float32)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._runner, name)

    def run(self, prepared: Any) -> Any:
        out = self._runner.run(prepared)
        if self._matmuls:
            for _ in range(int(self._extra)):
                self._square @ self._square
            return out
        end = time.perf_counter() + self._extra
        while time.perf_counter() < end:
            pass
        return out


class Padded(Runner):
    """A runtime plus `count` SIDE x SIDE matmuls per request, as a Runner (built in a worker process
    under callgrind for the instruction gate: the same work _Slowed adds to the timed gates)."""

    def __init__(self, inner: Runner, count: int) -> None:
        super().__init__(inner.runtime, inner.input_spec, inner.output_names, inner.device)
        self.inner, self.count = inner, count
        self._square = np.ones((SIDE, SIDE), np.float32)

    def infer(self, sample: Any) -> Any:
        return self.inner.infer(sample)

    def prepare(self, sample: Any) -> Any:
        return self.inner.prepare(sample)

    def run(self, prepared: Any) -> Any:
        for _ in range(self.count):
            self._square @ self._square
        return self.inner.run(prepared)


def padded_definition(base: RuntimeDefinition, count: int) -> RuntimeDefinition:
    """`base` with `count` extra matmuls per request, registered as `base`-padded."""
    return replace(base, name=f"{base.name}-padded", build=functools.partial(_build_padded, base.build, count))


def _build_padded(build: Any, count: int, model: Any, ctx: Any) -> Runner:
    return Padded(build(model, ctx), count)


def count_verdict(session: Any, model: Any, runtime: str, count: int, record: bool) -> dict[str, Any]:
    """The instruction gate: count `runtime` plus `count` matmuls per request under callgrind; record
    the first count as the baseline, or judge against it."""
    from harness import bench_detection  # by its import name, not __main__: the worker imports it
    from pytest_navigator.config import MeasurementMode
    from pytest_navigator.gate.baselines import entry_for
    from pytest_navigator.gate.thresholds import parse_thresholds
    from pytest_navigator.gate.verdicts import compare
    from pytest_navigator.measure.telemetry import fingerprint

    definition = bench_detection.padded_definition(session.registry.get(runtime), count)
    session.registry.register(definition)
    config = replace(session.settings.profiler, measurement_mode=MeasurementMode.INSTRUCTIONS, batch_sizes=(1,))
    profile = session.count_instructions(model, definition.name, config)
    (batch,) = profile.batches
    facts = fingerprint()
    current = entry_for(batch, profile, facts, "fp32")
    key = (session.hardware(runtime, True), runtime, 1)
    store = session.baseline_store
    if record:
        if store.load(model.name, model.fingerprint).get(key) is None:
            store.update(model.name, model.fingerprint, {key: current})
        return {"instructions": batch.instructions_per_request}
    stored = store.load(model.name, model.fingerprint).get(key)
    verdict = compare(runtime, 1, current, stored, parse_thresholds(None), batch.stable).verdict.value
    return {"instructions": batch.instructions_per_request, "verdict": verdict}


def one_process(
    model_path: Path,
    baselines: Path,
    cache: Path,
    runtime: str,
    extras: dict[str, float],
    matmuls: bool = False,
    config: Any = None,
    pairs: bool = True,
) -> dict[str, Any]:
    """One process's measurements: for each condition (name -> extra seconds, or matmuls per request),
    the runtime's figures and its timed entry alone, and (with `pairs`) its figures beside a second,
    unchanged instance; plus the calibration workload's score."""
    from pytest_navigator.gate.baselines import entry_for
    from pytest_navigator.measure.calibration import calibration_score
    from pytest_navigator.measure.profiler import RuntimeProfile, profile_batch, profile_pair
    from pytest_navigator.measure.telemetry import fingerprint

    session = _session(model_path, baselines, cache)
    try:
        (model,) = session.models.values()
        config = config or session.settings.profiler
        runner = session.runner(model, runtime)
        other = session.builds.build(model, runtime, isolated=False) if pairs else None
        inputs = session.profiling_inputs(model, 1)
        calibration = calibration_score()
        found: dict[str, Any] = {"calibration": calibration, "conditions": {}}
        for name, extra in extras.items():
            measured = _Slowed(runner, extra, matmuls) if extra else runner
            batch = profile_batch(measured, inputs, 1, config)  # type: ignore[arg-type]
            profile = RuntimeProfile(runtime, (batch,), "", config, calibration)
            condition: dict[str, Any] = {
                "stable": batch.stable,
                "figures": batch.figures(),
                "mean_ms": float(np.mean([ms for w in batch.windows for ms in w.latencies_ms])),
                "entry": entry_for(batch, profile, fingerprint(), "fp32").to_dict(),
            }
            if other is not None:
                new, old = profile_pair(measured, other, inputs, 1, config)  # type: ignore[arg-type]
                condition["pair"] = {"new": new.figures(), "old": old.figures()}
            found["conditions"][name] = condition
        return found
    finally:
        session.close()


def _child(args: list[str], flags: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "harness.bench_detection", *flags, "--child", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def _entry(processes: list[dict[str, Any]], condition: str) -> dict[str, Any] | None:
    """The timed entry a run of these processes stores: the first one's, with every process's figures."""
    measured = [p["conditions"][condition] for p in processes if p["conditions"][condition]["stable"]]
    if not measured:
        return None
    runs = [m["figures"] for m in measured]
    return measured[0]["entry"] | {
        "runs": runs,
        "throughput": float(np.median([r["throughput"] for r in runs])),
        "latency_ms": {
            **measured[0]["entry"]["latency_ms"],
            **{q: float(np.median([r[q] for r in runs])) for q in ("p50", "p95", "p99")},
        },
    }


def _pair_entries(processes: list[dict[str, Any]], condition: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The A/B run's two sides: per process, the new and the old instance's figures (paired by index)."""
    pairs = [p["conditions"][condition]["pair"] for p in processes]

    def side(name: str) -> dict[str, Any]:
        runs = [pair[name] for pair in pairs]
        latency = {q: float(np.median([r[q] for r in runs])) for q in ("p50", "p95", "p99")}
        return {
            "throughput": float(np.median([r["throughput"] for r in runs])),
            "latency_ms": latency | {"p90": 0.0},
            "runs": runs,
        }

    return side("new"), side("old")


def record(stored: dict[str, Any] | None, recording: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """What --update-baselines stores after `recording`: pooled with `stored` when it was measured the
    same way (gate.accepted's rule: any judged recording joins the history), else `recording` alone."""
    from pytest_navigator.gate.baselines import pool, poolable
    from pytest_navigator.gate.entries import BaselineEntry

    if stored is None:
        return recording, False
    old, new = BaselineEntry.from_dict(stored), BaselineEntry.from_dict(recording)
    return (pool(old, new).to_dict(), True) if poolable(old, new) else (recording, False)


def judge_group(
    stored: dict[str, Any], last_mean_ms: float, group: list[dict[str, Any]], condition: str
) -> dict[str, Any]:
    """Every gate's verdicts on one group of processes for one condition."""
    from pytest_navigator.gate.thresholds import parse_thresholds
    from pytest_navigator.gate.verdicts import compare

    limits = parse_thresholds(None)
    found: dict[str, Any] = {}
    current = _entry(group, condition)
    runs = compare("r", 1, current, stored, limits) if current is not None else None
    found["stored (runs)"] = [runs.verdict.value if runs else "inconclusive"]
    found["mde stored"] = runs.mde.get("throughput") if runs else None
    if all("pair" in p["conditions"][condition] for p in group):
        new, old = _pair_entries(group, condition)
        ab = compare("r", 1, new, old, limits, against="old")
        found["A/B (runs)"] = [ab.verdict.value]
        found["mde A/B"] = ab.mde.get("throughput")
    windows, peer = [], []
    for process in group:
        measured = process["conditions"][condition]
        windows.append(
            compare("r", 1, measured["entry"], stored, limits, measured["stable"], unit="window").verdict.value
        )
        peer.append("regressed" if measured["mean_ms"] > 1.05 * last_mean_ms else "pass")
    found["stored (windows, before)"] = windows
    found["pytest-benchmark mean:5%"] = peer
    return found


GATES = ("stored (runs)", "A/B (runs)", "stored (windows, before)", "pytest-benchmark mean:5%")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="verdicts per condition")
    parser.add_argument("--processes", type=int, default=3, help="fresh processes per verdict and per recording")
    parser.add_argument("--recordings", type=int, default=2, help="baseline recordings (pooled when they agree)")
    parser.add_argument("--runtime", default="onnxruntime-cpu")
    parser.add_argument("--slowdowns", default="0.1,0.25,2", help="injected slowdowns, as fractions of p50 (2: 3x)")
    parser.add_argument("--work", choices=("wait", "matmul"), default="wait", help="the injected slowdown")
    parser.add_argument(
        "--architecture",
        default="resnet",
        help="resnet (the demo zoo's, as ONNX) or a name from harness.architectures.REAL (as .pt2)",
    )
    parser.add_argument("--hog", action="store_true", help="a busy loop on one core beside every process")
    parser.add_argument("--no-pairs", action="store_true", help="skip the A/B side (half the time)")
    parser.add_argument(
        "--child", nargs=5, metavar=("MODEL", "BASELINES", "CACHE", "RUNTIME", "EXTRAS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        model, baselines, cache, runtime, extras = args.child
        found = one_process(
            Path(model), Path(baselines), Path(cache), runtime, json.loads(extras), args.work == "matmul",
            pairs=not args.no_pairs,
        )  # fmt: skip
        print(json.dumps(found))
        return
    from harness import architectures, zoo
    from harness.bench_walltime import hog

    if args.architecture != "resnet" and args.architecture not in architectures.REAL:
        parser.error(f"--architecture: unknown {args.architecture}; accepted: resnet, {', '.join(architectures.REAL)}")
    try:
        slowdowns = [float(x) for x in args.slowdowns.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--slowdowns={args.slowdowns!r}: give fractions of p50 separated by commas, e.g. 0.1,0.25,2")
    flags = ["--work", args.work] + (["--no-pairs"] if args.no_pairs else [])
    with tempfile.TemporaryDirectory(prefix="bench-detection-") as folder, hog(args.hog):
        if args.architecture == "resnet":
            model = Path(folder) / "resnet.onnx"
            zoo.main(["resnet", "--out", str(model)])
        else:
            model = architectures.write(
                architectures.REAL[args.architecture], 0, Path(folder) / f"{args.architecture}.pt2"
            )
        busy = ", a busy loop on one core beside it" if args.hog else ""
        print(f"{args.architecture} on {args.runtime}, batch 1{busy}; {args.processes} processes per run")
        base = [str(model), str(Path(folder) / "baselines"), str(Path(folder) / "cache"), args.runtime]
        started = time.perf_counter()
        stored: dict[str, Any] | None = None
        every: list[dict[str, Any]] = []
        for number in range(args.recordings):
            group = [
                _child([*base, json.dumps({"unchanged": 0.0})], [*flags, "--no-pairs"]) for _ in range(args.processes)
            ]
            every += group
            recording = _entry(group, "unchanged")
            if recording is None:
                print(f"  recording {number + 1}: unstable in every process; not stored")
                continue
            stored, pooled = record(stored, recording)
            last_mean = float(np.mean([p["conditions"]["unchanged"]["mean_ms"] for p in group]))
            shown = ", ".join(f"{r['throughput']:.1f}" for r in recording["runs"])
            print(f"  recording {number + 1}: runs {shown} samples/s; pooled with the stored ones: {pooled}")
        assert stored is not None, "no recording was stable"
        p50 = float(np.median([r["p50"] for r in stored["runs"]])) / 1000
        if args.work == "matmul":
            each = _matmul_seconds()
            extras = {"unchanged": 0.0, **{f"+{s:.0%}": float(max(1, round(s * p50 / each))) for s in slowdowns}}
        else:
            extras = {"unchanged": 0.0, **{f"+{s:.0%}": s * p50 for s in slowdowns}}
        print(f"baseline: {len(stored['runs'])} runs, median p50 {p50 * 1000:.3f} ms; conditions {extras}")
        verdicts: dict[str, dict[str, list[str]]] = {c: {g: [] for g in GATES} for c in extras}
        mdes: dict[str, list[float]] = {"stored": [], "A/B": []}
        for run in range(args.runs):
            group = [_child([*base, json.dumps(extras)], flags) for _ in range(args.processes)]
            every += group
            for condition in extras:
                found = judge_group(stored, last_mean, group, condition)
                for gate in GATES:
                    verdicts[condition][gate] += found.get(gate, [])
                if condition == "unchanged":
                    for side in ("stored", "A/B"):
                        if found.get(f"mde {side}") is not None:
                            mdes[side].append(found[f"mde {side}"])
            line = "; ".join(
                f"{c} {verdicts[c]['stored (runs)'][-1]}/{(verdicts[c]['A/B (runs)'] or ['-'])[-1]}" for c in extras
            )
            print(f"  run {run + 1}: stored/A-B {line}", flush=True)
        print(f"{args.runs} runs of {args.processes} processes ({time.perf_counter() - started:.0f} s in all):")
        for gate in GATES:
            cells = []
            for condition in extras:
                said = verdicts[condition][gate]
                if not said:
                    continue
                word = "false alarms" if condition == "unchanged" else "caught"
                hits = (
                    sum(v in ("regressed", "improved") for v in said)
                    if condition == "unchanged"
                    else sum(v == "regressed" for v in said)
                )
                unsure = sum(v == "inconclusive" for v in said)
                cells.append(f"{condition}: {word} {hits}/{len(said)}, inconclusive {unsure}")
            print(f"  {gate:26s} " + "; ".join(cells))
        for side, values in mdes.items():
            if values:
                finite = [v for v in values if np.isfinite(v)]
                print(
                    f"  MDE {side} (unchanged runs): median {np.median(finite):.1%} of {len(finite)}" if finite else ""
                )
        print(calibration_line(every))


def calibration_line(processes: list[dict[str, Any]]) -> str:
    """Whether the calibration workload's score predicts the runtime's unchanged throughput, process by
    process (Pearson on the logs, scipy)."""
    from scipy import stats

    pairs = [
        (p["calibration"], p["conditions"]["unchanged"]["figures"]["throughput"])
        for p in processes
        if p.get("calibration") and p["conditions"]["unchanged"]["stable"]
    ]
    if len(pairs) < 3:
        return "calibration: too few processes to correlate"
    calibration, throughput = np.log(np.array(pairs)).T
    found = stats.pearsonr(calibration, throughput)
    spread = float(np.std(throughput, ddof=1))
    return (
        f"calibration vs throughput over {len(pairs)} processes: Pearson r {found.statistic:+.2f} "
        f"(p {found.pvalue:.2g}); runtime's spread between processes {spread:.1%} (sd of log), "
        f"calibration's {float(np.std(calibration, ddof=1)):.1%}"
    )


def _matmul_seconds() -> float:
    """Native seconds of one SIDE x SIDE float32 matmul (median of 20 batches of 200)."""
    square = np.ones((SIDE, SIDE), np.float32)
    times = []
    for _ in range(20):
        started = time.perf_counter()
        for _ in range(200):
            square @ square
        times.append((time.perf_counter() - started) / 200)
    return float(np.median(times))


if __name__ == "__main__":
    main()
