"""The run report as one self-contained HTML page: tables and inline SVG plots, with nothing to fetch.

The page must open from a CI artifact or an e-mail with no network: styles are inline, plots are SVG
elements drawn by matplotlib (an optional extra: without it every table is still written), and no
JavaScript runs. Every string from the report is escaped, since runtime details quote exceptions.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Collection, Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from pytest_navigator.gate.selection import describe
from pytest_navigator.report.markdown import VERDICT_HEADERS, VerdictRow, number, ratio_text, verdict_rows
from pytest_navigator.report.results import cell, shown_columns

if TYPE_CHECKING:
    from pytest_navigator.measure.summary import BatchSummary
    from pytest_navigator.report.results import ModelInfo, RunReport, RuntimeResult

HINT = "plots need matplotlib: pip install 'pytest-navigator[report]'"
#: Verdict colours, shared by the table and the baseline plot so a red bar means what a red row means.
COLOURS = {
    "regressed": "#c0392b",
    "improved": "#1e8449",
    "inconclusive": "#d68910",
    "new": "#5d6d7e",
    "pass": "#2e86c1",
}
#: What a skipped (or never built) runtime is: listed with its reason, never plotted.
UNMEASURED = ("skipped", "planned", "failed-build")
#: HdrHistogram's x axis: 1/(1 - p), labelled by the percentile, so the tail gets the room.
TAIL_TICKS = ((1, "0%"), (2, "50%"), (10, "90%"), (100, "99%"), (1e3, "99.9%"), (1e4, "99.99%"), (1e5, "99.999%"))
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
    matplotlib = _matplotlib()
    verdicts = verdict_rows(report)
    body = [_header(report), _verdict_table(verdicts)]
    for index, (model, runtimes) in enumerate(report.models(), 1):
        if matplotlib is None:
            body.append(_model_section(index, model, runtimes, None))
            continue
        with matplotlib.rc_context(_STYLE):
            body.append(_model_section(index, model, runtimes, matplotlib))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>pytest-navigator report {escape(report.created)}</title><style>{CSS}</style></head>\n"
        f"<body><main>\n{''.join(body)}</main></body></html>\n"
    )


# Text stays text in the SVG (svg.fonttype none): a quarter of the size, and searchable in the page.
_STYLE = {"svg.fonttype": "none", "font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.35}
_STYLE |= {"legend.fontsize": 8, "legend.framealpha": 0.85}


def _matplotlib() -> Any | None:
    try:
        import matplotlib
    except ImportError:
        return None
    # Agg needs no display. A session that already imported pyplot chose its backend: switching would
    # close its figures, and Figure objects (all this module uses) need no backend anyway.
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    return matplotlib


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
    timed = [r for r in measured if r.profile is not None and not r.profile.counted and _points(r)]
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
        ("plot-throughput", "Throughput by batch size", _plot_throughput, timed, False),
        ("plot-baseline", "Throughput against the baseline", _plot_baseline, timed, False),
        ("plot-latency", "Latency by percentile", _plot_latency, timed, True),
        ("plot-correctness", "Error as a fraction of its budget", _plot_correctness, checked, True),
    ]
    for kind, caption, draw, shown, wide in plots:
        if shown:  # instruction counts have no throughput or latency: their table stands in for the plots
            content = (
                f'<p class="note">{escape(HINT)}</p>' if mpl is None else _drawn(mpl, draw, shown, colours, kind, index)
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
        cells = (r.runtime, r.status.value, r.detail or "", r.device or "—", r.precision or "—")
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


def _drawn(
    mpl: Any, draw: Any, runtimes: Sequence[RuntimeResult], colours: Mapping[str, str], kind: str, index: int
) -> str:
    figure = draw(runtimes, colours)  # a str says why there is nothing to draw
    return f'<p class="note">{escape(figure)}</p>' if isinstance(figure, str) else _svg(mpl, figure, f"{kind}-{index}")


def _svg(mpl: Any, figure: Any, salt: str) -> str:
    """The figure as an inline <svg> element: deterministic (a fixed salt and no date), with the XML
    prolog, DOCTYPE and RDF metadata dropped, and only the ids that something refers to kept, since
    matplotlib names every group figure_1, axes_1... and the page holds many figures."""
    buffer = io.StringIO()
    with mpl.rc_context({"svg.hashsalt": f"pytest-navigator-{salt}"}):  # unique per figure: no id clashes
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg") :], flags=re.DOTALL)
    referred = set(re.findall(r"#([\w.-]+)", text))
    return re.sub(r' id="([^"]+)"', lambda m: m.group(0) if m.group(1) in referred else "", text)


def _label(text: str) -> str:
    return text.replace("$", r"\$")  # matplotlib reads $...$ as mathtext


def _points(runtime: RuntimeResult) -> list[BatchSummary]:
    return [b for b in runtime.profile.batches if b.throughput is not None] if runtime.profile is not None else []


def _plot_throughput(runtimes: Sequence[RuntimeResult], colours: Mapping[str, str]) -> Any:
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter, FixedLocator, NullLocator

    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axes = figure.add_subplot()
    sizes: set[int] = set()
    for r in runtimes:
        points = _points(r)
        xs = [b.batch_size for b in points]
        ys = [b.throughput for b in points]
        spread = [[w.throughput for w in b.windows] or [b.throughput] for b in points]
        low = [max(y - min(s), 0) for y, s in zip(ys, spread, strict=True)]
        high = [max(max(s) - y, 0) for y, s in zip(ys, spread, strict=True)]
        axes.errorbar(
            xs, ys, yerr=[low, high], color=colours[r.runtime], marker="o", ms=4, capsize=3, label=_label(r.runtime)
        )
        sizes.update(xs)
    axes.set_xscale("log", base=2)
    axes.xaxis.set_major_locator(FixedLocator(sorted(sizes)))
    axes.xaxis.set_minor_locator(NullLocator())
    axes.xaxis.set_major_formatter(lambda x, _: f"{x:g}")
    axes.set_yscale("log")
    axes.yaxis.set_major_formatter(EngFormatter())
    axes.set(xlabel="batch size", ylabel="samples/s", title="median of stable windows; error bars: window min..max")
    axes.legend(loc="upper left")
    return figure


def _plot_latency(runtimes: Sequence[RuntimeResult], colours: Mapping[str, str]) -> Any:
    # Two panels, each runtime's smallest and largest batch size: the smallest is what a latency-bound
    # server sees (batch 1), the largest the throughput setting; a panel per batch size would be up to
    # eleven near-identical panels for a 1..1024 sweep.
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullFormatter

    shaped = {r.runtime: [b for b in _points(r) if (b.latency_distribution or {}).get("percentiles")] for r in runtimes}
    if not any(shaped.values()):
        return "No latency distributions in this report (report schema versions 1 and 2 kept none)."
    panels = {"smallest batch": min, "largest batch": max}
    if all(len(batches) <= 1 for batches in shaped.values()):
        panels = {"batch": min}
    figure = Figure(figsize=(12.4, 4.0), layout="constrained")
    axeses = figure.subplots(1, len(panels), squeeze=False)[0]  # own y ranges: batch 1 and 1024 differ 10x
    for axes, (title, pick) in zip(axeses, panels.items(), strict=True):
        top = 1.0
        for r in (r for r in runtimes if shaped[r.runtime]):
            batch = pick(shaped[r.runtime], key=lambda b: b.batch_size)
            shape = batch.latency_distribution
            assert shape is not None
            pairs = [(1 / (1 - p / 100), ms) for p, ms in shape["percentiles"] if p < 100]
            top = max(top, pairs[-1][0])
            label = _label(f"{r.runtime} (batch {batch.batch_size}, {shape['requests']:,} requests)")
            axes.plot(*zip(*pairs, strict=True), color=colours[r.runtime], marker=".", label=label)
        ticks = [(x, name) for x, name in TAIL_TICKS if x <= top * 1.01]
        axes.set_xscale("log")
        axes.set_xticks([x for x, _ in ticks], [name for _, name in ticks])
        axes.minorticks_off()
        axes.set_yscale("log")
        axes.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # labels even where a panel spans under a decade
        axes.yaxis.set_minor_formatter(NullFormatter())
        axes.yaxis.set_major_formatter(lambda y, _: f"{y:g}")
        axes.set(xlabel="percentile", ylabel="latency ms", title=title)
        # Below the panel: the tails rise toward the top right, where a legend inside would cover them.
        axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2)
    return figure


def _plot_baseline(runtimes: Sequence[RuntimeResult], colours: Mapping[str, str]) -> Any:
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.ticker import EngFormatter

    compared = {(r.runtime, v.batch_size): v for r in runtimes for v in r.comparisons if "throughput" in v.figures}
    with_baseline = sorted({size for (_, size), v in compared.items() if v.figures["throughput"][0]})
    if not with_baseline:
        return "No throughput baseline to compare with: every verdict is new."
    # The smallest and largest batch size with a baseline, for the same reason as the latency panels.
    sizes = sorted({with_baseline[0], with_baseline[-1]})
    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axeses = figure.subplots(1, len(sizes), squeeze=False)[0]
    for axes, size in zip(axeses, sizes, strict=True):
        names = [r.runtime for r in runtimes if (r.runtime, size) in compared]
        for x, name in enumerate(names):
            verdict = compared[(name, size)]
            old, new, limit = verdict.figures["throughput"]
            if old:
                axes.bar(x - 0.2, old, 0.4, color="#d5d8dc", edgecolor="#808b96")
            axes.bar(x + 0.2, new, 0.4, color=COLOURS.get(verdict.verdict.value, "#5d6d7e"))
            if limit:
                axes.hlines(limit, x - 0.4, x + 0.4, colors="#1c2833", linestyles="dashed", lw=1)
            text = ratio_text(old, new).replace(" (same)", "") if old else verdict.verdict.value
            axes.annotate(
                text, (x + 0.2, new), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7
            )
        axes.set_xticks(range(len(names)), [_label(n) for n in names], rotation=25, ha="right")
        axes.yaxis.set_major_formatter(EngFormatter())
        axes.margins(x=0.08, y=0.15)
        axes.grid(axis="x", visible=False)
        axes.set_title(f"batch {size}")
    axeses[0].set_ylabel("samples/s")
    shown = {v.verdict.value for (_, size), v in compared.items() if size in sizes}
    legend = [Patch(color="#d5d8dc", label="baseline")]
    legend += [Patch(color=c, label=f"now: {w}") for w, c in COLOURS.items() if w in shown]
    figure.legend(handles=legend, loc="outside lower center", ncols=len(legend), fontsize=7)
    return figure


def _plot_correctness(runtimes: Sequence[RuntimeResult], colours: Mapping[str, str]) -> Any:
    from matplotlib.figure import Figure

    bars = []
    for r in runtimes:
        check = r.correctness
        assert check is not None
        multiple = check.budget_multiple
        several = len(check.outputs) > 1
        for o in check.outputs:
            if o.budget_ratio is not None and multiple:
                bars.append((f"{r.runtime}: {o.name}" if several else r.runtime, o.budget_ratio / multiple))
    if not bars:
        return "No error budget judged these outputs (a fixed tolerance or a verify function did): see the table."
    figure = Figure(figsize=(12.4, 0.9 + 0.32 * len(bars)), layout="constrained")
    axes = figure.add_subplot()
    ys = range(len(bars))[::-1]  # the first runtime on top, as in the tables
    fractions = [f for _, f in bars]
    axes.barh(ys, fractions, 0.6, color=[COLOURS["pass"] if f <= 1 else COLOURS["regressed"] for f in fractions])
    axes.axvline(1.0, color="#1c2833", ls="--", lw=1)
    for y, f in zip(ys, fractions, strict=True):
        axes.annotate(f"{f:.3g}", (f, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    axes.set_yticks(list(ys), [_label(name) for name, _ in bars])
    axes.set_xlim(0, max(1.1, max(fractions) * 1.12))
    axes.grid(axis="y", visible=False)
    axes.set(xlabel="largest error / error budget (≤ 1 passes; dashed: the budget)")
    return figure
