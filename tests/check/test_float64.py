"""The float64 shadow's depthwise convolution (check/float64.py): torch's own result to rounding in
double precision, for every stride, padding, dilation, kernel shape and channel multiplier; taken only
for float64 depthwise convolutions; and used by the shadow of a model that has them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from pytest_navigator.check import float64, truth
from pytest_navigator.model import loader

CASES = {
    "3x3": dict(kernel=(3, 3)),
    "5x5, stride 2, padding 2": dict(kernel=(5, 5), stride=(2, 2), padding=(2, 2)),
    "1x7, uneven stride and padding": dict(kernel=(1, 7), stride=(2, 1), padding=(0, 3)),
    "3x3, dilation 2": dict(kernel=(3, 3), padding=(2, 2), dilation=(2, 2)),
    "channel multiplier 2, bias": dict(kernel=(3, 3), multiplier=2, bias=True),
    "7x7, no padding, odd size": dict(kernel=(7, 7), size=(13, 11)),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_the_depthwise_convolution_is_torchs_to_double_rounding(case: dict[str, Any]) -> None:
    generator = torch.Generator().manual_seed(0)
    channels, multiplier = 6, case.get("multiplier", 1)
    x = torch.randn(3, channels, *case.get("size", (16, 16)), generator=generator, dtype=torch.float64)
    weight = torch.randn(channels * multiplier, 1, *case["kernel"], generator=generator, dtype=torch.float64)
    bias = torch.randn(channels * multiplier, generator=generator, dtype=torch.float64) if case.get("bias") else None
    arguments = dict(
        stride=case.get("stride", (1, 1)), padding=case.get("padding", (0, 0)), dilation=case.get("dilation", (1, 1))
    )
    expected = F.conv2d(x, weight, bias, groups=channels, **arguments)
    with torch.inference_mode(), float64.DepthwiseInDouble():
        found = F.conv2d(x, weight, bias, groups=channels, **arguments)
    assert found.shape == expected.shape
    assert float((found - expected).abs().max()) <= 1e-13 * float(expected.abs().max())


class Counted:
    """float64.depthwise_conv2d, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self._original = float64.depthwise_conv2d

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        return self._original(*args)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Counted:
    counter = Counted()
    monkeypatch.setattr(float64, "depthwise_conv2d", counter)
    return counter


def test_only_float64_depthwise_convolutions_are_taken(counted: Counted) -> None:
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    with torch.inference_mode(), float64.DepthwiseInDouble():
        F.conv2d(x.float(), torch.randn(4, 1, 3, 3), groups=4)  # float32: torch's own kernel is fast
        F.conv2d(x, torch.randn(4, 4, 3, 3, dtype=torch.float64))  # not grouped
        F.conv2d(x, torch.randn(4, 2, 3, 3, dtype=torch.float64), groups=2)  # two channels per group
        with pytest.raises(RuntimeError):  # float32 weights: torch refuses them, and so does the mode
            F.conv2d(x, torch.randn(4, 1, 3, 3), groups=4)
        assert counted.calls == 0
        F.conv2d(x, torch.randn(4, 1, 3, 3, dtype=torch.float64), groups=4)
    assert counted.calls == 1


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Conv2d(3, 8, 1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: Any) -> Any:
        x = torch.relu(self.depthwise(torch.relu(self.expand(x))))
        return self.head(x.mean(dim=(2, 3)))


def test_the_shadow_of_a_depthwise_model_uses_it_and_matches_torchs_double(tmp_path: Path, counted: Counted) -> None:
    import warnings

    torch.manual_seed(0)
    module = Depthwise().eval()
    example = torch.randn(2, 3, 12, 12)
    path = tmp_path / "depthwise.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(module, (example,)), str(path))
    model = loader.load(path)
    shadow = truth._torch_shadow(model, "")
    sample = {model.io_spec.names[0]: example.numpy()}
    with torch.inference_mode():
        reference = {"output": module(example).numpy()}
        expected = copy.deepcopy(module).double()(example.double()).numpy()
    found = shadow.truth(sample, reference)
    assert found.kind == truth.FLOAT64_SHADOW and counted.calls == 1
    (name,) = found.outputs
    np.testing.assert_allclose(found.outputs[name], expected, rtol=1e-12, atol=1e-14)


def test_a_decomposed_programs_convolution_is_taken_too(counted: Counted) -> None:
    """An exported program in core ATen (run_decompositions) calls aten.convolution, not aten.conv2d."""
    import warnings

    module = nn.Conv2d(4, 8, (3, 5), stride=(2, 1), padding=(1, 2), groups=4).double().eval()
    x = torch.randn(2, 4, 11, 13, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(module, (x,)).run_decompositions()
    assert torch.ops.aten.convolution.default in {node.target for node in program.graph.nodes}
    with torch.inference_mode():
        expected = module(x)
        with float64.DepthwiseInDouble():
            found = program.module()(x)
    assert counted.calls == 1
    assert float((found - expected).abs().max()) <= 1e-13 * float(expected.abs().max())
