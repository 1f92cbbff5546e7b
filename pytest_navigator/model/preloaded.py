"""The run's model files loaded once, in the fork server that runtime workers fork from, so that a
worker finds its model loaded (loader.Model.source) instead of reading the file again.

The fork server (workers/fork_servers.py) can only be told what to import: it imports this module
last, and the import loads the files that MODELS_VARIABLE names (request() gives that environment;
runtimes/remote.py has the server started with it). It runs beside pytest's own loading of the same
files. Only torch.export archives are kept (loader.preload): torch.export.load takes 0.2-0.5 s a
process, the other formats and ExportedProgram.module() milliseconds (measured on the demo models).

The server must stay a process a worker can fork from (fork_servers.py): while it loads, torch
computes on one thread, so no OpenMP thread pool starts there (a forked child would inherit it and
deadlock at its first parallel region), and CUDA is refused, so no CUDA context is made there either.
A file that fails to load here, for these reasons or any other, is simply not kept: its workers load
it from the file as before, and report its error as before.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

#: The absolute paths of the files to load, as a JSON list, in the fork server's environment only.
MODELS_VARIABLE = "NAVIGATOR_PRELOAD_MODELS"


def request(paths: Iterable[Path]) -> dict[str, str]:
    """The environment that has a fork server importing this module load `paths`."""
    return {MODELS_VARIABLE: json.dumps([os.path.abspath(p) for p in paths])}


def load_requested() -> None:
    """Load the files the environment names (the fork server, at its start), each that can be."""
    listed = os.environ.pop(MODELS_VARIABLE, None)  # the server's children get pytest's environment
    if not listed:
        return
    with one_thread(), _no_cuda():
        from pytest_navigator.model import loader

        for path in map(Path, json.loads(listed)):
            with contextlib.suppress(Exception):
                loader.preload(path)
    # What the server holds now (torch's modules, the loaded programs) lives as long as it does: frozen,
    # no garbage collection walks it again, here or in a worker forked from here (each starts with the
    # freeze, and its collections walk only its own objects). The server's exit at the run's end took
    # 1 s of collecting a MobileNet's 360,000 objects before (and the run's output stays open until
    # it ends), 0.25 s after.
    gc.freeze()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch computes on one thread in the block, and starts no thread pool; after it, the thread
    count is what it was, as if nothing ran (a child forked later starts its pool at that size).

    The limit is OpenMP's own (omp_set_num_threads), not torch.set_num_threads, which also turns MKL's
    dynamic threading off for good: a worker forked from here would then compute unlike one that
    never was. Where torch has no OpenMP runtime to reach, torch.set_num_threads it is."""
    import torch

    threads = torch.get_num_threads()  # torch's own per-thread setup now, not inside the block
    openmp = _openmp(torch)
    if openmp is not None:
        openmp.omp_set_num_threads(1)
    else:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if openmp is not None:
            openmp.omp_set_num_threads(threads)
        else:
            torch.set_num_threads(threads)


def _openmp(torch: Any) -> Any:
    """The OpenMP runtime torch computes with, through its CPU library (whose dependencies resolve
    omp_*), or None."""
    if not getattr(torch._C, "has_openmp", False):
        return None
    folder = Path(torch.__file__).parent / "lib"
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib"):
        if (folder / name).is_file():
            try:
                library = ctypes.CDLL(str(folder / name))
                library.omp_set_num_threads.argtypes = [ctypes.c_int]
                return library
            except (OSError, AttributeError):
                return None
    return None


@contextlib.contextmanager
def _no_cuda() -> Iterator[None]:
    """A file saved with CUDA tensors fails to load in the block rather than making a CUDA context (or
    initializing the driver, as asking whether CUDA is available does), which no forked child could use."""
    import torch.cuda

    def refuse() -> None:
        raise RuntimeError("no CUDA in the fork server")

    saved = torch.cuda._lazy_init, torch.cuda.is_available
    torch.cuda._lazy_init, torch.cuda.is_available = refuse, lambda: False
    try:
        yield
    finally:
        torch.cuda._lazy_init, torch.cuda.is_available = saved


load_requested()
