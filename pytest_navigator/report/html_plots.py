"""The HTML report's plots: matplotlib figures drawn as inline SVG (throughput, latency tails, against
the baseline, correctness against the budget), each from the run report's typed records.
"""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from pytest_navigator.report.markdown import ratio_text

if TYPE_CHECKING:
    from pytest_navigator.measure.summary import BatchSummary
    from pytest_navigator.report.results import RuntimeResult

#: Verdict colours, shared by the table and the baseline plot so a red bar means what a red row means.
COLOURS = {
    "regressed": "#c0392b",
    "improved": "#1e8449",
    "inconclusive": "#d68910",
    "new": "#5d6d7e",
    "pass": "#2e86c1",
}
#: HdrHistogram's x axis: 1/(1 - p), labelled by the percentile, so the tail gets the room.
TAIL_TICKS = ((1, "0%"), (2, "50%"), (10, "90%"), (100, "99%"), (1e3, "99.9%"), (1e4, "99.99%"), (1e5, "99.999%"))
# Text stays text in the SVG (svg.fonttype none): a quarter of the size, and searchable in the page.
STYLE = {"svg.fonttype": "none", "font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.35}
STYLE |= {"legend.fontsize": 8, "legend.framealpha": 0.85}


def matplotlib_or_none() -> Any | None:
    try:
        import matplotlib
    except ImportError:
        return None
    # Agg needs no display. A session that already imported pyplot chose its backend: switching would
    # close its figures, and Figure objects (all this module uses) need no backend anyway.
    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    return matplotlib


def drawn(
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


def points(runtime: RuntimeResult) -> list[BatchSummary]:
    return [b for b in runtime.profile.batches if b.throughput is not None] if runtime.profile is not None else []


def plot_throughput(runtimes: Sequence[RuntimeResult], colours: Mapping[str, str]) -> Any:
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter, FixedLocator, NullLocator

    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    axes = figure.add_subplot()
    sizes: set[int] = set()
    for r in runtimes:
        measured = [(b, b.throughput) for b in points(r) if b.throughput is not None]
        xs = [b.batch_size for b, _ in measured]
        ys = [throughput for _, throughput in measured]
        spread = [[w.throughput for w in b.windows] or [throughput] for b, throughput in measured]
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


def plot_latency(runtimes: Sequence[RuntimeResult], colours: Mapping[str, str]) -> Any:
    # Two panels, each runtime's smallest and largest batch size: the smallest is what a latency-bound
    # server sees (batch 1), the largest the throughput setting; a panel per batch size would be up to
    # eleven near-identical panels for a 1..1024 sweep.
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullFormatter

    shaped = {r.runtime: [b for b in points(r) if (b.latency_distribution or {}).get("percentiles")] for r in runtimes}
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


def plot_baseline(runtimes: Sequence[RuntimeResult], colours: Mapping[str, str]) -> Any:
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


def plot_correctness(runtimes: Sequence[RuntimeResult], colours: Mapping[str, str]) -> Any:
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
