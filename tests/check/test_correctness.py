"""The correctness check end to end: broken runtimes are caught, shrunk, explained, saved and replayable."""

from __future__ import annotations

import copy
import dataclasses
import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pytest_navigator.check.correctness import CheckOptions, CorrectnessFailure, VacuousCheckWarning
from pytest_navigator.check.user_samples import load_sample_files
from pytest_navigator.check.verify import tolerance_for
from pytest_navigator.config import Sample
from pytest_navigator.model.loader import Model
from pytest_navigator.runtimes import (
    BuildContext,
    CallableRunner,
    Registry,
    Runner,
    RuntimeDefinition,
    default_registry,
)
from pytest_navigator.runtimes.torch_runtimes import TorchRunner, build_eager
from pytest_navigator.session import NavigatorSession
from pytest_navigator.settings import Settings


def _session(model: Path, registry: Registry, tmp_path: Path, **settings: object) -> tuple[NavigatorSession, Model]:
    session = NavigatorSession(
        Settings(models=(model,), state_dir=tmp_path / ".navigator", invocation_dir=tmp_path, seed=1, **settings),  # type: ignore[arg-type]
        registry,
    )
    return session, session.load_models()[0]


def _wrapping(
    name: str, when: Callable[[Sample], bool], corrupt: Callable[[np.ndarray], np.ndarray]
) -> RuntimeDefinition:
    """A runtime that is torch eager, except that its outputs are corrupted whenever `when(sample)`."""

    def build(model: Model, ctx: BuildContext) -> Runner:
        eager = build_eager(model, ctx)

        def infer(sample: Sample) -> Sample:
            outputs = eager.infer(sample)
            return {k: corrupt(v) for k, v in outputs.items()} if when(sample) else outputs

        return CallableRunner(name, infer, model.io_spec)

    return RuntimeDefinition(name, build)


def _failure(session: NavigatorSession, model: Model, runtime: str) -> str:
    with pytest.raises(CorrectnessFailure) as excinfo:
        session.check_correctness(model, runtime)
    return str(excinfo.value)


def _saved(message: str, tmp_path: Path) -> Path:
    match = re.search(r"saved: (\S+)", message)
    assert match, message
    return tmp_path / match[1]


def test_a_batch_size_bug_is_reported_at_the_smallest_failing_batch(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    registry = default_registry()
    registry.register(_wrapping("big-batch-bug", lambda s: s["input"].shape[0] > 4, lambda v: v + 0.5))
    session, model = _session(tiny_models[".pt2"], registry, tmp_path)
    message = _failure(session, model, "big-batch-bug")
    assert (
        "big-batch-bug disagrees with the reference (torch-cpu) on mlp.pt2, judged by error budget "
        "(16x the reference's own rounding, fp32):" in message
    )
    assert "  sample: input float32[5, 8] (generated; shrunk over" in message
    assert re.search(
        r"output 'output': error 0.5 against the float64 shadow is [\d.e+]+x the reference's own rounding", message
    )
    assert "allowed: 16x at fp32; own rounding" in message and "truth: the float64 shadow" in message
    # the fixed tolerance's figures stay, for whoever wants to set one explicitly
    assert (
        "max abs error 0.5, max rel error" in message
        and "would pass allclose with atol >= 0.5 (at rtol=0.001)" in message
    )
    saved = np.load(_saved(message, tmp_path))
    assert saved["input"].shape == (5, 8) and not saved["input"].any()  # values shrank to zeros: only the size matters
    assert session.results.runtimes[(model.path, "big-batch-bug")].status == "failed"


def test_a_sign_bug_is_reported_with_a_single_negative_element(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    registry = default_registry()
    registry.register(_wrapping("negative-bug", lambda s: bool((s["input"] < 0).any()), lambda v: v * 1.01 + 0.01))
    session, model = _session(tiny_models[".pt2"], registry, tmp_path)
    message = _failure(session, model, "negative-bug")
    saved = np.load(_saved(message, tmp_path))["input"]
    # the batch is wherever Hypothesis's shrinker stopped (1, in every release seen); the elements
    # are simplify's, ours: one -1 and zeros
    assert saved.shape[1] == 8
    assert int((saved < 0).sum()) == 1 and np.count_nonzero(saved) == 1 and saved.min() == -1.0
    assert f"sample: input float32[{saved.shape[0]}, 8]" in message
    replay = re.search(r"replay: (.+)", message)
    assert replay and replay[1] == (
        f"pytest --navigator-model={tiny_models['.pt2']} --navigator-runtimes=negative-bug "
        f"--navigator-samples={_saved(message, tmp_path).relative_to(tmp_path)} --navigator-examples=0"
    )


def test_an_onnx_file_with_one_perturbed_weight_fails_with_its_figures(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from pytest_navigator.runtimes.onnx_runtimes import OnnxRuntimeRunner

    proto = onnx.load(str(tiny_models[".onnx"]))
    weights = max(proto.graph.initializer, key=lambda t: np.prod(t.dims))
    perturbed_weights = numpy_helper.to_array(weights).copy()
    perturbed_weights.flat[3] += 0.25
    weights.CopyFrom(numpy_helper.from_array(perturbed_weights, weights.name))
    perturbed = tmp_path / "mlp-perturbed.onnx"
    onnx.save(proto, str(perturbed))

    registry = default_registry()
    registry.register(
        RuntimeDefinition(
            "perturbed-onnx",
            lambda model, ctx: OnnxRuntimeRunner("perturbed-onnx", model, perturbed, "CPUExecutionProvider"),
        )
    )
    session, model = _session(tiny_models[".onnx"], registry, tmp_path)
    assert session.check_correctness(model, "onnxruntime-cpu").passed
    message = _failure(session, model, "perturbed-onnx")
    sample = dict(np.load(_saved(message, tmp_path)))
    good = ort.InferenceSession(str(tiny_models[".onnx"])).run(None, sample)[0]
    bad = ort.InferenceSession(str(perturbed)).run(None, sample)[0]
    error = np.abs(bad.astype(np.float64) - good)
    worst = np.unravel_index(int(np.argmax(error)), error.shape)
    assert f"max abs error {error.max():.3g}" in message
    assert f"worst at index {[int(i) for i in worst]}: float64 shadow " in message
    assert f"reference {good[worst]:.6g}, got {bad[worst]:.6g}" in message
    assert f"would pass allclose with atol >= {error.max():.3g}" in message
    assert "truth: the float64 shadow" in message  # an MLP's ONNX graph runs in double precision


def _half_precision(name: str, precision: str) -> RuntimeDefinition:
    """torch eager in float16 on the CPU: an honest fp16 runtime (fp32 in, fp32 out)."""

    def build(model: Model, ctx: BuildContext) -> Runner:
        import torch

        with warnings.catch_warnings():  # deep-copying an exported module warns inside torch
            warnings.simplefilter("ignore", FutureWarning)
            module = copy.deepcopy(model.torch_module()).half()

        def infer(sample: Sample) -> Sample:
            inputs = [torch.from_numpy(sample[n]).half() for n in model.io_spec.names]
            with torch.inference_mode():
                return {"output": module(*inputs).float().numpy()}

        return CallableRunner(name, infer, model.io_spec)

    return RuntimeDefinition(name, build, precision=precision)


def _export(module: object, path: Path, spec: str) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = torch.export.Dim("batch", min=1, max=1024)
        program = torch.export.export(module, (torch.randn(2, 8),), dynamic_shapes=({0: batch},))  # type: ignore[arg-type]
        torch.export.save(program, str(path))
    path.with_name(path.stem + ".navigator.toml").write_text(f'inputs = ["{spec}"]\n')
    return path


def test_an_honest_fp16_runtime_passes_fp16_defaults_and_a_real_fp16_error_is_caught(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    import torch

    registry = default_registry()
    registry.register(_half_precision("torch-cpu-fp16", "fp16"))
    registry.register(_half_precision("fp16-judged-as-fp32", "fp32"))
    session, model = _session(tiny_models[".pt2"], registry, tmp_path)
    report = session.check_correctness(model, "torch-cpu-fp16")
    assert (
        report.verify == "error budget (8192x the reference's own rounding, fp16)"
        and report.outputs[0].max_abs_error > 1e-5
    )  # real fp16 error, within fp16's budget
    message = _failure(session, model, "fp16-judged-as-fp32")
    assert "judged by error budget (16x the reference's own rounding, fp32)" in message

    class Offset(torch.nn.Module):
        """Adds and removes a large offset: exact in fp32, off by up to 0.25 in fp16 (spacing 0.5 at 1000)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x + 1000.0) - 1000.0

    # The precision table's fixed tolerance, asked for explicitly, judges as it always did.
    offset = _export(Offset(), tmp_path / "offset.pt2", "x:float32[N,8]")
    session, model = _session(offset, registry, tmp_path)
    with pytest.raises(CorrectnessFailure) as excinfo:
        session.check_correctness(model, "torch-cpu-fp16", CheckOptions(verify=tolerance_for("fp16")))
    message = str(excinfo.value)
    assert (
        "judged by allclose(atol=0.01, rtol=0.01)" in message and "element(s) outside atol=0.01, rtol=0.01" in message
    )


def test_reference_outputs_are_computed_once_per_sample_for_all_runtimes(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    session, model = _session(tiny_models[".pt2"], default_registry(), tmp_path)
    reference = session.builds.reference(model)
    assert isinstance(reference, TorchRunner)
    calls: list[int] = []
    original = reference.infer

    def counting(sample: Sample) -> Sample:
        calls.append(1)
        return original(sample)

    reference.infer = counting  # type: ignore[method-assign]
    first = session.check_correctness(model, "torch-cpu")
    after_first = len(calls)
    second = session.check_correctness(model, "torchscript-cpu")
    assert first.samples == second.samples == 27  # 25 generated + one per configured batch size (1, 4)
    assert 0 < after_first <= first.samples and len(calls) == after_first  # the second runtime reused them all


def test_users_samples_run_first_and_must_fit(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    seen: list[tuple[int, ...]] = []

    def build(model: Model, ctx: BuildContext) -> Runner:
        eager = build_eager(model, ctx)

        def infer(sample: Sample) -> Sample:
            seen.append(sample["input"].shape)
            return eager.infer(sample)

        return CallableRunner("recording", infer, model.io_spec)

    registry = default_registry()
    registry.register(RuntimeDefinition("recording", build))
    np.savez(tmp_path / "mine.npz", input=np.full((3, 8), 7.0, np.float32))
    session, model = _session(tiny_models[".pt2"], registry, tmp_path)
    explicit = load_sample_files(tmp_path / "mine.npz")
    report = session.check_correctness(model, "recording", CheckOptions(examples=5, explicit=explicit))
    assert seen[0] == (3, 8) and report.explicit == 1 and report.samples == 1 + 5 + 2
    only_given = session.check_correctness(model, "recording", CheckOptions(examples=0, explicit=explicit))
    assert only_given.generated == 2  # the configured batch sizes still run; nothing is drawn


def _scaled_linear(scale: float) -> object:
    import torch

    torch.manual_seed(0)
    module = torch.nn.Linear(8, 4)
    with torch.no_grad():
        module.weight.mul_(scale)
        module.bias.mul_(scale)
    return module.eval()


def test_a_check_that_cannot_fail_warns_or_fails_under_strict(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    tiny = _export(_scaled_linear(1e-9), tmp_path / "tiny.pt2", "input:float32[N,8]")
    session, model = _session(tiny, default_registry(), tmp_path)
    with pytest.warns(
        VacuousCheckWarning,
        match=r"torch-cpu on tiny.pt2: output 'output': every reference value is within atol=0.0001 of 0",
    ):
        report = session.check_correctness(model, "torch-cpu")
    assert report.warnings and report.outputs[0].max_abs_reference < 1e-4
    with pytest.raises(CorrectnessFailure, match=r"(?s)every reference value is within atol.*--navigator-strict"):
        session.check_correctness(model, "torch-cpu", CheckOptions(strict=True))
    session, healthy = _session(tiny_models[".pt2"], default_registry(), tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", VacuousCheckWarning)
        assert not session.check_correctness(healthy, "torch-cpu").warnings


def _nonfinite_outputs() -> object:
    """A model with one finite output and two that are never finite."""
    import torch

    class NonFinite(torch.nn.Module):
        def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"scores": input * 2, "nan": input * float("nan"), "inf": input * 0 + float("inf")}

    return NonFinite()


def test_an_output_with_no_finite_reference_value_fails_unless_allowed(tmp_path: Path) -> None:
    """A check that compared no number fails by default, naming the outputs and the opt-in; allowed,
    it passes with the vacuous-check warning (and strict still fails it)."""
    path = _export(_nonfinite_outputs(), tmp_path / "nonfinite.pt2", "input:float32[N,8]")
    session, model = _session(path, default_registry(), tmp_path, examples=2)
    message = _failure(session, model, "torch-cpu")
    assert message.startswith(
        "torch-cpu on nonfinite.pt2: outputs 'nan', 'inf' had no finite reference value over 4 sample(s) "
        "(every value NaN or Inf), so the check compared no number"
    )
    assert message.endswith(
        "--navigator-allow-nonfinite (ini navigator_allow_nonfinite = true, or "
        "@pytest.mark.navigator(allow_nonfinite=True) on a test)."
    )
    with pytest.warns(VacuousCheckWarning) as caught:
        report = session.check_correctness(model, "torch-cpu", CheckOptions(examples=2, allow_nonfinite=True))
    assert [str(w.message).split(":")[1] for w in caught] == [" output 'nan'", " output 'inf'"]
    assert "every reference value is NaN or Inf over 4 sample(s)" in str(caught[0].message)
    assert [o.name for o in report.outputs if o.nonfinite] == ["nan", "inf"] and len(report.warnings) == 2
    with pytest.raises(CorrectnessFailure, match=r"(?s)output 'inf': every reference value is NaN.*--navigator-strict"):
        session.check_correctness(model, "torch-cpu", CheckOptions(examples=2, allow_nonfinite=True, strict=True))
    # the run's setting reaches a check no test's marker refines (`navigator profile --allow-nonfinite`)
    allowed, model = _session(path, default_registry(), tmp_path, examples=2, allow_nonfinite=True)
    with pytest.warns(VacuousCheckWarning):
        assert allowed.check_correctness(model, "torch-cpu").passed


def test_a_runtime_that_raises_on_some_inputs_is_shrunk_too(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    def build(model: Model, ctx: BuildContext) -> Runner:
        eager = build_eager(model, ctx)

        def infer(sample: Sample) -> Sample:
            if sample["input"].shape[0] >= 3:
                raise MemoryError("out of memory at this batch size")
            return eager.infer(sample)

        return CallableRunner("oom", infer, model.io_spec)

    registry = default_registry()
    registry.register(RuntimeDefinition("oom", build))
    session, model = _session(tiny_models[".pt2"], registry, tmp_path)
    message = _failure(session, model, "oom")
    assert (
        "sample: input float32[3, 8]" in message
        and "oom raised MemoryError: out of memory at this batch size" in message
    )


def test_the_example_database_replays_past_failures_first(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    registry = default_registry()
    registry.register(_wrapping("batch-7-bug", lambda s: s["input"].shape[0] == 7, lambda v: v + 1))
    dev = {"hypothesis_profile": "navigator-dev", "batch_sizes": (1,)}
    session, model = _session(tiny_models[".pt2"], registry, tmp_path, **dev)
    assert "input float32[7, 8]" in _failure(session, model, "batch-7-bug")  # found with 25 examples
    # One generated example of another run misses batch size 7 on its own (a fresh database passes) ...
    fresh, fresh_model = _session(tiny_models[".pt2"], registry, tmp_path / "fresh", **dev)
    fresh.settings = dataclasses.replace(fresh.settings, seed=12345)
    assert fresh.check_correctness(fresh_model, "batch-7-bug", CheckOptions(examples=1)).passed
    # ... but with the database of the failing run, the failure is replayed first.
    again, again_model = _session(tiny_models[".pt2"], registry, tmp_path, **dev)
    again.settings = dataclasses.replace(again.settings, seed=12345)
    with pytest.raises(CorrectnessFailure, match=r"input float32\[7, 8\]"):
        again.check_correctness(again_model, "batch-7-bug", CheckOptions(examples=1))
