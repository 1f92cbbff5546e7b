"""Per-runtime traces on demand (`--navigator-trace=DIR`, seed 004's enable_profile_performance).

After a runtime's profile (never inside a timed window), REQUESTS untimed requests per measured
batch size run under the runtime's own profiler, which writes Chrome trace JSON (Perfetto and
chrome://tracing open it) to `DIR/<model>/<runtime id>/bs<N>.trace.json`, beside a `.top.txt` table
of the operators that took the most time (a runtime with its own profiler writes both:
runtimes/profiler_traces.py):

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_navigator.runtimes.profiler_traces import TOP

#: Untimed requests traced per batch size.
REQUESTS = 3


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
