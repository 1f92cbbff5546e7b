"""A torch model's side of a Sample: its arrays bound to forward's arguments as tensors, and forward's
result named back into host arrays. The reference, the torch runtimes, the ONNX export and the FLOP
counter all call a torch model this way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_navigator.config import Sample
from pytest_navigator.errors import ModelOutputError
from pytest_navigator.model.loader import Model


def bind_tensors(model: Model, sample: Sample, device: str = "cpu") -> tuple[list[Any], dict[str, Any]]:
    """A sample's arrays as tensors on `device`, split into forward's positional and keyword arguments."""
    import torch

    def tensor(name: str) -> Any:
        array = np.ascontiguousarray(sample[name])
        if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: same bits as torch's
            return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16).to(device)
        return torch.from_numpy(array).to(device)

    return [tensor(n) for n in model.positional_inputs], {n: tensor(n) for n in model.keyword_inputs}


def export_dynamic(module: Any, model: Model, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """torch.export of `module` called with these tensors (bind_tensors) with every dynamic axis of
    the model's spec kept dynamic over its range, the batch axes sharing one dimension."""
    import torch

    batch = torch.export.Dim("batch", min=1, max=model.io_spec.max_batch_size or 1024)
    shapes = torch.export.ShapesCollection()
    tensors = dict(zip([*model.positional_inputs, *kwargs], [*args, *kwargs.values()], strict=True))
    for spec in model.io_spec:
        dims = {
            i: batch if i == spec.batch_axis else torch.export.Dim(f"{spec.name}_{i}", min=d.min, max=d.max)
            for i, d in enumerate(spec.dims)
            if d.dynamic
        }
        if dims and isinstance(tensors.get(spec.name), torch.Tensor):
            shapes[tensors[spec.name]] = dims
    dynamic = shapes.dynamic_shapes(module, tuple(args), kwargs)
    return torch.export.export(module, tuple(args), kwargs or None, dynamic_shapes=dynamic)


def name_outputs(outputs: Any, prefix: str = "output") -> Sample:
    """Flatten a forward() result into named host arrays: a tensor is 'output', a tuple 'output_0'..,
    a dict keeps its keys. Numbers count as 0-d tensors; None inside a tuple or dict (an absent
    optional output) is left out; anything else is a ModelOutputError naming the output."""
    import torch

    if outputs is None and prefix == "output":
        raise ModelOutputError(
            "the model returned None: there is no output to check; forward() must return a tensor, or a tuple, "
            "list or dict of tensors"
        )
    if isinstance(outputs, torch.Tensor):
        tensor = outputs.detach()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return {prefix: tensor.cpu().numpy()}
    named: Sample = {}
    if isinstance(outputs, dict):
        for key, value in outputs.items():
            named.update(name_outputs(value, str(key) if prefix == "output" else f"{prefix}.{key}"))
    elif isinstance(outputs, (tuple, list)):
        for index, value in enumerate(outputs):
            named.update(name_outputs(value, f"{prefix}_{index}"))
    elif isinstance(outputs, (bool, int, float, np.ndarray, np.number, np.bool_)):
        named[prefix] = np.asarray(outputs)
    elif outputs is not None:
        shown = repr(outputs)
        raise ModelOutputError(
            f"the model's output {prefix!r} is a {type(outputs).__name__} ({shown[:40]}{'...' if len(shown) > 40 else ''}), "
            "not a tensor; forward() must return a tensor, or a tuple, list or dict of tensors"
        )
    return named
