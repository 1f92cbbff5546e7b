"""The repo's own test setup: pytester, Hypothesis profiles, and tiny model files shared by tests."""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
import pkgutil
import sys
import warnings
from pathlib import Path

import pytest
from hypothesis import settings

from pytest_navigator.check.hypothesis_profiles import default_profile, register_profiles

sys.path.insert(0, str(Path(__file__).parent / "tests"))

# Under `pytest -n`, the workers share the machine's cores: torch's and ONNX Runtime's default of a
# thread per core would put twice as many spinning threads as cores, and OpenMP's barriers then wait
# for descheduled threads (measured: the budget tests went from 11 s to 33 s). One thread per worker
# (and per process it starts: the variables are inherited), set before torch is imported.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")
# leftover_processes: the run fails when a process a test started outlives the session (tests/leftover_processes.py)
pytest_plugins = ("pytester", "leftover_processes")

# CI must never be flaky: the same examples every run. Locally, explore. The repo's own property
# tests use the profiles the plugin gives users.
register_profiles()
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or default_profile())


#: The repo's harness/ (the demo zoo, the benchmarks) is not part of the installed package: the tests'
#: subprocesses that run `python -m harness.zoo` from a test's own folder find it through PYTHONPATH.
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")])
)

#: Loaded before any pytester session, besides the package itself: what runs inside one would import.
_LIBRARIES = (
    "cloudpickle",
    "multiprocessing.forkserver",
    "multiprocessing.resource_tracker",
    "harness.zoo",
    "torch",
    "torch.export",
    "torch._dynamo",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "openvino",
    "openvino.frontend",
    "scipy.stats",
)


@functools.cache
def load_what_pytester_would_unload() -> None:
    """pytester's in-process runs, and the pytester fixture itself, restore sys.modules afterwards: a
    module first imported inside one is dropped, and the next import makes a new module. Then a class
    caught by an except clause is another class (BaselineError: a test failed when its file ran
    alone), a module attribute patched by a test is on the old copy, a fork server started from the
    old multiprocessing module outlives it (300 MB each), and dynamo registers its backends twice.
    Every module a run can import is imported here first, outside any snapshot, once per process:
    then no test depends on which test happened to import a module before it."""
    import pytest_navigator

    for info in pkgutil.walk_packages(pytest_navigator.__path__, "pytest_navigator."):
        if not info.name.endswith(".__main__"):  # `python -m pytest_navigator`: importing it runs the CLI
            importlib.import_module(info.name)
    for name in _LIBRARIES:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch

        # inductor's and dynamo's backends load on the first compile (registering ops and backend names)
        torch.compile(lambda x: x + 1)(torch.ones(2))


@pytest.fixture(autouse=True)
def _runtimes_in_process_unless_isolated(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """pytester sessions run their runtimes in pytest's own process (--navigator-isolation=none), as
    these tests are about options, reports and verdicts, and a worker process per runtime per
    session would triple the suite's time. Tests of the default, isolated path (the demo's README
    command, the bad-inputs corpus's hangs and crashes) are marked `isolated`.

    Every inner session also keeps its items in collection order (-p no:randomly: the random order is
    the outer suite's), and reports windows that other processes disturbed instead of leaving them
    out (--navigator-interference=report): the suite runs on every core (pytest -n), so another test
    always computes beside a measurement, and a test of options, reports or verdicts must not pass
    or fail by that. The tests of interference itself ask for 'exclude' and fake a busy /proc.
    (Set after pytester's setup, which clears PYTEST_ADDOPTS; fixtures that set more options append
    to it.)"""
    if "pytester" not in request.fixturenames:
        return
    load_what_pytester_would_unload()
    request.getfixturevalue("pytester")
    isolation = "" if request.node.get_closest_marker("isolated") else " --navigator-isolation=none"
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:randomly --navigator-interference=report" + isolation)


def write_model(kind: str, path: Path, **sizes: int) -> Path:
    """A demo model written in the format path's suffix implies, with a sidecar spec beside it."""
    from harness import zoo

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch

        torch.manual_seed(0)
        model = zoo.MLP(**sizes).eval() if kind == "mlp" else zoo.build(kind)
        demo = zoo.ZOO[kind]
        inputs = list(demo.inputs)
        if kind == "mlp" and "features" in sizes:
            inputs = [f"input:float32[N,{sizes['features']}]"]
            example: tuple[torch.Tensor, ...] = (torch.randn(2, sizes["features"]),)
        else:
            example = demo.example(2)
        fmt = {".pt": "torchscript", ".pt2": "pt2", ".onnx": "onnx", ".pkl": "pickle"}[path.suffix]
        zoo.save(model, example, path, fmt, [s.split(":")[0] for s in inputs])
    listed = ", ".join(f'"{spec}"' for spec in inputs)
    path.with_name(path.stem + ".navigator.toml").write_text(f"inputs = [{listed}]\n")
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny MLP (8 -> 16 -> 3) in every format: suffix -> path."""
    folder = tmp_path_factory.mktemp("tiny")
    return {
        suffix: write_model("mlp", folder / f"mlp{suffix}", features=8, hidden=16, classes=3)
        for suffix in (".pt", ".pt2", ".onnx", ".pkl")
    }


@pytest.fixture(scope="session")
def transformer_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The transformer demo (int64 ids + mask, dynamic batch) as .pt2 and .onnx."""
    folder = tmp_path_factory.mktemp("transformer")
    return {suffix: write_model("transformer", folder / f"encoder{suffix}") for suffix in (".pt2", ".onnx")}
