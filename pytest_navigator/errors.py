"""Errors a user can cause: each message names the file, option or value and what is accepted."""

from __future__ import annotations

import re


class NavigatorError(Exception):
    """Base class; the plugin turns it into a usage error or a failed test with this message."""


class ModelLoadError(NavigatorError):
    """A model file is missing, unreadable, of an unknown format, or refused (untrusted pickle)."""


class SpecError(NavigatorError):
    """An input spec string, sidecar or the model's own inputs cannot be understood."""


class RuntimeSelectionError(NavigatorError):
    """An unknown runtime name, or a runtime registered twice."""


class RuntimeBuildError(NavigatorError):
    """Building a runtime from the model failed; its own tests fail with this, others go on."""


class RuntimeNotApplicable(RuntimeBuildError):
    """The model cannot take this runtime, found only when building it (torch.export of a module the
    runtime needs failed): its tests are skipped with this message, not failed."""


class RuntimeInferenceError(NavigatorError):
    """A built runtime raised while running a sample."""


class SampleError(NavigatorError):
    """A sample does not match the model's input spec."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, for one-paragraph messages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def last_line(exc: BaseException) -> str:
    """The informative end of an exception's text (TorchScript puts its own traceback first)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class ModelOutputError(NavigatorError):
    """A model returned something that is not a tensor (or a tuple, list or dict of them)."""


class RuntimeCrashError(NavigatorError):
    """A runtime's worker process died (a signal, an abort, an exit) or gave no answer in time."""


#: TorchScript's interpreter wraps the model's own exception in torch.jit.Error, with its own
#: traceback first and the original "builtins.ValueError: message" on the last line.
_SCRIPTED = re.compile(r"^(?:builtins\.)?(?:[\w]+\.)*(\w+(?:Error|Exception|Exit|Interrupt)): (.*)$")


def describe_error(exc: BaseException) -> str:
    """'ValueError: the message': the exception a user's code raised, with the interpreter's frames
    of TorchScript (and the like) left out; the first line of anything else."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if lines and len(lines) > 1 and "TorchScript" in lines[0]:
        found = _SCRIPTED.match(lines[-1])
        if found:
            return f"{found[1]}: {found[2]}"
        return f"{type(exc).__name__}: {lines[-1]}"
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
