"""The plugin's report files: --navigator-html, --navigator-markdown, --navigator-benchmark-json and
GitHub's job summary, written from one report by a real pytest run of a tiny model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

QUICK = (
    "--navigator-examples=2",
    "--navigator-window=10",
    "--navigator-stability=50",
    "--navigator-interference=report",
    "--navigator-batch-sizes=1,2",
    "--navigator-isolation=none",
    "-p",
    "no:cacheprovider",
)


@pytest.fixture
def mlp(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> Path:
    shutil.copy(tiny_models[".pt2"], pytester.path / "mlp.pt2")
    shutil.copy(tiny_models[".pt2"].with_name("mlp.navigator.toml"), pytester.path)
    return pytester.path / "mlp.pt2"


def test_one_run_writes_every_view(pytester: pytest.Pytester, mlp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = pytester.path / "step-summary.md"
    summary.write_text("# earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = pytester.runpytest_subprocess(
        "--navigator-model=mlp.pt2",
        "--navigator-runtimes=torch-cpu,torch-cuda",
        "--navigator-html=out/report.html",
        "--navigator-markdown=out/report.md",
        "--navigator-benchmark-json=out/bench.json",
        "--navigator-report=out/run.json",
        *QUICK,
    )
    assert result.ret in (0, 1)  # a timing verdict is not what this test is about
    out = pytester.path / "out"
    html = (out / "report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html") and "torch-cpu" in html
    assert "<svg" in html or "pip install 'pytest-navigator[report]'" in html
    markdown = (out / "report.md").read_text()
    assert "| mlp.pt2 | torch-cpu " in markdown and "verdicts:" in markdown
    assert "<details><summary>runtime torch-cpu (mlp.pt2)" in markdown
    # the job summary got the same Markdown, after what earlier steps wrote
    appended = summary.read_text()
    assert appended.startswith("# earlier step\n") and markdown.strip() in appended
    # the pytest-benchmark file is one benchmark per runtime and batch size, readable by pytest-benchmark
    bench = json.loads((out / "bench.json").read_text())
    assert {b["fullname"] for b in bench["benchmarks"]} == {"mlp.pt2::torch-cpu[bs1]", "mlp.pt2::torch-cpu[bs2]"}
    run = json.loads((out / "run.json").read_text())
    batch = run["models"][0]["runtimes"][0]["profile"]["batches"][0]
    assert bench["benchmarks"][0]["stats"]["rounds"] == batch["latency_distribution"]["requests"]
    pytest.importorskip("pytest_benchmark")
    cli = "from pytest_benchmark.cli import main; main()"
    done = subprocess.run(
        [sys.executable, "-c", cli, "compare", str(out / "bench.json"), f"--csv={out / 'bench.csv'}"],
        capture_output=True,
        text=True,
        cwd=pytester.path,
    )
    assert done.returncode == 0 and "Failed to load" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert (out / "bench.csv").read_text().count("mlp.pt2::torch-cpu[bs") == 2


@pytest.mark.parametrize("option", ["--navigator-html", "--navigator-markdown", "--navigator-benchmark-json"])
def test_a_folder_given_as_a_file_stops_the_run_naming_the_option(
    pytester: pytest.Pytester, mlp: Path, option: str
) -> None:
    (pytester.path / "reports").mkdir()
    result = pytester.runpytest_subprocess("--navigator-model=mlp.pt2", f"{option}=reports", *QUICK)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{option}=*reports is a folder; give the path of the * file to write."])


def test_a_latency_budget_that_is_not_a_duration_stops_the_run(pytester: pytest.Pytester, mlp: Path) -> None:
    result = pytester.runpytest_subprocess("--navigator-model=mlp.pt2", "--navigator-latency-budget=fast", *QUICK)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--navigator-latency-budget='fast': give milliseconds of p99 latency > 0*"])
