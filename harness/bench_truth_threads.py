"""What the truth costs on two OpenMP threads and on one, on a quiet machine and beside a busy core.

    python -m harness.bench_truth_threads [--architecture mobilenet_v3_small] [--model PATH]
                                          [--samples 25] [--rounds 2] [--hog]

The truth of a sample (check/truth.py: the float64 shadow and three perturbed fp32 evaluations) is
computed in pytest's process on torch's threads (two on the 2-core machine). Beside another busy
process, two OpenMP threads wait for each other at every parallel region; this measures by how much,
against one thread (model/preloaded.one_thread), for the same samples in one process: `--samples`
random samples at batch sizes 1-8 of a real architecture (harness/architectures.py, seed 0) or of
`--model`, each setting `--rounds` times, alternating. `--hog` pins a busy loop to one core for the
whole measurement. It prints wall and CPU seconds per round; timings are only meaningful on an
otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from harness.bench_walltime import hog


def settings() -> dict[str, Callable[[], contextlib.AbstractContextManager[None]]]:
    from pytest_navigator.model.preloaded import one_thread

    return {"two threads": contextlib.nullcontext, "one thread": one_thread}


def measure(model_path: Path, samples: int, rounds: int) -> Iterator[tuple[str, float, float]]:
    """(setting, wall seconds, CPU seconds) of each round: the truths of the same `samples` samples."""
    from pytest_navigator.check.strategies import random_sample
    from pytest_navigator.check.truth import truth_source
    from pytest_navigator.model.loader import load
    from pytest_navigator.runtimes import BuildContext
    from pytest_navigator.runtimes.torch_runtimes import build_eager

    model = load(model_path)
    reference = build_eager(model, BuildContext(Path(tempfile.gettempdir()), {}))
    rng = np.random.default_rng(0)
    drawn = [random_sample(model.io_spec, 1 + index % 8, rng) for index in range(samples)]
    source = truth_source(model, reference, drawn[0])  # the loader already quiets torch.export.load
    outputs = [reference.infer(sample) for sample in drawn]
    for _ in range(rounds):
        for name, setting in settings().items():
            with setting():
                wall, cpu = time.perf_counter(), time.process_time()
                for sample, output in zip(drawn, outputs, strict=True):
                    source.truth(sample, output)
                yield name, time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="mobilenet_v3_small", help="of harness.architectures.REAL")
    parser.add_argument("--model", type=Path, help="a model file instead of an architecture")
    parser.add_argument("--samples", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--hog", action="store_true", help="a busy loop on one core for the whole measurement")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="truth-threads-") as folder:
        model = args.model
        if model is None:
            from harness.architectures import REAL, write

            if args.architecture not in REAL:
                parser.error(f"--architecture: unknown {args.architecture}; accepted: {', '.join(REAL)}")
            model = write(REAL[args.architecture], 0, Path(folder) / f"{args.architecture}.pt2")
        load = "beside a busy loop on one core" if args.hog else "no other load started"
        print(f"truths of {args.samples} samples of {model.name} (batch 1-8), {load}:")
        with hog(args.hog):
            for name, wall, cpu in measure(model, args.samples, args.rounds):
                print(f"  {name:11s} {wall:7.2f} s wall, {cpu:7.2f} s CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
