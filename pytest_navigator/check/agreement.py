"""The verdict for quantized runtimes (int8): agreement with the fp32 reference in what the outputs mean.

A correct int8 runtime is far from the fp32 reference value by value (every weight and activation is
rounded to 256 levels), so the error budget, in units of the reference's own fp32 rounding, is the
wrong instrument. What a correct int8 model keeps is what its outputs mean:

- **classification-shaped outputs** (a class axis: the last axis of an output of rank >= 2): the
  top-1 class agrees in most rows, and the top-k classes overlap;
- **any float output**: per row (one item of the batch), the cosine similarity with the reference,
  and the signal-to-quantization-noise ratio, SQNR = 10 log10(sum ref^2 / sum (ref - got)^2) in dB.

The figures are pooled over every sample the check ran and judged once at its end (`conclude`):
one flipped class among near-ties is not a fault, a model that lost its meaning is. The samples are
drawn like the calibration samples (strategies.samples(realistic=True): every element random at full
scale), because a statically quantized model honestly loses inputs its calibration never saw:
Hypothesis's usual sparse arrays and inputs a hundred times smaller measured near 0 dB on a correct
int8 ResNet-18. `floor` (off by default) fails any single row below it on the spot, so Hypothesis
shrinks it. The defaults are met by an honest int8 quantization of the architectures in
`harness.architectures` and missed by real quantization faults: `python -m harness.bench_quantized`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pytest_navigator.check.verify import ExplainingVerify, VerifyError, structural_problems
from pytest_navigator.config import Sample

if TYPE_CHECKING:
    from pytest_navigator.check.truth import Truth

#: Precisions judged by agreement rather than by the error budget (fp16, bf16 and tf32 stay close
#: to the reference value by value, and keep the budget).
QUANTIZED = frozenset({"int8", "fp8", "int4"})
#: SQNR of a row that matches exactly (shown instead of infinity).
EXACT_DB = 200.0


@dataclass(frozen=True)
class Thresholds:
    """What an int8 runtime must keep, pooled over the check's samples (see the module docstring)."""

    # Measured (harness/bench_quantized.py --seeds 3, seeded realistic weights): honest int8 runtimes of
    # ResNet-18, MobileNetV3-Small and BERT (static) and of all four with GPT-2 (dynamic) kept top-1 66-100%,
    # top-5 overlap >= 80%, median cosine >= 0.9847 and median SQNR >= 14.1 dB (MobileNetV3-Small's static
    # quantization the lowest of each); calibration on zeros and a doubled weight scale fell to top-1
    # 0-68% and SQNR -6 to 5 dB on the CNNs. A threshold above an honest runtime's figure is a false alarm.
    #: Share of class-axis rows whose top-1 class is the reference's.
    top1: float = 0.6
    #: Mean share of the reference's top-k classes among the runtime's top k.
    topk: float = 0.75
    k: int = 5
    #: Median cosine similarity of a row with the reference's.
    cosine: float = 0.98
    #: Median SQNR of a row, in dB.
    sqnr: float = 12.0
    #: Any row below this SQNR (dB) fails on its own sample (off by default: see the module docstring).
    floor: float = -math.inf

    def missed(
        self, top1: float | None, topk: float | None, median_sqnr: float, median_cosine: float
    ) -> dict[str, str]:
        """The pooled figures that miss their threshold, by threshold name, each with its message (top1
        and topk only where there is a class axis)."""
        found = {}
        if top1 is not None and top1 < self.top1:
            found["top1"] = f"top-1 agreement {top1:.1%} < {self.top1:.0%}"
        if topk is not None and topk < self.topk:
            found["topk"] = f"top-{self.k} overlap {topk:.1%} < {self.topk:.0%}"
        if median_sqnr < self.sqnr:
            found["sqnr"] = f"median SQNR {median_sqnr:.1f} dB < {self.sqnr:g} dB"
        if median_cosine < self.cosine:
            found["cosine"] = f"median cosine {median_cosine:.4f} < {self.cosine:g}"
        return found

    def __str__(self) -> str:
        return (
            f"top-1 >= {self.top1:.0%}, top-{self.k} overlap >= {self.topk:.0%}, median cosine >= {self.cosine:g}, "
            f"median SQNR >= {self.sqnr:g} dB"
            + (f", every row's SQNR >= {self.floor:g} dB" if self.floor > -math.inf else "")
        )


@dataclass(frozen=True)
class OutputFigures:
    """One output of one sample: each row's cosine and SQNR; for a class axis, each position's
    top-1 match and top-k overlap."""

    cosine: np.ndarray
    sqnr: np.ndarray
    top1: np.ndarray | None = None
    topk: np.ndarray | None = None

    @property
    def worst_sqnr(self) -> float:
        return float(self.sqnr.min(initial=EXACT_DB))


@dataclass(frozen=True)
class OutputAgreement:
    """One output over every sample of a check: the pooled figures and whether they meet the thresholds."""

    name: str
    rows: int
    median_cosine: float
    worst_cosine: float
    median_sqnr: float
    worst_sqnr: float
    top1: float | None
    topk: float | None
    problems: tuple[str, ...]

    def describe(self, k: int) -> str:
        classes = ""
        if self.top1 is not None and self.topk is not None:
            classes = f"top-1 agrees in {self.top1:.1%}, top-{k} overlap {self.topk:.1%}; "
        verdict = "; ".join(self.problems) if self.problems else "agrees"
        return (
            f"output {self.name!r} ({self.rows} rows): {classes}SQNR median {self.median_sqnr:.1f} dB, "
            f"worst {self.worst_sqnr:.1f} dB; cosine median {self.median_cosine:.4f}, worst {self.worst_cosine:.4f}"
            f" -> {verdict}"
        )


def _rows(array: np.ndarray) -> np.ndarray:
    """The output as rows (items of the batch), each flattened; a scalar or 1-D output is one row."""
    return array.reshape(array.shape[0], -1) if array.ndim >= 2 else array.reshape(1, -1)


def output_figures(ref: np.ndarray, got: np.ndarray, k: int) -> OutputFigures:
    """Cosine and SQNR per row, and top-1/top-k per class-axis position, of one float output (shapes equal)."""
    a, b = _rows(ref.astype(np.float64)), _rows(got.astype(np.float64))
    signal = (a * a).sum(axis=1)
    noise = ((a - b) ** 2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sqnr = np.where(noise == 0, EXACT_DB, 10 * np.log10(signal / noise))
        norms = np.sqrt(signal * (b * b).sum(axis=1))
        cosine = np.where(noise == 0, 1.0, np.where(norms > 0, (a * b).sum(axis=1) / norms, 0.0))
    sqnr = np.nan_to_num(sqnr, nan=-EXACT_DB, neginf=-EXACT_DB, posinf=EXACT_DB)
    if ref.ndim < 2 or ref.shape[-1] < 2:
        return OutputFigures(cosine, sqnr)
    scores_ref = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    scores_got = got.reshape(-1, got.shape[-1]).astype(np.float64)
    top = min(k, ref.shape[-1])
    top1 = scores_ref.argmax(axis=1) == scores_got.argmax(axis=1)
    best_ref = np.argpartition(-scores_ref, top - 1, axis=1)[:, :top]
    best_got = np.argpartition(-scores_got, top - 1, axis=1)[:, :top]
    overlap = np.array([len(np.intersect1d(r, g)) / top for r, g in zip(best_ref, best_got, strict=True)])
    return OutputFigures(cosine, sqnr, top1, overlap)


class Agreement(ExplainingVerify):
    """The default verify function of quantized runtimes: see the module docstring.

    `explain` judges one sample (structure, and every row above `floor`); `figures` keeps what
    `conclude` judges over the whole check, once every sample has passed on its own.
    """

    def __init__(self, thresholds: Thresholds | None = None, precision: str = "int8") -> None:
        self.thresholds = thresholds or Thresholds()
        self.precision = precision

    def explain(self, expected: Sample, actual: Sample, truth: Truth | None = None) -> list[str]:
        return self.judge(expected, actual)[0]

    def judge(self, expected: Sample, actual: Sample) -> tuple[list[str], dict[str, OutputFigures]]:
        """One sample's problems (structure, rows below `floor`) and the figures `conclude` pools."""
        structural = structural_problems(expected, actual)
        if structural:
            return structural, {}
        problems = []
        found = self.figures(expected, actual)
        for name, figures in found.items():
            low = figures.sqnr < self.thresholds.floor
            if low.any():
                row = int(np.argmin(figures.sqnr))
                problems.append(
                    f"output {name!r}: SQNR {figures.sqnr[row]:.1f} dB at row {row} is below the floor of "
                    f"{self.thresholds.floor:g} dB (cosine "
                    f"{figures.cosine[row]:.4f}); {int(low.sum())} of {low.size} rows below"
                )
        return problems, found

    def figures(self, expected: Sample, actual: Sample) -> dict[str, OutputFigures]:
        """Each float output's figures for one sample whose structure agrees."""
        found = {}
        for name, ref in expected.items():
            ref = np.asarray(ref)
            if ref.dtype.kind not in "fc" or name not in actual or ref.size == 0:
                continue
            got = np.asarray(actual[name])
            if got.shape != ref.shape:
                continue
            found[name] = output_figures(ref, got, self.thresholds.k)
        return found

    def conclude(self, figures: Sequence[Mapping[str, OutputFigures]]) -> list[OutputAgreement]:
        """Every output's pooled figures over the check's samples, each judged against the thresholds."""
        names = list(dict.fromkeys(name for sample in figures for name in sample))
        return [self._pooled(name, [sample[name] for sample in figures if name in sample]) for name in names]

    def _pooled(self, name: str, parts: list[OutputFigures]) -> OutputAgreement:
        limits = self.thresholds
        cosine = np.concatenate([p.cosine for p in parts])
        sqnr = np.concatenate([p.sqnr for p in parts])
        classes = [p for p in parts if p.top1 is not None and p.topk is not None]
        top1 = float(np.concatenate([p.top1 for p in classes]).mean()) if classes else None
        topk = float(np.concatenate([p.topk for p in classes]).mean()) if classes else None
        median_cosine, median_sqnr = float(np.median(cosine)), float(np.median(sqnr))
        problems = limits.missed(top1, topk, median_sqnr, median_cosine).values()
        return OutputAgreement(
            name,
            int(cosine.size),
            median_cosine,
            float(cosine.min()),
            median_sqnr,
            float(sqnr.min()),
            top1,
            topk,
            tuple(problems),
        )

    def __repr__(self) -> str:
        return f"agreement({self.thresholds}; {self.precision})"


def sample_score(figures: Mapping[str, OutputFigures]) -> float:
    """How badly one sample agrees: its lowest row SQNR over every output (lower is worse)."""
    return min((f.worst_sqnr for f in figures.values()), default=EXACT_DB)


# -- thresholds: defaults, the option, the ini and the marker ---------------------------------------

_NAMES = {f.name for f in fields(Thresholds)}


def _number(name: str, value: Any, where: str) -> float | int:
    try:
        number = float(str(value).strip().removesuffix("%")) / (100 if str(value).strip().endswith("%") else 1)
    except ValueError:
        number = math.nan
    if name == "k":
        if not (number >= 1 and number == int(number)):
            raise VerifyError(f"{where}: k={value!r}; give a whole number of classes >= 1.")
        return int(number)
    if name in ("top1", "topk") and not 0 <= number <= 1:
        raise VerifyError(f"{where}: {name}={value!r}; give a share from 0 to 1 (or a percentage, e.g. 90%).")
    if name == "cosine" and not -1 <= number <= 1:
        raise VerifyError(f"{where}: cosine={value!r}; give a similarity from -1 to 1.")
    if name == "floor" and number == -math.inf:  # off
        return number
    if not math.isfinite(number):
        raise VerifyError(f"{where}: {name}={value!r}; give a number of dB, e.g. {name}=15.")
    return number


def with_thresholds(base: Thresholds, values: Mapping[str, Any], where: str) -> Thresholds:
    """`base` with `values` ({'sqnr': '20', 'top1': '95%'}); unknown names and bad values name `where`."""
    unknown = sorted(set(values) - _NAMES)
    if unknown:
        raise VerifyError(
            f"{where}: no agreement threshold {', '.join(map(repr, unknown))}; the thresholds are "
            f"{', '.join(f.name for f in fields(Thresholds))} (defaults: {Thresholds()})."
        )
    changed: dict[str, Any] = {name: _number(name, value, where) for name, value in values.items()}
    return replace(base, **changed)


def parse_specs(specs: Iterable[str], where: str) -> list[tuple[str, dict[str, str]]]:
    """['onnxruntime-int8-cpu:sqnr=20,top1=95%', 'cosine=0.98'] -> [(runtime or '*', {name: text})]."""
    found = []
    for spec in specs:
        spec = spec.strip()
        if not spec:
            continue
        head, sep, rest = spec.partition(":")
        runtime, body = (head.strip(), rest) if sep and "=" not in head else ("*", spec)
        pairs = [p.strip() for p in body.split(",") if p.strip()]
        if not runtime or not pairs or any("=" not in p for p in pairs):
            raise VerifyError(
                f"{where}={spec!r} is not [RUNTIME:]NAME=VALUE[,NAME=VALUE...], e.g. onnxruntime-int8-cpu:sqnr=20,top1=95%"
            )
        found.append((runtime, {p.partition("=")[0].strip(): p.partition("=")[2].strip() for p in pairs}))
    return found


def thresholds_for(
    runtime: str,
    specs: Iterable[tuple[Iterable[str], str]],
    marker: Mapping[str, Any] | None = None,
    base: Thresholds | None = None,
) -> Thresholds:
    """The thresholds of runtime id `runtime`: `base` (the defaults), then each (specs, where) in order (the
    ini's, then the option's; a spec without RUNTIME: applies to every quantized runtime), then the marker's."""
    name = runtime.partition(":")[0]
    thresholds = base or Thresholds()
    for lines, where in specs:
        for target, values in parse_specs(lines, where):
            if target in ("*", name, runtime):
                thresholds = with_thresholds(thresholds, values, where)
    if marker:
        if not isinstance(marker, Mapping):
            raise VerifyError(
                f"navigator marker: agreement={marker!r}; give a dict, e.g. {{'sqnr': 20, 'top1': 0.95}}."
            )
        thresholds = with_thresholds(thresholds, marker, "navigator marker agreement")
    return thresholds


def agreement(
    top1: float = Thresholds.top1,
    topk: float = Thresholds.topk,
    k: int = Thresholds.k,
    cosine: float = Thresholds.cosine,
    sqnr: float = Thresholds.sqnr,
    floor: float = Thresholds.floor,
) -> Agreement:
    """A VerifyFunction judging outputs by what they mean (top-1/top-k, cosine, SQNR), pooled over the
    check's samples: the default of int8 runtimes, usable for any runtime."""
    values = {"top1": top1, "topk": topk, "k": k, "cosine": cosine, "sqnr": sqnr, "floor": floor}
    return Agreement(with_thresholds(Thresholds(), values, "agreement(...)"))
