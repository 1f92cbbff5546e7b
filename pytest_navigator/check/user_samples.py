"""Users' own samples: .npz files, folders of them, and dataloaders, checked against the model's input spec."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pytest_navigator import options
from pytest_navigator.config import Sample, SizedDataLoader
from pytest_navigator.errors import SampleError
from pytest_navigator.model.spec import IOSpec, TensorSpec

#: (label, sample): the label names where a sample came from, in every message about it.
LabeledSample = tuple[str, Sample]


def load_sample_files(path: Path, option: str = options.SAMPLES) -> list[LabeledSample]:
    """An .npz file (keys are input names), or every .npz file in a folder, sorted by name."""
    if not path.exists():
        raise SampleError(f"{option}={path}: no such file or folder; give an .npz file or a folder of .npz files.")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix == ".npz" and p.is_file())
        if not files:
            raise SampleError(
                f"{option}={path}: the folder has no .npz files; save samples with numpy.savez(path, **sample)."
            )
    else:
        files = [path]
    return [(str(file), _read_npz(file, option)) for file in files]


def _read_npz(file: Path, option: str) -> Sample:
    try:
        archive = np.load(file, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise SampleError(
            f"{option}: {file} is not a readable .npz file ({type(exc).__name__}: {exc}); save samples with numpy.savez(path, **sample)."
        ) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise SampleError(
            f"{option}: {file} holds a single array, not named inputs; save samples with numpy.savez(path, **sample)."
        )
    with archive:
        return {name: archive[name] for name in archive.files}


def samples_from_dataloader(
    loader: SizedDataLoader, io_spec: IOSpec, label: str = "navigator_dataloader"
) -> list[LabeledSample]:
    """A seed-000 SizedDataLoader's items as Samples: a dict by input name, a tuple in input order, or one array."""
    found = []
    for index, item in enumerate(loader):
        where = f"{label}[{index}]"
        if isinstance(item, Mapping):
            sample = {str(k): _to_numpy(v, where, str(k)) for k, v in item.items()}
        elif isinstance(item, (tuple, list)):
            if len(item) != len(io_spec):
                raise SampleError(
                    f"sample {where}: a sequence of {len(item)} arrays, but the model takes {len(io_spec)} inputs ({', '.join(io_spec.names)}); yield a dict by input name or one array per input, in that order."
                )
            sample = {name: _to_numpy(v, where, name) for name, v in zip(io_spec.names, item, strict=True)}
        elif len(io_spec) == 1:
            sample = {io_spec.names[0]: _to_numpy(item, where, io_spec.names[0])}
        else:
            raise SampleError(
                f"sample {where}: a {type(item).__name__}, but the model takes {len(io_spec)} inputs ({', '.join(io_spec.names)}); yield a dict by input name."
            )
        found.append((where, sample))
    return found


def _to_numpy(value: Any, where: str, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            import ml_dtypes

            return value.float().numpy().astype(ml_dtypes.bfloat16)
        return np.asarray(value.numpy())
    try:
        return np.asarray(value)
    except Exception as exc:
        raise SampleError(f"sample {where}: input {name!r} is a {type(value).__name__}, not an array.") from exc


def check_sample(label: str, sample: Sample, io_spec: IOSpec) -> Sample:
    """The sample unchanged when it fits the spec; otherwise a SampleError naming the sample and the field."""
    missing = [name for name in io_spec.names if name not in sample]
    if missing:
        raise SampleError(
            f"sample {label}: no input {', '.join(map(repr, missing))}; the model takes {io_spec} (the sample has {', '.join(map(repr, sample)) or 'nothing'})."
        )
    extra = [name for name in sample if name not in io_spec.names]
    if extra:
        raise SampleError(
            f"sample {label}: unknown input {', '.join(map(repr, extra))}; the model's inputs are {', '.join(io_spec.names)}."
        )
    axis_sizes: dict[str, tuple[int, str]] = {}
    batch: tuple[int, str] | None = None
    for spec in io_spec:
        array = sample[spec.name]
        _check_dtype(label, array, spec)
        if array.ndim != len(spec.dims):
            raise SampleError(
                f"sample {label}: input {spec.name!r} has rank {array.ndim} (shape {list(array.shape)}); the model takes rank {len(spec.dims)}: {spec}."
            )
        for axis, (size, dim) in enumerate(zip(array.shape, spec.dims, strict=True)):
            field = f"input {spec.name!r} axis {axis}"
            if dim.size is not None and size != dim.size:
                raise SampleError(f"sample {label}: {field} is {size}; the model fixes it at {dim.size}: {spec}.")
            if dim.size is None and not dim.min <= size <= dim.max:
                raise SampleError(f"sample {label}: {field} is {size}; the model allows {dim.min}..{dim.max}: {spec}.")
            if dim.size is None and axis == 0:
                if batch is not None and batch[0] != size:
                    raise SampleError(
                        f"sample {label}: {field} (the batch axis) is {size}, but {batch[1]} has batch size {batch[0]}."
                    )
                batch = batch or (size, f"input {spec.name!r}")
            elif dim.size is None and dim.name:
                seen = axis_sizes.setdefault(dim.name, (size, field))
                if seen[0] != size:
                    raise SampleError(
                        f"sample {label}: {field} (axis {dim.name!r}) is {size}, but {seen[1]} is {seen[0]}; inputs naming one axis share its size."
                    )
    return sample


def _check_dtype(label: str, array: np.ndarray, spec: TensorSpec) -> None:
    if array.dtype.name != spec.dtype:
        raise SampleError(
            f"sample {label}: input {spec.name!r} is {array.dtype.name}; the model takes {spec.dtype} ({spec}). Convert it, e.g. array.astype('{spec.dtype}')."
        )


def check_samples(samples: Iterable[LabeledSample], io_spec: IOSpec) -> list[LabeledSample]:
    return [(label, check_sample(label, sample, io_spec)) for label, sample in samples]
