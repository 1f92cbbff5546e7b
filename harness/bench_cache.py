"""What the artifact cache saves: a correctness-only run of the demo with the cache cold and warm.

    python -m harness.bench_cache [--rounds 3] [--model demo/resnet.pt2]

Each round runs `pytest --navigator-model=MODEL --navigator-no-profile` twice in fresh processes:
first with an empty cache folder (every artifact built: the ONNX export, the traced TorchScript
plans, torch.compile's inductor and Triton caches, which the plugin points into the same
folder), then again with the folder as the first run left it (every artifact restored). Rounds
alternate cold and warm so both see the same machine drift; the medians and their ratio are
printed, with the artifact lines of the last warm run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_run(model: Path, cache: Path, workdir: Path) -> tuple[float, str]:
    """Wall seconds of one correctness-only run, and its output."""
    env = dict(os.environ, CI="true")  # derandomized samples: both runs check the same inputs
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    env.pop("TRITON_CACHE_DIR", None)
    command = [sys.executable, "-m", "pytest", f"--navigator-model={model}", "--navigator-no-profile"]
    command += [f"--navigator-cache={cache}", "-p", "no:cacheprovider", "-q", "-rN"]
    started = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"the run failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", type=Path, default=Path("demo/resnet.pt2"))
    args = parser.parse_args(argv)
    model = args.model.resolve()
    if not model.is_file():
        parser.error(
            f"--model {args.model}: no such file (make it with: python -m harness.zoo resnet --out {args.model})"
        )
    cold: list[float] = []
    warm: list[float] = []
    output = ""
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as folder:
        workdir = Path(folder) / "project"
        workdir.mkdir()
        shutil.copy(model, workdir / model.name)
        sidecar = model.with_name(model.stem + ".navigator.toml")
        if sidecar.is_file():
            shutil.copy(sidecar, workdir / sidecar.name)
        cache = Path(folder) / "cache"
        for round_ in range(args.rounds):
            shutil.rmtree(cache, ignore_errors=True)  # all of it: ours and torch.compile's
            seconds, _ = timed_run(workdir / model.name, cache, workdir)
            cold.append(seconds)
            seconds, output = timed_run(workdir / model.name, cache, workdir)
            warm.append(seconds)
            print(f"round {round_ + 1}: cold {cold[-1]:.1f} s, warm {warm[-1]:.1f} s ({warm[-1] / cold[-1]:.2f})")
    c, w = statistics.median(cold), statistics.median(warm)
    print(
        f"correctness-only run of {model.name}, median of {args.rounds}: cold {c:.1f} s, warm {w:.1f} s, warm/cold {w / c:.2f}"
    )
    print("artifacts in the last warm run:")
    for line in output.splitlines():
        if "restored" in line or "built" in line:
            print("  " + line.strip())


if __name__ == "__main__":
    main()
