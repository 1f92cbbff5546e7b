"""torch.compile against AOTInductor on real architectures: build time cold and warm, and throughput.

    python -m harness.bench_compilers [--only mobilenet_v3_small,resnet18,bert] [--repeat N] [--keep DIR]

For each architecture (harness/architectures.py: torchvision's and transformers' classes with
seeded, recalibrated weights, saved as `.pt2`) and each runtime (torch-compile-cpu, torch-aoti-cpu,
and torch-cpu for scale), one real `pytest --navigator-model=... --navigator-runtimes=<runtime>`
process with an empty artifact cache (cold), then one with the cache it left (warm). Each figure
comes from the run's own JSON report: the runtime's build seconds, and its best stable throughput
over the batch sizes the default sweep measured (and the batch size); the wall time of the process
is beside them. `--repeat N` repeats every pair of runs with a new empty cache and reports medians.

This decides the default set for an exported program (issue 31): a runtime joins it when its cost
(cold and warm) is lower than the runtime it replaces with the same coverage. Timings are only
meaningful on an otherwise quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RUNTIMES = ("torch-cpu", "torch-compile-cpu", "torch-aoti-cpu")
DEFAULT = ("mobilenet_v3_small", "resnet18", "bert")


def one_run(model: Path, runtime: str, cache: Path, workdir: Path) -> dict[str, Any]:
    """Wall seconds, build seconds, best stable throughput (and its batch size), outcome of one run."""
    from pytest_navigator.report.json_report import load_report

    report_path = workdir / f"report-{runtime}-{time.monotonic_ns()}.json"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "PYTEST_ADDOPTS")
    }
    command = [sys.executable, "-m", "pytest", f"--navigator-model={model}", f"--navigator-cache={cache}"]
    command += [f"--navigator-runtimes={runtime}", f"--navigator-report={report_path}", "-p", "no:cacheprovider", "-q"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if " passed" in line or " failed" in line]
    found: dict[str, Any] = {"wall": wall, "outcome": lines[-1].strip("= ") if lines else done.stdout[-300:]}
    if not report_path.exists():
        return found
    results = load_report(report_path).results
    result = next(r for (path, name), r in results.runtimes.items() if name == runtime)
    found["build"] = result.build_seconds
    stable = [b for b in (result.profile.batches if result.profile else ()) if b.status == "stable" and b.throughput]
    if stable:
        best = max(stable, key=lambda b: b.throughput or 0.0)
        found["throughput"], found["batch"] = best.throughput, best.batch_size
        found["batch1"] = next((b.throughput for b in stable if b.batch_size == 1), None)
    return found


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(DEFAULT), help="comma-separated harness.architectures.REAL names")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated runtimes")
    parser.add_argument("--repeat", type=int, default=1, help="cold+warm pairs per runtime; medians are reported")
    parser.add_argument("--keep", type=Path, help="work in this folder (kept) instead of a temporary one")
    args = parser.parse_args(argv)
    from harness.architectures import REAL, write

    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in REAL]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(REAL)}")
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="compilers-") as temporary:
        folder = args.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            model = write(REAL[name], 0, folder / f"{name}.pt2")
            for runtime in runtimes:
                cold, warm = [], []
                for n in range(args.repeat):
                    cache = folder / f"cache-{name}-{runtime}-{n}"
                    cold.append(one_run(model, runtime, cache, folder))
                    warm.append(one_run(model, runtime, cache, folder))
                    print(f"  {name} {runtime} #{n + 1}: cold {cold[-1]}, warm {warm[-1]}", flush=True)
                rows.append((name, runtime, cold, warm))
    print()
    print(
        "| model | runtime | build s cold | build s warm | run s cold | run s warm | samples/s (batch) | batch-1 samples/s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, runtime, cold, warm in rows:
        best = max((r for r in cold + warm if r.get("throughput")), key=lambda r: r["throughput"], default={})
        batch = best.get("batch", 0)  # the batch size of the best run's best throughput
        print(
            f"| {name} | {runtime} | {_cell(_median(cold, 'build'))} | {_cell(_median(warm, 'build'))} | "
            f"{_cell(_median(cold, 'wall'))} | {_cell(_median(warm, 'wall'))} | "
            f"{_cell(_median(cold + warm, 'throughput'), 0)} ({batch}) | {_cell(_median(cold + warm, 'batch1'), 0)} |"
        )
    failed = [(n, r) for n, r, c, w in rows for run in c + w if " failed" in run.get("outcome", "")]
    for name, runtime in failed:
        print(f"FAILED: {name} {runtime}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
