"""Per-runtime traces on demand (`--navigator-trace=DIR`, seed 004's enable_profile_performance).

After a runtime's profile (never inside a timed window), REQUESTS untimed requests per measured
batch size run under the runtime's own profiler, which writes Chrome trace JSON (Perfetto and
chrome://tracing open it) to `DIR/<model>/<runtime id>/bs<N>.trace.json`, beside a `.top.txt` table
of the operators that took the most time:

- ONNX Runtime: a session built like the runtime's own (same file, providers and options) with
  `SessionOptions.enable_profiling`; its events are the graph's nodes, the table sums them by
  operator type;
- TensorRT: an `IProfiler` on an execution context of the runner's engine (built at detailed
  profiling verbosity, so layers keep their ONNX node names); TensorRT reports each layer's time,
  not when it started, so the trace lays a request's layers end to end in execution order, and
  the table sums them by layer;
- any other runner (the torch runtimes, your own): `torch.profiler` (CPU activity, and CUDA
  activity on a CUDA device), its events the aten operators; the table is torch's own
  `key_averages()` table.

Outside these traces, for tools that watch the whole process (`nsys profile pytest ...`): when the
`nvtx` package is installed, every timed request of a measurement window runs inside an NVTX
range `navigator/<runtime>/bs<N>` of the domain "navigator". With no tool attached NVTX calls
return at once (0.2 us a pair here), and the range opens before the request's clock starts and
closes after it stops.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate

#: Untimed requests traced per batch size.
REQUESTS = 3
#: Rows of the .top.txt table.
TOP = 15


@dataclass(frozen=True)
class RequestRange:
    """Opens and closes one NVTX range around a timed request."""

    push: Callable[[], Any]
    pop: Callable[[], Any]


@functools.cache
def _nvtx_domain() -> Any | None:
    try:
        import nvtx
    except ImportError:
        return None
    return nvtx.get_domain("navigator")


def request_range(runtime: str, batch_size: int) -> RequestRange | None:
    """The NVTX range `navigator/<runtime>/bs<N>` for timed requests; None without `nvtx`."""
    domain = _nvtx_domain()
    if domain is None:
        return None
    attributes = domain.get_event_attributes(message=f"navigator/{runtime}/bs{batch_size}")
    return RequestRange(functools.partial(domain.push_range, attributes), domain.pop_range)


def folder_for(root: Path, model: str, runtime: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_.=,:" else "_" for c in runtime).replace(":", "@")
    return root / model / safe


def trace_runner(
    runner: Any, inputs_for: Callable[[int], Sequence[Any]], sizes: Sequence[int], folder: Path
) -> list[str]:
    """Trace each size (the runner's own `trace(samples, path)` when it has one, else torch.profiler);
    returns the trace files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for size in sizes:
        samples = list(inputs_for(size))[:REQUESTS]
        path = folder / f"bs{size}.trace.json"
        own = getattr(runner, "trace", None)
        top = own(samples, path) if callable(own) else torch_trace(runner, samples, path)
        path.with_name(f"bs{size}.top.txt").write_text(top + "\n", encoding="utf-8")
        written.append(str(path))
    return written


def torch_trace(runner: Any, samples: Sequence[Any], path: Path) -> str:
    """REQUESTS requests under torch.profiler; writes the Chrome trace, returns the top-operator table."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = str(runner.device).startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prepared = [runner.prepare(sample) for sample in samples]
    runner.synchronize()
    with profile(activities=activities) as profiler:
        for index, feed in enumerate(prepared):
            with record_function(f"navigator/{runner.runtime}/request {index + 1}"):
                runner.run(feed)
                runner.synchronize()
    if cuda:
        torch.cuda.synchronize()
    profiler.export_chrome_trace(str(path))
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    return str(profiler.key_averages().table(sort_by=key, row_limit=TOP))


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
    return _top_table(total, calls, "operator")


def _top_table(total: dict[str, float], calls: dict[str, int], what: str) -> str:
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
    return _top_table(total, calls, "layer")
