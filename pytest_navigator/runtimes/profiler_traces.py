"""Trace files of a runtime's own profiler, for --navigator-trace (measure/trace.py runs it): Chrome
trace JSON (Perfetto and chrome://tracing open it) and a table of what took the most time.

ONNX Runtime writes its own trace (`SessionOptions.enable_profiling`), summed here by operator type;
TensorRT's IProfiler and OpenVINO's performance counters report each layer's time, not when it
started, so their traces lay a request's layers end to end in execution order.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

#: Rows of the .top.txt table.
TOP = 15


def onnxruntime_trace(session_factory: Callable[[Any], Any], feeds: Sequence[Any], path: Path) -> str:
    """REQUESTS requests on a session with profiling on (`session_factory(options_hook)` builds it
    like the runtime's own); moves ONNX Runtime's trace to `path`, returns a table by operator type."""

    def profiling(options: Any) -> None:
        options.enable_profiling = True
        options.profile_file_prefix = str(path.with_name(path.name.removesuffix(".trace.json") + "-ort"))

    session = session_factory(profiling)
    for feed in feeds:
        session.run(None, feed)
    written = Path(session.end_profiling())
    shutil.move(str(written), path)
    return operator_table(json.loads(path.read_text(encoding="utf-8")))


def operator_table(events: Sequence[dict[str, Any]]) -> str:
    """ONNX Runtime's node events summed by operator type: calls, total and mean microseconds, share."""
    total: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    for event in events:
        if event.get("cat") == "Node" and str(event.get("name", "")).endswith("_kernel_time"):
            op = (event.get("args") or {}).get("op_name", "?")
            total[op] += float(event.get("dur", 0))
            calls[op] += 1
    return top_table(total, calls, "operator")


def top_table(total: dict[str, float], calls: dict[str, int], what: str) -> str:
    """The TOP entries by total microseconds: calls, total and mean, share of the whole."""
    whole = sum(total.values()) or 1.0
    rows = [
        [name, calls[name], f"{us:.0f}", f"{us / calls[name]:.1f}", f"{us / whole:.1%}"]
        for name, us in sorted(total.items(), key=lambda item: -item[1])[:TOP]
    ]
    return tabulate(rows, headers=[what, "calls", "total us", "mean us", "share"], tablefmt="simple")


def layer_trace(
    requests: Sequence[Sequence[tuple[str, float]]],
    path: Path,
    runtime: str,
    source: str = "TensorRT layers (IProfiler; laid end to end)",
    category: str = "tensorrt layer",
) -> str:
    """A runtime's own per-layer reports, (layer name, milliseconds) per layer for each request
    (TensorRT's IProfiler, OpenVINO's performance counters), written to `path` as Chrome trace JSON:
    each request a `navigator/<runtime>/request N` event, its layers laid end to end inside it
    (both give durations, not start times). Returns the table by layer."""
    events: list[dict[str, Any]] = []
    total: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    now = 0.0
    for index, layers in enumerate(requests, start=1):
        start = now
        for name, ms in layers:
            us = float(ms) * 1000
            events.append(
                {
                    "name": name,
                    "cat": category,
                    "ph": "X",
                    "ts": now,
                    "dur": us,
                    "pid": 1,
                    "tid": 2,
                    "args": {"request": index},
                }
            )
            total[name] += us
            calls[name] += 1
            now += us
        events.append(
            {
                "name": f"navigator/{runtime}/request {index}",
                "cat": "request",
                "ph": "X",
                "ts": start,
                "dur": now - start,
                "pid": 1,
                "tid": 1,
            }
        )
        now += 1.0  # a visible gap between requests
    meta = [
        {"name": "thread_name", "ph": "M", "pid": 1, "tid": tid, "args": {"name": name}}
        for tid, name in ((1, "requests"), (2, source))
    ]
    path.write_text(json.dumps({"traceEvents": meta + events, "displayTimeUnit": "ms"}), encoding="utf-8")
    return top_table(total, calls, "layer")
