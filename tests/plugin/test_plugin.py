"""The plugin in real pytest sessions (pytester): generated tests, selection, errors, user runtimes, fixtures."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pytest_navigator.config import Format
from pytest_navigator.runtimes import default_registry

CPU_TORCH = "torch-cpu,torchscript-cpu,onnxruntime-cpu"  # torch.compile is exercised in test_demo.py
GPU_RUNTIMES = [d.name for d in default_registry() if d.device == "cuda"]


@pytest.fixture(autouse=True)
def _correctness_only(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """These sessions test options and correctness; profiling has its own (test_plugin_performance.py).
    (Set after pytester's setup, which clears PYTEST_ADDOPTS.)"""
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{os.environ.get('PYTEST_ADDOPTS', '')} --navigator-no-profile".strip())


def _copy(pytester: pytest.Pytester, source: Path, name: str | None = None) -> Path:
    target = pytester.path / (name or source.name)
    shutil.copy(source, target)
    return target


def test_generated_test_ids(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> None:
    _copy(pytester, tiny_models[".pt2"])
    result = pytester.runpytest("--navigator-model=mlp.pt2", "--collect-only", "-q")
    ids = [line for line in result.outlines if "::" in line]
    # an exported program's default set: AOTInductor, not torch.compile (torch_runtimes.definitions)
    defaults = [d.name for d in default_registry() if d.default_for(Format.TORCH_EXPORTEDPROGRAM)]
    assert "torch-aoti-cpu" in defaults and "torch-compile-cpu" not in defaults
    assert ids == [f"mlp.pt2::test_correctness[{name}]" for name in defaults]
    assert "mlp.pt2::test_correctness[torch-aoti-cpu]" in ids and "mlp.pt2::test_correctness[tensorrt-fp16]" in ids


def test_a_runtime_outside_the_default_set_runs_when_named(
    pytester: pytest.Pytester, tiny_models: dict[str, Path]
) -> None:
    for suffix in (".pt2", ".pkl"):
        _copy(pytester, tiny_models[suffix])
    named = pytester.runpytest(
        "--navigator-model=mlp.pt2", "--navigator-runtimes=torch-compile-cpu", "--collect-only", "-q"
    )
    assert [line for line in named.outlines if "::" in line] == ["mlp.pt2::test_correctness[torch-compile-cpu]"]
    pickled = pytester.runpytest(
        "--navigator-model=mlp.pkl",
        "--navigator-trust-model",
        "--navigator-input=input:float32[N,8]",
        "--collect-only",
        "-q",
    )
    ids = [line for line in pickled.outlines if "::" in line]
    assert "mlp.pkl::test_correctness[torch-compile-cpu]" in ids and not any("torch-aoti" in i for i in ids)


def test_onnx_models_get_no_torch_runtimes(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> None:
    _copy(pytester, tiny_models[".onnx"])
    result = pytester.runpytest("--navigator-model=mlp.onnx", "--collect-only", "-q")
    ids = [line.split("[")[1].rstrip("]") for line in result.outlines if "::" in line]
    assert ids == [
        "onnxruntime-cpu",
        "openvino-cpu",
        "onnxruntime-cuda",
        "onnxruntime-tensorrt",
        "tensorrt",
        "tensorrt-fp16",
    ]


@pytest.mark.parametrize(
    ("suffix", "extra", "runtimes"),
    [
        (".pt", ["--navigator-input=input:float32[N,8]"], CPU_TORCH),
        (".pt2", [], CPU_TORCH),
        (".pkl", ["--navigator-trust-model", "--navigator-input=input:float32[N,8]"], CPU_TORCH),
        (".onnx", [], "onnxruntime-cpu"),
    ],
)
def test_each_format_runs_its_cpu_runtimes(
    pytester: pytest.Pytester, tiny_models: dict[str, Path], suffix: str, extra: list[str], runtimes: str
) -> None:
    path = _copy(pytester, tiny_models[suffix])
    result = pytester.runpytest(f"--navigator-model={path.name}", f"--navigator-runtimes={runtimes}", *extra, "-v")
    result.assert_outcomes(passed=len(runtimes.split(",")))
    result.stdout.fnmatch_lines(
        [f"*{path.name}::test_correctness[[]{runtimes.split(',')[0]}[]] PASSED*", "*navigator runtimes*"]
    )


def test_gpu_runtimes_are_skipped_with_the_reason(
    pytester: pytest.Pytester, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    # Whatever this machine has, make CUDA invisible so the reasons are known.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: True)
    _copy(pytester, tiny_models[".pt2"])
    result = pytester.runpytest(
        "--navigator-model=mlp.pt2", f"--navigator-runtimes=torch-cpu,{','.join(GPU_RUNTIMES)}", "-rs"
    )
    result.assert_outcomes(passed=1, skipped=len(GPU_RUNTIMES))
    result.stdout.fnmatch_lines(
        [
            "*SKIPPED*torch-cuda: no CUDA device is visible to torch*",
            "*SKIPPED*torch-compile-cuda: no CUDA device is visible to torch*",
        ]
    )
    assert any(
        "onnxruntime-cuda:" in line and ("CUDAExecutionProvider" in line or "no CUDA device" in line)
        for line in result.outlines
    )


def test_unknown_runtime_is_a_usage_error(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> None:
    _copy(pytester, tiny_models[".pt2"])
    result = pytester.runpytest("--navigator-model=mlp.pt2", "--navigator-runtimes=torch-cpu,tensor-rt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*unknown runtime 'tensor-rt'; known runtimes: torch-cpu, torchscript-cpu, torch-compile-cpu*"]
    )


def test_bad_batch_sizes_name_the_option(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> None:
    _copy(pytester, tiny_models[".pt2"])
    result = pytester.runpytest("--navigator-model=mlp.pt2", "--navigator-batch-sizes=1,x")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--navigator-batch-sizes='1,x': 'x' is not a batch size*"])


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "does not exist"),
        (b"", "is empty"),
        (b"PK\x03\x04broken", "damaged zip archive"),
        (bytes(range(256)) * 8, "not a valid ONNX file"),
    ],
)
def test_bad_model_files_are_usage_errors(pytester: pytest.Pytester, content: bytes | None, problem: str) -> None:
    if content is not None:
        (pytester.path / "bad.pt").write_bytes(content)
    result = pytester.runpytest("--navigator-model=bad.pt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: model file '*bad.pt' *{problem}*Accepted formats: TorchScript*"])


def test_directory_and_unreadable_file_are_usage_errors(
    pytester: pytest.Pytester, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    (pytester.path / "folder.pt2").mkdir()
    result = pytester.runpytest("--navigator-model=folder.pt2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: model file '*folder.pt2' is a directory, not a model file*Accepted formats*"])

    locked = _copy(pytester, tiny_models[".pt2"])
    original = Path.open

    def refuse(self: Path, *args: object, **kwargs: object) -> object:  # root reads past chmod 000
        if self.name == locked.name:
            raise PermissionError(13, "Permission denied")
        return original(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", refuse)
    result = pytester.runpytest("--navigator-model=mlp.pt2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: model file '*mlp.pt2' cannot be read (Permission denied)*Accepted formats*"])


def test_torchscript_without_spec_shows_the_option(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> None:
    _copy(pytester, tiny_models[".pt"])
    result = pytester.runpytest("--navigator-model=mlp.pt")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*does not say what inputs it takes*", '*--navigator-input "input:float32[[]N,...[]]"*']
    )


def test_malformed_input_spec_is_a_usage_error(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> None:
    _copy(pytester, tiny_models[".pt"])
    result = pytester.runpytest("--navigator-model=mlp.pt", "--navigator-input=input:float32[N,8")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--navigator-input: cannot read input spec 'input:float32[[]N,8'*"])


_PAYLOAD = """
import torch

class Payload:
    def __reduce__(self):
        return (open, ("pwned", "w"))

torch.save(Payload(), "model.pt")
"""


def test_pickle_payload_runs_only_with_the_opt_in(pytester: pytest.Pytester) -> None:
    pytester.run("python", "-c", _PAYLOAD)
    assert (pytester.path / "model.pt").is_file() and not (pytester.path / "pwned").exists()
    refused = pytester.runpytest("--navigator-model=model.pt", "--navigator-input=x:float32[N,4]")
    assert refused.ret == pytest.ExitCode.USAGE_ERROR
    refused.stderr.fnmatch_lines(["*pickled torch object*--navigator-trust-model*"])
    assert not (pytester.path / "pwned").exists()
    trusted = pytester.runpytest(
        "--navigator-model=model.pt", "--navigator-input=x:float32[N,4]", "--navigator-trust-model"
    )
    assert (pytester.path / "pwned").exists()  # proof the first run would have shown a payload
    trusted.stderr.fnmatch_lines(["*not a torch.nn.Module*"])


_USER_RUNTIMES = """
from pytest_navigator.runtimes import CallableRunner, RuntimeDefinition
from pytest_navigator.runtimes.torch_runtimes import build_eager


def pytest_navigator_register_runtimes(registry, config):
    def build_server(model, ctx):
        return CallableRunner("my-server", build_eager(model, ctx).infer, model.io_spec)

    def build_wrong(model, ctx):
        eager = build_eager(model, ctx)
        return CallableRunner("wrong-server", lambda s: {k: v + 0.5 for k, v in eager.infer(s).items()}, model.io_spec)

    def build_broken(model, ctx):
        raise ConnectionError("server at 127.0.0.1:9 refused the connection")

    registry.register(RuntimeDefinition("my-server", build_server))
    registry.register(RuntimeDefinition("wrong-server", build_wrong))

    @registry.runtime("broken-server")
    def _broken(model, ctx):
        return build_broken(model, ctx)
"""


def test_user_runtimes_from_conftest(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> None:
    _copy(pytester, tiny_models[".pt2"])
    pytester.makeconftest(_USER_RUNTIMES)
    result = pytester.runpytest(
        "--navigator-model=mlp.pt2", "--navigator-runtimes=torch-cpu,my-server,wrong-server,broken-server", "-v"
    )
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(
        [
            "*test_correctness[[]my-server[]] PASSED*",
            "*wrong-server disagrees with the reference (torch-cpu) on mlp.pt2, judged by error budget (16x the reference's own rounding, fp32):*",
            "*sample: input float32[[]*, 8[]] (generated; *",
            "*output 'output': error 0.5 against the float64 shadow is *x the reference's own rounding*max abs error 0.5*would pass allclose with atol >= 0.5*",
            "*truth: the float64 shadow*",
            "*building broken-server for mlp.pt2 failed: ConnectionError: server at 127.0.0.1:9 refused the connection*",
        ]
    )
    # the unknown-runtime message lists user runtimes too
    listed = pytester.runpytest("--navigator-model=mlp.pt2", "--navigator-runtimes=nope")
    listed.stderr.fnmatch_lines(["*known runtimes:*my-server, wrong-server, broken-server*"])


def test_fixtures_let_users_write_their_own_tests(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> None:
    _copy(pytester, tiny_models[".pt2"])
    pytester.makepyfile(
        test_mine="""
        import numpy as np

        def test_three_classes(navigator_model, navigator_runner):
            assert navigator_model.name == "mlp.pt2"
            out = navigator_runner.infer({"input": np.ones((5, 8), np.float32)})
            assert list(out) == ["output"] and out["output"].shape == (5, 3)
    """
    )
    result = pytester.runpytest(
        "test_mine.py", "--navigator-model=mlp.pt2", "--navigator-runtimes=torch-cpu,onnxruntime-cpu,tensorrt", "-v"
    )
    result.assert_outcomes(passed=4, skipped=2)
    result.stdout.fnmatch_lines(["*test_mine.py::test_three_classes[[]mlp.pt2-onnxruntime-cpu[]] PASSED*"])


def test_without_navigator_options_the_plugin_stays_out_of_the_way(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mine="""
        def test_plain(pytestconfig):
            assert pytestconfig.pluginmanager.get_plugin("navigator-session") is None

        def test_needs_model(navigator_runner):
            pass
    """
    )
    result = pytester.runpytest("-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*no model given: run pytest with --navigator-model=PATH*"])
    assert "navigator runtimes" not in result.stdout.str()


def test_ini_twins_configure_the_run(pytester: pytest.Pytester, tiny_models: dict[str, Path]) -> None:
    _copy(pytester, tiny_models[".pt"])
    pytester.makeini("""
        [pytest]
        navigator_models = mlp.pt
        navigator_runtimes = torch-cpu, torchscript-cpu
        navigator_inputs = input:float32[N,8]
        navigator_batch_sizes = 2,3
    """)
    result = pytester.runpytest("-v")
    result.assert_outcomes(passed=2)
    # 2 configured batch sizes + 25 generated; generated batch sizes range from 1 up to at most 8
    # (how far up depends on what Hypothesis draws), and the configured 3 is always among them
    result.stdout.fnmatch_lines(["*torchscript-cpu*passed*27 samples at batch sizes 1-[345678],*"])
