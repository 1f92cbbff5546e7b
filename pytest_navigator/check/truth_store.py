"""The reference's outputs and the truth of each sample, kept in the artifact cache across runs.

A warm run of a MobileNet spent 6 of its 48 s computing again, per sample, what the run before had
computed: the reference's outputs, the float64 shadow's and the perturbation spread (truth.py). They
depend on the model, the reference, the sample and the libraries only, so they are stored by those.

Layout: one folder per model and reference, `<cache root>/truth/<key>/`, holding per sample (named
by its content digest, strategies.digest, which covers generated samples and users' own alike):

- `<digest>.outputs.npz`: the reference's outputs;
- `<digest>.truth.npz`: the Truth: its outputs as arrays, or a mark that they are the reference's
  outputs (a perturbation estimate's truth is the reference: not stored twice), and its kind,
  note and figures (noise, measured, estimated) as JSON in the `meta` array;
- `key.json`: what the key is made of, for a person asking why a run did not restore.

One file per entry, because one file is replaced atomically (written beside it, then os.replace):
a reader sees the old entry or the new one, never half of one, nor metadata beside other arrays.
np.savez keeps each array's dtype, shape and bytes exactly and loads without pickle; Python floats
survive JSON exactly. Two xdist workers that compute the same sample write the same bytes, so the
last replace winning is harmless, and no lock is held while a sample computes. An entry that cannot
be read (truncated, corrupt, another layout) is computed again and overwritten, never fatal; one that
cannot be written is not kept. --navigator-rebuild computes every entry again, once per run.

The key (ArtifactCache.key, so the library versions and the cache's layout are in it) holds the
model's content hash and format, its input spec and signature, the reference (runtime id, class,
device, output names, threads and precision settings), the example request the truth source is
chosen on (truth.truth_source tries each candidate on it: it decides float64 shadow, perturbation
estimate or plain reference), numpy's version and truth.py's own settings (VERSION, PERTURBATIONS,
MAX_RELATIVE_NOISE). The run's seed is not in it: the perturbations draw from fixed seeds and the
sample is keyed by content. Nor are the budget's multiple and the tolerances: an entry holds raw
figures, and every run judges from them. Since the key decides the truth source, the source's kind
and note are stored with each truth rather than keyed by, and a warm run does not build the source
at all (no float64 copy of the model).

A truth is not kept where it may not come again: a sample whose source raised (left to the fixed
tolerance this run), and a model with no truth source (every candidate failed, perhaps for want of
memory; its truth is the reference's outputs, which are kept).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_navigator import options
from pytest_navigator.check.strategies import digest
from pytest_navigator.check.truth import Truth
from pytest_navigator.config import Sample
from pytest_navigator.runtimes import cache as cache_module
from pytest_navigator.runtimes.cache import ArtifactCache, CacheError, CacheEvent

if TYPE_CHECKING:
    from pytest_navigator.model.loader import Model
    from pytest_navigator.runtimes.base import Runner

#: The cache folder and the report's name for each kind of entry.
FOLDER = "truth"
OUTPUTS = "reference-outputs"
TRUTH = "truth"
#: Bumped when an entry's layout changes (the cache's own LAYOUT_VERSION is in every key too).
LAYOUT = 1
#: The reference's settings that could change its outputs, where it has them (a torch reference's threads and
#: TF32; the runtime id pins the rest: the reference is built without user options).
REFERENCE_SETTINGS = ("runtime", "device", "threads", "tf32", "io_binding")
#: What fetching a sample's entries did, least work first: a sample counts as the most its entries took.
_ACTIONS = ("restored", "computed", "recomputed")


def key_parts(model: Model, reference: Runner, example: Sample) -> dict[str, Any]:
    """Everything besides the libraries that decides a model's reference outputs and truths (see above)."""
    from pytest_navigator.check import truth

    runner = type(reference)
    return {
        "model": model.fingerprint,
        "format": model.format.value,
        "inputs": [str(spec) for spec in model.io_spec],
        "signature": None if model.signature is None else list(model.signature),
        "reference": {
            "class": f"{runner.__module__}.{runner.__qualname__}",
            "outputs": list(reference.output_names),
            **{name: getattr(reference, name) for name in REFERENCE_SETTINGS if hasattr(reference, name)},
        },
        "example": digest(example),
        "numpy": np.__version__,
        "truth": {
            "version": truth.VERSION,
            "perturbations": truth.PERTURBATIONS,
            "max_relative_noise": truth.MAX_RELATIVE_NOISE,
        },
    }


class TruthStore:
    """One model's stored reference outputs and truths, and what fetching them did since last asked."""

    def __init__(self, folder: Path, key: str, rebuild: bool = False) -> None:
        self.folder, self.key, self.rebuild = folder, key, rebuild
        #: Entries this run wrote: read back, not computed again, under --navigator-rebuild too.
        self._fresh: set[Path] = set()
        #: Since last asked: per sample digest, what fetching its entries did and took; whether a truth was
        #: fetched (else only reference outputs were); the first reason an entry was computed again.
        self._samples: dict[str, tuple[str, float]] = {}
        self._truths = False
        self._problem = ""

    @classmethod
    def open(cls, cache: ArtifactCache, model: Model, reference: Runner, example: Sample) -> TruthStore | None:
        """The store of `model` checked against `reference` in `cache`; None without a cache root (nothing
        is kept across runs then)."""
        if cache.root is None:
            return None
        parts = key_parts(model, reference, example)
        key = cache.key(FOLDER, parts)
        store = cls(cache.root / FOLDER / key, key, cache.rebuild)
        described = store.folder / "key.json"
        if not described.is_file():
            versions = cache_module.library_versions()
            material = {**parts, "libraries": {name: versions.get(name) for name in cache_module.KEY_LIBRARIES}}
            _replace(described, lambda handle: handle.write(json.dumps(material, indent=1, sort_keys=True).encode()))
        return store

    def outputs(self, sample: str, compute: Callable[[], Sample]) -> Sample:
        """The reference's outputs for the sample of digest `sample`: stored, else `compute()`d and stored."""
        started, path = time.perf_counter(), self.folder / f"{sample}.{OUTPUTS}.npz"
        problem, existed = "", path.is_file()
        if self._usable(path):
            try:
                arrays = _read(path, OUTPUTS, sample)[1]
                self._count(sample, "restored", started)
                return arrays
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
        found = compute()
        self._save(path, {"entry": OUTPUTS, "sample": sample}, found)
        self._count(sample, self._action(existed, problem), started, problem)
        return found

    def truth(self, sample: str, reference: Sample, compute: Callable[[], tuple[Truth, bool]]) -> Truth:
        """The truth of the sample of digest `sample`, whose reference outputs are `reference`: stored, else
        `compute()`d (the truth, and whether it may be kept) and stored."""
        started, path = time.perf_counter(), self.folder / f"{sample}.{TRUTH}.npz"
        problem, existed = "", path.is_file()
        if self._usable(path):
            try:
                meta, arrays = _read(path, TRUTH, sample)
                outputs = reference if meta["outputs"] == "reference" else arrays
                figures = [_figures(meta, name) for name in ("noise", "measured", "estimated")]
                found = Truth(meta["kind"], outputs, figures[0], meta["note"], figures[1], figures[2])
                self._count(sample, "restored", started, truth=True)
                return found
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
        found, keep = compute()
        if keep:
            own = found.outputs is not reference
            meta = {
                "entry": TRUTH,
                "sample": sample,
                "kind": found.kind,
                "note": found.note,
                "outputs": "own" if own else "reference",
                **{name: dict(getattr(found, name)) for name in ("noise", "measured", "estimated")},
            }
            self._save(path, meta, found.outputs if own else {})
            self._count(sample, self._action(existed, problem), started, problem, truth=True)
        return found

    def take_events(self) -> list[CacheEvent]:
        """What fetching did since last asked, one event per action, counting samples: "restored truth
        0.02 s (27 of 27 samples)" ("reference-outputs" where no truth was asked for); then the tally
        starts again."""
        entry, total = TRUTH if self._truths else OUTPUTS, len(self._samples)
        events = []
        for action in _ACTIONS:
            seconds = [spent for done, spent in self._samples.values() if done == action]
            if seconds:
                why = f"; {self._problem}" if action == "recomputed" and self._problem else ""
                detail = f"{len(seconds)} of {total} samples{why}"
                events.append(CacheEvent(entry, self.key, action, sum(seconds), detail, str(self.folder)))
        self._samples, self._truths, self._problem = {}, False, ""
        return events

    def _usable(self, path: Path) -> bool:
        return path.is_file() and (path in self._fresh or not self.rebuild)

    def _action(self, existed: bool, problem: str) -> str:
        """computed (no entry), or recomputed (one that could not be used, or --navigator-rebuild's)."""
        return "recomputed" if problem or (self.rebuild and existed) else "computed"

    def _count(self, sample: str, action: str, started: float, problem: str = "", truth: bool = False) -> None:
        done, spent = self._samples.get(sample, (action, 0.0))
        done = max(done, action, key=_ACTIONS.index)
        self._samples[sample] = (done, spent + time.perf_counter() - started)
        self._truths |= truth
        if action == "recomputed":
            self._problem = self._problem or problem or options.REBUILD

    def _save(self, path: Path, meta: dict[str, Any], arrays: Mapping[str, Any]) -> None:
        """Write an entry whole or not at all. One that cannot be written exactly is not kept, and the run
        goes on: an object array (it would need pickle), a dtype the .npy format does not name (ml_dtypes'
        bfloat16 would come back as raw bytes, |V2), a full disk."""
        stored = {f"array{index}": np.asarray(value) for index, value in enumerate(arrays.values())}
        if not all(_round_trips(array.dtype) for array in stored.values()):
            return
        meta = {**meta, "layout": LAYOUT, "names": list(arrays)}
        stored["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
        savez: Any = np.savez  # typed to take only its allow_pickle by keyword (numpy 2.1+), which 1.26 lacks
        if _replace(path, lambda handle: savez(handle, **stored)):
            self._fresh.add(path)


def _round_trips(dtype: np.dtype[Any]) -> bool:
    """Whether an array of `dtype` loads back from .npy with the same dtype, without pickle."""
    if dtype.hasobject:
        return False
    try:
        return bool(np.lib.format.descr_to_dtype(np.lib.format.dtype_to_descr(dtype)) == dtype)
    except Exception:
        return False


def _replace(path: Path, write: Callable[[Any], object]) -> bool:
    """`write(handle)` into a temporary file beside `path`, then renamed over it: whole or not at all
    (False, and nothing written, on any error: keeping an entry is never worth failing a run)."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(temporary, path)
        temporary = None
        return True
    except Exception:
        return False
    finally:
        if temporary is not None and os.path.exists(temporary):
            os.unlink(temporary)


def _read(path: Path, entry: str, sample: str) -> tuple[dict[str, Any], Sample]:
    """An entry's metadata and arrays (by output name), checked against what it must be; CacheError
    (or numpy's, zipfile's error) for anything else."""
    with np.load(path, allow_pickle=False) as stored:
        meta = json.loads(bytes(stored["meta"]).decode())
        if not isinstance(meta, dict) or meta.get("layout") != LAYOUT or meta.get("entry") != entry:
            raise CacheError(f"{path} is not a {entry} entry of layout {LAYOUT}")
        if meta.get("sample") != sample:
            raise CacheError(f"{path} holds sample {meta.get('sample')!r}, not {sample!r}")
        names = meta.get("names")
        expected = {"meta", *(f"array{index}" for index in range(len(names or ())))}
        if not isinstance(names, list) or set(stored.files) != expected:
            raise CacheError(f"{path} holds arrays {sorted(stored.files)}, not {sorted(expected)}")
        arrays = {str(name): stored[f"array{index}"] for index, name in enumerate(names)}
    if entry == TRUTH:
        valid = isinstance(meta.get("kind"), str) and isinstance(meta.get("note"), str)
        if not valid or meta.get("outputs") not in ("own", "reference"):
            raise CacheError(f"{path} has no valid kind, note and outputs")
    return meta, arrays


def _figures(meta: Mapping[str, Any], name: str) -> dict[str, float]:
    figures = meta.get(name)
    if not isinstance(figures, dict) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in figures.values()
    ):
        raise CacheError(f"its {name} is not a map of output names to numbers")
    return {str(key): float(value) for key, value in figures.items()}
