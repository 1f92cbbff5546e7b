"""The navigator CLI (pytest_navigator/cli.py): each subcommand's happy path, its bad inputs and exit codes.

Input: tests/data/run-mlp.json, a real report (the demo MLP on torch-cpu, onnxruntime-cpu and
torchscript-cpu at batch sizes 1, 4, 16, plus torch-cuda skipped; written by
`pytest --navigator-model=mlp.pt2 --navigator-runtimes=torch-cpu,onnxruntime-cpu,torchscript-cpu,torch-cuda
--navigator-batch-sizes=1,4,16 --navigator-report=run.json` after an --update-baselines run).
Copies of it are edited to make slower runs, other hardware, newer schemas and shards.
"""

from __future__ import annotations

import copy
import csv
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_navigator import options
from pytest_navigator.cli import main

DATA = Path(__file__).parent / "data" / "run-mlp.json"


def _run(spread: float | None = 0.005) -> dict[str, Any]:
    """The recorded run; with `spread`, as if each entry had been measured in 3 processes whose
    figures scatter by that much (the file itself holds one process per entry)."""
    data = json.loads(DATA.read_text())
    if spread is None:
        return data
    for runtime in data["models"][0]["runtimes"]:
        for measured in runtime["measured"]:
            entry = measured["entry"]
            latency = entry["latency_ms"]
            entry["runs"] = [
                {
                    "throughput": entry["throughput"] * f,
                    **{q: latency[q] / f for q in ("p50", "p95", "p99")},
                }
                for f in (1 - spread, 1.0, 1 + spread)
            ]
    return data


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


def _slower(data: dict[str, Any], factor: float, runtimes: tuple[str, ...] = ("onnxruntime-cpu",)) -> dict[str, Any]:
    """The same run as if `runtimes` took `factor` times as long per request."""
    slow = copy.deepcopy(data)
    for runtime in slow["models"][0]["runtimes"]:
        if runtime["name"] not in runtimes:
            continue
        for measured in runtime["measured"]:
            entry = measured["entry"]
            entry["throughput"] /= factor
            for key in ("window_throughputs", "block_throughputs"):
                entry[key] = [x / factor for x in entry[key]]
            entry["block_p95_ms"] = [x * factor for x in entry["block_p95_ms"]]
            entry["latency_ms"] = {k: v * factor for k, v in entry["latency_ms"].items()}
            for run in entry.get("runs", ()):
                run.update({k: v / factor if k == "throughput" else v * factor for k, v in run.items()})
        for batch in runtime["profile"]["batches"]:
            batch["throughput"] /= factor
    return slow


def _cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_starts_without_importing_ml_libraries() -> None:
    code = "import sys, pytest_navigator.cli as c; c._parser().format_help(); print(sorted(m for m in ('torch', 'numpy', 'onnxruntime') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    shown = subprocess.run(
        [sys.executable, "-m", "pytest_navigator", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("profile", "compare", "report", "merge", "export"):
        assert command in shown.stdout


def test_a_run_compared_with_itself_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = _write(tmp_path / "runs.json", _run())
    code, out, _ = _cli(capsys, "compare", runs, runs)
    assert code == 0
    assert "regressed" not in out.lower().replace("--fail-on=regressed", "")
    assert "9 pass: passed (--fail-on=regressed)" in out  # 3 runtimes x 3 batch sizes, all judged
    assert "same" in out and "MDE" in out


def test_one_run_on_each_side_is_never_significant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The file holds one process per entry: even 3x slower, one run against one cannot be told from
    the run-to-run spread, and compare says so instead of a p-value over windows."""
    new = _write(tmp_path / "new.json", _slower(_run(None), 3.0))
    code, out, _ = _cli(capsys, "compare", DATA, new)
    assert code == 0 and "REGRESSED" not in out and "9 inconclusive: passed" in out
    assert "one run on each side" in out and "unknown" in out
    code, out, _ = _cli(capsys, "compare", DATA, new, "--fail-on", "inconclusive")
    assert code == 1


def test_a_3x_slower_run_exits_1_and_names_the_runtime(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = _write(tmp_path / "old.json", _run()), _write(tmp_path / "new.json", _slower(_run(), 3.0))
    code, out, _ = _cli(capsys, "compare", old, new)
    assert code == 1
    rows = [line for line in out.splitlines() if "onnxruntime-cpu" in line]
    assert len(rows) == 3 and all("3.00x slower" in r and "REGRESSED" in r for r in rows)
    assert all("REGRESSED" not in line for line in out.splitlines() if "torch-cpu " in line)
    assert "3 regressed" in out and "FAILED" in out
    # the other way round it is faster, and improvements never fail
    code, out, _ = _cli(capsys, "compare", new, old)
    assert code == 0 and "3.00x faster" in out and "IMPROVED" in out


def test_formats_and_fail_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = _write(tmp_path / "old.json", _run()), _write(tmp_path / "new.json", _slower(_run(), 3.0))
    code, out, _ = _cli(capsys, "compare", old, new, "--format", "json")
    payload = json.loads(out)
    assert code == 1 and len(payload["rows"]) == 9 and len(payload["failed"]) == 3
    slow = [r for r in payload["rows"] if r["runtime"] == "onnxruntime-cpu"]
    assert all(r["verdict"] == "regressed" and r["p_value"] < 0.01 and r["change"] == "3.00x slower" for r in slow)
    assert all(abs(r["slowdown"] - 3.0) < 1e-6 for r in slow)
    code, out, _ = _cli(capsys, "compare", old, new, "--format", "markdown")
    assert code == 1 and out.startswith("| model") and "**regressed**" in out
    code, _, _ = _cli(capsys, "compare", old, new, "--fail-on", "never")
    assert code == 0


def test_an_unstable_measurement_fails_only_under_fail_on_inconclusive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _run()
    torch = next(r for r in data["models"][0]["runtimes"] if r["name"] == "torch-cpu")
    torch["measured"] = [m for m in torch["measured"] if m["batch_size"] != 4]
    torch["profile"]["batches"][1]["status"] = "unstable"
    new = _write(tmp_path / "new.json", data)
    code, out, _ = _cli(capsys, "compare", DATA, new)
    assert code == 0 and "INCONCLUSIVE" in out and "unstable" in out
    code, out, _ = _cli(capsys, "compare", DATA, new, "--fail-on", "inconclusive")
    assert code == 1 and "inconclusive" in out.splitlines()[-1]


def test_thresholds_are_the_plugins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = _write(tmp_path / "old.json", _run()), _write(tmp_path / "new.json", _slower(_run(), 1.1))
    assert _cli(capsys, "compare", old, new)[0] == 1  # 10% slower: beyond the default 95%
    assert _cli(capsys, "compare", old, new, "--thresholds", "throughput=80%,p95=150%,p99=150%")[0] == 0
    code, _, err = _cli(capsys, "compare", old, new, "--thresholds", "speed=5")
    assert code == 2 and "speed" in err and "throughput" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no such file"),
        ("{not json", "not valid JSON (line 1, column 2"),
        ('{"models": []}', "not a pytest-navigator run report"),
        (
            '{"schema_version": 99, "models": []}',
            "schema_version 99 is newer than this pytest-navigator reads (1 to 5)",
        ),
    ],
)
def test_bad_reports_exit_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    commands: list[list[str | Path]] = [
        ["compare", DATA, bad],
        ["report", bad],
        ["merge", DATA, bad, "-o", tmp_path / "m.json"],
        ["export", bad, "--format", "pytest-benchmark", "-o", tmp_path],
    ]
    for argv in commands:
        code, _, err = _cli(capsys, *argv)
        assert code == 2, argv
        assert str(bad) in err and message in err, err


def test_different_hardware_is_refused_unless_allowed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = _run()
    for runtime in other["models"][0]["runtimes"]:
        for measured in runtime["measured"]:
            measured["hardware"] = "Intel Xeon x8"
    new = _write(tmp_path / "xeon.json", other)
    code, out, err = _cli(capsys, "compare", DATA, new)
    assert code == 2 and out == ""
    assert "different hardware" in err and "'Intel Xeon x8'" in err and "'AMD EPYC x2'" in err
    assert "--allow-hardware-mismatch" in err
    code, out, _ = _cli(capsys, "compare", DATA, new, "--allow-hardware-mismatch")
    assert code == 0 and "Intel Xeon x8" in out


def _shard(data: dict[str, Any], keep: set[str]) -> dict[str, Any]:
    shard = copy.deepcopy(data)
    for runtime in shard["models"][0]["runtimes"]:
        if runtime["name"] not in keep and runtime["profile"] is not None:
            runtime.update(status="skipped", detail="not in this shard", profile=None, measured=[], verdicts=[])
            runtime["hardware"] = None
    return shard


def test_merge_joins_shards_and_names_conflicts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from pytest_navigator.report.json_report import SCHEMA_PATH

    data = _run()
    a = _write(tmp_path / "a.json", _shard(data, {"torch-cpu"}))
    b = _write(tmp_path / "b.json", _shard(data, {"onnxruntime-cpu", "torchscript-cpu"}))
    code, out, _ = _cli(capsys, "merge", a, b, "-o", tmp_path / "all.json")
    assert code == 0 and "1 model(s), 4 runtime record(s) from 2 reports" in out
    merged = json.loads((tmp_path / "all.json").read_text())
    jsonschema.validate(merged, json.loads(SCHEMA_PATH.read_text()))
    runtimes = {r["name"]: r for r in merged["models"][0]["runtimes"]}
    assert {n: r["status"] for n, r in runtimes.items()} == {
        "torch-cpu": "passed",
        "onnxruntime-cpu": "passed",
        "torchscript-cpu": "passed",
        "torch-cuda": "skipped",
    }
    assert [s["source"] for s in merged["shards"]] == [str(a), str(b)]
    assert merged["models"][0]["best"] == data["models"][0]["best"]
    # the merged report compares like the whole run
    assert _cli(capsys, "compare", DATA, tmp_path / "all.json")[0] == 0
    # the same shard twice is not a conflict; the same runtime measured twice with other figures is
    assert _cli(capsys, "merge", a, a, b, "-o", tmp_path / "again.json")[0] == 0
    c = _write(tmp_path / "c.json", _slower(_shard(data, {"onnxruntime-cpu"}), 1.5))
    code, _, err = _cli(capsys, "merge", a, b, c, "-o", tmp_path / "bad.json")
    assert code == 2 and not (tmp_path / "bad.json").exists()
    assert f"mlp.pt2 onnxruntime-cpu on 'AMD EPYC x2' is in both {b} and {c}" in err
    code, _, err = _cli(capsys, "merge", a, "-o", tmp_path / "one.json")
    assert code == 2 and "two or more" in err


def test_export_reads_in_pytest_benchmark_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pytest_benchmark")
    pytest.importorskip("pygal", reason="pytest-benchmark --histogram needs pygal (pytest-benchmark[histogram])")
    storage = tmp_path / "benchmarks"
    code, out, _ = _cli(capsys, "export", DATA, "--format", "pytest-benchmark", "-o", storage)
    assert code == 0 and "0001_run-mlp.json" in out
    assert _cli(capsys, "export", DATA, "--format", "pytest-benchmark", "-o", storage)[0] == 0  # numbered 0002
    files = sorted(p.name for p in storage.rglob("*.json"))
    assert files == ["0001_run-mlp.json", "0002_run-mlp.json"]
    # pytest-benchmark's own CLI, as its console script runs it
    cli = "from pytest_benchmark.cli import main; main()"
    command = [sys.executable, "-c", cli, "--storage", f"file://{storage}", "compare"]
    done = subprocess.run(
        [*command, f"--csv={tmp_path / 'table.csv'}", f"--histogram={tmp_path / 'hist'}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "Failed to load" not in done.stdout + done.stderr
    with open(tmp_path / "table.csv", newline="") as table:
        rows = list(csv.DictReader(table))
    names = {r["name"] for r in rows}
    assert names == {
        f"mlp.pt2::{r}[bs{n}]" for r in ("torch-cpu", "onnxruntime-cpu", "torchscript-cpu") for n in (1, 4, 16)
    }
    report = _run()
    batch = report["models"][0]["runtimes"][1]["profile"]["batches"][0]  # onnxruntime-cpu, batch 1
    row = next(r for r in rows if r["name"] == "mlp.pt2::onnxruntime-cpu[bs1]")
    assert float(row["median"]) == pytest.approx(batch["latency_distribution"]["median_ms"] / 1000)  # seconds
    assert int(row["rounds"]) == batch["latency_distribution"]["requests"]
    assert sorted(p.name for p in tmp_path.glob("hist*.svg")) == [f"hist-mlp.pt2_batch_{n}.svg" for n in (1, 16, 4)]
    exported = json.loads(next(storage.rglob("0001_*.json")).read_text())
    extra = exported["benchmarks"][0]["extra_info"]
    assert {"samples_per_s", "p90_ms", "p95_ms", "p99_ms", "verdict"} <= set(extra)


def test_export_to_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file.json"
    target.write_text("{}")
    code, _, err = _cli(capsys, "export", DATA, "--format", "pytest-benchmark", "-o", target)
    assert code == 2 and f"{target} is a file; give a folder" in err


@pytest.fixture
def mlp(tmp_path: Path, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    import shutil

    shutil.copy(tiny_models[".pt2"], tmp_path / "mlp.pt2")
    shutil.copy(tiny_models[".pt2"].with_name("mlp.navigator.toml"), tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "mlp.pt2"


#: Quick settings for a tiny model on a machine that may be busy (no timing is asserted).
# stability 30%: the MLP's 0.15 ms requests at batch 2 once spread 7000-10900/s over 10 windows on
# this shared VM, and the first profile (which must pass) failed as unstable
QUICK = (
    "--batch-sizes=1,2",
    "--isolation=none",
    "--interference=report",
    "--window=20",
    "--examples=3",
    "--stability=30",
)


def test_profile_checks_measures_and_writes_what_compare_reads(mlp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import torch

    from pytest_navigator.report.json_report import SCHEMA_PATH

    runtimes = "--runtimes=torch-cpu,torch-cuda"
    code, out, err = _cli(capsys, "profile", mlp, runtimes, *QUICK, "-o", "run.json", "--update-baselines")
    assert code == 0, err
    assert "mlp.pt2 torch-cpu: checking correctness" in err and "mlp.pt2 torch-cpu: measuring" in err
    assert "wrote run.json" in out and "mlp.pt2 best: torch-cpu at batch " in out
    report = json.loads((mlp.parent / "run.json").read_text())
    jsonschema.validate(report, json.loads(SCHEMA_PATH.read_text()))
    found = {r["name"]: r for r in report["models"][0]["runtimes"]}
    assert found["torch-cpu"]["status"] == "passed" and found["torch-cpu"]["correctness"]["samples"] >= 3
    assert [b["batch_size"] for b in found["torch-cpu"]["profile"]["batches"]] == [1, 2]
    if not torch.cuda.is_available():
        assert found["torch-cuda"]["status"] == "skipped" and "CUDA" in found["torch-cuda"]["detail"]
    assert list((mlp.parent / "baselines").glob("mlp-*.json"))  # --update-baselines wrote the stable entries
    # a second run is judged against them, as the plugin would judge it
    code, _, err = _cli(capsys, "profile", mlp, runtimes, *QUICK, "-o", "run2.json")
    second = json.loads((mlp.parent / "run2.json").read_text())
    verdicts = second["models"][0]["runtimes"][0]["verdicts"]
    assert verdicts and {v["against"] for v in verdicts} == {"baseline"}
    # the gate fails on a regression or an unstable measurement; a drifted machine's "inconclusive" warns,
    # as does one whose limit is finer than the runs resolve
    failing = [
        v
        for v in verdicts
        if v["verdict"] == "regressed"
        or (v["verdict"] == "inconclusive" and v["calibration_drift"] is None and not v["unresolved"])
    ]
    assert (code == 1) == bool(failing), err
    code, out, _ = _cli(capsys, "compare", "run.json", "run2.json", "--fail-on", "never")
    assert code == 0 and "torch-cpu" in out


def test_profile_measures_each_run_in_a_fresh_worker_process(mlp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A report is kept, so the verdict and a later compare depend on the measurement: it is taken in
    --processes worker processes, the run's own and fresh ones, and the entry keeps each one's figures."""
    quick = [q for q in QUICK if q not in ("--isolation=none", "--batch-sizes=1,2")]
    argv = ["--runtimes=torch-cpu", "--isolation=process", "--processes=3", "--batch-sizes=1", "-o", "run.json"]
    code, _, err = _cli(capsys, "profile", mlp, *quick, *argv)
    assert code == 0, err
    assert "run 2 of 3, in a fresh process" in err and "run 3 of 3, in a fresh process" in err
    (runtime,) = json.loads((mlp.parent / "run.json").read_text())["models"][0]["runtimes"]
    (measured,) = runtime["measured"]
    runs = measured["entry"]["runs"]
    assert len(runs) == 3 and len({r["throughput"] for r in runs}) == 3  # three processes, three figures
    assert measured["entry"]["throughput"] == pytest.approx(sorted(r["throughput"] for r in runs)[1], rel=1e-5)
    assert "share this process" not in runtime["profile"]["stop_reason"]
    code, out, _ = _cli(capsys, "compare", "run.json", "run.json")
    assert code == 0 and "3 runs against 3 recorded" in out


_FROZEN = """
import gc, sys
from pytest_navigator.cli import main
code = main()
print("frozen", gc.get_freeze_count(), "exit", code)
"""


def test_profile_freezes_the_heap_of_its_own_process_only(mlp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`navigator profile` as a command freezes what it holds once the models are loaded (torch's modules
    and the model lived until its exit, and collecting them took 1.6-1.9 s of a MobileNet's run after its
    last line); called with a list, inside another program (this test), it leaves that heap alone."""
    import gc
    import subprocess
    import sys

    argv = ["profile", str(mlp), "--runtimes=torch-cpu", "--no-profile", "--examples=3", "--isolation=none"]
    done = subprocess.run(
        [sys.executable, "-c", _FROZEN, *argv], capture_output=True, text=True, check=False, cwd=mlp.parent
    )
    frozen, code = done.stdout.split("frozen ")[-1].split(" exit ")
    assert int(code) == 0 and int(frozen) > 10_000, done.stderr  # torch's modules alone: hundreds of thousands
    before = gc.get_freeze_count()
    status, _, err = _cli(capsys, *argv)
    assert status == 0, err
    assert gc.get_freeze_count() == before


def test_a_bad_processes_value_names_the_option(mlp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "profile", mlp, "--processes=0")
    assert code == 2 and "--navigator-processes='0': give a whole number from 1 to 50, e.g. 3." in err


def test_profile_exits_1_when_the_gate_fails(mlp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # an absolute limit no machine reaches: regressed when stable, inconclusive when not; a failure either way
    code, _, err = _cli(capsys, "profile", mlp, "--runtimes=torch-cpu", *QUICK, "--thresholds=throughput=1e12")
    assert code == 1 and "FAILED torch-cpu on mlp.pt2" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["missing.pt2"], "missing.pt2"),
        (["mlp.pt2", "--runtimes=tensorflow"], "tensorflow"),
        (["mlp.pt2", "--window=abc"], "--navigator-window"),
        (["mlp.pt2", "--latency-budget=-3"], "--navigator-latency-budget='-3': give milliseconds"),
    ],
)
def test_profile_bad_input_exits_2(
    mlp: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = _cli(capsys, "profile", *argv)
    assert code == 2 and message in err and out == ""


def test_report_writes_html_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    html, markdown = tmp_path / "out" / "report.html", tmp_path / "report.md"
    code, out, _ = _cli(capsys, "report", DATA, "--html", html, "--markdown", markdown)
    assert code == 0 and f"wrote {html}" in out and f"wrote {markdown}" in out
    page = html.read_text()
    assert page.count("<svg") == 4 or "pip install 'pytest-navigator[report]'" in page
    assert "onnxruntime-cpu" in page and "1.06x slower" in page
    text = markdown.read_text()
    assert "9 verdicts: **3 regressed**, 6 pass." in text and text.count("<details>") == 4
    code, out, _ = _cli(capsys, "report", DATA)  # no file asked for: the Markdown on stdout
    assert code == 0 and out.startswith("# pytest-navigator report")


def test_the_console_script_is_installed() -> None:
    from importlib.metadata import entry_points

    (script,) = entry_points(group="console_scripts", name="navigator")
    assert script.value == "pytest_navigator.cli:main"
    assert script.load() is main


@pytest.mark.parametrize("command", ["profile", "compare", "report", "merge", "export"])
def test_every_subcommand_prints_its_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """argparse formats help texts with %: an option help with "95%," once made `profile --help` crash."""
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    shown = capsys.readouterr().out
    assert f"navigator {command}" in shown
    if command == "profile":
        for option in options.OPTIONS:
            if option.flag not in (options.MODEL, options.REPORT):
                assert option.flag in shown, option.flag


def test_the_old_python_m_harness_still_runs_the_cli_and_says_its_new_name() -> None:
    old = subprocess.run(
        [sys.executable, "-W", "always::DeprecationWarning", "-m", "harness", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,  # a clone's harness/ (not installed with the package)
    )
    assert "usage: navigator" in old.stdout
    assert "run `navigator` or `python -m pytest_navigator`" in old.stderr
