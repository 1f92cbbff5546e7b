"""False alarms and detections of the correctness gate on real architectures, beside the old fixed tolerance.

    python -m harness.bench_correctness [--seeds 20] [--architectures mobilenet_v3_small,resnet18,...]
                                        [--fault-seeds 5] [--examples 25] [--small] [--cost]

For each architecture (harness/architectures.py: torchvision's MobileNetV3-Small, ResNet-18 and a
ViT, transformers' BERT and GPT-2, with seeded realistic weights; `--small` takes the in-code test
versions instead) and each seed (the weights and the run's samples both seeded by it), every CPU
runtime is checked as `pytest --navigator-model=... --navigator-no-profile` checks it: users'
samples none, 25 Hypothesis samples and one per configured batch size. Every sample is scored by
both gates on the same outputs:

- **budget**: the default verdict (budget.py): the error against the truth within the precision's
  multiple of the reference's own rounding;
- **fixed**: the old default, allclose at the precision's fixed tolerance (atol 1e-4, rtol 1e-3 at fp32).

A run fails a gate when any of its samples does. Correct runtimes (torch eager, TorchScript,
torch.compile, ONNX Runtime) count false alarms. Faulty runtimes (harness/faults.py: a weight
tensor scaled by 1+1e-2 and by 1+1e-3, every GELU swapped for its tanh approximation or back, one
layer in fp16; run eagerly and, for the first `--fault-seeds` seeds, through ONNX Runtime too)
count detections. An honest fp16 runtime (the model in half precision) is judged at fp16 and
calibrates the reduced-precision multiple. `--cost` times a correctness-only run of the first
architecture with and without the budget (its float64 shadow and perturbations are the extra work).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import architectures, faults
from pytest_navigator.check.budget import UNIT_ROUNDOFF, ErrorBudget, multiple
from pytest_navigator.check.correctness import CheckOptions
from pytest_navigator.check.truth import Truth
from pytest_navigator.check.verify import ExplainingVerify, tolerance_for
from pytest_navigator.config import Sample
from pytest_navigator.model.loader import Model
from pytest_navigator.runtimes import (
    BuildContext,
    CallableRunner,
    Registry,
    Runner,
    RuntimeDefinition,
    default_registry,
)
from pytest_navigator.session import NavigatorSession
from pytest_navigator.settings import Settings

CORRECT = ("torch-cpu", "torchscript-cpu", "torch-compile-cpu", "onnxruntime-cpu")


class Scorer(ExplainingVerify):
    """Scores every sample with both gates and never fails, so a run sees all of its samples."""

    uses_truth = True

    def __init__(self, precision: str = "fp32") -> None:
        self.budget = ErrorBudget(precision)
        self.fixed = tolerance_for(precision)
        self.samples = self.budget_failures = self.fixed_failures = 0
        self.max_ratio = 0.0
        self.measured_over_estimated: list[float] = []
        self.truths: set[str] = set()
        self.first_budget_failure = ""

    def explain(self, expected: Sample, actual: Sample, truth: Truth | None = None) -> list[str]:
        self.samples += 1
        budget = self.budget.explain(expected, actual, truth)
        self.budget_failures += bool(budget)
        self.first_budget_failure = self.first_budget_failure or (budget[0] if budget else "")
        self.fixed_failures += bool(self.fixed.explain(expected, actual))
        if truth is not None:
            self.truths.add(truth.kind)
            for comparison in self.budget.compare(expected, actual, truth).values():
                self.max_ratio = max(self.max_ratio, comparison.ratio)
            for name, measured in truth.measured.items():
                if truth.estimated.get(name):
                    self.measured_over_estimated.append(measured / truth.estimated[name])
        return []


@dataclass
class Outcome:
    architecture: str
    seed: int
    runtime: str
    kind: str  # "correct", "fault", "fp16"
    budget_failed: bool
    fixed_failed: bool
    max_ratio: float
    samples: int
    truths: set[str] = field(default_factory=set)
    measured_over_estimated: list[float] = field(default_factory=list)
    detail: str = ""


def eager_runtime(name: str, module: Any, half: bool = False) -> RuntimeDefinition:
    """A runtime that runs `module` eagerly (in fp16 when `half`: fp32 in, fp32 out)."""

    def build(model: Model, ctx: BuildContext) -> Runner:
        import torch

        from pytest_navigator.runtimes.torch_runtimes import bind_tensors, name_outputs

        def infer(sample: Sample) -> Sample:
            args, kwargs = bind_tensors(model, sample)
            if half:
                args = [a.half() if a.is_floating_point() else a for a in args]
                kwargs = {k: v.half() if v.is_floating_point() else v for k, v in kwargs.items()}
            with torch.inference_mode():
                outputs = name_outputs(module(*args, **kwargs))
            return {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in outputs.items()}

        return CallableRunner(name, infer, model.io_spec)

    return RuntimeDefinition(name, build, precision="fp16" if half else "fp32")


def onnx_runtime(name: str, module: Any, architecture: architectures.Architecture, folder: Path) -> RuntimeDefinition:
    """A runtime that runs `module`, exported to ONNX, in ONNX Runtime (what a faulty conversion ships)."""

    def build(model: Model, ctx: BuildContext) -> Runner:
        from harness import zoo
        from pytest_navigator.runtimes.onnx_runtimes import OnnxRuntimeRunner

        path = folder / f"{name.replace(' ', '_').replace('/', '_')}.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            zoo.save(module, architecture.example(2), path, "onnx", [s.split(":")[0] for s in architecture.inputs])
        return OnnxRuntimeRunner(name, model, path, "CPUExecutionProvider")

    return RuntimeDefinition(name, build)


def _check(session: NavigatorSession, model: Model, runtime: str, precision: str, examples: int) -> Scorer:
    scorer = Scorer(precision)
    session.check_correctness(model, runtime, CheckOptions(verify=scorer, examples=examples))
    return scorer


def run_seed(
    architecture: architectures.Architecture,
    seed: int,
    folder: Path,
    cache: Path,
    examples: int,
    runtimes: tuple[str, ...],
    with_faults: bool,
    onnx_faults: bool,
    progress: Callable[[str], None],
) -> list[Outcome]:
    """Every runtime of one architecture at one seed, scored by both gates."""
    module = architecture.build(seed)
    path = architectures.write(architecture, seed, folder / f"{architecture.name}-{seed}.pt2")
    registry: Registry = default_registry()
    kinds = {runtime: "correct" for runtime in runtimes}
    if onnx_faults:  # CPU fp16 kernels are slow: the honest fp16 runtime runs on the fault seeds only
        registry.register(eager_runtime("fp16 honest", copy.deepcopy(module).half(), half=True))
        kinds["fp16 honest"] = "fp16"
    details: dict[str, str] = {}
    if with_faults:
        for fault, inject in faults.FAULTS.items():
            try:
                faulty, where = inject(module)
            except ValueError as exc:  # no GELU in a CNN: the fault does not apply
                details[fault] = str(exc)
                continue
            registry.register(eager_runtime(f"{fault} (eager)", faulty))
            kinds[f"{fault} (eager)"] = "fault"
            details[f"{fault} (eager)"] = where
            if onnx_faults:
                registry.register(onnx_runtime(f"{fault} (onnx)", faulty, architecture, folder))
                kinds[f"{fault} (onnx)"] = "fault"
                details[f"{fault} (onnx)"] = where
    session = NavigatorSession(
        Settings(
            models=(path,),
            seed=seed,
            examples=examples,
            cache_dir=cache,
            state_dir=folder / ".navigator",
            hypothesis_profile="navigator-dev",
        ),
        registry,
    )
    model = session.load_models()[0]
    outcomes = []
    for runtime, kind in kinds.items():
        started = time.perf_counter()
        precision = "fp16" if kind == "fp16" else "fp32"
        try:
            scorer = _check(session, model, runtime, precision, examples)
        except Exception as exc:  # a runtime that cannot be built or raises: reported, not scored
            progress(f"  {architecture.name} seed {seed} {runtime}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            continue
        outcomes.append(
            Outcome(
                architecture.name,
                seed,
                runtime,
                kind,
                scorer.budget_failures > 0,
                scorer.fixed_failures > 0,
                scorer.max_ratio,
                scorer.samples,
                scorer.truths,
                scorer.measured_over_estimated,
                details.get(runtime, ""),
            )
        )
        verdicts = f"budget {'FAIL' if scorer.budget_failures else 'pass'}, fixed {'FAIL' if scorer.fixed_failures else 'pass'}"
        progress(
            f"  {architecture.name} seed {seed} {runtime:28s} {verdicts}; max {scorer.max_ratio:.3g}x own rounding; "
            f"{scorer.samples} samples, {time.perf_counter() - started:.1f} s"
        )
    session.close()
    return outcomes


def measure_cost(architecture: architectures.Architecture, folder: Path, cache: Path, rounds: int) -> dict[str, float]:
    """Wall time of a correctness-only run of every CPU runtime (builds restored from a warm
    artifact cache, as on a developer's machine), judged by the fixed tolerance and by the budget,
    in alternating order."""
    from pytest_navigator.check.verify import allclose

    path = architectures.write(architecture, 0, folder / f"{architecture.name}-cost.pt2")
    timings: dict[str, list[float]] = defaultdict(list)

    def one(judge: str) -> float:
        started = time.perf_counter()
        session = NavigatorSession(
            Settings(models=(path,), seed=0, cache_dir=cache, state_dir=folder / ".cost"), default_registry()
        )
        model = session.load_models()[0]
        for runtime in CORRECT:
            verify = allclose() if judge == "fixed" else None
            session.check_correctness(model, runtime, CheckOptions(verify=verify))
        session.close()
        return time.perf_counter() - started

    one("budget")  # warm the artifact and inductor caches
    for index in range(rounds):
        for judge in ("fixed", "budget") if index % 2 == 0 else ("budget", "fixed"):
            timings[judge].append(one(judge))
    return {judge: statistics.median(values) for judge, values in timings.items()}


def summarize(outcomes: list[Outcome]) -> str:
    from tabulate import tabulate

    lines = []
    correct = [o for o in outcomes if o.kind == "correct"]
    rows = []
    for arch in dict.fromkeys(o.architecture for o in correct):
        mine = [o for o in correct if o.architecture == arch]
        ratios = [o.max_ratio for o in mine]
        rows.append(
            [
                arch,
                len(mine),
                sum(o.budget_failed for o in mine),
                sum(o.fixed_failed for o in mine),
                f"{max(ratios):.3g}",
                f"{statistics.median(ratios):.3g}",
                ", ".join(sorted({t for o in mine for t in o.truths})),
            ]
        )
    rows.append(
        [
            "all",
            len(correct),
            sum(o.budget_failed for o in correct),
            sum(o.fixed_failed for o in correct),
            f"{max((o.max_ratio for o in correct), default=0):.3g}",
            "",
            "",
        ]
    )
    scored = ", ".join(dict.fromkeys(o.runtime for o in outcomes if o.kind == "correct"))
    lines.append(f"False alarms: correct runtimes ({scored}), one run per architecture x seed x runtime")
    lines.append(
        tabulate(
            rows,
            headers=[
                "architecture",
                "runs",
                "budget false alarms",
                "fixed false alarms",
                "max x own",
                "median x own",
                "truth",
            ],
            tablefmt="github",
        )
    )
    faulty = [o for o in outcomes if o.kind == "fault"]
    if faulty:
        rows = []
        for runtime in dict.fromkeys(o.runtime for o in faulty):
            for arch in dict.fromkeys(o.architecture for o in faulty):
                mine = [o for o in faulty if o.runtime == runtime and o.architecture == arch]
                if mine:
                    rows.append(
                        [
                            runtime,
                            arch,
                            len(mine),
                            sum(o.budget_failed for o in mine),
                            sum(o.fixed_failed for o in mine),
                            f"{min(o.max_ratio for o in mine):.3g}",
                        ]
                    )
        lines += ["", "Detections: injected faults"]
        lines.append(
            tabulate(
                rows,
                headers=["fault", "architecture", "runs", "budget detected", "fixed detected", "min x own"],
                tablefmt="github",
            )
        )
    half = [o for o in outcomes if o.kind == "fp16"]
    if half:
        share = max(o.max_ratio for o in half) / (multiple("fp32") * UNIT_ROUNDOFF["fp16"] / UNIT_ROUNDOFF["fp32"])
        lines += [
            "",
            f"Honest fp16 runtime (judged at fp16, {multiple('fp16'):g}x allowed): {len(half)} runs, budget failed "
            f"{sum(o.budget_failed for o in half)}, fixed fp16 tolerance failed {sum(o.fixed_failed for o in half)}; "
            f"max {max(o.max_ratio for o in half):.4g}x own rounding = {share:.3g} of FP32_MULTIPLE x u_fp16/u_fp32",
        ]
    ratios = [r for o in correct for r in o.measured_over_estimated]
    if ratios:
        lines.append(
            f"Own rounding: |reference - float64 shadow| / perturbation spread: median {statistics.median(ratios):.3g}, "
            f"max {max(ratios):.3g} over {len(ratios)} sample outputs"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument(
        "--fault-seeds",
        type=int,
        default=5,
        help="seeds whose faults also run through ONNX Runtime, and the honest fp16 runtime",
    )
    parser.add_argument("--examples", type=int, default=25)
    parser.add_argument("--architectures", help="comma-separated (default: all of the chosen set)")
    parser.add_argument("--runtimes", default=",".join(CORRECT), help="the correct runtimes to score")
    parser.add_argument("--small", action="store_true", help="the in-code test architectures, not the real classes")
    parser.add_argument("--no-faults", action="store_true")
    parser.add_argument(
        "--cost", action="store_true", help="also time a correctness-only run with and without the budget"
    )
    parser.add_argument("--cost-rounds", type=int, default=2)
    args = parser.parse_args(argv)
    chosen = architectures.SMALL if args.small else architectures.REAL
    names = args.architectures.split(",") if args.architectures else list(chosen)
    unknown = [n for n in names if n not in chosen]
    if unknown:
        parser.error(f"--architectures: unknown {', '.join(unknown)}; known: {', '.join(chosen)}")
    try:
        if not args.small:
            architectures.import_torchvision()
            architectures.import_transformers()
    except ImportError as exc:
        parser.error(
            f"{exc}: the real architectures need torchvision and transformers: pip install --no-deps "
            "torchvision==0.28.0 && pip install -c constraints.txt transformers (or pass --small)"
        )
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="bench-correctness-") as temporary:
        folder = Path(temporary)
        cache = folder / "cache"
        started = time.perf_counter()
        for name in names:
            for seed in range(args.seeds):
                outcomes += run_seed(
                    chosen[name],
                    seed,
                    folder,
                    cache,
                    args.examples,
                    tuple(args.runtimes.split(",")),
                    not args.no_faults,
                    seed < args.fault_seeds,
                    lambda text: print(text, flush=True),
                )
        print(f"\n{len(names)} architectures x {args.seeds} seeds in {time.perf_counter() - started:.0f} s\n")
        print(summarize(outcomes))
        if args.cost:
            cost = measure_cost(chosen[names[0]], folder, cache, args.cost_rounds)
            print(
                f"\nCost: correctness-only run of {names[0]} on {', '.join(CORRECT)}, warm artifact cache, median of "
                f"{args.cost_rounds}: fixed tolerance {cost['fixed']:.1f} s, budget {cost['budget']:.1f} s, "
                f"ratio {cost['budget'] / cost['fixed']:.2f} (the limit is 1.3)"
            )


if __name__ == "__main__":
    main()
