"""The run's models loaded once, in the fork server (model/preloaded.py): a worker takes its model from
there instead of reading the file again, a file changed since is read again, the server starts no
thread pool that a forked worker would inherit, and spawned workers load from the file as before."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pytest_navigator.model import loader
from pytest_navigator.runtimes.base import BuildContext, CallableRunner, Runner, RuntimeDefinition

pytest.importorskip("torch")

LINUX_PROC = Path("/proc/self/task").is_dir()
#: The probe's request: the saved models take a batch of two rows of eight features.
SAMPLE = {"input": np.linspace(-1.0, 1.0, 16, dtype=np.float32).reshape(2, 8)}


def save_linear(path: Path, seed: int) -> Path:
    """A torch.export archive of an 8 -> 3 linear layer whose weights depend on `seed`."""
    import warnings

    import torch

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(torch.nn.Linear(8, 3).eval(), (torch.randn(2, 8),))
        torch.export.save(program, str(path))
    return path


def output_of(model: loader.Model) -> Any:
    """The model's answer to SAMPLE, computed in this process."""
    import torch

    with torch.inference_mode():
        return model.torch_module()(torch.from_numpy(SAMPLE["input"])).numpy()


def build_probe(model: Any, context: BuildContext) -> Runner:
    """In the worker: the model's torch module, how often torch.export.load ran to get it, torch's
    thread count there, and how many objects it started with frozen (gc.freeze: the fork server's);
    each request also runs parallel regions on at least two threads, where a thread pool inherited
    from the fork server would deadlock."""
    import gc

    import torch

    loads = []
    load = torch.export.load

    def counted(*args: Any, **kwargs: Any) -> Any:
        loads.append(args)
        return load(*args, **kwargs)

    torch.export.load = counted
    try:
        module = model.torch_module()
    finally:
        torch.export.load = load
    threads = torch.get_num_threads()
    frozen = gc.get_freeze_count()

    def infer(sample: dict[str, Any]) -> dict[str, Any]:
        with torch.inference_mode():
            output = module(torch.from_numpy(sample["input"])).numpy()
            torch.set_num_threads(max(2, threads))
            torch.ones(10**7).add(1)  # at::parallel_for over 10^7 elements
            torch.nn.functional.conv2d(torch.randn(4, 8, 64, 64), torch.randn(8, 8, 3, 3))
            torch.set_num_threads(threads)
        return {
            "output": output,
            "loads": np.array(len(loads)),
            "threads": np.array(threads),
            "frozen": np.array(frozen),
        }

    return CallableRunner("probe", infer, model.io_spec)


@pytest.fixture
def fresh_fork_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This test's own fork server: one already running (an earlier test's) loaded other models or
    none. It is stopped afterwards, with what it loaded."""
    from multiprocessing import forkserver

    from pytest_navigator.workers import fork_servers

    monkeypatch.setattr(fork_servers, "_SERVER_MODULES", {})
    forkserver._forkserver._stop()  # type: ignore[attr-defined]  # multiprocessing's own, for tests
    yield
    forkserver._forkserver._stop()  # type: ignore[attr-defined]


def start_run(models: list[Path], tmp_path: Path) -> Any:
    """What a run does before its first build: start the fork server with the models, then a worker
    (which forks once the server has loaded them)."""
    from pytest_navigator.runtimes.remote import start_fork_server
    from pytest_navigator.workers.isolation import Timeouts, Worker

    start_fork_server(models)
    return Worker("probe", Timeouts(fixed=120), tmp_path / "workers")


def probe(worker: Any, model: loader.Model, tmp_path: Path) -> dict[str, Any]:
    """build_probe's answer to SAMPLE, from `worker`."""
    from pytest_navigator.runtimes.remote import WorkerRunner

    definition = RuntimeDefinition("probe", build_probe)
    runner = WorkerRunner.build(worker, definition, model, BuildContext(tmp_path, {}), "probe")
    answer: dict[str, Any] = runner.infer(SAMPLE)
    return answer


def default_threads() -> int:
    """torch's thread count in a new Python with this environment: a worker's, were nothing preloaded."""
    code = "import torch; print(torch.get_num_threads())"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def test_a_worker_takes_the_model_the_fork_server_loaded(fresh_fork_server: None, tmp_path: Path) -> None:
    """The file is garbage by the time the worker builds: it answers with the model all the same, never
    calls torch.export.load, and computes on the threads it would have had without the preload. It
    starts with what the server holds frozen, so its garbage collections walk only its own objects."""
    path = save_linear(tmp_path / "model.pt2", seed=1)
    worker = start_run([path], tmp_path)
    try:
        model = loader.load(path)  # as the run loads it, beside the server
        expected = output_of(model)
        path.write_bytes(b"PK\x03\x04 no longer a model")
        answer = probe(worker, model, tmp_path)
    finally:
        worker.close()
    assert int(answer["loads"]) == 0
    np.testing.assert_allclose(answer["output"], expected, rtol=1e-6)
    assert int(answer["threads"]) == default_threads()
    assert int(answer["frozen"]) > 10_000  # torch's modules and the loaded program


@pytest.mark.parametrize("before", ["another model", "garbage"])
def test_a_file_changed_since_the_server_loaded_it_is_read_again(
    fresh_fork_server: None, tmp_path: Path, before: str
) -> None:
    """The server loaded another file than the run did (another model: other weights; garbage: it
    failed to load there): the worker reads the file, and answers with the run's model."""
    path = tmp_path / "model.pt2"
    if before == "garbage":
        path.write_bytes(b"PK\x03\x04 not a model yet")
    else:
        save_linear(path, seed=1)
    worker = start_run([path], tmp_path)
    try:
        save_linear(path, seed=2)
        model = loader.load(path)
        answer = probe(worker, model, tmp_path)
    finally:
        worker.close()
    assert int(answer["loads"]) == 1
    np.testing.assert_allclose(answer["output"], output_of(model), rtol=1e-6)


def test_a_file_written_while_the_server_loads_it_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """loader.preload (the server's side, here in this process): a file rewritten during its load may not
    match the fingerprint taken before, so it is not kept; one left alone is, under its fingerprint."""
    path = save_linear(tmp_path / "model.pt2", seed=1)
    load = loader._load_exported

    def rewritten_meanwhile(loading: Path) -> Any:
        program = load(loading)
        save_linear(path, seed=2)
        return program

    monkeypatch.setattr(loader, "_PRELOADED", {})
    monkeypatch.setattr(loader, "_load_exported", rewritten_meanwhile)
    assert not loader.preload(path) and loader._PRELOADED == {}
    monkeypatch.setattr(loader, "_load_exported", load)
    assert loader.preload(path) and list(loader._PRELOADED) == [(str(path), loader.fingerprint(path))]


def test_spawned_workers_load_the_file_themselves(
    fresh_fork_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NAVIGATOR_WORKER_START=spawn: no fork server, and a spawned worker reads the model file as before."""
    from multiprocessing import forkserver

    monkeypatch.setenv("NAVIGATOR_WORKER_START", "spawn")
    path = save_linear(tmp_path / "model.pt2", seed=1)
    worker = start_run([path], tmp_path)
    try:
        model = loader.load(path)
        answer = probe(worker, model, tmp_path)
    finally:
        worker.close()
    assert forkserver._forkserver._forkserver_pid is None  # type: ignore[attr-defined]
    assert int(answer["loads"]) == 1
    assert int(answer["frozen"]) == 0
    np.testing.assert_allclose(answer["output"], output_of(model), rtol=1e-6)


def test_only_the_plain_fork_server_loads_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counting workers fork from a server that only imported: a preloaded model could change the
    instructions they count. Spawned workers do not get the server's environment either."""
    from multiprocessing import forkserver

    from pytest_navigator.model import preloaded
    from pytest_navigator.workers import fork_servers

    monkeypatch.setattr(fork_servers, "_SERVER_MODULES", {})
    monkeypatch.delenv("NAVIGATOR_WORKER_START", raising=False)
    fork_servers.prepare_server(preloaded.__name__, preloaded.request([Path("model.pt2")]))
    fork_servers.context()  # sets the plain server's imports
    assert forkserver._forkserver._preload_modules[-1] == preloaded.__name__  # type: ignore[attr-defined]
    counting = fork_servers.CountingServer(fork_servers.Wrapper("callgrind", ("true",)))
    try:
        assert preloaded.__name__ not in counting._server._preload_modules  # type: ignore[attr-defined]
    finally:
        counting.stop()
    seen = {}
    with fork_servers._server_environment(False):
        seen["spawned"] = os.environ.get(preloaded.MODELS_VARIABLE)
    with fork_servers._server_environment():
        seen["server"] = os.environ.get(preloaded.MODELS_VARIABLE)
    assert seen == {"spawned": None, "server": preloaded.request([Path("model.pt2")])[preloaded.MODELS_VARIABLE]}
    assert preloaded.MODELS_VARIABLE not in os.environ


_POOL_CHECK = textwrap.dedent(
    """
    import contextlib, os, signal, sys
    import torch
    from pytest_navigator.model.preloaded import one_thread

    def tasks():
        return len(os.listdir("/proc/self/task"))

    threads, before = torch.get_num_threads(), tasks()
    with one_thread() if sys.argv[1] == "guarded" else contextlib.nullcontext():
        torch.ones(10**7).add(1)  # a parallel region over 10^7 elements: a thread pool, where allowed
    print("new threads", tasks() - before, "threads after", torch.get_num_threads(), "before", threads)
    if sys.argv[1] == "guarded":
        child = os.fork()
        if child == 0:
            signal.alarm(60)  # a deadlocked child dies of SIGALRM
            torch.ones(10**7).add(1)
            torch.nn.functional.conv2d(torch.randn(4, 8, 64, 64), torch.randn(8, 8, 3, 3))
            os._exit(0 if torch.get_num_threads() == threads else 3)
        print("child", os.waitpid(child, 0)[1])
    """
)


@pytest.mark.skipif(not LINUX_PROC, reason="counts a process's threads in /proc")
@pytest.mark.parametrize("guarded", [True, False])
def test_loading_in_the_server_starts_no_thread_pool(guarded: bool) -> None:
    """What one_thread guards against: torch work in a process that later forks starts OpenMP's pool
    (the check sees it: unguarded), which the child inherits broken. Guarded, no thread starts, the
    thread count is as before, and a forked child computes on two threads without deadlock."""
    # two threads even on one core, or under xdist (whose conftest sets one, MKL's included: torch reads both)
    environment = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    argument = "guarded" if guarded else "unguarded"
    out = subprocess.run(
        [sys.executable, "-c", _POOL_CHECK, argument],
        capture_output=True,
        text=True,
        check=True,
        timeout=180,
        env=environment,
    ).stdout
    if guarded:
        assert "new threads 0 threads after 2 before 2" in out
        assert "child 0" in out
    else:
        assert "new threads 0" not in out


_FILE_GONE = """
import os

from pytest_navigator.config import Format
from pytest_navigator.runtimes import RuntimeDefinition, default_registry


def build(model, ctx):
    import torch

    os.remove(model.path)  # only what the fork server loaded is left
    load, loads = torch.export.load, []
    torch.export.load = lambda *args, **kwargs: loads.append(args) or load(*args, **kwargs)
    try:
        runner = default_registry().get("torch-cpu").build(model, ctx)
    finally:
        torch.export.load = load
    if loads:
        raise RuntimeError(f"torch.export.load ran in the worker: {loads}")
    return runner


def pytest_navigator_register_runtimes(registry, config):
    registry.register(RuntimeDefinition("file-gone", build, formats=frozenset({Format.TORCH_EXPORTEDPROGRAM})))
"""


@pytest.mark.isolated
def test_a_run_builds_and_checks_runtimes_after_the_model_file_is_gone(
    fresh_fork_server: None, pytester: pytest.Pytester
) -> None:
    """The plugin has the fork server load --navigator-model: the first runtime's worker deletes the
    file and builds without torch.export.load; the next runtime, in a worker of its own, still builds
    and passes its check."""
    save_linear(pytester.path / "model.pt2", seed=1)
    pytester.makeconftest(_FILE_GONE)
    result = pytester.runpytest(
        "--navigator-model=model.pt2", "--navigator-runtimes=file-gone,torch-cpu", "--navigator-no-profile", "-v"
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_correctness*file-gone* PASSED*", "*test_correctness*torch-cpu* PASSED*"])
    assert not (pytester.path / "model.pt2").exists()
