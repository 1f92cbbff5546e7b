"""The agreement verdict of quantized runtimes: its figures, its thresholds and where they come from,
and the check end to end on a real int8 runtime, honest and broken for real."""

from __future__ import annotations

import math
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from pytest_navigator.check.agreement import (
    EXACT_DB,
    Agreement,
    Thresholds,
    agreement,
    output_figures,
    thresholds_for,
)
from pytest_navigator.check.budget import ErrorBudget, default_verify
from pytest_navigator.check.correctness import CheckOptions, CorrectnessFailure
from pytest_navigator.check.verify import VerifyError
from pytest_navigator.runtimes import default_registry
from pytest_navigator.session import NavigatorSession
from pytest_navigator.settings import Settings

STATIC = "onnxruntime-int8-cpu"


def test_the_figures_of_an_exact_a_noisy_and_a_meaningless_output() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4, 10)) * 10
    exact = output_figures(ref, ref.copy(), k=5)
    assert (exact.sqnr == EXACT_DB).all() and (exact.cosine == 1).all()
    assert exact.top1 is not None and exact.top1.all() and exact.topk is not None and (exact.topk == 1).all()
    noise = rng.normal(size=ref.shape)
    noisy = output_figures(ref, ref + noise, k=5)
    expected_db = 10 * np.log10((ref**2).sum(1) / (noise**2).sum(1))
    assert np.allclose(noisy.sqnr, expected_db)
    shuffled = output_figures(ref, rng.permutation(ref, axis=1), k=5)
    assert shuffled.cosine.max() < 0.9 and shuffled.sqnr.max() < 3
    embedding = output_figures(rng.normal(size=(3,)), rng.normal(size=(3,)), k=5)
    assert embedding.top1 is None and embedding.sqnr.shape == (1,)  # a 1-D output is one row, no class axis


def _samples(noise: float, count: int = 20, seed: int = 0) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        ref = rng.normal(size=(2, 100)) * 5
        pairs.append(({"logits": ref}, {"logits": ref + rng.normal(size=ref.shape) * noise}))
    return pairs


def test_pooled_figures_pass_a_small_quantization_noise_and_fail_a_large_one() -> None:
    verify = Agreement()
    honest = verify.conclude([verify.figures(e, a) for e, a in _samples(noise=0.05)])
    assert [o.problems for o in honest] == [()] and honest[0].rows == 40 and honest[0].median_sqnr > 35
    broken = verify.conclude([verify.figures(e, a) for e, a in _samples(noise=5.0)])
    (output,) = broken
    assert output.name == "logits" and output.top1 is not None and output.top1 < 0.9
    text = output.describe(5)
    assert "top-1 agreement" in text and "median SQNR" in text and "median cosine" in text
    assert re.search(r"SQNR median -?\d+\.\d dB, worst -?\d+\.\d dB", text)


def test_the_floor_is_off_by_default_and_fails_one_sample_when_set() -> None:
    (expected, actual), *_ = _samples(noise=5.0)
    assert Agreement().explain(expected, actual) == []
    problems = agreement(floor=10).explain(expected, actual)
    assert len(problems) == 1 and "output 'logits': SQNR" in problems[0] and "below the floor of 10 dB" in problems[0]
    wrong_shape = Agreement().explain(expected, {"logits": actual["logits"][:, :3]})
    assert wrong_shape == ["output 'logits': shape (2, 3) differs from the reference's (2, 100)"]


def test_quantized_precisions_get_agreement_and_the_others_keep_the_budget() -> None:
    assert isinstance(default_verify("int8"), Agreement)
    assert default_verify("int8", Thresholds(sqnr=30)).thresholds.sqnr == 30  # type: ignore[attr-defined]
    for precision in ("fp32", "fp16", "bf16", "tf32"):
        assert isinstance(default_verify(precision), ErrorBudget)


def test_thresholds_come_from_the_ini_the_option_and_the_marker_in_that_order() -> None:
    ini = (["sqnr=20", "onnxruntime-int8-dynamic-cpu:top1=50%"], "navigator_agreement")
    cli = (["onnxruntime-int8-cpu:sqnr=25,k=3"], "--navigator-agreement")
    static = thresholds_for("onnxruntime-int8-cpu:per_channel=false", [ini, cli])
    assert (static.sqnr, static.k, static.top1) == (25, 3, Thresholds().top1)
    dynamic = thresholds_for("onnxruntime-int8-dynamic-cpu", [ini, cli], {"cosine": 0.9})
    assert (dynamic.sqnr, dynamic.top1, dynamic.cosine) == (20, 0.5, 0.9)
    assert thresholds_for("onnxruntime-int8-cpu", [], {"floor": "-inf"}).floor == -math.inf


@pytest.mark.parametrize(
    ("specs", "marker", "message"),
    [
        (["sqnr"], None, "--navigator-agreement='sqnr' is not [RUNTIME:]NAME=VALUE"),
        (["snr=20"], None, "--navigator-agreement: no agreement threshold 'snr'; the thresholds are top1, topk, k"),
        (["top1=1.5"], None, "top1='1.5'; give a share from 0 to 1"),
        (["k=0"], None, "k='0'; give a whole number of classes >= 1"),
        (["sqnr=loud"], None, "sqnr='loud'; give a number of dB"),
        ([], {"cosine": 2}, "navigator marker agreement: cosine=2; give a similarity from -1 to 1"),
        ([], [("sqnr", 1)], "agreement=[('sqnr', 1)]; give a dict"),
    ],
)
def test_a_bad_threshold_names_where_it_came_from_and_what_is_accepted(
    specs: list[str], marker: Any, message: str
) -> None:
    with pytest.raises(VerifyError, match=re.escape(message)):
        thresholds_for("onnxruntime-int8-cpu", [(specs, "--navigator-agreement")], marker)


# -- end to end: a real int8 runtime under the default verdict ---------------------------------------


class _Cnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pointwise = nn.Conv2d(8, 16, 1)
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # pooled to 4x4, not averaged over the image: each input gets logits of its own, with margins
        # (a global mean of random inputs gives every row the same near-tied logits)
        x = torch.relu(self.depthwise(torch.relu(self.conv(input))))
        return self.head(nn.functional.avg_pool2d(torch.relu(self.pointwise(x)), 4).flatten(1)) * 4


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from harness import zoo

    path = tmp_path_factory.mktemp("agreement") / "cnn.onnx"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zoo.save(_Cnn().eval(), (torch.randn(2, 3, 16, 16),), path, "onnx", ["input"])
    path.with_name("cnn.navigator.toml").write_text('inputs = ["input:float32[N,3,16,16]"]\n')
    return path


def _session(model: Path, tmp_path: Path, **settings: Any) -> NavigatorSession:
    from harness.bench_quantized import doubled_scale, zero_calibration

    registry = default_registry()
    registry.register(zero_calibration(registry))
    registry.register(doubled_scale(registry, tmp_path))
    session = NavigatorSession(
        Settings(
            models=(model,),
            seed=1,
            examples=10,
            state_dir=tmp_path / ".navigator",
            invocation_dir=tmp_path,
            cache_dir=tmp_path / "cache",
            **settings,
        ),
        registry,
    )
    session.load_models()
    return session


def test_an_honest_int8_runtime_passes_the_default_verdict_and_reports_its_figures(cnn: Path, tmp_path: Path) -> None:
    session = _session(cnn, tmp_path)
    (model,) = session.models.values()
    report = session.check_correctness(model, STATIC)
    assert report.verify.startswith("agreement(top-1 >= 60%")
    (output,) = report.outputs
    assert output.median_sqnr is not None and output.median_sqnr > Thresholds().sqnr
    assert output.top1 is not None and output.top1 >= Thresholds().top1
    from pytest_navigator.check.checking import correctness_detail

    assert re.search(r"top-1 agrees in \d+\.\d%, SQNR median \d+\.\d dB", correctness_detail(report))


def test_a_broken_int8_runtime_fails_naming_the_first_bad_layer_and_saving_the_worst_samples(
    cnn: Path, tmp_path: Path
) -> None:
    session = _session(cnn, tmp_path)
    (model,) = session.models.values()
    broken = session.runner(model, "fault-doubled-scale")
    _, layer = broken.fault  # type: ignore[attr-defined]
    with pytest.raises(CorrectnessFailure) as failure:
        session.check_correctness(model, "fault-doubled-scale", CheckOptions(examples=10))
    message = str(failure.value)
    assert "fault-doubled-scale disagrees with the reference (onnxruntime-cpu-reference) on cnn.onnx in what" in message
    assert re.search(r"output '\w+' \(\d+ rows\): top-1 agrees in .* -> .*(top-1 agreement|median SQNR)", message), (
        message
    )
    assert "the 3 worst samples (lowest SQNR of a row), saved for replay:" in message
    saved = re.findall(r"saved: (\S+)", message)
    assert len(saved) == 3 and all((tmp_path / path).is_file() for path in saved)
    assert "where the error enters" in message
    first = re.search(r"first drop at (\w+) '([^']+)'", message)
    assert first is not None and first[2] == layer, message


def test_the_thresholds_can_be_lowered_to_accept_a_runtime_by_marker_or_option(cnn: Path, tmp_path: Path) -> None:
    lenient = {"top1": 0, "topk": 0, "cosine": -1, "sqnr": -100}
    session = _session(cnn, tmp_path)
    (model,) = session.models.values()
    report = session.check_correctness(model, "fault-doubled-scale", CheckOptions(examples=10, agreement=lenient))
    assert report.outputs[0].median_sqnr is not None and report.outputs[0].median_sqnr < Thresholds().sqnr
    spec = "fault-doubled-scale:" + ",".join(f"{name}={value}" for name, value in lenient.items())
    option = _session(cnn, tmp_path / "option", cli_agreement=(spec,))
    (model,) = option.models.values()
    assert option.check_correctness(model, "fault-doubled-scale").passed
    other = _session(cnn, tmp_path / "other", cli_agreement=("onnxruntime-int8-cpu:sqnr=-100",))
    (model,) = other.models.values()
    with pytest.raises(CorrectnessFailure, match="median SQNR"):  # another runtime's thresholds do not apply
        other.check_correctness(model, "fault-doubled-scale")


def test_a_quantized_runtime_is_checked_on_samples_drawn_like_its_calibration_data() -> None:
    from hypothesis import HealthCheck, given, settings

    from pytest_navigator.check.strategies import samples
    from pytest_navigator.model.spec import parse_io_spec

    spec = parse_io_spec(["x:float32[N,64]"], "test")
    seen: list[np.ndarray] = []

    @settings(max_examples=30, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(samples(spec, (1, 4), realistic=True))
    def draw(sample: dict[str, np.ndarray]) -> None:
        seen.append(sample["x"])

    draw()
    # every element random at full scale: no sparse arrays, no hundredfold smaller inputs, no edge values
    assert all((array != 0).all() and 0.5 < array.std() < 1.6 and np.abs(array).max() < 7 for array in seen)
    assert len({array.shape[0] for array in seen}) > 1 and len({float(array[0, 0]) for array in seen}) > 5


_GLITCHED_CALIBRATION = """
import numpy as np


def pytest_navigator_calibration_data(model, runtime, config):
    with open("asked.txt", "a") as file:
        print(model.name, runtime, file=file)
    if runtime == "onnxruntime-int8-cpu":
        images = np.random.default_rng(0).standard_normal((4, 2, 3, 16, 16)).astype(np.float32)
        images[0, 0, 0, 0, 0] = 1e4  # one glitched pixel: a MinMax calibration stretches every range to it
        return list(images)
    return None
"""


def test_a_conftest_hook_gives_the_data_it_calibrates_on_once_for_the_whole_run(
    pytester: pytest.Pytester, cnn: Path
) -> None:
    for name in ("cnn.onnx", "cnn.navigator.toml"):
        shutil.copy(cnn.with_name(name), pytester.path / name)
    pytester.makeini("[pytest]\naddopts = --navigator-no-profile --navigator-seed=1 --navigator-examples=10")
    honest = pytester.runpytest("--navigator-model=cnn.onnx", f"--navigator-runtimes={STATIC}")
    honest.assert_outcomes(passed=1)
    pytester.makeconftest(_GLITCHED_CALIBRATION)
    blank = pytester.runpytest(
        "--navigator-model=cnn.onnx", f"--navigator-runtimes={STATIC},onnxruntime-int8-dynamic-cpu", "-p", "no:randomly"
    )
    blank.assert_outcomes(passed=1, failed=1)  # the dynamic one does not calibrate, and is not asked
    blank.stdout.fnmatch_lines(
        [f"*{STATIC} disagrees with the reference*", "*where the error enters*", "*first drop at*"], consecutive=False
    )
    assert (pytester.path / "asked.txt").read_text().splitlines() == [f"cnn.onnx {STATIC}"]
    entries = pytester.path / ".navigator" / "cache" / "onnx-int8-static"
    assert len(list(entries.glob("*/"))) == 2  # the glitched data's model beside the honest one
