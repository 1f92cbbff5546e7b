"""How long the default run takes: README command 1 (the demo) and a MobileNet-sized model, cold and warm.

    python -m harness.bench_walltime [--only demo,mobilenet] [--hog] [--keep DIR] [--repeat N] [--ci] [--python PY]

Each figure is the wall time of one real `pytest --navigator-model=...` process with default
settings (every runtime built, checked and profiled), as a user runs it:

- **demo**: README command 1's pytest step on the demo ResNet (`python -m harness.zoo resnet`);
- **mobilenet cold**: torchvision's MobileNetV3-Small with seeded, recalibrated weights
  (harness/architectures.py), saved as `.pt2`, run with an empty artifact cache (which is also
  where the plugin points torch.compile's inductor cache, so nothing is compiled beforehand);
- **mobilenet warm**: the same again, with the cache the cold run left.

Below each run's line, where its time went, read from its own output: outside pytest's session
(start-up and exit), the truths computed or restored, each build made or restored. A machine that
drew slower hardware or a noisy neighbour is slower at every step; a change of ours moves one.

`--repeat N` runs each figure N times (cold runs with a new empty cache each time) and reports
every time and the median: on a shared VM one run's time moves by 10-15%.

`--ci` runs every process with CI=true, as a CI job does: Hypothesis is derandomized, so a warm run
checks the same samples as the cold one and restores their truths from the cache (without it, as
on a developer's machine, each run draws new samples and computes their truths). `--python` runs
the pytest processes with another interpreter, e.g. a virtual environment made by README command
1's install (no openvino: its default set is the one a new user gets).

`--hog` runs a busy loop pinned to one core beside every run (what a shared CI runner does to a
measurement); each run's outcome line and any "machine busy" evidence is printed beside its time.
Timings are only meaningful on an otherwise quiet machine.

The first line names the machine (the CPU, its usable cores and the vector level its kernels
dispatch on, as baselines are keyed) and the last the share of CPU time the hypervisor stole over
the series (/proc/stat): machines of one type name differ by 20-40% in these figures, and a figure
is only comparable with another taken on the same kind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

#: Targets of issue 31, on a quiet 2-core machine (seconds).
TARGETS = {"demo": 60.0, "mobilenet cold": 80.0, "mobilenet warm": 30.0}


@contextlib.contextmanager
def hog(enabled: bool) -> Iterator[None]:
    """A busy Python loop pinned to the last usable core, for the duration."""
    if not enabled:
        yield
        return
    core = sorted(os.sched_getaffinity(0))[-1]
    code = f"import os; os.sched_setaffinity(0, {{{core}}})\nwhile True: pass"
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        yield
    finally:
        process.kill()
        process.wait()


def run(
    model: Path, cache: Path, workdir: Path, with_hog: bool, ci: bool = False, python: str = sys.executable
) -> tuple[float, str, list[str]]:
    """Wall seconds of one default run, its outcome line, and its interference lines."""
    env = dict(os.environ)
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "PYTEST_ADDOPTS", "CI"):
        env.pop(name, None)
    if ci:
        env["CI"] = "true"
    command = [python, "-m", "pytest", f"--navigator-model={model}", f"--navigator-cache={cache}"]
    command += ["-p", "no:cacheprovider", "-rfs"]
    with hog(with_hog):
        started = time.perf_counter()
        done = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
    (workdir / f"{cache.name}-{time.strftime('%H%M%S')}.txt").write_text(done.stdout + done.stderr)  # to read a failure
    lines = done.stdout.splitlines()
    outcome = next((line.strip("= ") for line in reversed(lines) if re.search(r"\b(passed|failed)\b", line)), "")
    busy = [line.strip() for line in lines if "machine busy" in line and line.startswith(model.name)]
    failed = [line.strip() for line in lines if line.startswith("FAILED ")]  # a failed run says what failed
    return seconds, outcome, [phases(done.stdout, seconds), *busy, *failed]


def phases(output: str, seconds: float) -> str:
    """Where a run's wall time went, from its own output: outside pytest's session (Python, imports, the
    model loaded; the exit), the truths it computed or restored and the builds it made or restored (side
    by side, in their workers). They tell a slower machine (every step slower) from a slower step."""
    session = re.findall(r" in (\d+(?:\.\d+)?)s\b", output)
    parts = [f"outside the session {seconds - float(session[-1]):.1f} s" if session else "no session time"]
    for action, spent, count in re.findall(r"\b(computed|recomputed|restored) truth (\d+\.\d+) s \((\d+) of", output):
        parts.append(f"{action} truth {spent} s ({count} samples)")
    builds = re.findall(r"\b(built|restored) (?!truth\b)([\w-]+) (\d+\.\d+) s\b", output)
    if builds:
        parts.append("builds: " + ", ".join(f"{name} {spent} s ({action})" for action, name, spent in builds))
    return "; ".join(parts)


def machine() -> str:
    """This machine as a baseline names it (telemetry.hardware_key): "Intel(R) Xeon(R) Processor x2
    (GenuineIntel family 6 model 143, AVX512)"."""
    from pytest_navigator.measure.telemetry import fingerprint, hardware_key

    return hardware_key(fingerprint(), "cpu")


def cpu_times(path: str = "/proc/stat") -> tuple[float, float] | None:
    """(wall seconds now, seconds stolen so far from the CPUs this process may run on), as the profiler's
    interference check reads them (interference.read_proc_stat); None where there is no /proc/stat."""
    from pytest_navigator.measure.interference import read_proc_stat
    from pytest_navigator.runtimes.environment import available_cores

    ticks = read_proc_stat(available_cores(), path)
    return None if ticks is None else (time.monotonic(), ticks.steal_s)


def steal_line(before: tuple[float, float] | None, after: tuple[float, float] | None, cores: int | None = None) -> str:
    """The share of the CPUs' time (`cores`: those this process may run on) stolen between two readings
    of cpu_times."""
    from pytest_navigator.runtimes.environment import available_cores

    if before is None or after is None:
        return "steal: not known here (no /proc/stat)"
    wall = after[0] - before[0]
    if wall <= 0:
        return "steal: no CPU time passed"
    cores = cores or len(available_cores())
    return f"steal: {100 * (after[1] - before[1]) / (wall * cores):.1f}% of the machine's CPU time over the series"


def make_models(folder: Path, which: set[str]) -> dict[str, Path]:
    models: dict[str, Path] = {}
    if "demo" in which:
        models["demo"] = folder / "resnet.pt2"
        subprocess.run(
            [sys.executable, "-m", "harness.zoo", "resnet", "--out", str(models["demo"])],
            check=True,
            capture_output=True,
        )
    if "mobilenet" in which:
        from harness.architectures import REAL, write

        models["mobilenet"] = write(REAL["mobilenet_v3_small"], 0, folder / "mobilenet_v3_small.pt2")
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="demo,mobilenet", help="comma-separated: demo, mobilenet")
    parser.add_argument("--hog", action="store_true", help="a busy loop on one core beside every run")
    parser.add_argument("--keep", type=Path, help="work in this folder (kept) instead of a temporary one")
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure; the median is reported")
    parser.add_argument("--ci", action="store_true", help="run every process with CI=true (derandomized samples)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose pytest runs")
    args = parser.parse_args(argv)
    which = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = which - {"demo", "mobilenet"}
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from demo, mobilenet")
    with tempfile.TemporaryDirectory(prefix="walltime-") as temporary:
        folder = args.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        models = make_models(folder, which)
        runs = []
        for n in range(args.repeat):
            if "demo" in models:
                runs.append(("demo", models["demo"], folder / f"cache-demo-{n}"))
            if "mobilenet" in models:
                runs += [("mobilenet cold", models["mobilenet"], folder / f"cache-mobilenet-{n}")]
                runs += [("mobilenet warm", models["mobilenet"], folder / f"cache-mobilenet-{n}")]
        load = "with a busy loop on one core" if args.hog else "no other load started"
        print(f"machine: {machine()}")
        print(f"default runs, {load}, {'CI=true' if args.ci else 'samples drawn per run'}, {args.python}:")
        started = cpu_times()
        times: dict[str, list[float]] = {}
        for name, model, cache in runs:
            seconds, outcome, busy = run(model, cache, folder, args.hog, args.ci, args.python)
            times.setdefault(name, []).append(seconds)
            target = TARGETS[name]
            met = "met" if seconds <= target else "missed"
            print(f"  {name:15s} {seconds:6.1f} s (target {target:g} s: {met}); {outcome}")
            for line in busy:
                print(f"      {line}")
        if args.repeat > 1:
            for name, found in times.items():
                median = statistics.median(found)
                met = "met" if median <= TARGETS[name] else "missed"
                shown = ", ".join(f"{t:.1f}" for t in found)
                print(f"  median {name:15s} {median:6.1f} s of {shown} (target {TARGETS[name]:g} s: {met})")
        print(steal_line(started, cpu_times()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
