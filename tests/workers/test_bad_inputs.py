"""Bad inputs and faulty runtimes, one row each: the outcome and the message a user gets.

Never a traceback from deep inside, never a silent pass: a usage error names the option, file or
value and what is accepted; a model at fault is blamed by name; a runtime that hangs or crashes
fails its own tests while the others, the summary and the JSON report carry on.
"""

from __future__ import annotations

import json
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

LINUX_SYS = sys.platform.startswith("linux") and Path("/sys/kernel").is_dir()

#: A fast profile: bad baselines are about messages, not measurement.
QUICK = ("--navigator-batch-sizes=1", "--navigator-window=5", "--navigator-stability=90", "--navigator-max-trials=10")


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, Path]) -> dict[str, Path]:
    """Models that do something wrong, each with a sidecar spec: name -> file."""
    import torch

    folder = tmp_path_factory.mktemp("bad-models")

    class NaNs(torch.nn.Module):
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return input * float("nan")

    class Constant(torch.nn.Module):
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            return input.sum(1, keepdim=True) * 0 + 5.0

    class Raises(torch.nn.Module):
        def forward(self, input: torch.Tensor) -> torch.Tensor:
            if bool(input.sum() > 1e30):
                return input
            raise ValueError("the model refuses this input")

    spec = 'inputs = ["input:float32[N,8]"]\n'
    found = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = torch.export.Dim("batch", min=1, max=1024)
        for name, module in (("nans", NaNs()), ("constant", Constant())):
            program = torch.export.export(module, (torch.randn(2, 8),), dynamic_shapes=({0: batch},))
            torch.export.save(program, str(folder / f"{name}.pt2"))
            found[name] = folder / f"{name}.pt2"
        torch.jit.save(torch.jit.script(Raises()), str(folder / "raises.pt"))
        found["raises"] = folder / "raises.pt"
        huge = torch.export.Dim("batch", min=1, max=10**8)
        program = torch.export.export(NaNs(), (torch.randn(2, 3, 224, 224),), dynamic_shapes=({0: huge},))
        torch.export.save(program, str(folder / "unbounded.pt2"))
        found["unbounded"] = folder / "unbounded.pt2"
    for path in found.values():
        path.with_name(path.stem + ".navigator.toml").write_text(spec)
    (folder / "unbounded.navigator.toml").write_text('inputs = ["input:float32[N=1..100000000,3,224,224]"]\n')
    found["mlp"] = tiny_models[".pt2"]
    found["mlp-pickle"] = tiny_models[".pkl"]
    return found


_OUTPUTS = """
import torch


class ReturnsNone(torch.nn.Module):
    def forward(self, input):
        return None


class ReturnsText(torch.nn.Module):
    def forward(self, input):
        return "a string"
"""


@dataclass
class Case:
    """One bad input: the run's arguments and what must come of them."""

    id: str
    args: tuple[str, ...]
    #: "usage" (pytest stops with a usage error) or assert_outcomes' counts
    outcome: str | dict[str, int]
    lines: list[str]
    model: str = "mlp"
    files: dict[str, str] = field(default_factory=dict)
    needs: str = ""


CASES = [
    Case(
        "baselines folder is a file",
        ("--navigator-baselines=afile",),
        "usage",
        ["ERROR: --navigator-baselines=afile is a file; give a folder*"],
        files={"afile": "x"},
    ),
    Case(
        "cache folder is a file",
        ("--navigator-cache=afile",),
        "usage",
        ["ERROR: --navigator-cache=*afile is a file; give a folder*"],
        files={"afile": "x"},
    ),
    Case(
        "report under a file",
        ("--navigator-report=afile/report.json",),
        "usage",
        ["ERROR: --navigator-report=*afile/report.json: *afile is a file, so nothing can be written under it."],
        files={"afile": "x"},
    ),
    Case(
        "report is a folder",
        ("--navigator-report=folder",),
        "usage",
        ["ERROR: --navigator-report=*folder is a folder; give the path of the JSON file to write."],
        files={"folder/keep": ""},
    ),
    Case(
        "report into a read-only place",
        ("--navigator-report=/sys/navigator/report.json",),
        "usage",
        ["ERROR: --navigator-report=/sys/navigator/report.json: cannot write in /sys (*)."],
        needs="sys",
    ),
    Case(
        "update into a read-only baselines folder",
        ("--update-baselines", "--navigator-baselines=/sys/kernel"),
        "usage",
        [
            "ERROR: --navigator-baselines=/sys/kernel: cannot write in /sys/kernel (*) (--update-baselines writes there)."
        ],
        needs="sys",
    ),
    Case(
        "update into a baselines file",
        ("--update-baselines", "--navigator-baselines=afile"),
        "usage",
        ["ERROR: --navigator-baselines=afile is a file; give a folder*"],
        files={"afile": "x"},
    ),
    Case(
        "batch size above the declared maximum",
        ("--navigator-batch-sizes=10000000", "--navigator-examples=0"),
        "usage",
        [
            "ERROR: --navigator-batch-sizes=10000000: batch size 10000000 is above the largest batch mlp.pt2 takes (1024*"
        ],
    ),
    Case(
        "batch size that cannot fit in memory",
        ("--navigator-batch-sizes=10000000", "--navigator-examples=0"),
        "usage",
        [
            "ERROR: --navigator-batch-sizes=10000000: batch size 10000000 needs at least 5.5 TiB for its inputs alone "
            "(588.0 KiB per sample of unbounded.pt2); this machine has * available."
        ],
        model="unbounded",
        needs="meminfo",
    ),
    Case(
        "batch size zero",
        ("--navigator-batch-sizes=0",),
        "usage",
        ["ERROR: --navigator-batch-sizes='0': '0' is not a batch size; give positive integers*"],
    ),
    Case(
        "negative examples",
        ("--navigator-examples=-1",),
        "usage",
        ["ERROR: --navigator-examples='-1': give a whole number >= 0*"],
    ),
    Case(
        "timeout not a number",
        ("--navigator-timeout=soon",),
        "usage",
        ["ERROR: --navigator-timeout='soon': give seconds > 0*"],
    ),
    Case("timeout zero", ("--navigator-timeout=0",), "usage", ["ERROR: --navigator-timeout='0': give seconds > 0*"]),
    Case(
        "unknown isolation",
        ("--navigator-isolation=threads",),
        "usage",
        ["ERROR: --navigator-isolation='threads': give 'process' or 'none'."],
    ),
    Case(
        "sidecar with an unknown key",
        (),
        "usage",
        ["ERROR: *mlp.navigator.toml: unknown key 'imputs'; a sidecar accepts inputs (e.g. inputs = [*"],
        files={"mlp.navigator.toml": 'inputs = ["input:float32[N,8]"]\nimputs = 3\n'},
    ),
    Case(
        "sidecar that is not TOML",
        (),
        "usage",
        ["ERROR: *mlp.navigator.toml: cannot read this sidecar: *"],
        files={"mlp.navigator.toml": "inputs = [unclosed\n"},
    ),
    Case(
        "unknown runtime",
        ("--navigator-runtimes=onnxruntime-gpuu",),
        "usage",
        ["ERROR: --navigator-runtimes: unknown runtime 'onnxruntime-gpuu'; known runtimes: torch-cpu*"],
    ),
    Case(
        "unknown runtime option",
        ("--navigator-runtime-option=onnxruntime-cpu:threads=1",),
        "usage",
        ["ERROR: --navigator-runtime-option: onnxruntime-cpu has no option 'threads'; its options*"],
    ),
    Case(
        "bad threshold",
        ("--navigator-thresholds=throughput=fast",),
        "usage",
        ["ERROR: --navigator-thresholds: throughput='fast' is not*"],
    ),
    Case(
        "bad inconclusive",
        ("--navigator-inconclusive=maybe",),
        "usage",
        ["ERROR: --navigator-inconclusive='maybe': give 'fail' or 'warn'."],
    ),
    # -- models at fault: blamed by name, with their own words --------------------------------------
    Case(
        "every output NaN",
        ("--navigator-runtimes=torch-cpu",),
        {"failed": 1},
        [
            "*torch-cpu on nans.pt2: output 'output' had no finite reference value over * sample(s) (every value NaN "
            "or Inf), so the check compared no number*let the check pass with a warning: --navigator-allow-nonfinite "
            "(ini navigator_allow_nonfinite = true, or @pytest.mark.navigator(allow_nonfinite=True) on a test)."
        ],
        model="nans",
    ),
    Case(
        "every output NaN, allowed",
        ("--navigator-runtimes=torch-cpu", "--navigator-allow-nonfinite", "-W", "default"),
        {"passed": 1, "warnings": 1},
        ["*VacuousCheckWarning: torch-cpu on nans.pt2: output 'output': every reference value is NaN or Inf over*"],
        model="nans",
    ),
    Case(
        "every output NaN, allowed in the ini",
        ("--navigator-runtimes=torch-cpu", "-W", "default"),
        {"passed": 1, "warnings": 1},
        ["*VacuousCheckWarning: torch-cpu on nans.pt2: output 'output': every reference value is NaN or Inf over*"],
        model="nans",
        files={"pytest.ini": "[pytest]\nnavigator_allow_nonfinite = true\n"},
    ),
    Case(
        "every output NaN, allowed by a test's marker",
        ("--navigator-runtimes=torch-cpu", "-W", "default", "-v", "test_mine.py"),
        {"passed": 1, "failed": 1, "warnings": 1},
        ["*test_mine.py::test_nans_allowed PASSED*", "*nans.pt2::test_correctness[[]torch-cpu[]] FAILED*"],
        model="nans",
        files={
            "test_mine.py": "import pytest\n\n\n@pytest.mark.navigator(allow_nonfinite=True)\n"
            "def test_nans_allowed(navigator_check):\n    navigator_check('torch-cpu')\n"
        },
    ),
    Case(
        "every output NaN, allowed but strict",
        ("--navigator-runtimes=torch-cpu", "--navigator-allow-nonfinite", "--navigator-strict"),
        {"failed": 1},
        ["*every reference value is NaN or Inf*", "*(--navigator-strict turns this warning into a failure)*"],
        model="nans",
    ),
    Case(
        "a constant output",
        ("--navigator-runtimes=torch-cpu", "-W", "default"),
        {"passed": 1, "warnings": 1},
        ["*output 'output': the reference output is one constant value over*"],
        model="constant",
    ),
    Case(
        "a model that raises",
        ("--navigator-runtimes=torch-cpu",),
        {"failed": 1},
        ["*the reference (torch-cpu) of raises.pt raised ValueError: the model refuses this input on a request of*"],
        model="raises",
    ),
    Case(
        "a model that returns None",
        ("--navigator-runtimes=onnxruntime-cpu", "--navigator-trust-model"),
        {"failed": 1},
        ["*raised ModelOutputError: the model returned None: there is no output to check*"],
        model="returns-none",
    ),
    Case(
        "a model that returns a string",
        ("--navigator-runtimes=onnxruntime-cpu", "--navigator-trust-model"),
        {"failed": 1},
        ["*raised ModelOutputError: the model's output 'output' is a str ('a string'), not a tensor*"],
        model="returns-text",
    ),
    # -- stored baselines that cannot be judged against ------------------------------------------------
    Case(
        "a baseline with a negative throughput",
        ("--navigator-runtimes=onnxruntime-cpu", *QUICK),
        {"passed": 1, "failed": 1},
        [
            "*the entry for onnxruntime-cpu at batch size 1 on * field 'throughput' is -5.0; a throughput is a positive number*"
        ],
        files={"baseline": json.dumps({"throughput": -5.0})},
    ),
    Case(
        "a baseline missing its latencies",
        ("--navigator-runtimes=onnxruntime-cpu", *QUICK),
        {"passed": 1, "failed": 1},
        [
            "*the entry for onnxruntime-cpu at batch size 1 on * has no field 'latency_ms'. It is not used for a verdict*"
        ],
        files={"baseline": json.dumps({"latency_ms": None})},
    ),
    Case(
        "a baseline file that is not JSON",
        ("--navigator-runtimes=onnxruntime-cpu", *QUICK),
        {"passed": 1, "failed": 1},
        ["*: cannot read the baseline file (JSONDecodeError*"],
        files={"baseline": "{not json"},
    ),
    Case(
        "a baseline file from a newer version",
        ("--navigator-runtimes=onnxruntime-cpu", *QUICK),
        {"passed": 1, "failed": 1},
        ["*: baseline schema 99 is newer than this pytest-navigator reads (1)*"],
        files={"baseline": json.dumps({"schema": 99})},
    ),
]


def _write_baseline(pytester: pytest.Pytester, model: Path, change: str) -> None:
    """A baseline file for mlp.pt2's onnxruntime-cpu at batch 1 on this machine, with `change`
    (JSON: fields to set, None deletes one; or not JSON at all) applied to a valid entry."""
    from pytest_navigator.gate.baselines import BaselineStore
    from pytest_navigator.measure.telemetry import fingerprint as machine
    from pytest_navigator.measure.telemetry import hardware_key
    from pytest_navigator.model.loader import fingerprint

    path = BaselineStore(pytester.path / "baselines").path_for(model.name, fingerprint(model))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fields = json.loads(change)
    except json.JSONDecodeError:
        path.write_text(change)
        return
    entry: dict[str, Any] = {
        "throughput": 1000.0,
        "latency_ms": {"p50": 1.0, "p90": 1.0, "p95": 1.0, "p99": 1.0},
        "block_throughputs": [1000.0] * 15,
        "block_p95_ms": [1.0] * 15,
        "window_throughputs": [1000.0] * 3,
    }
    body: dict[str, Any] = {"schema": 1, "model": {"name": model.name}, "entries": {}}
    if "schema" in fields:
        body["schema"] = fields.pop("schema")
    for key, value in fields.items():
        if value is None:
            entry.pop(key)
        else:
            entry[key] = value
    body["entries"] = {hardware_key(machine(), "cpu"): {"onnxruntime-cpu": {"1": entry}}}
    path.write_text(json.dumps(body))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, pytester: pytest.Pytester, bad_models: dict[str, Path]) -> None:
    if case.needs == "sys" and not LINUX_SYS:
        pytest.skip("needs Linux's /sys, which even root cannot write")
    if case.needs == "meminfo" and not Path("/proc/meminfo").is_file():
        pytest.skip("needs /proc/meminfo to know the available memory")
    if case.model.startswith("returns-"):
        import torch

        pytester.makepyfile(navigator_outputs=_OUTPUTS)
        pytester.syspathinsert()
        import importlib

        outputs = importlib.import_module("navigator_outputs")
        module = outputs.ReturnsNone() if case.model == "returns-none" else outputs.ReturnsText()
        model = pytester.path / f"{case.model}.pkl"
        torch.save(module, str(model))
        model.with_name(f"{case.model}.navigator.toml").write_text('inputs = ["input:float32[N,8]"]\n')
    else:
        source = bad_models[case.model]
        model = pytester.path / ("mlp.pt2" if case.model == "mlp" else source.name)
        shutil.copy(source, model)
        shutil.copy(source.with_name(source.stem + ".navigator.toml"), model.with_name(model.stem + ".navigator.toml"))
    for name, content in case.files.items():
        if name == "baseline":
            _write_baseline(pytester, model, content)
            continue
        target = pytester.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    args = [f"--navigator-model={model.name}", "--navigator-isolation=none", "--navigator-examples=2", *case.args]
    if "--navigator-batch-sizes=1" not in args and not any(a.startswith("--navigator-window") for a in args):
        args.append("--navigator-no-profile")
    result = pytester.runpytest(*args)
    output = "\n".join(result.outlines + result.errlines)
    if case.outcome == "usage":
        assert result.ret == pytest.ExitCode.USAGE_ERROR, output
        result.stderr.fnmatch_lines(case.lines)
    else:
        assert isinstance(case.outcome, dict)
        result.assert_outcomes(**case.outcome)
        result.stdout.fnmatch_lines(case.lines)
    assert "Traceback" not in output and "TorchScript interpreter" not in output, output


# -- runtimes that hang or crash: isolated in their own processes ----------------------------------------

_FAULTY = """
import os
import signal
import time

from pytest_navigator.runtimes import CallableRunner, RuntimeDefinition
from pytest_navigator.runtimes.torch_runtimes import build_eager


def faulty(name, fault, in_build=False):
    def build(model, ctx):
        if in_build:
            fault()
        eager = build_eager(model, ctx)

        def infer(sample):
            if sample["input"].shape[0] >= 2:
                fault()
            return eager.infer(sample)

        return CallableRunner(name, infer, model.io_spec)

    return RuntimeDefinition(name, build)


def pytest_navigator_register_runtimes(registry, config):
    registry.register(faulty("hangs", lambda: time.sleep(3600)))
    registry.register(faulty("aborts", os.abort))
    registry.register(faulty("exits", lambda: os._exit(3)))
    registry.register(faulty("segfaults", lambda: os.kill(os.getpid(), signal.SIGSEGV)))
    registry.register(faulty("hangs-in-build", lambda: time.sleep(3600), in_build=True))
    registry.register(faulty("crashes-in-build", os.abort, in_build=True))
"""

FAULTS = {
    "hangs": "hangs gave no answer within 3 s to an infer request, and was killed",
    "aborts": "aborts crashed: its worker process was killed by signal 6 (SIGABRT)",
    "exits": "exits crashed: its worker process exited with code 3",
    "segfaults": "segfaults crashed: its worker process was killed by signal 11 (SIGSEGV)",
    "hangs-in-build": "building hangs-in-build for mlp.pt2: hangs-in-build gave no answer within 30 s to a build request",
    "crashes-in-build": "building crashes-in-build for mlp.pt2: crashes-in-build crashed: *signal 6 (SIGABRT)",
}


def _faulty_run(
    pytester: pytest.Pytester, bad_models: dict[str, Path], faults: list[str], *extra: str
) -> tuple[pytest.RunResult, dict[str, Any]]:
    shutil.copy(bad_models["mlp"], pytester.path / "mlp.pt2")
    shutil.copy(bad_models["mlp"].with_name("mlp.navigator.toml"), pytester.path)
    pytester.makeconftest(_FAULTY)
    result = pytester.runpytest_subprocess(
        "--navigator-model=mlp.pt2",
        f"--navigator-runtimes=onnxruntime-cpu,{','.join(faults)}",
        "--navigator-timeout=3",
        "--navigator-examples=3",
        "--navigator-report=report.json",
        # what is tested is isolation, not speed: on a busy machine onnxruntime-cpu's windows are
        # all interfered with, and its verdict "inconclusive" would fail the test it passes here
        "--navigator-inconclusive=warn",
        *QUICK,
        *extra,
    )
    report = json.loads((pytester.path / "report.json").read_text())
    return result, {r["name"]: r for r in report["models"][0]["runtimes"]}


@pytest.mark.isolated
def test_runtimes_that_hang_or_crash_fail_alone(pytester: pytest.Pytester, bad_models: dict[str, Path]) -> None:
    result, runtimes = _faulty_run(pytester, bad_models, list(FAULTS))
    # every faulty runtime fails both its tests; onnxruntime-cpu, beside them, passes both
    result.assert_outcomes(passed=2, failed=2 * len(FAULTS))
    for name, message in FAULTS.items():
        result.stdout.fnmatch_lines([f"*{message}*"])
        assert runtimes[name]["status"] in ("failed", "failed-build"), name
    result.stdout.fnmatch_lines(
        [
            "*last lines of its stderr*",
            "*Fatal Python error: Aborted*",  # the worker's own stderr: where it died
            "*File *conftest.py*, line * in <lambda>*",  # and, for a hang, where it hung
            "*navigator runtimes*",
            "*onnxruntime-cpu *passed*",
            "*navigator performance*",
        ]
    )
    assert runtimes["onnxruntime-cpu"]["status"] == "passed" and runtimes["onnxruntime-cpu"]["profile"] is not None
    assert runtimes["onnxruntime-cpu"]["correctness"]["samples"] == 4


@pytest.mark.isolated
def test_isolation_holds_under_xdist(pytester: pytest.Pytester, bad_models: dict[str, Path]) -> None:
    pytest.importorskip("xdist")
    faults = ["hangs", "aborts"]
    result, runtimes = _faulty_run(pytester, bad_models, faults, "-n", "2", "-p", "xdist")
    # each xdist worker builds its own runtimes: a performance test (batch 1, which these runtimes
    # survive) on another worker than the crash passes, on the same one it fails with the crash
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 2 + 2 * len(faults), outcomes
    assert len(faults) <= outcomes.get("failed", 0) <= 2 * len(faults), outcomes
    result.stdout.fnmatch_lines([f"*{FAULTS['aborts']}*"])
    assert runtimes["onnxruntime-cpu"]["status"] == "passed" and runtimes["onnxruntime-cpu"]["profile"] is not None
    assert all(runtimes[name]["status"] == "failed" for name in faults)


@pytest.mark.isolated
def test_a_navigator_marker_sets_the_timeout_of_one_test(
    pytester: pytest.Pytester, bad_models: dict[str, Path]
) -> None:
    shutil.copy(bad_models["mlp"], pytester.path / "mlp.pt2")
    shutil.copy(bad_models["mlp"].with_name("mlp.navigator.toml"), pytester.path)
    pytester.makeconftest(_FAULTY)
    pytester.makepyfile(
        test_mine="""
        import pytest

        @pytest.mark.navigator(timeout=2, examples=3)
        def test_hangs_within_my_limit(navigator_check):
            navigator_check("hangs")

        @pytest.mark.navigator(timeout="soon")
        def test_a_bad_limit(navigator_check):
            navigator_check("exits")
        """
    )
    result = pytester.runpytest_subprocess(
        "--navigator-model=mlp.pt2",
        "--navigator-runtimes=hangs",
        "--navigator-batch-sizes=1,2",
        "test_mine.py",
        "-k",
        "test_mine",  # only these, not the model's own tests
    )
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines_random(
        [
            "*hangs gave no answer within 2 s to an infer request, and was killed*",  # not the 120 s default
            "*test_a_bad_limit: navigator marker --navigator-timeout='soon': give seconds > 0, e.g. 60.*",
        ]
    )


_PROBE = """
import os

from pytest_navigator.runtimes import RuntimeDefinition


def build(model, ctx):
    forked = os.getppid() != int(os.environ["PROBE_PYTEST_PID"])
    raise RuntimeError(f"probe saw {os.environ.get('PROBE_VALUE')!r}, forked from the fork server: {forked}")


def pytest_navigator_register_runtimes(registry, config):
    registry.register(RuntimeDefinition("probe", build))
"""


@pytest.mark.isolated
@pytest.mark.parametrize("start", ["forkserver", "spawn"])
def test_workers_start_with_the_environment_of_the_moment(
    pytester: pytest.Pytester, bad_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, start: str
) -> None:
    """A worker forked from the fork server (started before the variable was set) sees pytest's
    environment as it is when the worker starts, as a spawned one does; NAVIGATOR_WORKER_START=spawn
    spawns it from pytest's own process."""
    import os

    from pytest_navigator.workers.fork_servers import start_server

    start_server()  # running before the variable below exists
    shutil.copy(bad_models["mlp"], pytester.path / "mlp.pt2")
    shutil.copy(bad_models["mlp"].with_name("mlp.navigator.toml"), pytester.path)
    pytester.makeconftest(_PROBE)
    monkeypatch.setenv("PROBE_PYTEST_PID", str(os.getpid()))
    monkeypatch.setenv("PROBE_VALUE", f"set later ({start})")
    if start == "spawn":
        monkeypatch.setenv("NAVIGATOR_WORKER_START", "spawn")
    result = pytester.runpytest("--navigator-model=mlp.pt2", "--navigator-runtimes=probe", "--navigator-no-profile")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [f"*probe saw 'set later ({start})', forked from the fork server: {start == 'forkserver'}*"]
    )
