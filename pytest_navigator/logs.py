"""Library log filtering: what the plugin and every runtime worker process do to the loggers of the
libraries a run drives. Imports nothing of the plugin, so a worker process never imports pytest's glue."""

from __future__ import annotations

import logging
import os

#: Loggers of the libraries a run drives. Under pytest's --log-level=DEBUG (or a log_level ini) their
#: debug records (inductor's compile steps, every file lock taken) would fill a failing test's
#: "Captured log" section with hundreds of lines that say nothing about the failure.
LIBRARY_LOGGERS = (
    "torch",
    "filelock",
    "onnx",
    "onnxscript",
    "onnx_ir",
    "onnxruntime",
    "tensorrt",
    "triton",
    "transformers",
)


def quiet_library_loggers() -> None:
    """Library loggers log warnings and errors only, unless the user set their level explicitly
    (TORCH_LOGS does): a library logger at NOTSET inherits pytest's root level, DEBUG included."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)
    # torch's structured trace logger is always at DEBUG and never propagates; pytest >= 9.1 attaches its
    # capture handler to non-propagating loggers too, so every compile would log into failure reports.
    # Its records are meant for TORCH_TRACE's own files: drop them unless TORCH_TRACE asks for them.
    trace = logging.getLogger("torch.__trace")
    if not os.environ.get("TORCH_TRACE") and not any(isinstance(f, _DropAll) for f in trace.filters):
        trace.addFilter(_DropAll())


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False
