"""AOTInductor (torch-aoti-cpu, torch-aoti-cuda): the exported program compiled ahead of time into
one package, for every batch size of its dynamic batch axis, and loaded without dynamo.

The package is an artifact like an ONNX export (cache.py): keyed by the model's content, the
options that change the compiled code, the device and what its code is compiled for (the CPU's
vector instruction set: an AVX-512 package must not be restored on an AVX2 machine, and the thread
count inductor writes into its OpenMP loops), and the library versions; a warm run loads it in
milliseconds. A `.pt2` whose batch axis was exported static, and a pickled nn.Module, are exported
again with the spec's batch range; a module that torch.export cannot take is skipped with the
exporter's message (RuntimeNotApplicable). TorchScript and ONNX models cannot be exported, and are
skipped with the reason.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from pytest_navigator.config import Format, Sample
from pytest_navigator.errors import RuntimeBuildError, RuntimeNotApplicable, describe_error
from pytest_navigator.model.loader import Model
from pytest_navigator.model.torch_io import bind_tensors, export_dynamic
from pytest_navigator.runtimes.base import BuildContext, Runner
from pytest_navigator.runtimes.cache import Mode, torch_compile_cache
from pytest_navigator.runtimes.runtime_options import TorchAOTIConfig
from pytest_navigator.runtimes.torch_runner import TorchRunner, module_on, torch_settings

#: The package's file name in its cache entry.
PACKAGE = "model.pt2"


def not_exportable(model: Model) -> str | None:
    """Why AOTInductor cannot take this model although torch accepts it (TorchScript), or None."""
    if model.format is Format.TORCHSCRIPT:
        return (
            "AOTInductor compiles a torch.export program, and a TorchScript module cannot be exported; "
            "give the model as a torch.export archive (.pt2) or a pickled nn.Module to test torch-aoti"
        )
    return None


class AOTIRunner(TorchRunner):
    """The loaded AOTInductor package, called like the module it was compiled from. Its OpenMP loops
    run with the thread count they were compiled with (`compiled_threads`), whatever torch's is."""

    def __init__(
        self, runtime: str, package: Any, model: Model, device: str, threads: int, compiled_threads: int
    ) -> None:
        super().__init__(runtime, package, model, device, threads=threads)
        self.compiled_threads = compiled_threads

    def compute_threads(self) -> int | None:
        return self.compiled_threads if self.device == "cpu" else 1


def build_aoti(model: Model, ctx: BuildContext, device: str = "cpu") -> Runner:
    import torch

    options = getattr(ctx, "options", None) or TorchAOTIConfig()
    if device != "cpu" and torch.device(device).index is None:
        device = f"{device}:0"
    threads = (options.threads or torch.get_num_threads()) if device == "cpu" else 0
    torch_compile_cache(getattr(ctx.cache, "root", None))  # inductor's own caches go with the artifacts
    parts = {
        "model": model.fingerprint,
        "spec": str(model.io_spec),
        "device": device.partition(":")[0],
        "target": _target(device),
        "threads": threads,
        "options": {"freezing": options.freezing, "max_autotune": options.max_autotune},
    }
    package = ctx.artifacts.fetch(AOTI_PACKAGE, model, (ctx, options, device, threads), parts)
    runner = AOTIRunner(f"torch-aoti-{device.partition(':')[0]}", package, model, device, options.threads, threads)
    try:  # a package that loads but cannot run fails this runtime's build, not its first test
        runner.infer(ctx.example)
    except Exception as exc:
        raise RuntimeBuildError(f"the AOTInductor package of {model.name} does not run: {describe_error(exc)}") from exc
    return runner


def _target(device: str) -> str:
    """What the compiled code is specific to: the CPU's vector extensions (what inductor picks its
    ISA from, read from the CPU's flags: inductor's own pick_vec_isa compiles test programs, 1.4 s
    a warm run and 8 s a cold one) and ATen's capability, or the GPU's compute capability."""
    import platform

    import torch

    if device == "cpu":
        from torch._inductor import cpu_vec_isa

        machine = platform.machine()
        flags = cpu_vec_isa.x86_isa_checker() if machine in ("x86_64", "AMD64") else []
        capability = torch.backends.cpu.get_cpu_capability()
        return (
            f"cpu {machine} {capability} {' '.join(sorted(flags))} {os.environ.get('ATEN_CPU_CAPABILITY', '')}".strip()
        )
    major, minor = torch.cuda.get_device_capability(device)
    return f"sm_{major}{minor}"


def exported(model: Model, example: Sample, device: str) -> Any:
    """The model as an ExportedProgram on `device` with a dynamic batch axis over the spec's range: a
    `.pt2` as it is where it already has one (on the CPU), else exported again from its module."""
    if model.format is Format.TORCH_EXPORTEDPROGRAM and device == "cpu" and _batch_is_dynamic(model):
        return model.source
    args, kwargs = bind_tensors(model, example, device)
    try:
        return export_dynamic(module_on(model, device), model, args, kwargs)
    except Exception as exc:
        raise RuntimeNotApplicable(
            f"torch.export cannot export {model.name} with a dynamic batch axis, so AOTInductor cannot "
            f"compile it: {describe_error(exc)}"
        ) from exc


def _batch_is_dynamic(model: Model) -> bool:
    """Whether every batched input of the exported program has a symbolic first dimension."""
    import torch

    program = model.source
    users = [s.arg.name for s in program.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    values = {n.name: n.meta.get("val") for n in program.graph.nodes if n.op == "placeholder" and n.name in users}
    batched = [spec for spec in model.io_spec if spec.batch_axis is not None]
    if not batched or len(values) != len(model.io_spec.names):
        return False
    found = [values[users[model.io_spec.names.index(spec.name)]] for spec in batched]
    return all(v is not None and v.dim() and isinstance(v.shape[0], torch.SymInt) for v in found)


def _convert(
    model: Model, config: tuple[BuildContext, TorchAOTIConfig, str, int], folder: Path
) -> tuple[str, dict[str, Any]]:
    """Compile the package into the entry's folder (seconds to a minute: inductor writes and
    compiles C++, or Triton kernels on CUDA)."""
    from torch._inductor import aoti_compile_and_package

    ctx, options, device, threads = config
    program = exported(model, ctx.example, device)
    settings: dict[str, Any] = {"freezing": options.freezing, "max_autotune": options.max_autotune}
    if device == "cpu":
        settings["cpp.threads"] = threads
    try:
        with warnings.catch_warnings(), torch_settings(threads if device == "cpu" else 0):
            warnings.filterwarnings("ignore", message=r".*torch\.jit\..*deprecated", category=DeprecationWarning)
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            aoti_compile_and_package(program, package_path=str(folder / PACKAGE), inductor_configs=settings)
    except Exception as exc:
        raise RuntimeBuildError(f"AOTInductor could not compile {model.name}: {describe_error(exc)}") from exc
    return PACKAGE, {"device": device}


def _restore(artifact: Path, config: tuple[BuildContext, TorchAOTIConfig, str, int], metadata: dict[str, Any]) -> Any:
    import torch
    from torch._inductor import aoti_load_package

    device = config[2]
    index = torch.device(device).index if device != "cpu" else -1  # the CPU's "device index" is -1, not 0
    with warnings.catch_warnings():  # torch's own use of a pytree API it deprecated
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
        return aoti_load_package(str(artifact), device_index=index if index is not None else 0)


#: An exported program -> one AOTInductor package for every batch size of its dynamic axis.
AOTI_PACKAGE: Mode[Any] = Mode("torch-aoti", _convert, _restore)
