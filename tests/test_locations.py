"""The run's scratch folders: removed when the process that made them exits, though a session or
cache was never closed, and never by a forked child of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SCRIPT = """
import os, sys
from pytest_navigator.locations import scratch_folder
from pytest_navigator.runtimes import default_registry
from pytest_navigator.runtimes.cache import ArtifactCache
from pytest_navigator.session import NavigatorSession
from pytest_navigator.settings import Settings

session = NavigatorSession(Settings(models=()), default_registry())  # never closed
cache = ArtifactCache(None, False)
folders = [session.workdir, cache.folder(), scratch_folder("navigator-test-")]
for folder in folders:
    (folder / "file").write_text("x")
child = os.fork()
if child == 0:
    sys.exit(0)  # a child that exits runs the atexit handlers it inherited
os.waitpid(child, 0)
print(*(f"{folder}={folder.is_dir()}" for folder in folders))
"""


def test_scratch_folders_go_when_their_process_exits_and_not_when_a_forked_child_does(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, check=True)
    seen = dict(item.rsplit("=", 1) for item in done.stdout.split())
    assert len(seen) == 3 and set(seen.values()) == {"True"}  # alive after the child exited
    assert [Path(folder).name.split("-")[0] for folder in seen] == ["navigator"] * 3
    assert list(tmp_path.iterdir()) == []  # and gone with the process


_WORKER_FIRST = """
import os
from pytest_navigator.runtimes.cache import ArtifactCache

cache = ArtifactCache(None, False)  # handed to a worker that builds the first artifact
child = os.fork()
if child == 0:
    (cache.folder() / "built-in-a-worker").write_text("x")
    os._exit(0)  # as a multiprocessing worker ends: no exit handlers run
os.waitpid(child, 0)
print((cache.folder() / "built-in-a-worker").is_file())
"""


def test_a_cacheless_runs_folder_is_its_owners_though_a_worker_uses_it_first(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", _WORKER_FIRST], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["True"]  # the worker's artifact is in the owner's folder
    assert list(tmp_path.iterdir()) == []  # which went with the owner
