"""The torch Runner: a torch module called under inference_mode on the CPU or a CUDA device, with
the process-wide torch settings (threads, TF32) it holds only while it runs. The torch runtimes
(torch_runtimes.py, torch_compile.py) build one.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pytest_navigator.config import Format, Sample
from pytest_navigator.model.loader import Model
from pytest_navigator.model.torch_io import bind_tensors, name_outputs
from pytest_navigator.runtimes.base import BuildContext, Runner


@dataclass(frozen=True, slots=True)
class PreparedTorch:
    """A request bound to forward's arguments as tensors on the runner's device, with its shape key."""

    args: list[Any]
    kwargs: dict[str, Any]
    shapes: tuple[tuple[int, ...], ...]


class TorchRunner(Runner):
    """Calls a torch module under inference_mode; inputs bind to forward as the model's spec says.
    `threads` and `tf32` (runtime options) hold only while this runner runs: torch's settings are
    process-wide, and the reference and other runtimes keep theirs."""

    def __init__(
        self, runtime: str, module: Any, model: Model, device: str = "cpu", threads: int = 0, tf32: bool = False
    ) -> None:
        super().__init__(runtime, model.io_spec, device=device)
        self.module = module
        self._model = model
        self.threads, self.tf32 = threads, tf32
        self.thread_option = "threads" if device == "cpu" else None

    def compute_threads(self) -> int | None:
        """The `threads` option, else torch's intra-op pool; on a GPU, the one thread that launches kernels."""
        if self.device != "cpu":
            return 1
        import torch

        return self.threads or torch.get_num_threads()

    def prepare(self, sample: Sample) -> PreparedTorch:
        """Host arrays -> tensors on this runner's device, bound to forward's arguments; on CUDA the
        upload has finished when this returns, so no timed request waits for it."""
        self.check_sample(sample)
        args, kwargs = bind_tensors(self._model, sample, self.device)
        if self.stream is not None:
            import torch

            torch.cuda.current_stream(self.device).synchronize()
        return PreparedTorch(args, kwargs, tuple(tuple(sample[n].shape) for n in self.input_spec.names))

    @functools.cached_property
    def stream(self) -> Any:
        """This runner's own CUDA stream (None on the CPU): its work is queued there and
        synchronize() waits for that stream only, not for other runtimes' work on the device."""
        if not self.device.startswith("cuda"):
            return None
        import torch

        return torch.cuda.Stream(device=self.device)

    def module_for(self, prepared: PreparedTorch) -> Any:
        """The callable that runs this request (one module here; one plan per shape in subclasses)."""
        return self.module

    def run(self, prepared: PreparedTorch) -> Any:
        import torch

        on_stream = torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        with on_stream, torch_settings(self.threads, self.tf32):
            module = self.module_for(prepared)
            with torch.inference_mode():
                return module(*prepared.args, **prepared.kwargs)

    def infer(self, sample: Sample) -> Sample:
        outputs = self.run(self.prepare(sample))
        self.synchronize()  # the host copies below run on the default stream
        named = name_outputs(outputs)
        if not self.output_names:
            self.output_names = tuple(named)
        return named

    def synchronize(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()


@contextlib.contextmanager
def torch_settings(threads: int = 0, tf32: bool = False) -> Iterator[None]:
    """torch's intra-op thread count and TF32 switches set for the block, restored after it."""
    import torch

    if not threads and not tf32:
        yield
        return
    saved = torch.get_num_threads(), torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if threads:
        torch.set_num_threads(threads)
    if tf32:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[1], saved[2]


def torch_flags(ctx: BuildContext) -> dict[str, Any]:
    """The torch settings every torch runtime's options carry (none for a runtime built without options)."""
    options = getattr(ctx, "options", None)
    return {"threads": getattr(options, "threads", 0), "tf32": getattr(options, "tf32", False)}


def cuda_unavailable() -> str | None:
    """Why torch cannot use CUDA here, or None."""
    import torch

    if not torch.backends.cuda.is_built():
        return f"torch {torch.__version__} is a CPU-only build (no CUDA support compiled in)"
    if not torch.cuda.is_available():
        return "no CUDA device is visible to torch (torch.cuda.is_available() is False)"
    return None


def module_on(model: Model, device: str) -> Any:
    """The model's torch module on `device`; a copy when moving, since .to() moves in place and
    the CPU reference shares the loaded module."""
    module = model.torch_module()
    if device == "cpu":
        return module
    if model.format is not Format.TORCH_EXPORTEDPROGRAM:  # .module() is already a fresh module
        module = copy.deepcopy(module)
    return module.to(device)


def batch_of(shapes: tuple[tuple[int, ...], ...]) -> int | None:
    """The batch size of a shape signature: the first input's first dimension."""
    return shapes[0][0] if shapes and shapes[0] else None
