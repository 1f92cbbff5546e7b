"""The summary shows a reduced-precision runtime's throughput over its fp32 family's, measured in the same run."""

from __future__ import annotations

from dataclasses import dataclass

from pytest_navigator.report.terminal import _speedups, fp32_family


@dataclass
class _Batch:
    batch_size: int
    throughput: float

    def shown_figures(self) -> dict[str, float]:
        return {"throughput": self.throughput}


def test_the_fp32_family_of_a_runtime_drops_its_precision_and_its_options() -> None:
    assert fp32_family("onnxruntime-int8-cpu") == "onnxruntime-cpu"
    assert fp32_family("onnxruntime-int8-dynamic-cpu:per_channel=false") == "onnxruntime-cpu"
    assert fp32_family("tensorrt-fp16") == "tensorrt"
    assert fp32_family("torch-aoti-cpu") == "torch-aoti-cpu"


def test_speed_ups_are_ratios_at_the_batch_sizes_both_measured() -> None:
    best = [
        ("resnet.pt2", "onnxruntime-cpu", _Batch(1, 40.0)),
        ("resnet.pt2", "onnxruntime-cpu", _Batch(8, 50.0)),
        ("resnet.pt2", "onnxruntime-int8-cpu", _Batch(1, 70.0)),
        ("resnet.pt2", "onnxruntime-int8-cpu", _Batch(8, 95.0)),
        ("resnet.pt2", "onnxruntime-int8-cpu", _Batch(16, 99.0)),  # no fp32 figure at 16: no ratio
        ("resnet.pt2", "onnxruntime-int8-dynamic-cpu", _Batch(4, 10.0)),  # none at 4 either
        ("resnet.pt2", "torch-cpu", _Batch(1, 30.0)),
    ]
    assert _speedups(best) == [
        "resnet.pt2 onnxruntime-int8-cpu: speed-up over onnxruntime-cpu: 1.75x at batch 1, 1.90x at batch 8 "
        "(throughput, this run)"
    ]
