"""The batch-size policy builds must know in advance: the sizes generated samples range over, the
configured ones, and the profiler's (a TensorRT profile or a traced plan sized for fewer would fail
the sizes it was not built for); and the sizes a model cannot take, refused up front.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pytest_navigator import options as option_names
from pytest_navigator.config import ProfilerConfig
from pytest_navigator.model.draws import batch_bounds, numpy_dtype
from pytest_navigator.model.loader import Model
from pytest_navigator.model.spec import IOSpec

#: The profiler's sweep: the batch sizes it measures a runner of this largest batch at (None: no batch
#: axis). measure/profiler.py's sweep_sizes, given by the session: the sweep is the profiler's policy.
Sweep = Callable[[int | None], Sequence[int]]


def configured_sizes(io_spec: IOSpec, configured: Sequence[int]) -> tuple[int, ...]:
    """The configured batch sizes the model allows (one random sample at each is checked)."""
    limit = io_spec.max_batch_size
    if limit is None:
        return (1,) if any(t.batch_axis is not None for t in io_spec) else ()
    return tuple(b for b in configured if b <= limit) or (min(configured[0], limit),)


def build_sizes(io_spec: IOSpec, allowed: Sequence[int], profiler: ProfilerConfig, sweep: Sweep) -> tuple[int, ...]:
    """Every batch size a built runtime will serve this run: the generated samples' range ends, the
    configured sizes the model allows (`allowed`), and the profiler's (explicit, else its sweep).
    TensorRT's optimization profile covers them all; per-size plans are built for them."""
    sizes = set(allowed)
    bounds = batch_bounds(io_spec, sizes)
    if bounds is not None:
        sizes |= set(bounds)
    if profiler.run_profiling:
        explicit = [b for b in profiler.batch_sizes or () if b is not None]
        limit = io_spec.max_batch_size
        sizes |= {b for b in explicit if limit is None or b <= limit} if explicit else set(sweep(limit))
    return tuple(sorted(sizes))


def check_sizes(model: Model, profiler: ProfilerConfig) -> None:
    """Refuse up front the batch sizes a model cannot take: above the largest batch its spec
    declares, or whose inputs alone need more memory than this machine has available."""
    from pytest_navigator.settings import OptionError

    # --navigator-batch-sizes sets the profiler's sizes too; the default sizes are capped quietly
    requested = {b for b in profiler.batch_sizes or () if b is not None}
    if not requested or all(t.batch_axis is None for t in model.io_spec):
        return
    option = f"{option_names.BATCH_SIZES}={','.join(map(str, sorted(requested)))}"
    limit = model.io_spec.max_batch_size
    above = sorted(b for b in requested if limit is not None and b > limit)
    if above:
        raise OptionError(
            f"{option}: batch size {', '.join(map(str, above))} is above the largest batch {model.name} "
            f"takes ({limit}, from its input spec {model.io_spec}); give sizes up to {limit}."
        )
    per_sample = sample_bytes(model)
    available = available_memory()
    largest = max(requested)
    if available is not None and per_sample * largest > available:
        raise OptionError(
            f"{option}: batch size {largest} needs at least {_size(per_sample * largest)} for its inputs alone "
            f"({_size(per_sample)} per sample of {model.name}); this machine has {_size(available)} available."
        )


def sample_bytes(model: Model) -> int:
    """The bytes of one sample's inputs (dynamic non-batch axes at their smallest): a lower bound."""
    total = 0
    for spec in model.io_spec:
        elements = 1
        for axis, dim in enumerate(spec.dims):
            if axis == 0 and spec.batch_axis is not None:
                continue
            elements *= dim.size if dim.size is not None else dim.min
        total += elements * numpy_dtype(spec.dtype).itemsize
    return total


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"
