"""The repo's own test setup: pytester, Hypothesis profiles, and tiny model files shared by tests."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from hypothesis import settings

from pytest_navigator.hypothesis_profiles import default_profile, register_profiles

pytest_plugins = ("pytester",)

# CI must never be flaky: the same examples every run. Locally, explore. The repo's own property
# tests use the profiles the plugin gives users.
register_profiles()
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or default_profile())


@pytest.fixture(autouse=True)
def _runtimes_in_process_unless_isolated(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """pytester sessions run their runtimes in pytest's own process (--navigator-isolation=none), as
    these tests are about options, reports and verdicts, and a worker process per runtime per
    session would triple the suite's time. Tests of the default, isolated path (the demo's README
    command, the bad-inputs corpus's hangs and crashes) are marked `isolated`. (Set after pytester's
    setup, which clears PYTEST_ADDOPTS; fixtures that set more options append to it.)"""
    if "pytester" not in request.fixturenames or request.node.get_closest_marker("isolated"):
        return
    request.getfixturevalue("pytester")
    monkeypatch.setenv("PYTEST_ADDOPTS", "--navigator-isolation=none")


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
