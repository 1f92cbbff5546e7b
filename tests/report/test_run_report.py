"""The typed run report: a field added once reaches every view, and reports of older schemas still load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pytest_navigator.gate.thresholds import parse_thresholds
from pytest_navigator.report import html as html_report
from pytest_navigator.report import markdown as markdown_report
from pytest_navigator.report.benchmark_export import to_pytest_benchmark
from pytest_navigator.report.compare import compare_reports
from pytest_navigator.report.json_report import SCHEMA_PATH, load_report
from pytest_navigator.report.merge import merge_reports
from pytest_navigator.report.results import RunResults
from pytest_navigator.report.run_report import RunReport
from pytest_navigator.report.terminal import baseline_summary, performance_summary, runtime_table

DATA = Path(__file__).resolve().parents[1] / "data"
#: Written by `navigator profile` on main before the typed report (schema 4), kept as it was written.
SCHEMA_4 = DATA / "run-schema4.json"

# A conftest that adds one field to the runtime record, nothing else: the record type with a column,
# and each xdist worker filling it in for the runtimes it ran.
_ONE_FIELD = """
import dataclasses
import os

import pytest

from pytest_navigator.report import results


@dataclasses.dataclass
class WithEnergy(results.RuntimeResult):
    energy_joules: str | None = dataclasses.field(default=None, metadata={"column": "energy J"})


results.RuntimeResult = WithEnergy


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    plugin = item.config.pluginmanager.get_plugin("navigator-session")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "controller")
    for record in plugin.session.results.runtimes.values():
        if record.status in ("passed", "built") and record.energy_joules is None:
            record.energy_joules = f"{record.runtime}-joules-from-{worker}"
"""


def test_a_field_added_once_reaches_every_view_through_xdist(pytester: pytest.Pytester, tiny_models: dict) -> None:
    shutil.copy(tiny_models[".pt2"], pytester.path / "mlp.pt2")
    shutil.copy(tiny_models[".pt2"].with_name("mlp.navigator.toml"), pytester.path)
    pytester.makeconftest(_ONE_FIELD)
    result = pytester.runpytest_subprocess(
        "--navigator-model=mlp.pt2",
        "--navigator-runtimes=torch-cpu,onnxruntime-cpu",
        "--navigator-no-profile",
        "--navigator-examples=2",
        "--navigator-report=out/run.json",
        "--navigator-html=out/run.html",
        "--navigator-markdown=out/run.md",
        "-p",
        "xdist",
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
    )
    result.assert_outcomes(passed=2)
    values = {f"{r}-joules-from-gw{i}" for r in ("torch-cpu", "onnxruntime-cpu") for i in (0, 1)}
    # the controller's terminal table: the column, and each value a worker set (merged from the workers)
    text = result.stdout.str()
    assert "energy J" in text
    shown = {v for v in values if v in text}
    assert len(shown) == 2 and not any("from-controller" in line for line in result.outlines)
    run = json.loads((pytester.path / "out" / "run.json").read_text())
    in_json = {r["name"]: r["energy_joules"] for r in run["models"][0]["runtimes"]}
    assert set(in_json.values()) == shown
    page = (pytester.path / "out" / "run.html").read_text()
    assert "<th>energy J</th>" in page and all(v in page for v in shown)
    markdown = (pytester.path / "out" / "run.md").read_text()
    assert all(f"- energy J: {v}" in markdown for v in shown)


def test_a_schema_4_report_loads_typed_and_every_view_reads_it() -> None:
    raw = json.loads(SCHEMA_4.read_text())
    assert raw["schema_version"] == 4
    report = load_report(SCHEMA_4)
    assert isinstance(report, RunReport)
    [(model, runtimes)] = report.models()
    assert model.name == "mlp.pt2" and model.best == raw["models"][0]["best"]
    assert [r.runtime for r in runtimes] == [r["name"] for r in raw["models"][0]["runtimes"]]
    for record, old in zip(runtimes, raw["models"][0]["runtimes"], strict=True):
        assert record.status.value == old["status"] and len(record.comparisons) == len(old["verdicts"])
        assert record.correctness is not None and record.correctness.samples == old["correctness"]["samples"]
        assert record.profile is not None
        batches = old["profile"]["batches"]
        assert [b.throughput for b in record.profile.batches] == [b["throughput"] for b in batches]
        assert record.hardware == old["hardware"] and len(record.measured) == len(old["measured"])
        assert not any(b.runs for b in record.profile.batches)  # new in 5: unknown in a 4
    # every view reads it
    assert "onnxruntime-cpu" in runtime_table(report) and "samples/s" in performance_summary(report)
    assert isinstance(baseline_summary(report), str)
    assert "onnxruntime-cpu" in html_report.render(report) and "onnxruntime-cpu" in markdown_report.render(report)
    assert to_pytest_benchmark(report)["benchmarks"]
    rows, _ = compare_reports(report, report, parse_thresholds(None, "--thresholds"))
    assert rows and all(row.verdict in ("pass", "inconclusive") for row in rows)
    merged = merge_reports([("a", report), ("b", load_report(SCHEMA_4))])
    assert [r.runtime for _, rs in merged.models() for r in rs] == [r.runtime for r in runtimes]


def test_the_json_report_is_the_typed_report_written_out(tmp_path: Path) -> None:
    """Schema 4 read, written as 5, read again: the same records; the file meets the schema."""
    jsonschema = pytest.importorskip("jsonschema")
    from pytest_navigator.report.json_report import write_report

    report = load_report(SCHEMA_4)
    write_report(report, tmp_path / "run.json")
    written = json.loads((tmp_path / "run.json").read_text())
    jsonschema.validate(written, json.loads(SCHEMA_PATH.read_text()))
    assert written["schema_version"] == 5
    again = load_report(tmp_path / "run.json")
    assert again.to_dict() == report.to_dict()
    assert RunResults.from_json(again.results.to_json()).model_dicts() == report.results.model_dicts()
