"""What a worker is sent, pickled so that code defined outside installed packages travels too: a
runtime registered in a conftest.py (closures, lambdas) runs in a worker like a built-in one.

cloudpickle pickles such code by value, so the worker needs neither its file's path nor its import
name; code objects keep their file names, so a hung or crashed worker's stack still names the
user's conftest.py.
"""

from __future__ import annotations

import functools
import io
import marshal
import pickle
import sys
import threading
import types
from typing import Any


def dumps(obj: Any, code: Any) -> bytes:
    """`obj`, pickled by cloudpickle; the module that defines `code` (a function `obj` holds) by value
    when it is user code (a conftest.py, a test module), not an installed package."""
    import cloudpickle

    module = sys.modules.get(getattr(code, "__module__", "") or "")
    user_code = module is not None and not _installed(module)
    # cloudpickle's by-value registry is global: the counting workers are built from threads at once,
    # and one thread's unregister must not land in another's dump (it raised "not registered")
    with _PICKLING:
        if user_code:
            cloudpickle.register_pickle_by_value(module)
        try:
            buffer = io.BytesIO()
            _keep_file_names_pickler()(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
            return buffer.getvalue()
        finally:
            if user_code:
                cloudpickle.unregister_pickle_by_value(module)


_PICKLING = threading.Lock()


def _keep_file_names_pickler() -> type:
    import cloudpickle

    # Cached per cloudpickle module: a class made from a module that has since left sys.modules
    # (pytester's inline runs restore sys.modules, and a later import makes a new module) pickles
    # cloudpickle's own helpers by value, recursing until "excessively deep recursion" (CI, twice).
    return _pickler_from(cloudpickle.Pickler)


@functools.cache
def _pickler_from(base: type) -> type:
    class KeepFileNames(base):
        """cloudpickle, but code objects travel as marshal does them (as in a .pyc): cloudpickle 3 renames
        their file "<dynamic-code>", and a hung or crashed worker's stack would no longer name the
        user's conftest.py. The worker is the same Python, so marshal's format is the same."""

        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, types.CodeType):
                return marshal.loads, (marshal.dumps(obj),)
            return super().reducer_override(obj)

    return KeepFileNames


def _installed(module: Any) -> bool:
    """Whether a module comes from an installed package (imported by name in a worker too)."""
    name = module.__name__.split(".")[0]
    if name in ("pytest_navigator", "harness") or name in sys.stdlib_module_names:
        return True
    path = getattr(module, "__file__", None) or ""
    return "site-packages" in path or "dist-packages" in path
