"""Runtime options: parsing, errors, runtime ids, and each option reaching the runtime it configures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pytest_navigator.check.strategies import random_samples
from pytest_navigator.config import CustomConfigForFormat, Format
from pytest_navigator.runtimes import default_registry
from pytest_navigator.runtimes.runtime_options import (
    OnnxRuntimeConfig,
    RuntimeOptionError,
    TensorRTConfig,
    TorchCompileConfig,
    parse_option_specs,
    runtime_id,
    split_runtime_id,
    with_options,
)
from pytest_navigator.session import NavigatorSession
from pytest_navigator.settings import Settings


def test_configs_are_model_navigator_custom_configs_for_a_format() -> None:
    config = OnnxRuntimeConfig()
    assert isinstance(config, CustomConfigForFormat)
    assert config.format is Format.ONNX and OnnxRuntimeConfig.name() == "OnnxRuntime"
    assert TensorRTConfig.from_dict({"fp16": True}) == TensorRTConfig(fp16=True)
    assert TensorRTConfig.from_dict({"fp16": "true", "workspace_bytes": "1024"}) == TensorRTConfig(
        fp16=True, workspace_bytes=1024
    )


def test_strings_from_the_cli_become_typed_values() -> None:
    config = with_options(
        OnnxRuntimeConfig(),
        {"intra_op_num_threads": "2", "allow_spinning": "off", "graph_optimization_level": "basic"},
        "--navigator-runtime-option",
        "onnxruntime-cpu",
    )
    assert config == OnnxRuntimeConfig(intra_op_num_threads=2, allow_spinning=False, graph_optimization_level="basic")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"threads": "2"},
            r"onnxruntime-cpu has no option 'threads'; its options \(OnnxRuntimeConfig\): intra_op_num_threads \(integer >= 0, default 0\)",
        ),
        (
            {"intra_op_num_threads": "two"},
            r"OnnxRuntime option intra_op_num_threads='two' is not accepted; expected integer >= 0",
        ),
        ({"intra_op_num_threads": "-1"}, r"intra_op_num_threads='-1' is not accepted"),
        ({"allow_spinning": "maybe"}, r"allow_spinning='maybe' is not accepted; expected true \| false"),
        ({"graph_optimization_level": "max"}, r"expected disable \| basic \| extended \| all"),
    ],
)
def test_unknown_options_and_bad_values_list_what_is_accepted(values: dict[str, str], message: str) -> None:
    with pytest.raises(RuntimeOptionError, match=message):
        with_options(OnnxRuntimeConfig(), values, "--navigator-runtime-option", "onnxruntime-cpu")


def test_options_that_contradict_each_other_are_refused() -> None:
    with pytest.raises(RuntimeOptionError, match="cuda_graphs=true goes with mode=default"):
        TorchCompileConfig(mode="reduce-overhead", cuda_graphs=True)
    with pytest.raises(RuntimeOptionError, match="builder_optimization_level=9 is not accepted; expected 0 to 5"):
        with_options(TensorRTConfig(), {"builder_optimization_level": "9"}, "ini", "tensorrt")


def test_option_specs_parse_and_name_the_option_when_malformed() -> None:
    found = parse_option_specs(
        ["onnxruntime-cpu:intra_op_num_threads=1,allow_spinning=false", "onnxruntime-cpu:intra_op_num_threads=2"], "x"
    )
    assert found == {"onnxruntime-cpu": {"intra_op_num_threads": "2", "allow_spinning": "false"}}
    with pytest.raises(
        RuntimeOptionError, match=r"--navigator-runtime-option='onnxruntime-cpu' is not RUNTIME:OPTION=VALUE"
    ):
        parse_option_specs(["onnxruntime-cpu"], "--navigator-runtime-option")


def test_the_runtime_id_names_only_changed_options_sorted_and_round_trips() -> None:
    defaults = OnnxRuntimeConfig(io_binding=False)
    assert runtime_id("onnxruntime-cpu", defaults, defaults) == "onnxruntime-cpu"
    changed = OnnxRuntimeConfig(io_binding=False, intra_op_num_threads=1, allow_spinning=False)
    rid = runtime_id("onnxruntime-cpu", changed, defaults)
    assert rid == "onnxruntime-cpu:allow_spinning=false,intra_op_num_threads=1"
    name, values = split_runtime_id(rid)
    assert with_options(defaults, values, rid, name) == changed


def _session(model: Path, **options: dict[str, str]) -> NavigatorSession:
    session = NavigatorSession(Settings(models=(model,), runtime_options=options), default_registry())
    session.load_models()
    return session


def test_session_ids_carry_options_into_plans_and_refuse_runtimes_without_options(tiny_models: dict[str, Path]) -> None:
    from pytest_navigator.runtimes import CallableRunner, RuntimeDefinition

    session = _session(tiny_models[".onnx"], **{"onnxruntime-cpu": {"intra_op_num_threads": "1"}})
    (model,) = session.models.values()
    assert session.builds.plan(model)[0].name == "onnxruntime-cpu:intra_op_num_threads=1"
    session.registry.register(RuntimeDefinition("server", lambda m, c: CallableRunner("server", dict, m.io_spec)))
    with pytest.raises(RuntimeOptionError, match=r"server takes no options \(got threads\)"):
        session.builds.runtime_id("server", {"threads": 1})
    with pytest.raises(RuntimeOptionError, match="unknown runtime 'onnxruntime-gpu'; known runtimes: torch-cpu"):
        session.builds.runtime_id("onnxruntime-gpu")


def test_onnxruntime_options_reach_the_session(tiny_models: dict[str, Path]) -> None:
    session = _session(
        tiny_models[".onnx"],
        **{
            "onnxruntime-cpu": {"intra_op_num_threads": "1", "graph_optimization_level": "basic", "allow_spinning": "0"}
        },
    )
    (model,) = session.models.values()
    plan = session.builds.plan(model)[0]
    runner = session.runner(model, plan.name)
    options = runner.session.get_session_options()  # type: ignore[attr-defined]
    import onnxruntime as ort

    assert options.intra_op_num_threads == 1
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert runner.runtime == plan.name
    assert session.check_correctness(model, plan.name).passed


def test_io_binding_path_gives_the_same_outputs(tiny_models: dict[str, Path]) -> None:
    session = _session(tiny_models[".onnx"], **{"onnxruntime-cpu": {"io_binding": "true"}})
    (model,) = session.models.values()
    bound = session.runner(model, "onnxruntime-cpu:io_binding=true")
    plain = session.builds.reference(model)
    sample = random_samples(model.io_spec, [3], seed=4)[0]
    prepared = bound.prepare(sample)
    import onnxruntime as ort

    assert all(isinstance(v, ort.OrtValue) for v in prepared.values())  # bound before any timing
    got, want = bound.infer(sample), plain.infer(sample)
    assert list(got) == list(want) and all(isinstance(v, np.ndarray) for v in got.values())
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def test_torch_threads_hold_only_while_the_runtime_runs(tiny_models: dict[str, Path]) -> None:
    import torch

    session = _session(tiny_models[".pt2"], **{"torch-cpu": {"threads": "1"}})
    (model,) = session.models.values()
    runner = session.runner(model, "torch-cpu:threads=1")
    seen: list[int] = []
    module = runner.module  # type: ignore[attr-defined]
    handle = module.register_forward_hook(lambda *args: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        runner.infer(random_samples(model.io_spec, [2], seed=1)[0])
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        handle.remove()
        torch.set_num_threads(before)


def test_fp16_options_change_the_runtime_precision(tiny_models: dict[str, Path]) -> None:
    session = _session(tiny_models[".onnx"])
    assert session.builds.precision("tensorrt") == "tf32"  # TensorRT's default: TF32 on, so its budget is TF32's
    assert session.builds.precision("tensorrt:tf32=false") == "fp32"
    assert (
        session.builds.precision("torch-cuda:tf32=true") == "tf32" and session.builds.precision("torch-cuda") == "fp32"
    )
    assert session.builds.precision("torch-cpu:tf32=true") == "fp32"  # no TF32 on a CPU
    assert session.builds.precision("tensorrt:fp16=true") == "fp16"
    assert session.builds.precision("tensorrt-fp16") == "fp16"
    assert session.builds.precision("onnxruntime-tensorrt:trt_fp16=true") == "fp16"


def test_cuda_graphs_on_a_cpu_runtime_fail_its_build_with_the_reason(tiny_models: dict[str, Path]) -> None:
    from pytest_navigator.errors import RuntimeBuildError

    session = _session(tiny_models[".pt2"], **{"torch-compile-cpu": {"cuda_graphs": "true"}})
    (model,) = session.models.values()
    with pytest.raises(RuntimeBuildError, match="cuda_graphs=true needs a CUDA runtime"):
        session.runner(model, "torch-compile-cpu:cuda_graphs=true")
