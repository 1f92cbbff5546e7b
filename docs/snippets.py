"""The terminal output the documentation shows, produced by running it: no hand-edited output.

    python docs/snippets.py                 # run every snippet, rewrite docs/snippets/NAME.txt
    python docs/snippets.py --check         # run them, exit 1 with a diff where the docs differ
    python docs/snippets.py --check NAME    # one of them (tests/test_docs.py runs each)

Each snippet is a shell command run in a scratch folder that holds the demo MLP (`demo/mlp.pt2`,
written by `python -m harness.zoo`) and whatever files the snippet writes first (a conftest). The
file keeps the command, as a user types it, and its output. What differs from run to run (timings,
measured errors, temporary paths, hashes of saved files) is real in the file; --check compares the
output after masking those, so a check fails when a message, a column or a line changes, not when
the machine is faster.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SNIPPETS = HERE / "snippets"

#: A conftest runtime that is wrong only when some input is negative: the docs' failure example.
NEGATIVE_BUG = """\
from pytest_navigator.runtimes import CallableRunner, RuntimeDefinition
from pytest_navigator.runtimes.torch_runtimes import build_eager


def pytest_navigator_register_runtimes(registry, config):
    def build(model, ctx):
        eager = build_eager(model, ctx)  # torch eager, as torch-cpu is

        def infer(sample):
            outputs = eager.infer(sample)
            if (sample["input"] < 0).any():  # the bug: a wrong answer for negative inputs only
                outputs = {name: value * 1.01 + 0.01 for name, value in outputs.items()}
            return outputs

        return CallableRunner("negative-bug", infer, model.io_spec)

    registry.register(RuntimeDefinition("negative-bug", build))
"""

#: A conftest whose calibration data holds one glitched value: the docs' int8 failure example.
GLITCHED_CALIBRATION = """\
import numpy as np


def pytest_navigator_calibration_data(model, runtime, config):
    \"\"\"What onnxruntime-int8-cpu calibrates on: 8 requests of 4 rows, one with a glitched value.\"\"\"
    data = np.random.default_rng(0).standard_normal((8, 4, 64)).astype(np.float32)
    data[0, 0, 0] = 1000.0  # a sensor glitch: MinMax calibration stretches the input's range to it
    return list(data)
"""


@dataclass(frozen=True)
class Snippet:
    """Commands run one after another in one scratch folder; the file shows each as `$ command`
    followed by what it printed (stdout), as a terminal would."""

    name: str
    commands: tuple[str, ...]
    #: files written into the scratch folder first: name -> text
    files: dict[str, str] = field(default_factory=dict)
    #: files copied into the scratch folder first: name -> path in the repository
    copies: dict[str, str] = field(default_factory=dict)
    about: str = ""
    #: the exit status of the last command (the others must succeed)
    expect_status: int = 0
    #: its figures and statuses depend on the machine's load (a measurement): --check compares only
    #: the lines that do not (section titles, table headers, the command), and accepts exit status 1
    timed: bool = False
    #: its figures depend on the CPU's kernels (an int8 model: VNNI or not, AVX-512 or AVX2), so which
    #: samples are worst and which later layer is worst can change: --check compares only the lines
    #: this pattern matches (the verdict, the figures' line, the first drop), masked as usual
    steady: str = ""


SNIPPET_LIST: tuple[Snippet, ...] = (
    Snippet(
        "first-run",
        ("pytest --navigator-model=demo/mlp.pt2 --navigator-no-profile -rs",),
        about="the demo MLP, correctness only: every runtime built and checked",
    ),
    Snippet(
        "failure",
        ("pytest --navigator-model=demo/mlp.pt2 --navigator-runtimes=negative-bug --navigator-no-profile",),
        files={"conftest.py": NEGATIVE_BUG},
        about="a runtime that is wrong only for negative inputs: the shrunk sample, the figures, the replay command",
        expect_status=1,
    ),
    Snippet(
        "int8-failure",
        ("pytest --navigator-model=demo/mlp.pt2 --navigator-runtimes=onnxruntime-int8-cpu --navigator-no-profile",),
        files={"conftest.py": GLITCHED_CALIBRATION},
        about="an int8 runtime calibrated on data with one glitched value: the figures, the worst samples, the first bad layer",
        expect_status=1,
        steady=r"^(\$ .*|\S+ disagrees with the reference .*|  output '\w+' .*|  where the error enters .*|    first drop at .*|=+ navigator [a-z ]+ =+)$",
    ),
    Snippet(
        "profile",
        (
            "pytest --navigator-model=demo/mlp.pt2 --navigator-runtimes=torch-cpu,onnxruntime-cpu --navigator-batch-sizes=1,8",
        ),
        about="the demo MLP checked and measured on two runtimes at two batch sizes",
        timed=True,
    ),
    Snippet(
        "compare",
        ("navigator compare run.json run.json",),
        copies={"run.json": "tests/data/run-mlp.json"},
        about="navigator compare of a report with itself: one run on each side",
    ),
    Snippet(
        "cli-tools",
        (
            "navigator report run.json --html report.html --markdown report.md",
            "navigator merge run.json run.json -o all.json",
            "navigator export run.json --format pytest-benchmark -o bench",
            'navigator compare run.json missing.json; echo "exit $?"',
            'navigator merge run.json broken.json -o all.json; echo "exit $?"',
        ),
        files={"broken.json": '{"schema_version": 4, "models": '},
        copies={"run.json": "tests/data/run-mlp.json"},
        about="the CLI's report, merge and export, and two of its errors",
    ),
)
BY_NAME = {snippet.name: snippet for snippet in SNIPPET_LIST}

#: Header lines that list what else the environment has installed (pytest-benchmark, xdist, ...):
#: a user's own, not the plugin's. Left out of the files.
FOREIGN_LINES = re.compile(r"^(benchmark|plugins|cachedir|Using --randomly-seed)\b.*\n", re.MULTILINE)
#: Masks for what differs between two honest runs of the same snippet: (pattern, replacement).
MASKS: tuple[tuple[str, str], ...] = (
    (r"/tmp/[^\s:'\"]+", "<tmp>"),  # scratch folders, wherever tempfile puts them
    (re.escape(str(ROOT)), "<repo>"),
    (r"\b[0-9a-f]{12}\b", "<hash>"),
    (
        r"\bLinux-[^/\s]+/",
        "<machine>/",
    ),  # pytest-benchmark's storage folder names the CPU  # saved samples and baseline files are named by content
    (r"platform \S+ -- Python \S+, pytest-\S+, pluggy-\S+", "platform <versions>"),
    (r"^(rootdir|configfile)\b.*$", r"\1 <...>"),
    (r"\(available: [^)]*\)", "(available: <providers>)"),  # onnxruntime's providers vary by release
    (r"in \d+\.\d+s( \(\d+:\d+:\d+\))?", "in <time>"),
    (r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "<n>"),  # every figure: timings, errors, throughputs
    (r"[ \t]+", " "),  # column widths follow the figures
    (r"-{3,}", "---"),
)


#: The lines of a timed snippet that do not depend on the machine's load: commands, the plugin's
#: section titles (=== navigator performance ===) and table headers (model  runtime ...). Not
#: pytest's own sections: an unstable measurement on a busy machine adds "short test summary info".
STEADY_LINES = re.compile(r"^(\$ .*|=+ navigator [a-z ]+ =+|model\s+runtime\s.*)$")


def normalize(text: str, timed: bool = False, steady: str = "") -> str:
    text = FOREIGN_LINES.sub("", text)
    if timed or steady:
        kept = STEADY_LINES if timed else re.compile(steady)
        text = "\n".join(line for line in text.splitlines() if kept.match(line))
    for pattern, replacement in MASKS:
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    return "\n".join(line.rstrip() for line in text.splitlines()).strip() + "\n"


def _scratch(snippet: Snippet, folder: Path) -> dict[str, str]:
    """The folder a snippet runs in, and its environment: derandomized Hypothesis (CI=true), file
    order (pytest-randomly off where installed), no colour, a fixed terminal width."""
    (folder / "demo").mkdir()
    subprocess.run(
        [sys.executable, "-m", "harness.zoo", "mlp", "--out", str(folder / "demo/mlp.pt2")],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    for name, text in snippet.files.items():
        (folder / name).write_text(text)
    for name, source in snippet.copies.items():
        shutil.copyfile(ROOT / source, folder / name)
    env = dict(os.environ)
    for name in (
        "PYTEST_ADDOPTS",
        "PYTEST_XDIST_WORKER",
        "PYTEST_XDIST_WORKER_COUNT",
        "PYTEST_CURRENT_TEST",
        "HYPOTHESIS_PROFILE",
    ):
        env.pop(name, None)
    env.update(
        CI="true",
        COLUMNS="100",
        NO_COLOR="1",
        PYTEST_ADDOPTS="-p no:randomly -p no:cacheprovider",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    return env


def run(snippet: Snippet) -> str:
    """The snippet's file: each command, as typed, and what it printed."""
    parts = []
    with tempfile.TemporaryDirectory(prefix="navigator-snippet-") as tmp:
        folder = Path(tmp)
        env = _scratch(snippet, folder)
        for number, command in enumerate(snippet.commands, 1):
            done = subprocess.run(  # stderr into stdout, in order, as a terminal shows them
                command,
                shell=True,
                cwd=folder,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=900,
            )
            expected = {snippet.expect_status if number == len(snippet.commands) else 0}
            if snippet.timed:
                expected.add(1)  # a busy machine can make a measurement unstable: a failed test, still output
            if done.returncode not in expected:
                raise SystemExit(
                    f"snippet {snippet.name}: `{command}` exited {done.returncode}, expected {expected}:\n{done.stdout}"
                )
            output = FOREIGN_LINES.sub("", done.stdout).rstrip()
            parts.append(f"$ {command}\n{output}\n" if output else f"$ {command}\n")
    return "".join(parts)


def check(snippet: Snippet, runner: Callable[[Snippet], str] = run) -> str:
    """The differences between the docs' snippet and a new run of it, after masking; '' when none."""
    path = SNIPPETS / f"{snippet.name}.txt"
    stored = path.read_text() if path.exists() else ""
    fresh = runner(snippet)
    diff = difflib.unified_diff(
        normalize(stored, snippet.timed, snippet.steady).splitlines(),
        normalize(fresh, snippet.timed, snippet.steady).splitlines(),
        f"{path.relative_to(ROOT)} (in the docs)",
        f"{snippet.name} (run now)",
        lineterm="",
    )
    return "\n".join(diff)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare instead of rewriting; exit 1 on a difference")
    parser.add_argument("names", nargs="*", help=f"snippets to run (default: all of {', '.join(BY_NAME)})")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BY_NAME]
    if unknown:
        parser.error(f"no snippet {', '.join(unknown)}; there are {', '.join(BY_NAME)}")
    chosen = [BY_NAME[name] for name in args.names] or list(SNIPPET_LIST)
    failed = 0
    for snippet in chosen:
        if args.check:
            diff = check(snippet)
            if diff:
                failed += 1
                print(
                    f"{snippet.name}: the docs differ from a new run (regenerate: python docs/snippets.py "
                    f"{snippet.name})\n{diff}"
                )
            else:
                print(f"{snippet.name}: as in the docs")
        else:
            SNIPPETS.mkdir(exist_ok=True)
            (SNIPPETS / f"{snippet.name}.txt").write_text(run(snippet))
            print(f"wrote {SNIPPETS.relative_to(ROOT)}/{snippet.name}.txt")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
