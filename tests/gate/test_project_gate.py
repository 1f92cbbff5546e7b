"""The project gates itself (README; `tox -e gate`): the demo zoo's committed instruction-count
baselines under baselines/ apply to the demo models as built today, and stay small, sorted and
human-diffable."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_navigator.gate.baselines import BaselineStore, _parse
from pytest_navigator.gate.entries import BaselineEntry
from pytest_navigator.runtimes.runtime_options import split_runtime_id

ROOT = Path(__file__).resolve().parents[2]
BASELINES = ROOT / "baselines"
#: The demo zoo as `tox -e gate` writes it (tox.ini).
DEMOS = ("mlp", "transformer", "resnet")
CPU_RUNTIMES = ("torch-cpu", "torchscript-cpu", "torch-compile-cpu", "onnxruntime-cpu")

_WRITE = """
import sys
from harness import zoo
for kind in sys.argv[2:]:
    zoo.main([kind, "--out", f"{sys.argv[1]}/{kind}.pt2"])
"""


#: What the CPU's vector units would change if the demo models depended on them: ATen's and oneDNN's
#: kernels forced to AVX2, as on the older machines of the same CI kind (on an AVX2-only machine, a no-op).
AVX2_KERNELS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def _write_demos(folder: Path, env: dict[str, str] | None = None) -> dict[str, bytes]:
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _WRITE, str(folder), *DEMOS],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {kind: (folder / f"{kind}.pt2").read_bytes() for kind in DEMOS}


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The demo zoo as `tox -e gate` writes it, on this machine's own kernels."""
    return _write_demos(tmp_path_factory.mktemp("demos") / "native")


def test_demo_models_are_byte_identical_whatever_kernels_the_cpu_picks(demos: dict[str, bytes], tmp_path: Path) -> None:
    """The committed baselines are keyed by the model file's sha256: a model whose bytes depend on the
    CPU (the ResNet's BatchNorm statistics, once computed in float32 by AVX-512 or AVX2 kernels) has
    no baseline on half the machines. Rebuilt with AVX2 kernels forced, every byte must agree."""
    forced = _write_demos(tmp_path / "avx2", AVX2_KERNELS)
    for kind in DEMOS:
        assert demos[kind] == forced[kind], (
            f"the demo {kind} depends on the CPU's kernels: its baselines would not apply"
        )


def test_committed_baselines_apply_to_the_demo_models_as_built(demos: dict[str, bytes]) -> None:
    """Each committed file is for a demo model as built today; one that nobody recorded (a torch
    upgrade that serializes differently) is said as "not recorded", as `tox -e gate` says it, not a red
    suite: the gate then judges nothing for that model until it is recorded."""
    missing = []
    for kind in DEMOS:
        digest = hashlib.sha256(demos[kind]).hexdigest()
        path = BaselineStore(BASELINES).path_for(f"{kind}.pt2", digest)
        if not path.is_file():
            missing.append(path.name)
            continue
        assert json.loads(path.read_text())["model"]["sha256"] == digest, path.name
    if missing:
        pytest.skip(
            f"not recorded: no committed baseline {', '.join(missing)} for the demo models as built with these "
            "library versions; the gate skips them. Record with "
            "`NAVIGATOR_VALGRIND=$(.ci/valgrind) tox -e gate -- --update-baselines` and commit baselines/."
        )


def test_committed_baselines_are_small_sorted_count_entries_for_every_cpu_runtime() -> None:
    files = sorted(BASELINES.glob("*.json"))
    assert sorted(p.name.rsplit("-", 1)[0] for p in files) == sorted(DEMOS)
    for path in files:
        text = path.read_text()
        assert len(text) < 16 * 1024, f"{path.name}: {len(text)} bytes"
        parsed = _parse(path)
        assert parsed.dumps() == text, f"{path.name} is not in the store's sorted, indented form"
        (hardware,) = parsed.entries
        assert hardware.startswith("instructions on ")
        runtimes = {split_runtime_id(r)[0]: batches for r, batches in parsed.entries[hardware].items()}
        assert sorted(runtimes) == sorted(CPU_RUNTIMES), path.name
        for batches in runtimes.values():
            entry = batches["1"]
            assert isinstance(entry, BaselineEntry) and entry.instructions is not None  # checked when read
            counts = entry.instructions.repeats
            assert counts is not None and len(counts) == 3 and all(isinstance(c, int) for c in counts)
            assert (entry.libraries or {})["valgrind"] == "3.24.0", "recorded with .ci/valgrind's pinned version"
        assert json.loads(text)["model"]["name"] == path.name.rsplit("-", 1)[0] + ".pt2"


def test_ci_runs_the_gate_with_the_locked_versions_against_the_committed_folder() -> None:
    tox = (ROOT / "tox.ini").read_text()
    section = tox.split("[testenv:gate]", 1)[1].split("\n[", 1)[0]
    assert "constraints-lock.txt" in section
    assert "--navigator-mode=instructions" in section and "--navigator-baselines={toxinidir}/baselines" in section
    assert all(f"harness.zoo {kind} --out" in section for kind in DEMOS)
    assert "tox -e gate" in (ROOT / ".ci" / "run").read_text()


def test_no_tox_env_lists_only_constraints_as_deps() -> None:
    """`deps = -c constraints.txt` alone makes tox run `pip install -c FILE` with nothing to install,
    which pip refuses: every env failed before its first command. Constraints go in PIP_CONSTRAINT."""
    import configparser

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    for section in tox.sections():
        deps = [line.strip() for line in tox[section].get("deps", "").splitlines() if line.strip()]
        assert not deps or any(not d.startswith("-c") for d in deps), f"[{section}] deps = {deps}"
        if section.startswith("testenv"):
            assert "PIP_CONSTRAINT" in tox[section].get("setenv", tox["testenv"]["setenv"]), section


def test_definitions_pickle_from_many_threads_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The counting workers are built from 3 threads at once; cloudpickle's by-value registry is
    global, so unguarded, one thread's unregister raised "not registered" in another (CI, once)."""
    import importlib.util
    import pickle
    import threading
    import time

    from pytest_navigator.runtimes import RuntimeDefinition
    from pytest_navigator.runtimes.remote import _definition_bytes
    from pytest_navigator.workers import pickling

    pickler = pickling._keep_file_names_pickler()

    class Slow(pickler):  # type: ignore[misc, valid-type]
        def dump(self, obj: object) -> None:
            time.sleep(0.005)  # every thread inside its dump at once, as builds of real runtimes are
            super().dump(obj)

    monkeypatch.setattr(pickling, "_keep_file_names_pickler", lambda: Slow)

    source = tmp_path / "user_runtimes.py"
    source.write_text("def build(model, ctx):\n    return ('built', model)\n")
    spec = importlib.util.spec_from_file_location("user_runtimes", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["user_runtimes"] = module
    try:
        spec.loader.exec_module(module)
        definition = RuntimeDefinition("mine", module.build)
        start = threading.Barrier(8)
        errors: list[Exception] = []
        found: list[bytes] = []

        def pickle_many() -> None:
            start.wait()
            try:
                found.extend(_definition_bytes(definition) for _ in range(5))
            except Exception as exc:  # the race's symptom, collected
                errors.append(exc)

        threads = [threading.Thread(target=pickle_many) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        del sys.modules["user_runtimes"]  # every dump carries the function by value, not by import name
        assert all(pickle.loads(blob).build("m", None) == ("built", "m") for blob in found)
    finally:
        sys.modules.pop("user_runtimes", None)


def test_definitions_pickle_after_cloudpickle_was_imported_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """pytester's inline runs restore sys.modules: a cloudpickle first imported inside one is gone after
    it, and the next import makes a new module. A pickler class cached from the old module then pickled
    cloudpickle's own helpers by value and recursed until "excessively deep recursion" (CI, twice)."""
    import importlib

    from pytest_navigator.runtimes import RuntimeDefinition
    from pytest_navigator.runtimes.remote import _definition_bytes
    from pytest_navigator.workers.pickling import _keep_file_names_pickler

    _keep_file_names_pickler()  # cached from the cloudpickle imported now
    for name in [m for m in sys.modules if m == "cloudpickle" or m.startswith("cloudpickle.")]:
        monkeypatch.delitem(sys.modules, name)  # restored after the test
    importlib.import_module("cloudpickle")  # a new module object, as after an inline pytester run
    definition = RuntimeDefinition("mine", lambda model, ctx: model)  # type: ignore[arg-type, return-value]
    assert _definition_bytes(definition)
