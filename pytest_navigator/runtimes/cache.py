"""Built artifacts (ONNX exports, TorchScript plans, TensorRT engines) reused across runs.

Each conversion step is a mode in seed 001's sense: `convert(model, config, folder) -> (artifact,
metadata)` builds the artifact into a folder (the artifact is its file name there), and
`restore(artifact, config, metadata)` turns a stored artifact back into what the runtime needs,
so a rerun restores instead of rebuilding. An
entry is keyed by the model's content hash, the mode, its options, the library versions and the
device; a change to any of them is a new entry, never a stale one.

Entries are written whole or not at all: a build goes to a private temporary folder, its
metadata (with every file's size and sha256) is written last, and the folder is renamed into
place under a file lock, so concurrent workers (xdist) build an entry once and never see half of
one. An entry that fails its checks or its restore is rebuilt, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pytest_navigator import options
from pytest_navigator.locations import scratch_folder
from pytest_navigator.runtimes.environment import library_versions

T = TypeVar("T")

#: Bumped when the entry layout changes; part of every key.
LAYOUT_VERSION = 1
METADATA = "metadata.json"
#: Libraries whose versions change what a build produces.
KEY_LIBRARIES = ("torch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-gpu", "tensorrt", "pytest-navigator")


@dataclass(frozen=True)
class Mode(Generic[T]):
    """One conversion step: `convert(model, config, folder)` writes the artifact into the folder and
    returns its file name and metadata (JSON-ready: what restore needs beyond the config, e.g. the
    batch sizes an engine was built for); `restore(artifact, config, metadata)` turns the stored
    file back into a usable object."""

    name: str
    convert: Callable[[Any, Any, Path], tuple[str, dict[str, Any]]]
    restore: Callable[[Path, Any, dict[str, Any]], T]


@dataclass(frozen=True)
class CacheEvent:
    """What fetching one artifact did, for the report: built, restored or rebuilt (with why)."""

    mode: str
    key: str
    action: str  # built, restored, rebuilt
    seconds: float
    detail: str = ""
    path: str = ""

    @property
    def summary(self) -> str:
        """The runtimes table's words for it: "restored onnx-export 0.02 s", "built ... (why)"."""
        return f"{self.action} {self.mode} {self.seconds:.2f} s" + (f" ({self.detail})" if self.detail else "")


class CacheError(Exception):
    """An entry that cannot be used (missing file, wrong size or hash, bad metadata)."""


@dataclass
class ArtifactCache:
    """Artifacts under `root` (None: a throwaway folder per run, every artifact built)."""

    root: Path | None
    rebuild: bool = False
    events: list[CacheEvent] = field(default_factory=list)
    _scratch: Path | None = None
    #: Entries built by this run: restored, not rebuilt again, under --navigator-rebuild too.
    _fresh: set[Path] = field(default_factory=set)

    def __post_init__(self) -> None:
        # The throwaway folder is made now, by the process that owns the cache, which removes it when
        # it exits: made on first use, in a worker the cache was handed to, it was the worker's, and a
        # worker ends without running exit handlers (one folder leaked per cacheless run).
        if self.root is None and self._scratch is None:
            self._scratch = scratch_folder("navigator-artifacts-")

    def key(self, mode: str, parts: Mapping[str, Any]) -> str:
        """A digest of everything that decides the artifact: mode, parts, library versions, layout."""
        versions = library_versions()
        material = {
            "layout": LAYOUT_VERSION,
            "mode": mode,
            "parts": dict(parts),
            "libraries": {name: versions.get(name) for name in KEY_LIBRARIES},
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]

    def folder(self) -> Path:
        if self.root is not None:
            return self.root
        if self._scratch is None:  # closed, and used again
            self._scratch = scratch_folder("navigator-artifacts-")
        return self._scratch

    def fetch(self, mode: Mode[T], model: Any, config: Any, parts: Mapping[str, Any]) -> T:
        """`model` converted by `mode` under `config`: restored from the entry for `parts` (what
        decides the artifact: the model's content hash, options, device, ...), else built and stored."""
        key = self.key(mode.name, parts)
        entry = self.folder() / mode.name / key
        started = time.perf_counter()
        problem = ""
        if (entry in self._fresh or not self.rebuild) and entry.exists():
            restored, problem = self._try_restore(mode, config, entry)
            if not problem:
                self._record(mode, key, "restored", started, "", entry)
                return restored
        return self._build(mode, model, config, entry, key, started, problem)

    def _build(self, mode: Mode[T], model: Any, config: Any, entry: Path, key: str, started: float, problem: str) -> T:
        from filelock import FileLock

        entry.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(entry) + ".lock"):
            if not problem and not self.rebuild and entry.exists():  # another worker built it meanwhile
                restored, problem = self._try_restore(mode, config, entry)
                if not problem:
                    self._record(mode, key, "restored", started, "built by another worker", entry)
                    return restored
            building = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=entry.parent))
            try:
                artifact, metadata = mode.convert(model, config, building)
                files = {
                    p.relative_to(building).as_posix(): _describe(p) for p in sorted(building.rglob("*")) if p.is_file()
                }
                if artifact not in files:
                    raise CacheError(f"{mode.name}: convert() did not write its artifact {artifact!r}")
                record = {"mode": mode.name, "key": key, "artifact": artifact, "metadata": metadata, "files": files}
                (building / METADATA).write_text(json.dumps(record, indent=1, sort_keys=True))
                if entry.exists():
                    shutil.rmtree(entry)
                os.replace(building, entry)
                self._fresh.add(entry)
            finally:
                if building.exists():
                    shutil.rmtree(building, ignore_errors=True)
        restored = self._restore(mode, config, entry, verify=False)  # just written and hashed
        action = "rebuilt" if problem or self.rebuild else "built"
        self._record(mode, key, action, started, problem or (options.REBUILD if self.rebuild else ""), entry)
        return restored

    def _try_restore(self, mode: Mode[Any], config: Any, entry: Path) -> tuple[Any, str]:
        """(restored, "") or (None, why the entry cannot be used): a corrupt or partial entry is
        rebuilt, never fatal. Entries this run built are not hashed again."""
        try:
            return self._restore(mode, config, entry, verify=entry not in self._fresh), ""
        except Exception as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def _restore(self, mode: Mode[T], config: Any, entry: Path, verify: bool = True) -> T:
        try:
            record = json.loads((entry / METADATA).read_text())
        except (OSError, ValueError) as exc:
            raise CacheError(f"{entry / METADATA} is missing or unreadable ({exc})") from None
        if not isinstance(record, dict) or record.get("mode") != mode.name or "artifact" not in record:
            raise CacheError(f"{entry / METADATA} is not a {mode.name} entry")
        for name, expected in record.get("files", {}).items() if verify else ():
            path = entry / name
            if not path.is_file() or _describe(path) != expected:
                raise CacheError(f"{path} is missing or differs from when it was built")
        return mode.restore(entry / record["artifact"], config, record.get("metadata", {}))

    def _record(self, mode: Mode[Any], key: str, action: str, started: float, detail: str, entry: Path) -> None:
        self.events.append(CacheEvent(mode.name, key, action, time.perf_counter() - started, detail, str(entry)))

    def stored_figures(self, name: str, parts: Mapping[str, Any]) -> Any:
        """Small JSON figures a past run kept under `name` for `parts` (a model's FLOPs), or None:
        none kept, unreadable, or no root."""
        if self.root is None:
            return None
        try:
            return json.loads(self._figures_path(name, parts).read_text())
        except (OSError, ValueError):
            return None

    def store_figures(self, name: str, parts: Mapping[str, Any], value: Any) -> None:
        """Keep `value` (JSON) under `name` for `parts`, atomically; nothing for None, without a root,
        or when it cannot be written (the figures are then computed again next run)."""
        if value is None or self.root is None:
            return
        path = self._figures_path(name, parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", dir=path.parent)
            with os.fdopen(handle, "w") as out:
                json.dump(value, out, sort_keys=True)
            os.replace(temporary, path)
        except OSError:
            pass

    def _figures_path(self, name: str, parts: Mapping[str, Any]) -> Path:
        return self.folder() / name / f"{self.key(name, parts)}.json"

    def note(self, mode: str, action: str, seconds: float, detail: str = "") -> None:
        """Record a build whose caching someone else does (torch.compile's own caches)."""
        self.events.append(CacheEvent(mode, "", action, seconds, detail, str(self.root or "")))

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


def _describe(path: Path) -> dict[str, Any]:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def torch_compile_cache(root: Path | None) -> None:
    """Point torch.compile's own caches (inductor's FX graph and AOT caches, Triton kernels) into
    the artifact cache, so emptying it empties them too and --navigator-cache moves them along."""
    if root is None:
        return
    folder = root / "torch-compile"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    os.environ["TRITON_CACHE_DIR"] = str(folder / "triton")
