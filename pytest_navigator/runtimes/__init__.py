"""The runtime registry: built-in runtimes plus the ones users register from conftest.py.

def pytest_navigator_register_runtimes(registry):
    registry.register(RuntimeDefinition("my-server", build=build_my_server))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

# the option table by another name: a module of this package must never shadow what it imports
from pytest_navigator import options as option_names
from pytest_navigator.errors import RuntimeSelectionError
from pytest_navigator.runtimes.base import (
    ALL_FORMATS,
    TORCH_FORMATS,
    BuildContext,
    CallableRunner,
    Runner,
    RuntimeDefinition,
)

if TYPE_CHECKING:
    from pytest_navigator.model.loader import Model

__all__ = [
    "ALL_FORMATS",
    "TORCH_FORMATS",
    "BuildContext",
    "CallableRunner",
    "Registry",
    "Runner",
    "RuntimeDefinition",
    "default_registry",
]


class Registry:
    """Runtime definitions by name, in registration order (the order tests are generated in)."""

    def __init__(self, definitions: Iterable[RuntimeDefinition] = ()) -> None:
        self._definitions: dict[str, RuntimeDefinition] = {}
        for definition in definitions:
            self.register(definition)

    def register(self, definition: RuntimeDefinition, *, replace: bool = False) -> RuntimeDefinition:
        """Add a runtime; registering a taken name is an error unless replace=True."""
        if not isinstance(definition, RuntimeDefinition):
            raise RuntimeSelectionError(f"register() takes a RuntimeDefinition, got {definition!r}")
        if definition.name in self._definitions and not replace:
            raise RuntimeSelectionError(
                f"a runtime named {definition.name!r} is already registered; pick another name or pass replace=True to override it."
            )
        self._definitions[definition.name] = definition
        return definition

    def runtime(
        self, name: str, **options: object
    ) -> Callable[[Callable[[Model, BuildContext], Runner]], Callable[[Model, BuildContext], Runner]]:
        """Decorator form: `@registry.runtime("my-server")` over a `build(model, ctx) -> Runner`."""

        def decorate(build: Callable[[Model, BuildContext], Runner]) -> Callable[[Model, BuildContext], Runner]:
            self.register(RuntimeDefinition(name, build, **options))  # type: ignore[arg-type]
            return build

        return decorate

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.partition(":")[0] in self._definitions

    def __iter__(self) -> Iterator[RuntimeDefinition]:
        return iter(self._definitions.values())

    def __len__(self) -> int:
        return len(self._definitions)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._definitions)

    def get(self, name: str) -> RuntimeDefinition:
        """The definition of a runtime name or id ('onnxruntime-cpu:intra_op_num_threads=1')."""
        try:
            return self._definitions[name.partition(":")[0]]
        except KeyError:
            raise RuntimeSelectionError(f"unknown runtime {name!r}; known runtimes: {', '.join(self.names)}.") from None

    def select(self, names: Iterable[str] | None) -> list[RuntimeDefinition]:
        """The named runtimes (all when names is None); unknown names are one error listing the known ones."""
        if names is None:
            return list(self)
        wanted = [n.strip() for n in names if n.strip()]
        unknown = [n for n in wanted if n not in self._definitions]
        if unknown:
            raise RuntimeSelectionError(
                f"{option_names.RUNTIMES}: unknown runtime {', '.join(map(repr, unknown))}; known runtimes: {', '.join(self.names)}."
            )
        return [self._definitions[n] for n in dict.fromkeys(wanted)]


def default_registry() -> Registry:
    """A fresh registry holding the built-in runtimes (importing no ML library)."""
    from pytest_navigator.runtimes import (
        onnx_quantized,
        onnx_runtimes,
        openvino_runtimes,
        tensorrt_runtimes,
        torch_runtimes,
    )

    found = [
        *torch_runtimes.definitions(),
        *onnx_runtimes.definitions(),
        *openvino_runtimes.definitions(),
        *onnx_quantized.definitions(),  # opt-in, so after the default CPU set
        *tensorrt_runtimes.definitions(),
    ]
    return Registry(sorted(found, key=lambda d: d.device != "cpu"))  # CPU runtimes first, stable
