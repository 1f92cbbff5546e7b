"""One GPU per pytest-xdist worker (--navigator-devices), and a lock so two workers never measure on one GPU.

How the run keeps one measurement per physical GPU:

- Assignment. Worker gwN picks its GPU from the devices this process may use: the entries of an outer
  CUDA_VISIBLE_DEVICES (indices or GPU-/MIG- UUIDs), else every GPU NVML counts. 'auto' gives gwN the
  (N mod count)-th of them; explicit indices '0,2' are positions in that list (gwN takes the (N mod 2)-th
  index), so an outer CUDA_VISIBLE_DEVICES=4,6 with '1' means GPU 6, never GPU 1. The worker's
  CUDA_VISIBLE_DEVICES becomes that one outer entry: an index or UUID of the machine, which is also the
  physical device's identity (NAVIGATOR_PHYSICAL_DEVICE). CUDA reads the variable once, when it
  initialises, so this runs in the plugin's pytest_configure, before any test; the runtimes' worker
  processes inherit it. The controller checks the value against the same list before xdist starts the
  workers, so a bad index is one usage error rather than a crashed worker per process.
- Groups. xdist requires every worker to collect the same items with the same markers, and its
  scheduler gives a group to whichever worker is free, so no group name can mean "the worker that holds
  GPU 1". Without --navigator-devices every CUDA performance test shares one group (one worker measures
  every GPU: the old behaviour). With it, CUDA performance tests carry no group and spread over the
  workers; CPU performance tests keep their single group, as the CPU is still one shared device.
- Lock. A CUDA runtime's measurement holds a file lock named after the physical device, under the
  run's state dir (.navigator/devices/ under the rootdir, shared by the workers of one run). Workers on
  different GPUs take different locks and measure at once; more workers than GPUs share a GPU, and its
  lock makes them take turns.

Nothing here imports torch or initialises CUDA: the GPU count comes from NVML or nvidia-smi.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Literal

import pytest

from pytest_navigator import options
from pytest_navigator.settings import OptionError

CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
#: The outer entry (machine index or UUID) a worker was given: the GPU its measurements lock.
PHYSICAL_DEVICE = "NAVIGATOR_PHYSICAL_DEVICE"
#: The physical device this xdist worker was given; absent without --navigator-devices or outside a worker.
PHYSICAL_DEVICE_KEY: pytest.StashKey[str] = pytest.StashKey()

Devices = Literal["auto"] | tuple[int, ...]

_ACCEPTED = (
    "give 'auto' (every visible GPU) or comma-separated indices >= 0 into the visible GPUs, without repeats, e.g. 0,1"
)


def parse_devices(value: str | None) -> Devices | None:
    """'auto' -> 'auto'; '0,1' -> (0, 1); None or '' -> None (the option is off)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    if text.lower() == "auto":
        return "auto"
    indices: list[int] = []
    for part in text.split(","):
        entry = part.strip()
        if not (entry.isascii() and entry.isdigit()):
            problem = "an empty entry" if not entry else f"{entry!r} is not an index"
            raise OptionError(f"{options.DEVICES}={value!r}: {problem}; {_ACCEPTED}.")
        index = int(entry)
        if index in indices:
            raise OptionError(f"{options.DEVICES}={value!r}: index {index} is given twice; {_ACCEPTED}.")
        indices.append(index)
    return tuple(indices)


def gpu_count() -> int:
    """NVIDIA GPUs on the machine: NVML's count, else the GPU lines of `nvidia-smi -L`, else 0."""
    from pytest_navigator.measure.telemetry import _nvml

    nvml = _nvml()
    if nvml is not None:
        try:
            return int(nvml.nvmlDeviceGetCount())
        except Exception:  # NVMLError: a driver that answers init but not this
            pass
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return 0
    # MIG instances are indented under their GPU: only the GPU lines count
    return sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))


def _is_device_entry(entry: str) -> bool:
    return (entry.isascii() and entry.isdigit()) or entry.startswith(("GPU-", "MIG-"))


def visible_devices(environ: MutableMapping[str, str], count: Callable[[], int] = gpu_count) -> list[str]:
    """The devices this process may use: an outer CUDA_VISIBLE_DEVICES's entries, else '0'..'count-1'."""
    outer = environ.get(CUDA_VISIBLE_DEVICES)
    if outer is None:
        return [str(index) for index in range(count())]
    visible: list[str] = []
    for part in outer.split(","):
        entry = part.strip()
        # CUDA stops at the first entry it cannot use (so '' and the common '-1' hide every GPU)
        if not _is_device_entry(entry):
            break
        visible.append(entry)
    return visible


def _shown(devices: Devices) -> str:
    return devices if devices == "auto" else ",".join(map(str, devices))


def worker_number(worker: str) -> int:
    """'gw3' -> 3: xdist numbers its workers gw0, gw1, ..."""
    match = re.fullmatch(r"gw(\d+)", worker)
    if match is None:
        raise OptionError(
            f"{options.DEVICES}: the xdist worker id {worker!r} is not gwN, so no GPU can be chosen for it; "
            f"start workers with -n N, or leave {options.DEVICES} out."
        )
    return int(match.group(1))


def assign(devices: Devices | None, worker: str | None, visible: Sequence[str]) -> str | None:
    """The CUDA_VISIBLE_DEVICES value for xdist worker `worker` (gwN); None outside a worker or without
    the option (the environment is left alone)."""
    if devices is None or worker is None:
        return None
    number = worker_number(worker)
    check(devices, visible, f"xdist worker {worker}")
    if devices == "auto":
        return visible[number % len(visible)]
    return visible[devices[number % len(devices)]]


def check(devices: Devices, visible: Sequence[str], who: str) -> None:
    """Every index must name a visible GPU, and one must be visible at all (`who`: for the message)."""
    shown = _shown(devices)
    if not visible:
        raise OptionError(
            f"{options.DEVICES}={shown}: no GPU is visible to {who} (CUDA_VISIBLE_DEVICES hides them all, or "
            f"NVML and nvidia-smi find none); leave {options.DEVICES} out on a machine without GPUs."
        )
    outside = [index for index in ([] if devices == "auto" else devices) if index >= len(visible)]
    if outside:
        raise OptionError(
            f"{options.DEVICES}={shown}: index {outside[0]} is out of range: the visible GPUs are "
            f"{','.join(visible)} (indices 0..{len(visible) - 1}; an outer CUDA_VISIBLE_DEVICES is indexed into, "
            f"not replaced); give indices below {len(visible)}, or 'auto'."
        )


def refuse_initialised_cuda(value: str, worker: str) -> None:
    """Fail when this process already initialised CUDA: it read CUDA_VISIBLE_DEVICES then, for good."""
    torch = sys.modules.get("torch")  # never imported here: an unimported torch has not initialised CUDA
    is_initialized = getattr(getattr(torch, "cuda", None), "is_initialized", None)
    if callable(is_initialized) and is_initialized():
        raise OptionError(
            f"{options.DEVICES}={value}: CUDA is already initialised in xdist worker {worker}, so its GPU can no "
            f"longer be chosen (CUDA reads CUDA_VISIBLE_DEVICES once, when it initialises). A conftest.py or "
            f"plugin used CUDA before pytest-navigator's pytest_configure: move that into a fixture or test, or "
            f"leave {options.DEVICES} out."
        )


def apply(
    value: str | None,
    worker: str | None,
    environ: MutableMapping[str, str] | None = None,
    count: Callable[[], int] = gpu_count,
) -> str | None:
    """Give xdist worker `worker` its GPU: set CUDA_VISIBLE_DEVICES and NAVIGATOR_PHYSICAL_DEVICE in
    `environ` (os.environ) to its outer entry and return it; None (nothing set) outside a worker or
    without the option. A bad value raises OptionError in every process, the controller's included."""
    environ = os.environ if environ is None else environ
    devices = parse_devices(value)
    if devices is None or worker is None:
        return None
    refuse_initialised_cuda(_shown(devices), worker)
    device = assign(devices, worker, visible_devices(environ, count))
    assert device is not None  # devices and worker are set
    environ[CUDA_VISIBLE_DEVICES] = device
    environ[PHYSICAL_DEVICE] = device
    return device


def requested(config: pytest.Config) -> str | None:
    """--navigator-devices, else the navigator_devices ini value; None when neither is set."""
    value = config.getoption("navigator_devices", None) or config.getini("navigator_devices")
    return str(value) if value else None


def configure(config: pytest.Config) -> None:
    """The plugin's pytest_configure step: in an xdist worker, choose its GPU and stash it for the lock."""
    workerinput = getattr(config, "workerinput", None)
    # xdist's own record, not PYTEST_XDIST_WORKER: pytester sessions inside a worker inherit the variable
    worker = workerinput.get("workerid") if isinstance(workerinput, dict) else None
    value = requested(config)
    try:
        chosen = parse_devices(value)
        if chosen is not None and worker is None and _starts_local_workers(config):
            # the controller checks what every worker would: one usage error, not a crashed worker each
            check(chosen, visible_devices(os.environ), "the xdist workers")
        physical = apply(value, worker)
    except OptionError as error:
        raise pytest.UsageError(str(error)) from None
    if physical is not None:
        config.stash[PHYSICAL_DEVICE_KEY] = physical


def _starts_local_workers(config: pytest.Config) -> bool:
    """xdist will start workers on this machine: -n N (its --tx popen specs), not under --collect-only."""
    if config.getoption("dist", "no") == "no" or config.getoption("collectonly"):
        return False
    specs = config.getoption("tx", None) or []
    # --tx ssh=... or socket=... workers see another machine's GPUs
    return bool(specs) and all(spec.split("*")[-1].startswith("popen") for spec in specs)  # "2*popen//..."


def _lock_name(device: str) -> str:
    # UUIDs may hold '/' (MIG-GPU-<uuid>/1/0); one flat file name per device
    return "gpu-" + re.sub(r"[^A-Za-z0-9._-]", "_", device) + ".lock"


@contextlib.contextmanager
def device_lock(device: str, lock_dir: Path) -> Iterator[None]:
    """Hold physical GPU `device`'s inter-process lock: one measurement on it at a time, across workers."""
    from filelock import FileLock

    lock_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(lock_dir / _lock_name(device)):
        yield


def measurement_lock(config: pytest.Config, device: str, state_dir: Path) -> contextlib.AbstractContextManager[None]:
    """The lock a runtime on `device` ('cuda', 'cpu') holds while measured: its worker's GPU's under
    --navigator-devices in an xdist worker, else none (one worker measures every GPU)."""
    physical = config.stash.get(PHYSICAL_DEVICE_KEY, None)
    if physical is None or not device.startswith("cuda"):
        return contextlib.nullcontext()
    return device_lock(physical, state_dir / "devices")
