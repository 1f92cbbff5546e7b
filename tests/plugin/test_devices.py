"""--navigator-devices on a CPU machine: parsing, assignment from fake device lists, the environment, the lock."""

from __future__ import annotations

import threading
import types
from pathlib import Path

import pytest

from pytest_navigator.plugin import devices
from pytest_navigator.plugin.devices import apply, assign, device_lock, parse_devices, visible_devices
from pytest_navigator.settings import OptionError


def _no_gpu_query() -> int:
    raise AssertionError("an outer CUDA_VISIBLE_DEVICES is the list: NVML must not be asked")


# -- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"), [(None, None), ("", None), (" ", None), ("auto", "auto"), (" AUTO ", "auto"), ("0", (0,))]
)
def test_parse_accepts_auto_indices_and_nothing(value: str | None, parsed: object) -> None:
    assert parse_devices(value) == parsed


def test_parse_keeps_the_order_of_indices() -> None:
    assert parse_devices("2, 0,1") == (2, 0, 1)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("gpu0", "'gpu0' is not an index"),
        ("-1", "'-1' is not an index"),
        ("0,,1", "an empty entry"),
        ("0,1,", "an empty entry"),
        ("1.5", "'1.5' is not an index"),
        ("0,1,0", "index 0 is given twice"),
    ],
)
def test_parse_errors_name_the_option_the_value_and_what_is_accepted(value: str, problem: str) -> None:
    with pytest.raises(OptionError) as error:
        parse_devices(value)
    assert str(error.value) == (
        f"--navigator-devices={value!r}: {problem}; give 'auto' (every visible GPU) or comma-separated indices "
        ">= 0 into the visible GPUs, without repeats, e.g. 0,1."
    )


# -- what this process may use ---------------------------------------------------------------------


def test_without_an_outer_variable_every_counted_gpu_is_visible() -> None:
    assert visible_devices({}, count=lambda: 3) == ["0", "1", "2"]
    assert visible_devices({}, count=lambda: 0) == []


@pytest.mark.parametrize(
    ("outer", "visible"),
    [
        ("2,3", ["2", "3"]),
        (" 2 , 3 ", ["2", "3"]),
        ("GPU-8a1f,MIG-GPU-8a1f/1/0", ["GPU-8a1f", "MIG-GPU-8a1f/1/0"]),
        ("", []),  # CUDA: an empty variable hides every GPU
        ("-1", []),  # the usual way to hide them
        ("4,-1,5", ["4"]),  # CUDA ignores an invalid entry and every one after it
    ],
)
def test_an_outer_variable_is_the_list(outer: str, visible: list[str]) -> None:
    assert visible_devices({"CUDA_VISIBLE_DEVICES": outer}, count=_no_gpu_query) == visible


# -- assignment ------------------------------------------------------------------------------------


def test_auto_gives_each_worker_the_next_gpu_and_wraps_around() -> None:
    visible = ["0", "1", "2", "3"]
    assert [assign("auto", f"gw{n}", visible) for n in range(6)] == ["0", "1", "2", "3", "0", "1"]


def test_auto_indexes_into_an_outer_variable() -> None:
    assert [assign("auto", f"gw{n}", ["2", "3"]) for n in range(3)] == ["2", "3", "2"]


def test_explicit_indices_are_positions_in_the_outer_list_not_machine_indices() -> None:
    assert [assign((1,), f"gw{n}", ["2", "3"]) for n in range(2)] == ["3", "3"]
    assert [assign((1, 0), f"gw{n}", ["2", "3"]) for n in range(3)] == ["3", "2", "3"]


def test_uuid_entries_are_handed_on_whole() -> None:
    visible = ["GPU-8a1f", "MIG-GPU-8a1f/1/0"]
    assert assign("auto", "gw1", visible) == "MIG-GPU-8a1f/1/0"
    assert assign((0,), "gw1", visible) == "GPU-8a1f"


def test_an_index_past_the_visible_gpus_names_it_and_the_list() -> None:
    with pytest.raises(OptionError) as error:
        assign((0, 2), "gw0", ["2", "3"])  # gw0 would get index 0: every index is checked, in every worker
    assert str(error.value) == (
        "--navigator-devices=0,2: index 2 is out of range: the visible GPUs are 2,3 (indices 0..1; an outer "
        "CUDA_VISIBLE_DEVICES is indexed into, not replaced); give indices below 2, or 'auto'."
    )


@pytest.mark.parametrize("chosen", ["auto", (0,)])
def test_no_visible_gpu_says_so(chosen: devices.Devices) -> None:
    with pytest.raises(OptionError, match=r"no GPU is visible to xdist worker gw0 .*leave --navigator-devices out"):
        assign(chosen, "gw0", [])


def test_outside_a_worker_or_without_the_option_nothing_is_assigned() -> None:
    assert assign("auto", None, ["0", "1"]) is None
    assert assign(None, "gw0", ["0", "1"]) is None
    assert assign("auto", None, []) is None  # the controller of a GPU-less machine is not refused


def test_a_worker_id_that_is_not_gwn_is_refused() -> None:
    with pytest.raises(OptionError, match=r"the xdist worker id 'node-a' is not gwN"):
        assign("auto", "node-a", ["0"])


# -- the environment -------------------------------------------------------------------------------


def test_apply_sets_the_workers_gpu_and_its_physical_id() -> None:
    environ = {"CUDA_VISIBLE_DEVICES": "5,7", "PATH": "/bin"}
    assert apply("1", "gw0", environ, count=_no_gpu_query) == "7"
    assert environ == {"CUDA_VISIBLE_DEVICES": "7", "NAVIGATOR_PHYSICAL_DEVICE": "7", "PATH": "/bin"}


def test_apply_counts_gpus_when_there_is_no_outer_variable() -> None:
    environ: dict[str, str] = {}
    assert apply("auto", "gw3", environ, count=lambda: 2) == "1"
    assert environ == {"CUDA_VISIBLE_DEVICES": "1", "NAVIGATOR_PHYSICAL_DEVICE": "1"}


@pytest.mark.parametrize(("value", "worker"), [("auto", None), (None, "gw0"), ("", "gw1")])
def test_apply_leaves_the_environment_alone_outside_a_worker_or_without_the_option(
    value: str | None, worker: str | None
) -> None:
    environ = {"CUDA_VISIBLE_DEVICES": "5,7"}
    assert apply(value, worker, environ, count=_no_gpu_query) is None
    assert environ == {"CUDA_VISIBLE_DEVICES": "5,7"}


def test_a_bad_value_is_refused_in_the_controller_too() -> None:
    with pytest.raises(OptionError, match="--navigator-devices='x'"):
        apply("x", None, {}, count=_no_gpu_query)


def _fake_torch(monkeypatch: pytest.MonkeyPatch, initialised: bool) -> None:
    cuda = types.SimpleNamespace(is_initialized=lambda: initialised)
    monkeypatch.setitem(__import__("sys").modules, "torch", types.SimpleNamespace(cuda=cuda))


def test_apply_refuses_once_cuda_is_initialised(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_torch(monkeypatch, initialised=True)
    environ = {"CUDA_VISIBLE_DEVICES": "5,7"}
    with pytest.raises(OptionError) as error:
        apply("auto", "gw1", environ, count=_no_gpu_query)
    assert str(error.value).startswith(
        "--navigator-devices=auto: CUDA is already initialised in xdist worker gw1, so its GPU can no longer be "
        "chosen (CUDA reads CUDA_VISIBLE_DEVICES once, when it initialises)."
    )
    assert environ == {"CUDA_VISIBLE_DEVICES": "5,7"}


def test_an_imported_torch_without_cuda_initialised_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_torch(monkeypatch, initialised=False)
    assert apply("auto", "gw1", {"CUDA_VISIBLE_DEVICES": "5,7"}, count=_no_gpu_query) == "7"


# -- the lock --------------------------------------------------------------------------------------


def test_two_holders_of_one_gpu_take_turns(tmp_path: Path) -> None:
    events: list[str] = []
    first_in, second_trying = threading.Event(), threading.Event()

    def first() -> None:
        with device_lock("GPU-8a1f", tmp_path):
            events.append("first in")
            first_in.set()
            second_trying.wait(timeout=30)
            # give a broken lock the chance to let the second holder in while the first one still holds it
            threading.Event().wait(0.2)
            events.append("first out")

    def second() -> None:
        first_in.wait(timeout=30)
        second_trying.set()
        with device_lock("GPU-8a1f", tmp_path):
            events.append("second in")
            events.append("second out")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert events == ["first in", "first out", "second in", "second out"]


def test_holders_of_different_gpus_do_not_wait_for_each_other(tmp_path: Path) -> None:
    events: list[str] = []
    other_done = threading.Event()

    def other() -> None:
        with device_lock("1", tmp_path):
            events.append("gpu 1 measured")
        other_done.set()

    with device_lock("0", tmp_path):
        thread = threading.Thread(target=other)
        thread.start()
        finished = other_done.wait(timeout=60)  # would time out if GPU 1 waited for GPU 0's lock
        events.append("gpu 0 released")
    thread.join(timeout=60)
    assert finished
    assert events == ["gpu 1 measured", "gpu 0 released"]


def test_lock_files_are_flat_names_of_the_physical_device(tmp_path: Path) -> None:
    for device in ("3", "GPU-8a1f-22", "MIG-GPU-8a1f/1/0"):
        with device_lock(device, tmp_path / "devices"):
            pass
    names = sorted(p.name for p in (tmp_path / "devices").iterdir())
    assert names == ["gpu-3.lock", "gpu-GPU-8a1f-22.lock", "gpu-MIG-GPU-8a1f_1_0.lock"]


# -- real pytest sessions --------------------------------------------------------------------------


def test_each_xdist_worker_sees_its_gpu_of_the_outer_list(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xdist")
    seen = tmp_path / "seen"
    seen.mkdir()
    pytester.makepyfile(
        test_env=f"""
        import os, pathlib

        def test_env():
            worker = os.environ["PYTEST_XDIST_WORKER"]
            seen = os.environ["CUDA_VISIBLE_DEVICES"] + " " + os.environ["NAVIGATOR_PHYSICAL_DEVICE"]
            pathlib.Path({str(seen)!r}, worker).write_text(seen)

        def test_other():  # two tests, so both workers run one
            test_env()
        """
    )
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    result = pytester.runpytest_subprocess("-p", "xdist", "-n", "2", "--navigator-devices=0,1")
    result.assert_outcomes(passed=2)
    assert {p.name: p.read_text() for p in seen.iterdir()} == {"gw0": "5 5", "gw1": "7 7"}


def test_a_bad_value_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="def test_nothing(): pass")
    result = pytester.runpytest("--navigator-devices=0,0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--navigator-devices='0,0': index 0 is given twice; give 'auto'*"])


def _groups(result: pytest.RunResult) -> dict[str, str]:
    return dict(line.split(" ", 2)[1:] for line in result.stdout.lines if line.startswith("GROUPS "))


def test_cuda_performance_tests_leave_the_single_group_only_with_the_option(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    from conftest import write_model

    write_model("mlp", pytester.path / "mlp.pt2", features=8, hidden=16, classes=3)
    pytester.makeconftest(
        """
        def pytest_collection_modifyitems(items):
            for item in items:
                groups = [m.args[0] for m in item.iter_markers("xdist_group")]
                print("GROUPS", item.name, groups)
        """
    )
    args = (
        "-p",
        "xdist",
        "--collect-only",
        "-s",
        "--navigator-model=mlp.pt2",
        "--navigator-runtimes=torch-cpu,torch-cuda",
    )
    before = pytester.runpytest(*args)
    assert _groups(before) == {
        "test_correctness[torch-cpu]": "[]",
        "test_correctness[torch-cuda]": "[]",
        "test_performance[torch-cpu]": "['navigator-performance-cpu']",
        "test_performance[torch-cuda]": "['navigator-performance-cuda']",
    }
    spread = pytester.runpytest(*args, "--navigator-devices=auto")  # the same in every worker: no worker id in it
    assert _groups(spread) == {**_groups(before), "test_performance[torch-cuda]": "[]"}


def test_the_controller_checks_the_indices_before_starting_workers(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_nothing="def test_nothing(): pass")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    result = pytester.runpytest("-p", "xdist", "-n", "2", "--navigator-devices=0,3")
    assert result.ret == pytest.ExitCode.USAGE_ERROR  # one clear error, not a crashed worker per GPU
    result.stderr.fnmatch_lines(["ERROR: --navigator-devices=0,3: index 3 is out of range: the visible GPUs are 5,7 *"])


@pytest.mark.parametrize(
    ("dist", "collectonly", "tx", "local"),
    [
        ("load", False, ["popen", "popen"], True),  # -n 2
        ("loadgroup", False, ["2*popen//python=python3"], True),
        ("no", False, [], False),  # no xdist workers: nothing to check
        ("load", True, ["popen"], False),  # --collect-only starts none
        ("load", False, ["popen", "ssh=gpu-box//python=python3"], False),  # another machine's GPUs
    ],
)
def test_the_controller_checks_only_for_workers_on_this_machine(
    dist: str, collectonly: bool, tx: list[str], local: bool
) -> None:
    values = {"dist": dist, "collectonly": collectonly, "tx": tx}
    config = types.SimpleNamespace(getoption=lambda name, default=None: values.get(name, default))
    assert devices._starts_local_workers(config) is local  # type: ignore[arg-type]
