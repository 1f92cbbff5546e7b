"""Instructions per request under callgrind: a performance gate that a busy neighbour cannot move
(`--navigator-mode=instructions`).

A CPU runtime is built with one thread and no spinning (runtime_options.SINGLE_THREAD: thread pools
and spin-waits make counts depend on scheduling) in REPEATS new worker processes (new for each
runtime: what a process did before can change its counts), each started under
callgrind with instrumentation off (valgrind.py). In each, per batch size: WARMUP requests
uninstrumented, one instrumented (valgrind translates the code once), then the counters are zeroed,
dumped at once (the cost of a dump itself), and dumped again after REQUESTS requests; instructions
per request = (requests dump - empty dump) / REQUESTS. Python's garbage collector is paused while
counting. The repeats are separate processes because yesterday's baseline came from another process:
their min, median and max are stored, and counts whose repeats differ by more than MAX_SPREAD are
unstable (nothing is judged); within that, a verdict needs every repeat on one side of the limit. The
processes run at the same time: counts do not depend on timing.

Instruction counts catch more compute, a changed graph, an extra copy, a slower kernel choice; they
do not see memory bandwidth, cache misses or multi-threading (docs/how-to/shared-cpu-runner.md).
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pytest_navigator.config import ProfilerConfig
from pytest_navigator.errors import NavigatorError, describe_error
from pytest_navigator.measure.profiler import BatchProfile, RuntimeProfile
from pytest_navigator.runtimes.base import Runner

#: Separate processes counting the same requests.
REPEATS = 3
#: Requests counted per process and batch size (counts are deterministic: a few suffice).
REQUESTS = 3
#: Uninstrumented requests first (plans, caches, lazy initialization, allocators' arenas growing).
WARMUP = 5
#: Repeats differing by more than this fraction of their median are unstable: the work itself is not
#: deterministic. Within it, the verdict compares every repeat with the limit (judging.judge_counts):
#: repeats that straddle it are inconclusive, so a wide spread costs detections, never a false alarm.
MAX_SPREAD = 0.05
#: Batch sizes counted when none are given: each request costs about 50x its native time.
DEFAULT_BATCH_SIZES = (1,)


def count_runner(
    runner: Runner, io_spec: Any, sizes: Sequence[int], progress: Callable[[str], None] | None = None
) -> dict[int, float | str]:
    """In a process under callgrind: instructions per request at each batch size, or the error's text."""
    from pytest_navigator.measure.valgrind import Callgrind
    from pytest_navigator.model.draws import profiling_inputs

    callgrind = Callgrind()
    if not callgrind.active:
        raise NavigatorError("count_runner runs in a process under callgrind (instructions.measure starts one)")
    found: dict[int, float | str] = {}
    for size in sizes:
        try:
            prepared = [runner.prepare(sample) for sample in profiling_inputs(io_spec, size)]
            for index in range(WARMUP):
                runner.run(prepared[index % len(prepared)])
                runner.synchronize()
            gc.collect()
            gc.disable()
            try:
                callgrind.start()
                runner.run(prepared[0])
                runner.synchronize()
                callgrind.zero()
                empty = callgrind.dump(f"batch {size}: nothing")
                for index in range(REQUESTS):
                    runner.run(prepared[index % len(prepared)])
                    runner.synchronize()
                total = callgrind.dump(f"batch {size}: {REQUESTS} requests")
            finally:
                callgrind.stop()
                gc.enable()
            found[size] = max(0.0, (total - empty) / REQUESTS)
        except Exception as exc:
            found[size] = describe_error(exc)
        if progress is not None:
            progress(f"{runner.runtime}: batch {size} counted")
    return found


def measure(
    executors: Sequence[Any],
    sizes: Sequence[int],
    config: ProfilerConfig,
    tool: str,
    progress: Callable[[str], None] | None = None,
    slow_fma: bool = False,
) -> RuntimeProfile:
    """Count with each executor (executor.Executor: a runtime in its own worker process under
    callgrind) at once, and combine the repeats per batch size."""
    runtime = executors[0].runtime

    def one(index: int) -> dict[int, float | str]:
        found: dict[int, float | str] = executors[index].count(list(sizes), progress if index == 0 else None)
        return found

    with ThreadPoolExecutor(max_workers=len(executors)) as pool:
        repeats = list(pool.map(one, range(len(executors))))
    batches = tuple(combine(size, [r[size] for r in repeats]) for size in sizes)
    how = f"{len(executors)} processes under callgrind ({tool}), {REQUESTS} requests each"
    stop = f"instructions counted at batch size {', '.join(map(str, sizes))} ({how})"
    if slow_fma:
        stop += f"; {tool} emulates FMA instructions in software (about 1000x slower in AVX2 kernels): 3.22 or newer counts faster"
    return RuntimeProfile(runtime, batches, stop, config, tool=tool)


class CannotCount(NavigatorError):
    """A runtime that cannot be counted here: no valgrind, or it runs on a GPU. Its test skips."""


def combine(size: int, repeats: Sequence[float | str]) -> BatchProfile:
    """One batch size's counts from every process: stable when they agree within MAX_SPREAD."""
    errors = [r for r in repeats if isinstance(r, str)]
    if errors:
        return BatchProfile(size, "error", None, error=errors[0], reason="a counting process failed")
    counts = tuple(float(r) for r in repeats)
    median = statistics.median(counts)
    spread = (max(counts) - min(counts)) / median if median > 0 else float("inf")
    if spread <= MAX_SPREAD:
        return BatchProfile(size, "stable", None, instructions=counts, reason=f"repeats agree within {spread:.3%}")
    return BatchProfile(
        size,
        "unstable",
        None,
        instructions=counts,
        reason=f"repeats differ by {spread:.2%} of their median (more than {MAX_SPREAD:.0%})",
    )
