"""The run report as one self-contained HTML page: tables and inline SVG plots, with nothing to fetch.

The page must open from a CI artifact or an e-mail with no network: styles are inline, plots are SVG
elements drawn by matplotlib (an optional extra: without it every table is still written), and no
JavaScript runs. Every string from the report is escaped, since runtime details quote exceptions.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from pytest_navigator.gate.selection import describe
from pytest_navigator.report.fields import cell, shown_columns
from pytest_navigator.report.html_plots import (
    COLOURS,
    STYLE,
    drawn,
    matplotlib_or_none,
    plot_baseline,
    plot_correctness,
    plot_latency,
    plot_throughput,
    points,
)
from pytest_navigator.report.markdown import VERDICT_HEADERS, VerdictRow, number, verdict_rows

if TYPE_CHECKING:
    from pytest_navigator.report.results import ModelInfo, RuntimeResult
    from pytest_navigator.report.run_report import RunReport

HINT = "plots need matplotlib: pip install 'pytest-navigator[report]'"
#: What a skipped (or never built) runtime is: listed with its reason, never plotted.
UNMEASURED = ("skipped", "planned", "failed-build")
CSS = """
body{font:14px/1.45 system-ui,sans-serif;color:#1c2833;margin:0;background:#f4f6f7}h3{font-size:15px;margin:18px 0 6px}
main{max-width:1240px;margin:0 auto;padding:16px 20px 40px}h1{font-size:22px;margin:8px 0}
h2{font-size:18px;margin:28px 0 8px;border-bottom:2px solid #d5d8dc}summary{cursor:pointer;margin:6px 0;color:#2e86c1}
section,header{background:#fff;border:1px solid #d5d8dc;border-radius:6px;padding:10px 16px;margin:12px 0}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:6px 0}dt{font-weight:600;color:#566573}dd{margin:0}
table{border-collapse:collapse;width:100%;margin:6px 0;font-size:13px}th{background:#eaeded;white-space:nowrap}.nowrap{white-space:nowrap}
th,td{border:1px solid #d5d8dc;padding:3px 7px;text-align:left;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.best{font-weight:600}
.status-skipped td,.status-planned td{color:#717d7e}.status-failed td,.status-failed-build td{color:#c0392b}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(560px,1fr));gap:12px}figure.wide{grid-column:1/-1}
figure{margin:0;border:1px solid #eaeded;border-radius:4px;padding:6px}.note{color:#717d7e;font-style:italic}
figcaption{font-weight:600;margin-bottom:4px}figure svg{width:100%;height:auto;display:block}
""" + "".join(
    f"tr.verdict-{w} td:nth-child(4){{background:{c};color:#fff;font-weight:600}}" for w, c in COLOURS.items()
)


def render(report: RunReport) -> str:
    """The HTML page of a run report."""
    matplotlib = matplotlib_or_none()
    verdicts = verdict_rows(report)
    body = [_header(report), _verdict_table(verdicts)]
    for index, (model, runtimes) in enumerate(report.models(), 1):
        if matplotlib is None:
            body.append(_model_section(index, model, runtimes, None))
            continue
        with matplotlib.rc_context(STYLE):
            body.append(_model_section(index, model, runtimes, matplotlib))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>pytest-navigator report {escape(report.created)}</title><style>{CSS}</style></head>\n"
        f"<body><main>\n{''.join(body)}</main></body></html>\n"
    )


def _header(report: RunReport) -> str:
    device, settings = report.device, report.settings
    profiler = settings.get("profiler") or {}
    gpu = device.get("gpu")
    chosen = profiler.get("batch_sizes")
    sizes = ", ".join(map(str, chosen)) if chosen else "swept (powers of 2 while throughput grows)"
    budget = settings.get("latency_budget_ms")
    rows = [
        ("created", report.created),
        ("CPU", f"{device['cpu']['model']} ({device['cpu']['cores']} cores, {device['cpu']['usable_cores']} usable)"),
        ("GPU", f"{', '.join(gpu['names'])} (driver {gpu['driver']}, CUDA {gpu['cuda']})" if gpu else "none"),
        ("system", f"{device.get('os', '?')}, {device.get('machine', '?')}"),
        ("libraries", ", ".join(f"{k} {v}" for k, v in sorted(device.get("libraries", {}).items()))),
        ("thresholds", ", ".join(settings.get("thresholds", {}).values()) or "defaults"),
        ("latency budget", "none" if budget is None else f"p99 ≤ {budget:g} ms"),
        ("measurement", f"{profiler.get('measurement_mode', '?')}, batch sizes {sizes}"),
        ("normalized", "yes (by the calibration workload)" if settings.get("normalize") else "no"),
    ]
    if settings.get("against"):
        rows.append(("against", settings["against"]))
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in rows)
    return f"<header><h1>pytest-navigator report</h1><dl>{items}</dl></header>\n"


def _verdict_table(rows: Sequence[VerdictRow]) -> str:
    if not rows:
        return '<section id="verdicts"><h2>Verdicts</h2><p class="note">Nothing was compared with a baseline.</p></section>\n'
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.verdict] = counts.get(row.verdict, 0) + 1
    summary = ", ".join(f"{n} {escape(word)}" for word, n in counts.items())
    # What needs a look stays in view; passes and first measurements fold away once there are many
    # (a 1..1024 sweep of four runtimes is 44 rows), in a <details> that needs no script to open.
    fold = len(rows) > 15
    routine = [row for row in rows if fold and row.verdict in ("pass", "new")]
    notable = [row for row in rows if not fold or row.verdict not in ("pass", "new")]
    parts = [f'<section id="verdicts"><h2>Verdicts</h2><p>{len(rows)} verdicts: {summary}.</p>']
    if notable:
        parts.append(_verdict_rows(notable))
    if routine:
        folded = ", ".join(f"{n} {w}" for w, n in counts.items() if w in ("pass", "new"))
        parts.append(f"<details><summary>{len(routine)} more: {folded}</summary>{_verdict_rows(routine)}</details>")
    return "".join(parts) + "</section>\n"


def _verdict_rows(rows: Sequence[VerdictRow]) -> str:
    body = [_tr(row.cells(), numeric={2, 4}, nowrap={0, 1, 5}, css=f"verdict-{row.verdict}") for row in rows]
    return _table(VERDICT_HEADERS, body, "verdicts")


def _tr(cells: Sequence[object], numeric: Collection[int] = (), nowrap: Collection[int] = (), css: str = "") -> str:
    """A table row, every cell escaped (runtime details quote exceptions, which quote user input)."""
    classes = [" class=num" if i in numeric else " class=nowrap" if i in nowrap else "" for i in range(len(cells))]
    row = "".join(f"<td{c}>{escape(str(cell))}</td>" for c, cell in zip(classes, cells, strict=True))
    return f'<tr class="{escape(css)}">{row}</tr>' if css else f"<tr>{row}</tr>"


def _table(headers: Sequence[str], rows: Sequence[str], css_class: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _model_section(index: int, model: ModelInfo, runtimes: list[RuntimeResult], mpl: Any | None) -> str:
    colours = {r.runtime: f"C{i % 10}" for i, r in enumerate(runtimes)}  # one colour per runtime in every plot
    measured = [r for r in runtimes if r.status not in UNMEASURED and r.profile is not None]
    timed = [r for r in measured if r.profile is not None and not r.profile.counted and points(r)]
    counted = [r for r in measured if r.profile is not None and r.profile.counted]
    checked = [r for r in runtimes if r.status not in UNMEASURED and r.correctness is not None]
    info = model.profile or {}
    meta = f"{model.format}, inputs {model.inputs}, sha256 {model.fingerprint[:12]}" + (
        f", {info['parameters']:,} parameters" if info.get("parameters") is not None else ""
    )
    parts = [
        f'<section class="model" id="model-{index}"><h2>{escape(model.name)}</h2>',
        f'<p>{escape(str(model.path))}: {escape(meta)}</p><p class="best">{escape(describe(model.best))}</p>',
        "<h3>Runtimes</h3>",
        _status_table(runtimes),
        '<div class="plots">',
    ]
    plots = [
        ("plot-throughput", "Throughput by batch size", plot_throughput, timed, False),
        ("plot-baseline", "Throughput against the baseline", plot_baseline, timed, False),
        ("plot-latency", "Latency by percentile", plot_latency, timed, True),
        ("plot-correctness", "Error as a fraction of its budget", plot_correctness, checked, True),
    ]
    for kind, caption, draw, shown, wide in plots:
        if shown:  # instruction counts have no throughput or latency: their table stands in for the plots
            content = (
                f'<p class="note">{escape(HINT)}</p>' if mpl is None else drawn(mpl, draw, shown, colours, kind, index)
            )
            css = f"plot {kind} wide" if wide else f"plot {kind}"
            parts.append(
                f'<figure class="{css}" id="{kind}-{index}"><figcaption>{escape(caption)}</figcaption>{content}</figure>'
            )
    parts.append("</div>")
    if counted:
        parts += ["<h3>Instructions per request</h3>", _instructions_table(counted)]
    if checked:
        parts += ["<h3>Correctness</h3>", _correctness_table(checked)]
    if not measured:
        parts.append('<p class="note">No runtime of this model was measured.</p>')
    return "".join(parts) + "</section>\n"


def _status_table(runtimes: Sequence[RuntimeResult]) -> str:
    rows = []
    extra = shown_columns(runtimes)
    for r in runtimes:
        build = "—" if r.build_seconds is None else f"{r.build_seconds:.3g}"
        cells: tuple[str, ...] = (r.runtime, r.status.value, r.detail or "", r.device or "—", r.precision or "—")
        cells += (build, *(cell(r, name) for name, _ in extra))
        rows.append(_tr(cells, numeric={5}, nowrap={0}, css=f"status-{r.status.value}"))
    headers = ("runtime", "status", "detail", "device", "precision", "build s", *(h for _, h in extra))
    return _table(headers, rows, "runtimes")


def _correctness_table(runtimes: Sequence[RuntimeResult]) -> str:
    rows = []
    for r in runtimes:
        check = r.correctness
        assert check is not None
        multiple = check.budget_multiple
        for o in check.outputs:
            ratio = o.budget_ratio
            rounding = "—" if ratio is None else f"{ratio:.3g}"
            fraction = "—" if ratio is None or not multiple else f"{ratio / multiple:.3g}"
            errors = (f"{o.max_abs_error:.3g}", f"{o.max_rel_error:.3g}", rounding, fraction)
            result = "passed" if check.passed else "FAILED"
            cells = (r.runtime, o.name, result, *errors, o.truth or "—", check.verify)
            rows.append(_tr(cells, numeric={3, 4, 5, 6}, nowrap={0}))
    headers = ("runtime", "output", "result", "max abs error", "max rel error", "× rounding", "of budget")
    return _table((*headers, "truth", "verify"), rows, "correctness")


def _instructions_table(runtimes: Sequence[RuntimeResult]) -> str:
    rows = []
    for r in runtimes:
        for b in r.profile.batches if r.profile is not None else ():
            counted = b.instructions or {}
            repeats = counted.get("repeats") or []
            spread = f"{min(repeats):,.0f}..{max(repeats):,.0f}" if repeats else "—"
            figures = (number(counted.get("per_request")), number(counted.get("per_sample")), spread)
            cells = (r.runtime, b.batch_size, b.status, *figures, b.error or b.reason or "")
            rows.append(_tr(cells, numeric={1, 3, 4, 5}, nowrap={0}))
    headers = ("runtime", "batch", "status", "instructions/request", "instructions/sample", "repeats", "reason")
    return _table(headers, rows, "instructions")
