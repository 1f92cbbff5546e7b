"""How long the Hypothesis sample strategy takes to generate image-sized Samples.

    python -m harness.bench_samples [--examples 25] [--shape 1,3,224,224] [--repeats 5]

Each repeat runs one Hypothesis test of `--examples` samples (as the correctness check does:
no database, no deadline) and reports the wall time of the whole run, so the figure includes
Hypothesis's own overhead, not only numpy's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from hypothesis import Phase, given, seed, settings

from pytest_navigator.check.strategies import samples
from pytest_navigator.model.spec import parse_io_spec


def time_generation(shape: tuple[int, ...], examples: int, run_seed: int) -> tuple[float, int]:
    """Seconds to generate `examples` samples of `shape`, and how many elements they held in all."""
    spec = parse_io_spec([f"input:float32[{','.join(map(str, shape))}]"], "bench")
    elements = 0

    @settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate])
    @given(sample=samples(spec))
    def consume(sample: dict[str, np.ndarray]) -> None:
        nonlocal elements
        elements += sample["input"].size

    started = time.perf_counter()
    seed(run_seed)(consume)()
    return time.perf_counter() - started, elements


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=25)
    parser.add_argument("--shape", default="1,3,224,224")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    shape = tuple(int(s) for s in args.shape.split(","))
    time_generation(shape, 2, run_seed=-1)  # imports and first-call costs out of the way
    runs = [time_generation(shape, args.examples, run) for run in range(args.repeats)]
    seconds = [s for s, _ in runs]
    per_sample_ms = [1000 * s / args.examples for s in seconds]
    print(f"{args.examples} samples of float32{list(shape)} per run, {args.repeats} runs")
    print(
        f"  wall time per run: median {statistics.median(seconds):.3f} s (min {min(seconds):.3f}, max {max(seconds):.3f})"
    )
    print(f"  per sample: median {statistics.median(per_sample_ms):.2f} ms")
    print(f"  elements generated per run: {runs[0][1]:,}")


if __name__ == "__main__":
    main()
