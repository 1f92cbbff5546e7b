"""How well each performance gate tells a real 10% slowdown from machine noise.

    python -m harness.bench_detection [--runs 10] [--runtime onnxruntime-cpu] [--slowdown 0.10]
                                      [--architecture bert] [--hog]

On the demo ResNet (exported to ONNX once), or with `--architecture` a real one from
harness/architectures.py (transformers' BERT and GPT-2, torchvision's MobileNetV3-Small and
ResNet-18, seeded weights with BatchNorm statistics re-estimated, saved as .pt2): `--recordings` processes record the baseline, as
repeated `--update-baselines` runs do (each one that confirms the stored speed is pooled with it);
then `--runs` processes measure the unchanged runtime and `--runs` processes measure it with a
slowdown injected (real extra CPU work after each request: a busy wait of `slowdown` x the
baseline's p50), alternating unchanged and slowed so both see the same machine drift. Each process
judges its measurement with every gate:

- pytest-benchmark: its `--benchmark-compare-fail=mean:5%` rule on the same measurement (mean
  latency more than 5% above the last recording's), for a side-by-side comparison;
- raw: against the stored baseline (Mann-Whitney: is the run significantly beyond the threshold?);
- raw (old rule): the same measurement judged by the rule before: an effect past the threshold plus
  any significant difference (so a run that differs at all, and lands 1% past the limit, regressed);
- normalized: the same, after dividing by the calibration workload measured beside it;
- A/B: against a second, unchanged instance of the runtime measured in the same process with
  windows interleaved (paired Wilcoxon), no stored baseline; and "ab (old rule)" as for raw;
- instructions (`--instructions`): instructions per request counted under callgrind in 3
  processes (--navigator-mode=instructions), against the count recorded first.

With `--work matmul` the injected slowdown is real computation instead of a busy wait: k 64x64
float32 matmuls per request, k chosen so they take `slowdown` x p50 natively. Every gate sees the
same change; the instruction gate is only meaningful with it (a busy wait's instruction count
depends on how fast the loop runs).

`--hog` runs a busy loop pinned to one core beside every process (recordings included), as a
shared CI runner's neighbour would: what a user of a busy machine sees.

Printed per gate: false alarms (REGRESSED on unchanged runs) and detections (REGRESSED on slowed
runs). Separate processes matter: drift between processes is what a stored baseline must survive.
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

GATES = ("pytest-benchmark", "raw (old rule)", "raw", "normalized", "ab (old rule)", "ab")
#: The side of the matrices `--work matmul` multiplies.
SIDE = 64


def _session(model_path: Path, baselines: Path) -> Any:
    from pytest_navigator.runtimes import default_registry
    from pytest_navigator.session import NavigatorSession
    from pytest_navigator.settings import Settings

    session = NavigatorSession(Settings(models=(model_path,), baselines_dir=baselines), default_registry())
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
    from pytest_navigator.baselines import entry_for
    from pytest_navigator.config import MeasurementMode
    from pytest_navigator.telemetry import fingerprint
    from pytest_navigator.verdicts import compare, parse_thresholds

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


def one_run(
    model_path: Path,
    baselines: Path,
    runtime: str,
    extra_s: float,
    record: bool,
    config: Any = None,
    matmuls: bool = False,
    instructions: bool = False,
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
    measured = _Slowed(runner, extra_s, matmuls) if extra_s else runner
    counted = count_verdict(session, model, runtime, int(extra_s), record) if instructions else None
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
        return {"p50_ms": batch.percentile(50), "throughput": batch.throughput, "pooled": confirmed, "counted": counted}
    assert stored is not None
    last = (stored.get("recordings") or [stored])[-1]["throughput"]
    verdicts = {
        "pytest-benchmark": "regressed" if 1 / batch.throughput > 1.05 / last else "pass",
        "raw": compare(runtime, 1, current, stored, limits, batch.stable).verdict.value,
        "raw (old rule)": compare(
            runtime, 1, current, stored, limits, batch.stable, significance="difference"
        ).verdict.value,
        "normalized": compare(runtime, 1, current, stored, limits, batch.stable, normalize=True).verdict.value,
    }
    # a second, independent instance of the same runtime: the "old" side of the A/B pair
    old_runner = session.builds.build(model, runtime)
    new_batch, old_batch = profile_pair(measured, old_runner, inputs, 1, config)  # type: ignore[arg-type]
    pair = replace(profile, batches=(new_batch,))
    new_entry = paired_entry(entry_for(new_batch, pair, fingerprint(), "fp32"), new_batch)
    old_entry = paired_entry(
        entry_for(old_batch, replace(profile, batches=(old_batch,)), fingerprint(), "fp32"), old_batch
    )
    for gate, rule in (("ab", "beyond-limit"), ("ab (old rule)", "difference")):
        verdicts[gate] = compare(
            runtime, 1, new_entry, old_entry, limits, new_batch.stable, against="old", significance=rule
        ).verdict.value
    session.close()
    if counted is not None:
        verdicts["instructions"] = counted["verdict"]
    return {
        "verdicts": verdicts,
        "throughput": batch.throughput,
        "calibration": profile.calibration,
        "counted": counted,
    }


def _child(args: list[str], flags: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "harness.bench_detection", *flags, "--child", *args],
        capture_output=True,
        text=True,
        check=False,
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
    parser.add_argument("--work", choices=("wait", "matmul"), default="wait", help="the injected slowdown")
    parser.add_argument(
        "--instructions", action="store_true", help="add the instruction-count gate (needs --work matmul)"
    )
    parser.add_argument(
        "--architecture",
        default="resnet",
        help="resnet (the demo zoo's, as ONNX) or a name from harness.architectures.REAL (as .pt2)",
    )
    parser.add_argument("--hog", action="store_true", help="a busy loop on one core beside every process")
    parser.add_argument(
        "--child", nargs=5, metavar=("MODEL", "BASELINES", "RUNTIME", "EXTRA", "RECORD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.instructions and args.work != "matmul":
        parser.error("--instructions needs --work matmul: a busy wait's instruction count depends on the loop's speed")
    if args.child:
        model, baselines, runtime, extra, record = args.child
        found = one_run(
            Path(model),
            Path(baselines),
            runtime,
            float(extra),
            record == "1",
            matmuls=args.work == "matmul",
            instructions=args.instructions,
        )
        print(json.dumps(found))
        return
    flags = ["--work", args.work] + (["--instructions"] if args.instructions else [])
    from harness import architectures, zoo
    from harness.bench_walltime import hog

    if args.architecture != "resnet" and args.architecture not in architectures.REAL:
        parser.error(f"--architecture: unknown {args.architecture}; accepted: resnet, {', '.join(architectures.REAL)}")
    with tempfile.TemporaryDirectory(prefix="bench-detection-") as folder, hog(args.hog):
        if args.architecture == "resnet":
            model = Path(folder) / "resnet.onnx"
            zoo.main(["resnet", "--out", str(model)])
        else:
            model = architectures.write(
                architectures.REAL[args.architecture], 0, Path(folder) / f"{args.architecture}.pt2"
            )
        print(f"{args.architecture} on {args.runtime}{', a busy loop on one core beside it' if args.hog else ''}")
        baselines = Path(folder) / "baselines"
        for _ in range(args.recordings):
            recorded = _child([str(model), str(baselines), args.runtime, "0", "1"], flags)
            print(
                f"  recording: {recorded['throughput']:.1f} samples/s, pooled with the stored ones: {recorded['pooled']}"
            )
        extra = args.slowdown * recorded["p50_ms"] / 1000
        if args.work == "matmul":
            each = _matmul_seconds()
            extra = max(1, round(extra / each))
            work = f"{extra} {SIDE}x{SIDE} matmuls per request ({extra * each * 1e6:.0f} us natively, {args.slowdown:.0%} of p50)"
        else:
            work = f"{extra * 1e6:.0f} us busy work per request ({args.slowdown:.0%} of p50)"
        counted = (
            f"; {recorded['counted']['instructions']:,.0f} instructions per request" if recorded.get("counted") else ""
        )
        print(
            f"baseline: {args.runtime} batch 1, p50 {recorded['p50_ms']:.3f} ms, {recorded['throughput']:.1f} samples/s"
            f"{counted}; injected slowdown: {work}"
        )
        outcomes: dict[str, list[dict[str, Any]]] = {"unchanged": [], "slowed": []}
        for run in range(args.runs):
            for condition, seconds in (("unchanged", 0.0), ("slowed", extra)):
                found = _child([str(model), str(baselines), args.runtime, repr(seconds), "0"], flags)
                outcomes[condition].append(found)
                print(
                    f"  run {run + 1} {condition:9s}: {found['throughput']:8.1f} samples/s, verdicts {found['verdicts']}"
                )
        print(f"{args.runs} unchanged and {args.runs} slowed runs, each in its own process:")
        for gate in GATES + (("instructions",) if args.instructions else ()):
            alarms = sum(o["verdicts"][gate] == "regressed" for o in outcomes["unchanged"])
            caught = sum(o["verdicts"][gate] == "regressed" for o in outcomes["slowed"])
            print(
                f"  {gate:16s}: false alarms {alarms}/{args.runs} ({alarms / args.runs:.0%}), "
                f"detected {caught}/{args.runs} ({caught / args.runs:.0%})"
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
