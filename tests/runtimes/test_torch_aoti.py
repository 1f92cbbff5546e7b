"""AOTInductor (torch-aoti-cpu): one package per model for every batch size, kept in the artifact
cache, checked and profiled like any other runtime; what it cannot take is skipped with the reason."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from pytest_navigator.check.strategies import random_samples
from pytest_navigator.config import ProfilerConfig
from pytest_navigator.errors import RuntimeNotApplicable
from pytest_navigator.report.results import Status
from pytest_navigator.runtimes import default_registry
from pytest_navigator.session import NavigatorSession
from pytest_navigator.settings import Settings

AOTI = "torch-aoti-cpu"


def _session(model: Path, cache: Path | None, **settings: object) -> NavigatorSession:
    session = NavigatorSession(Settings(models=(model,), cache_dir=cache, **settings), default_registry())  # type: ignore[arg-type]
    session.load_models()
    return session


def _artifacts(session: NavigatorSession, runtime: str = AOTI) -> list[str]:
    (model,) = session.models.values()
    return session.results.runtimes[(model.path, runtime)].artifacts


def test_one_package_serves_every_batch_size_and_the_next_run_restores_it(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    session = _session(tiny_models[".pt2"], cache)
    (model,) = session.models.values()
    runner = session.runner(model, AOTI)
    (line,) = _artifacts(session)
    assert line.startswith("built torch-aoti")
    reference = session.builds.reference(model)
    for sample in random_samples(model.io_spec, [1, 3, 8], seed=5):  # none of them the build's example
        got, expected = runner.infer(sample), reference.infer(sample)
        assert got.keys() == expected.keys()
        for name in got:
            assert got[name].shape == expected[name].shape
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)
    (entry,) = _entries(cache)
    assert (entry / "model.pt2").is_file()

    again = _session(tiny_models[".pt2"], cache)
    (model,) = again.models.values()
    again.runner(model, AOTI)
    (line,) = _artifacts(again)
    assert line.startswith("restored torch-aoti")


def test_the_package_is_checked_and_profiled_like_any_runtime(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    session = _session(tiny_models[".pt2"], tmp_path / "cache")
    (model,) = session.models.values()
    report = session.check_correctness(model, AOTI)
    assert report.generated > 0 and report.budget_multiple is not None  # judged against the float64 truth
    profile = session.profile(model, AOTI, ProfilerConfig(batch_sizes=(1, 4), max_trials=3, time_budget=None))
    assert [b.batch_size for b in profile.batches] == [1, 4]
    assert all(b.windows and b.status in ("stable", "unstable") for b in profile.batches)
    assert profile.thread_option == "threads"
    assert session.results.runtimes[(model.path, AOTI)].status == Status.PASSED


def test_what_changes_the_compiled_code_is_a_new_package(
    tiny_models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread count (compiled into the OpenMP loops) and the CPU's vector ISA are in the key: a
    package built on an AVX-512 machine is never restored on an AVX2 one."""
    from pytest_navigator.runtimes import torch_aoti

    cache = tmp_path / "cache"
    first = _session(tiny_models[".pt2"], cache)
    first.runner(next(iter(first.models.values())), AOTI)
    threads = torch.get_num_threads() + 1  # not the default (under xdist the conftest sets one thread)
    one_thread = _session(tiny_models[".pt2"], cache, runtime_options={AOTI: {"threads": str(threads)}})
    (model,) = one_thread.models.values()
    runner = one_thread.runner(model, one_thread.builds.runtime_id(AOTI))
    assert runner.compute_threads() == threads
    assert _artifacts(one_thread, one_thread.builds.runtime_id(AOTI))[0].startswith("built torch-aoti")
    here = torch_aoti._target("cpu")
    assert "x86" not in here or "avx2" in here  # the CPU's vector extensions, read from its flags
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")  # ATen's kernels forced to AVX2, as on older machines
    assert torch_aoti._target("cpu") != here
    monkeypatch.setattr(torch_aoti, "_target", lambda device: "cpu another-isa")
    other = _session(tiny_models[".pt2"], cache)
    (model,) = other.models.values()
    other.runner(model, AOTI)
    assert _artifacts(other)[0].startswith("built torch-aoti")
    assert len(_entries(cache)) == 3


def _entries(cache: Path) -> list[Path]:
    return [p for p in (cache / "torch-aoti").iterdir() if p.is_dir()]


class Branchy(torch.nn.Module):
    """A module that branches on its input's values: torch.export cannot trace it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return x * 2
        return x - 1


def _data_dependent_module(path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(Branchy().eval(), path)
    path.with_name(path.stem + ".navigator.toml").write_text('inputs = ["x:float32[N,4]"]\n')
    return path


def test_a_pickled_module_is_exported_with_its_batch_axis(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    session = _session(tiny_models[".pkl"], tmp_path / "cache", trust_model=True)
    (model,) = session.models.values()
    runner = session.runner(model, AOTI)
    reference = session.builds.reference(model)
    for sample in random_samples(model.io_spec, [1, 6], seed=2):
        got, expected = runner.infer(sample), reference.infer(sample)
        for name in got:
            np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("isolation", ["none", "process"])
def test_a_module_torch_export_cannot_take_is_skipped_with_the_exporters_message(
    tmp_path: Path, isolation: str
) -> None:
    """In a worker too: the error comes back by its class name, so the run skips rather than fails."""
    session = _session(_data_dependent_module(tmp_path / "branchy.pkl"), None, trust_model=True, isolation=isolation)
    (model,) = session.models.values()
    with pytest.raises(RuntimeNotApplicable, match=r"torch\.export cannot export branchy\.pkl .*: \w+"):
        session.runner(model, AOTI)
    result = session.results.runtimes[(model.path, AOTI)]
    assert result.status == Status.SKIPPED and "torch.export cannot export" in result.detail
    session.close()


def test_torchscript_and_onnx_models_are_skipped_with_the_reason(tiny_models: dict[str, Path]) -> None:
    def reason(path: Path) -> str:
        session = _session(path, None, runtimes=(AOTI,))  # named: planned even where it does not apply
        (plan,) = [p for p in session.builds.plan(next(iter(session.models.values()))) if p.name == AOTI]
        return plan.skip_reason or ""

    assert "a TorchScript module cannot be exported" in reason(tiny_models[".pt"])
    assert "mlp.onnx is onnx" in reason(tiny_models[".onnx"])
