"""The int8 verdict on real architectures: honest quantizations against real quantization faults.

    python -m harness.bench_quantized [--seeds 3] [--architectures resnet18,mobilenet_v3_small,bert,gpt2]
                                      [--examples 25] [--speed] [--small]

For each architecture (harness/architectures.py; `--small` takes the in-code test versions) and seed
(the weights and the run's samples both seeded by it), every int8 runtime below is checked as
`pytest --navigator-model=... --navigator-runtimes=...` checks it (25 Hypothesis samples plus one per
configured batch size), with the agreement's pooled figures kept whatever the verdict:

- honest: `onnxruntime-int8-cpu` (static QDQ, per-channel weights, MinMax on the run's samples) and
  `onnxruntime-int8-dynamic-cpu` (MatMul/Gemm, the usual choice for transformers);
- faults, each made for real on the honest static build: per-tensor weights
  (`onnxruntime-int8-cpu:per_channel=false`, the fault on depthwise convolutions), calibration on
  zeros (the calibration samples' every element 0), and one middle layer's weight scale
  multiplied by 2 in the QDQ graph.

The table gives each runtime's top-1 agreement, top-5 overlap, median and worst SQNR and median
cosine (medians over seeds), and whether the default thresholds (check/agreement.Thresholds) pass
it: false alarms on honest runtimes, detections on faults. Beside it, a peer's check on the same
outputs: a fixed fp32 tolerance (atol 1e-4, rtol 1e-3, Model Navigator's kind of check). AITune's
check (NaN/Inf and shapes only) passes every run here, honest or faulty: no column needed.

`--speed` times each int8 runtime against onnxruntime-cpu side by side on ResNet-18 and BERT: the
two runners alternate blocks of requests in one process, and the ratio of their medians is reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from harness import architectures
from pytest_navigator.check.agreement import Agreement, Thresholds
from pytest_navigator.check.correctness import CheckOptions
from pytest_navigator.model.draws import random_sample
from pytest_navigator.model.loader import Model
from pytest_navigator.runtimes import BuildContext, Registry, Runner, RuntimeDefinition, default_registry
from pytest_navigator.session import NavigatorSession
from pytest_navigator.settings import Settings

STATIC, DYNAMIC = "onnxruntime-int8-cpu", "onnxruntime-int8-dynamic-cpu"
HONEST = (STATIC, DYNAMIC)
#: The agreement's figures whatever they are: the check then always returns them.
RECORD_ALL = Thresholds(top1=0.0, topk=0.0, cosine=-1.0, sqnr=-1e9, floor=-1e9)


def zero_calibration(registry: Registry) -> RuntimeDefinition:
    """The static int8 runtime calibrated on samples whose every element is 0."""
    static = registry.get(STATIC)

    def build(model: Model, ctx: BuildContext) -> Runner:
        zeros = tuple({name: np.zeros_like(array) for name, array in sample.items()} for sample in ctx.calibration)
        return static.build(model, dataclasses.replace(ctx, calibration=zeros))

    return dataclasses.replace(static, name="fault-zero-calibration", build=build)


def doubled_scale(registry: Registry, folder: Path) -> RuntimeDefinition:
    """The static int8 runtime with one middle layer's weight scale multiplied by 2 in its QDQ graph."""
    static = registry.get(STATIC)

    def build(model: Model, ctx: BuildContext) -> Runner:
        import onnx
        from onnx import numpy_helper

        from pytest_navigator.runtimes.onnx_quantized import QuantizedOnnxRunner

        honest = static.build(model, ctx)
        graph = onnx.load(str(honest.quantized_path))  # type: ignore[attr-defined]
        initializers = {init.name: init for init in graph.graph.initializer}
        # the weights' DequantizeLinear (input 1 of a Conv, Gemm or MatMul), not the biases': ONNX
        # Runtime's fused int8 kernels requantize a bias with input scale x weight scale, ignoring its own
        weights = {node.input[1]: node.name for node in graph.graph.node if node.op_type in ("Conv", "Gemm", "MatMul")}
        dequantize = [
            node
            for node in graph.graph.node
            if node.op_type == "DequantizeLinear" and node.output[0] in weights and node.input[1] in initializers
        ]
        chosen = dequantize[len(dequantize) // 2]
        target, layer = initializers[chosen.input[1]], weights[chosen.output[0]]
        target.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(target) * 2, target.name))
        path = folder / f"{model.path.stem}-doubled-scale.onnx"
        onnx.save(graph, str(path))
        runner = QuantizedOnnxRunner(
            "fault-doubled-scale",
            model,
            path,
            honest.fp32_path,  # type: ignore[attr-defined]
            ctx.options,
        )
        runner.fault = (target.name, layer)  # type: ignore[attr-defined]
        return runner

    return dataclasses.replace(static, name="fault-doubled-scale", build=build)


def run_seed(
    architecture: architectures.Architecture, seed: int, folder: Path, examples: int, say: Callable[[str], None]
) -> list[dict[str, Any]]:
    path = architectures.write(architecture, seed, folder / f"{architecture.name}-{seed}.pt2")
    registry = default_registry()
    faults = {
        f"{STATIC}:per_channel=false": "fault: per-tensor weights",
        "fault-zero-calibration": "fault: calibrated on zeros",
        "fault-doubled-scale": "fault: a weight scale x2",
    }
    registry.register(zero_calibration(registry))
    registry.register(doubled_scale(registry, folder))
    session = NavigatorSession(
        Settings(
            models=(path,),
            seed=seed,
            examples=examples,
            cache_dir=folder / "cache",
            state_dir=folder / ".navigator",
            hypothesis_profile="navigator-dev",
        ),
        registry,
    )
    model = session.load_models()[0]
    rows = []
    for runtime in (*HONEST, *faults):
        started = time.perf_counter()
        try:
            report = session.check_correctness(
                model, runtime, CheckOptions(verify=Agreement(RECORD_ALL), examples=examples)
            )
        except Exception as exc:  # a runtime that cannot be built or raises: reported, not scored
            say(f"  {architecture.name} seed {seed} {runtime}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            continue
        judged = [o for o in report.outputs if o.median_sqnr is not None]
        row: dict[str, Any] = {
            "architecture": architecture.name,
            "seed": seed,
            "runtime": faults.get(runtime, runtime),
            "kind": "fault" if runtime in faults else "honest",
            "top1": min((o.top1 for o in judged if o.top1 is not None), default=None),
            "topk": min((o.topk for o in judged if o.topk is not None), default=None),
            "median_sqnr": min(o.median_sqnr or 0.0 for o in judged),
            "worst_sqnr": min(o.worst_sqnr or 0.0 for o in judged),
            "median_cosine": min(o.median_cosine or 0.0 for o in judged),
            # a fixed fp32 tolerance (atol 1e-4, rtol 1e-3) fails when some element exceeds both; the
            # maxima exceeding both is necessary for that, and on these outputs the same elements do
            "fixed_fails": any(o.max_abs_error > 1e-4 and o.max_rel_error > 1e-3 for o in report.outputs),
            "samples": report.samples,
        }
        row["fails"] = fails(row, Thresholds())
        rows.append(row)
        say(
            f"  {architecture.name} seed {seed} {row['runtime']:32s} "
            f"{'FAIL' if row['fails'] else 'pass'}: top-1 {_share(row['top1'])}, top-5 {_share(row['topk'])}, "
            f"SQNR median {row['median_sqnr']:.1f} dB worst {row['worst_sqnr']:.1f} dB, cosine {row['median_cosine']:.4f}"
            f" ({report.samples} samples, {time.perf_counter() - started:.1f} s)"
        )
    session.close()
    return rows


def fails(row: dict[str, Any], limits: Thresholds) -> list[str]:
    """The thresholds the default agreement verdict would say these pooled figures miss."""
    return list(limits.missed(row["top1"], row["topk"], row["median_sqnr"], row["median_cosine"]))


def _share(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def table(rows: list[dict[str, Any]]) -> str:
    from tabulate import tabulate

    grouped: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        grouped[(row["architecture"], row["runtime"], row["kind"])].append(row)
    lines = []
    for (arch, runtime, kind), found in grouped.items():

        def median(key: str, runs: list[dict[str, Any]] = found) -> float | None:
            values = [r[key] for r in runs if r[key] is not None]
            return statistics.median(values) if values else None

        failed = sum(bool(r["fails"]) for r in found)
        verdict = f"{failed}/{len(found)} " + ("false alarms" if kind == "honest" else "detected")
        reasons = sorted({reason for r in found for reason in r["fails"]})
        lines.append(
            [
                arch,
                runtime,
                _share(median("top1")),
                _share(median("topk")),
                f"{median('median_sqnr'):.1f}",
                f"{median('worst_sqnr'):.1f}",
                f"{median('median_cosine'):.4f}",
                verdict + (f" ({', '.join(reasons)})" if reasons else ""),
                f"{sum(r['fixed_fails'] for r in found)}/{len(found)} fail",
            ]
        )
    return tabulate(
        lines,
        headers=[
            "model",
            "runtime",
            "top-1",
            "top-5 overlap",
            "SQNR median dB",
            "worst row dB",
            "cosine median",
            "agreement (defaults)",
            "fixed fp32 tolerance",
        ],
        tablefmt="github",
    )


def speed(architecture: architectures.Architecture, folder: Path, rounds: int, say: Callable[[str], None]) -> None:
    """Each int8 runtime against onnxruntime-cpu, alternating blocks of requests in one process."""
    path = architectures.write(architecture, 0, folder / f"{architecture.name}-speed.pt2")
    settings = Settings(models=(path,), cache_dir=folder / "cache", state_dir=folder / ".navigator")
    session = NavigatorSession(settings, default_registry())
    model = session.load_models()[0]
    runners = {name: session.builds.runner(model, name) for name in ("onnxruntime-cpu", STATIC, DYNAMIC)}
    for batch in (1, 8):
        sample = random_sample(model.io_spec, batch, np.random.default_rng(0))
        prepared = {name: runner.prepare(sample) for name, runner in runners.items()}
        for name, runner in runners.items():  # warm up
            for _ in range(5):
                runner.run(prepared[name])
        block = max(5, 40 // batch)
        times: dict[str, list[float]] = defaultdict(list)
        for _ in range(rounds):
            for name, runner in runners.items():
                started = time.perf_counter()
                for _ in range(block):
                    runner.run(prepared[name])
                times[name].append((time.perf_counter() - started) / block)
        base = statistics.median(times["onnxruntime-cpu"])
        for name in (STATIC, DYNAMIC):
            ratios = [b / q for b, q in zip(times["onnxruntime-cpu"], times[name], strict=True)]
            say(
                f"  {architecture.name} batch {batch}: {name} {statistics.median(times[name]) * 1000:.2f} ms vs "
                f"onnxruntime-cpu {base * 1000:.2f} ms: speed-up {statistics.median(ratios):.2f}x "
                f"(per-round ratios {min(ratios):.2f}-{max(ratios):.2f}, {rounds} rounds)"
            )
    session.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--architectures", default="resnet18,mobilenet_v3_small,bert,gpt2")
    parser.add_argument("--examples", type=int, default=25)
    parser.add_argument("--small", action="store_true", help="the in-code test architectures (no torchvision)")
    parser.add_argument("--speed", action="store_true", help="only the speed-up over onnxruntime-cpu")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    found = architectures.SMALL if args.small else architectures.REAL
    chosen = [found[name] for name in args.architectures.split(",") if name]
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\..*")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if args.speed:
            for architecture in chosen:
                speed(architecture, folder, args.rounds, print)
            return
        rows = []
        for architecture in chosen:
            for seed in range(args.seeds):
                rows += run_seed(architecture, seed, folder, args.examples, lambda text: print(text, flush=True))
        print()
        print(table(rows))


if __name__ == "__main__":
    main()
