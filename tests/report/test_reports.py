"""The HTML and Markdown views of a run report: what they show, that they stay offline and escaped, and their size limit."""

from __future__ import annotations

import copy
import html
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from browser import chromium, needs_chromium

from pytest_navigator.report import html as html_report
from pytest_navigator.report import markdown as markdown_report
from pytest_navigator.report.json_report import load_report
from pytest_navigator.report.run_report import RunReport

RUN = Path(__file__).resolve().parents[1] / "data" / "run-mlp.json"
PLOTS = ("plot-throughput", "plot-latency", "plot-baseline", "plot-correctness")


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    """The fixture run as the report's JSON (read, typed, and written back: the tests edit it)."""
    return load_report(RUN).to_dict()


def _html(data: dict[str, Any]) -> str:
    return html_report.render(RunReport.from_dict(data))


def _markdown(data: dict[str, Any], limit: int | None = None) -> str:
    return markdown_report.render(RunReport.from_dict(data), limit=limit)


@pytest.fixture(scope="module")
def page(report: dict[str, Any]) -> str:
    return _html(report)


def _figure(page: str, kind: str) -> str:
    found = re.search(rf'<figure class="plot {kind}\b[^"]*" id="{kind}-1">(.*?)</figure>', page, re.DOTALL)
    assert found, f"no {kind} figure"
    return found.group(1)


def _instruction_run(report: dict[str, Any]) -> dict[str, Any]:
    """The report as `--navigator-mode=instructions` writes it: counts per request, no throughput or latency."""
    counted = copy.deepcopy(report)
    for runtime in counted["models"][0]["runtimes"]:
        if runtime["profile"] is None:
            continue
        runtime["profile"].update(mode="instructions", tool="valgrind-3.22.0")
        for batch in runtime["profile"]["batches"]:
            per_request = 1_000_000.0 * batch["batch_size"]
            batch.update(throughput=None, latency_ms=None, latency_distribution=None, windows=[], stable_windows=[])
            batch["instructions"] = {
                "per_request": per_request,
                "per_sample": per_request / batch["batch_size"],
                "repeats": [per_request, per_request + 300, per_request - 200],
            }
        for verdict in runtime["verdicts"]:
            verdict.update(p_values={}, raw_ratio=None, normalized_ratio=None)
            baseline = 1_000_000.0 * verdict["batch_size"]
            verdict["figures"] = {
                "instructions": {"baseline": baseline, "current": baseline * 1.03, "limit": baseline * 1.02}
            }
    return counted


# Markdown


def test_markdown_lists_every_verdict_with_its_ratio_regressions_first(report: dict[str, Any]) -> None:
    text = _markdown(report)
    rows = [line for line in text.splitlines() if line.startswith("| mlp.pt2 ")]
    assert len(rows) == sum(len(r["verdicts"]) for r in report["models"][0]["runtimes"]) == 9
    assert all(" regressed " in row for row in rows[:3]) and all(" pass " in row for row in rows[3:])
    # torch-cpu batch 1: 6,110 -> 5,771 samples/s; onnxruntime-cpu batch 16: 722,438 -> 734,806.
    assert re.search(r"\| torch-cpu +\| 1 +\| regressed +\| 6,110 → 5,771/s +\| 1\.06x slower +\| p95 1\.7e-05", text)
    assert re.search(r"\| onnxruntime-cpu +\| 16 +\| pass +\| 722,438 → 734,806/s +\| 1\.02x faster", text)
    assert "9 verdicts: **3 regressed**, 6 pass." in text
    assert "best: onnxruntime-cpu at batch 16" in text


def test_markdown_has_a_details_block_per_runtime_and_no_images(report: dict[str, Any]) -> None:
    text = _markdown(report)
    runtimes = report["models"][0]["runtimes"]
    assert text.count("<details>") == text.count("</details>") == len(runtimes) == 4
    for runtime in runtimes:
        assert f"<summary>runtime {runtime['name']} (mlp.pt2): {runtime['status']}</summary>" in text
    assert "detail: torch 2.13.0+cpu is a CPU-only build" in text  # the skipped runtime says why
    assert "| 16      | stable   | 734,806         | 0.0205   | 0.0313   | 3 stable of 3" in text
    assert "| output   | 7.15e-07        | 3.8e-05         | 1.28" in text
    assert "stop reason: all requested batch sizes measured" in text
    assert "![" not in text and "<img" not in text


@pytest.mark.parametrize("limit", [100, 700, 1500, 3000, 5000, 7000])
def test_markdown_fits_its_limit_dropping_details_before_verdicts(report: dict[str, Any], limit: int) -> None:
    full = _markdown(report)
    text = _markdown(report, limit=limit)
    assert len(full.encode()) > 7000, "the limits below no longer cut anything"
    assert len(text.encode("utf-8")) <= limit
    assert text.startswith("# pytest-navigator report")
    if limit >= 700:
        assert "left out to fit" in text and "the full report is in the HTML and JSON reports" in text
    rows = [re.sub(r" +", " ", line) for line in full.splitlines() if line.startswith("| mlp.pt2 ")]
    kept = [re.sub(r" +", " ", line) for line in text.splitlines() if line.startswith("| mlp.pt2 ")]
    if limit >= 5000:  # the header and the whole verdict table stay; only details went
        assert kept == rows and "more rows" not in text
        assert text.count("<details>") == text.count("</details>") < 4
    elif limit >= 700:  # not even the verdict table fits: its first (most severe) rows stay, and a count of the rest
        assert kept == rows[: len(kept)] and f"… {len(rows) - len(kept)} more rows" in text
        assert "<details>" not in text
    if limit == 1500:
        assert kept and " regressed " in kept[0]


def test_markdown_escapes_what_would_break_a_table(report: dict[str, Any]) -> None:
    changed = copy.deepcopy(report)
    changed["models"][0]["runtimes"][3]["detail"] = "a | b\n<script>alert(1)</script>"
    changed["models"][0]["runtimes"][0]["verdicts"][0]["reason"] = "p | q"
    text = _markdown(changed)
    assert "detail: a \\| b &lt;script&gt;alert(1)&lt;/script&gt;" in text and "<script>" not in text
    assert "p \\| q" in text


def test_markdown_of_an_instruction_run_shows_counts(report: dict[str, Any]) -> None:
    text = _markdown(_instruction_run(report))
    assert "1,000,000 → 1,030,000 instr/request" in text and "1.03x slower" in text
    assert re.search(r"\| batch +\| status +\| instructions/request +\| instructions/sample", text)
    assert re.search(r"\| 16 +\| stable +\| 16,000,000 +\| 1,000,000 ", text)


# HTML


def test_html_has_the_four_plots_as_inline_svg(page: str) -> None:
    for kind in PLOTS:
        figure = _figure(page, kind)
        assert "<svg" in figure and "</svg>" in figure, kind
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page and "<metadata>" not in page
    assert len(re.findall(r"<svg\b", page)) == 4


def test_html_fetches_nothing_and_runs_no_script(page: str) -> None:
    remote = r"""(?:https?:|wss?:|ftp:|//)"""
    attributes = re.findall(rf"""\b(?:src|href|srcset|poster|action)\s*=\s*["']?\s*{remote}""", page, re.IGNORECASE)
    css = re.findall(rf"""url\(\s*["']?\s*{remote}|@import""", page, re.IGNORECASE)
    assert attributes == [] and css == []
    # The only URLs at all are the SVG namespace declarations (xmlns="http://www.w3.org/2000/svg").
    others = [
        m for m in re.finditer(r"https?://[^\s\"'<>)]+", page) if not re.search(r"xmlns(:\w+)?=\"$", page[: m.start()])
    ]
    assert others == []
    assert "<script" not in page.lower() and "<link" not in page.lower() and "<img" not in page.lower()
    assert "data:" not in page


def test_html_tables_list_every_runtime_and_skip_reason(report: dict[str, Any], page: str) -> None:
    for table in ("verdicts", "runtimes", "correctness"):
        assert f'<table class="{table}">' in page
    assert page.count('<tr class="verdict-regressed">') == 3 and page.count('<tr class="verdict-pass">') == 6
    assert "1.06x slower" in page and "1.02x faster" in page and "p95 1.7e-05, p99 1.7e-05" in page
    assert "6,110 → 5,771/s" in page
    skipped = [r for r in report["models"][0]["runtimes"] if r["status"] == "skipped"]
    assert skipped
    for runtime in skipped:
        assert f'<tr class="status-skipped"><td class=nowrap>{runtime["name"]}</td><td>skipped</td><td>' in page
        assert html.escape(runtime["detail"]) in page
        assert runtime["name"] not in "".join(_figure(page, kind) for kind in PLOTS)  # never plotted
    assert "AMD EPYC (2 cores, 2 usable)" in page and "throughput=95%" in page
    assert "best: onnxruntime-cpu at batch 16" in page
    assert "7.15e-07" in page and "3.8e-05" in page  # onnxruntime-cpu's max abs and rel error


def test_html_escapes_report_strings_in_tables_and_plots(report: dict[str, Any]) -> None:
    changed = copy.deepcopy(report)
    runtimes = changed["models"][0]["runtimes"]
    runtimes[3]["detail"] = "<script>alert('detail')</script>"
    runtimes[1]["name"] = "onnx<script>$x$"  # also a plot label: SVG text, and $ is matplotlib's mathtext
    page = _html(changed)
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;detail&#x27;)&lt;/script&gt;" in page
    assert "onnx&lt;script&gt;$x$" in _figure(page, "plot-throughput")


def test_html_is_deterministic(report: dict[str, Any], page: str) -> None:
    assert _html(report) == page


def test_html_of_an_instruction_run_has_a_count_table_instead_of_timing_plots(report: dict[str, Any]) -> None:
    page = _html(_instruction_run(report))
    assert '<table class="instructions">' in page and "16,000,000" in page and "15,999,800..16,000,300" in page
    assert "<h3>Instructions per request</h3>" in page
    for kind in ("plot-throughput", "plot-latency", "plot-baseline"):
        assert kind not in page
    assert "<svg" in _figure(page, "plot-correctness")  # correctness was still checked
    assert "1,000,000 → 1,030,000 instr/request" in page and "1.03x slower" in page


def test_html_without_matplotlib_still_has_every_table(report: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    page = _html(report)
    for kind in PLOTS:
        assert html.escape(html_report.HINT) in _figure(page, kind)
    assert "pip install &#x27;pytest-navigator[report]&#x27;" in page
    assert "<svg" not in page
    for table in ("verdicts", "runtimes", "correctness"):
        assert f'<table class="{table}">' in page


# A real browser: the page renders, fetches nothing, and its plots are in the DOM


def _page_requests(net_log: Path, source: str) -> set[str]:
    """http/https/ws URLs the page asked for: those in its source, and any requested on behalf of a file://
    page (Chromium's own background requests, which the flags above cannot all stop, are neither)."""
    events = json.loads(net_log.read_text())["events"]
    remote = re.compile(r"(?:https?|wss?)://", re.IGNORECASE)
    urls = {e["params"]["url"] for e in events if isinstance(e.get("params", {}).get("url"), str)}
    by_page = {
        e["params"]["url"]
        for e in events
        if "url" in e.get("params", {}) and str(e["params"].get("network_isolation_key", "")).startswith("file://")
    }
    return {url for url in urls if remote.match(url) and (url in source or url in by_page)}


@needs_chromium
def test_chromium_renders_the_page_offline(page: str, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    html.write_text(page, encoding="utf-8")
    shot, net_log = tmp_path / "report.png", tmp_path / "netlog.json"
    size = "--window-size=1400,3000"
    log = (f"--log-net-log={net_log}", "--net-log-capture-mode=Everything")
    chromium(tmp_path / "profile", f"--screenshot={shot}", size, *log, html.as_uri())
    assert shot.stat().st_size > 20_000
    assert _page_requests(net_log, page) == set()
    dom = chromium(tmp_path / "profile", "--dump-dom", html.as_uri()).stdout
    assert len(re.findall(r"<svg\b", dom)) == 4
    for kind in PLOTS:
        assert f'id="{kind}-1"' in dom


@needs_chromium
def test_chromium_net_log_check_catches_a_page_that_fetches(tmp_path: Path) -> None:
    # The offline check above passes trivially if the net log misses page requests; a page that fetches proves it does not.
    html = tmp_path / "fetches.html"
    html.write_text(
        '<img src="http://127.0.0.1:9/probe.png"><div style="background:url(http://127.0.0.1:9/bg.png)">x</div>'
    )
    net_log = tmp_path / "netlog.json"
    log = (f"--log-net-log={net_log}", "--net-log-capture-mode=Everything")
    chromium(
        tmp_path / "profile", f"--screenshot={tmp_path / 'fetches.png'}", "--window-size=200,200", *log, html.as_uri()
    )
    assert _page_requests(net_log, "") == {"http://127.0.0.1:9/probe.png", "http://127.0.0.1:9/bg.png"}
