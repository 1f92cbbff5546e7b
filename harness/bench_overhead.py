"""What the profiler's own bookkeeping costs: its measured throughput against a bare loop.

    python -m harness.bench_overhead [--rounds 15] [--targets-us 1000,100]

For each target request time (default ~1 ms and ~100 us), a runner does real single-threaded
numpy work (tanh over distinct float32 samples, sized to the target) and, in one process, rounds
alternate between the profiler (`profile_batch`, default ProfilerConfig: warm-up, 50-request
windows until stable) and a bare Python loop calling the same runner on the same inputs for the
same number of requests (after the same warm-up), in A B B A order. Each round's ratio is profiler
throughput over bare-loop throughput; the median over rounds is printed next to its target (>= 0.99 for 1 ms,
>= 0.97 for 100 us). Interleaving makes the two see the same machine state, so the ratio is
meaningful on a noisy machine where either throughput alone is not.

With process isolation (the plugin's default, pytest_navigator/workers/isolation.py) the profiler runs in
the runtime's worker process and reports progress over a pipe between windows; `--isolated`
measures that path too: the same rounds, with the profiler's side run by the executor of a
WorkerRunner (measure/executor.py).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_navigator.check.strategies import random_samples
from pytest_navigator.config import ProfilerConfig, Sample
from pytest_navigator.measure.executor import executor_for
from pytest_navigator.measure.profiler import profile_batch
from pytest_navigator.model.spec import parse_io_spec
from pytest_navigator.runtimes.base import CallableRunner

if TYPE_CHECKING:
    from pytest_navigator.runtimes.remote import WorkerRunner

#: Targets the issue sets for the ratio, by target request time in microseconds.
TARGETS = {1000: 0.99, 100: 0.97}
ROW = 1024  # elements per batch row


def tanh_runner(batch: int) -> CallableRunner:
    """A runner doing `np.tanh` over a float32[batch, ROW] input: real, single-threaded work."""
    spec = parse_io_spec([f"x:float32[N,{ROW}]"], "bench")
    return CallableRunner("tanh", lambda sample: {"y": np.tanh(sample["x"])}, spec)


def calibrate(target_us: float) -> int:
    """The batch size whose tanh request takes about target_us here: measured, rescaled, measured again."""
    rng = np.random.default_rng(0)
    batch = 64
    for _ in range(3):
        probe = rng.standard_normal((batch, ROW), dtype=np.float32)
        timings = []
        for _ in range(30):
            started = time.perf_counter()
            np.tanh(probe)
            timings.append(time.perf_counter() - started)
        batch = max(1, round(batch * target_us / (statistics.median(timings) * 1e6)))
    return batch


def _build_tanh(model: object, ctx: object, batch: int) -> CallableRunner:
    return tanh_runner(batch)


def isolated_tanh(batch: int) -> WorkerRunner:
    """The tanh runner built in its own worker process, as --navigator-isolation=process builds runtimes."""
    import functools
    from types import SimpleNamespace

    from pytest_navigator.runtimes.base import BuildContext, RuntimeDefinition
    from pytest_navigator.runtimes.remote import WorkerRunner
    from pytest_navigator.workers.isolation import Timeouts, Worker

    spec = tanh_runner(batch).input_spec
    model = SimpleNamespace(path=Path(f"tanh-{batch}"), name="tanh", io_spec=spec)
    definition = RuntimeDefinition("tanh", functools.partial(_build_tanh, batch=batch))
    context = BuildContext(Path(tempfile.gettempdir()), {})
    return WorkerRunner.build(Worker("tanh", Timeouts()), definition, model, context, "tanh")


def bare_loop(runner: CallableRunner, inputs: list[Sample], requests: int, batch: int) -> float:
    """Throughput (samples/s) of the simplest honest loop: a short warm-up, then `requests` calls."""
    for sample in inputs[:3]:
        runner.infer(sample)
    started = time.perf_counter_ns()
    for index in range(requests):
        runner.infer(inputs[index % len(inputs)])
    return requests * batch / ((time.perf_counter_ns() - started) / 1e9)


def compare(target_us: float, rounds: int, config: ProfilerConfig, isolated: bool = False) -> dict[str, float]:
    """Interleaved rounds of profiler and bare loop; medians of throughputs and of per-round ratios.
    `isolated`: the profiler measures in a worker process (the bare loop stays here)."""
    batch = calibrate(target_us)
    runner = tanh_runner(batch)
    inputs = random_samples(runner.input_spec, [batch], per_batch=8, seed=batch)
    worker = isolated_tanh(batch) if isolated else None

    def profiled_batch() -> Any:
        if worker is None:
            return profile_batch(runner, inputs, batch, config)
        profile, _ = executor_for(worker, runner.input_spec).measure(config, [batch])
        return profile.batches[0]

    profiled, bare, ratios, latencies = [], [], [], []
    for _ in range(rounds):  # A B B A: a drift within the round cancels out of its ratio
        first = profiled_batch()
        requests = sum(len(first.windows[i].latencies_ms) for i in first.stable_windows) or len(inputs)
        loops = [bare_loop(runner, inputs, requests, batch) for _ in range(2)]
        second = profiled_batch()
        measured = (first.throughput + second.throughput) / 2
        profiled.append(measured)
        bare.append(sum(loops) / 2)
        ratios.append(measured / bare[-1])
        latencies.append(first.percentile(50) * 1000)
    if worker is not None:
        worker.worker.close()
    return {
        "batch": batch,
        "p50_us": statistics.median(latencies),
        "profiler": statistics.median(profiled),
        "bare": statistics.median(bare),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
    }


def bookkeeping_us(requests: int = 20000, rounds: int = 3) -> float:
    """The profiler's own cost per request, in microseconds: a do-nothing runner timed by the profiler
    minus the same runner in a bare loop (median of rounds). The ratio above cannot be better than
    what this implies, and on a noisy machine it is the sharper figure."""
    runner = CallableRunner("noop", lambda sample: sample, parse_io_spec(["x:float32[N,4]"], "bench"))
    inputs = [{"x": np.full((1, 4), i, np.float32)} for i in range(8)]
    config = ProfilerConfig(measurement_request_count=requests, stability_percentage=100)
    costs = []
    for _ in range(rounds):
        profiled = 1e6 / profile_batch(runner, inputs, 1, config).throughput
        bare = 1e6 / bare_loop(runner, inputs, requests, 1)
        costs.append(profiled - bare)
    return statistics.median(costs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--targets-us", default="1000,100", help="request times to test, microseconds")
    parser.add_argument("--window", type=int, default=50, help="requests per window (ProfilerConfig default 50)")
    parser.add_argument(
        "--isolated", action="store_true", help="also measure with the profiler in a worker process (isolation.py)"
    )
    args = parser.parse_args(argv)
    config = ProfilerConfig(measurement_request_count=args.window)
    cost = bookkeeping_us()
    print(
        f"profiler bookkeeping: {cost:.3f} us per request (a no-op runner, profiler vs bare loop); "
        + ", ".join(f"that alone gives {t / (t + cost):.4f} at {t} us" for t in TARGETS)
    )
    for target, isolated in (
        (float(t), i) for t in args.targets_us.split(",") for i in (False, True)[: 1 + args.isolated]
    ):
        found = compare(target, args.rounds, config, isolated)
        goal = TARGETS.get(int(target))
        verdict = "" if goal is None else f" (target >= {goal}: {'met' if found['ratio'] >= goal else 'MISSED'})"
        where = "profiler in a worker process" if isolated else "in-process"
        print(
            f"~{target:g} us request, {where} (tanh over float32[{found['batch']},{ROW}], p50 {found['p50_us']:.0f} us): "
            f"profiler {found['profiler']:.0f} samples/s, bare loop {found['bare']:.0f} samples/s, "
            f"ratio median {found['ratio']:.4f} (min {found['ratio_min']:.4f}, max {found['ratio_max']:.4f}, "
            f"{args.rounds} rounds){verdict}"
        )


if __name__ == "__main__":
    main()
