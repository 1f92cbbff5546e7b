"""A sample as the arguments of a torch model's forward: the binding every torch caller shares (the
torch runtimes, the FLOP counter, the truth's float64 shadow), so it lives beside the Model it reads."""

from __future__ import annotations

from typing import Any

import numpy as np

from pytest_navigator.config import Sample
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
