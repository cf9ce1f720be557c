"""The op registry: built-in ops plus ops that packages register through entry points.

A third-party package adds ops by exposing, in the ``dagserve.ops`` entry-point
group, a callable that returns an iterable of :class:`~dagserve.ops.base.OpDef`.
Each definition is checked when it is registered (like pluggy checks hook
signatures), so a broken plugin fails loudly at start-up, never mid-compile.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from functools import cache
from importlib.metadata import entry_points

import jsonschema

from dagserve.ops.base import OpDef

__all__ = ["OpRegistry", "builtin_registry", "default_registry"]

log = logging.getLogger(__name__)

_BUILTIN_MODULES = (
    "dagserve.ops.image",
    "dagserve.ops.detect",
    "dagserve.ops.classify",
    "dagserve.ops.tensor",
    "dagserve.ops.ocr",
    "dagserve.ops.elementwise",
    "dagserve.ops.models",
    "dagserve.ops.python_op",
    "dagserve.ops.dali",
)


class OpRegistry:
    """Name -> :class:`OpDef`. Registration validates the definition."""

    def __init__(self) -> None:
        self._ops: dict[str, OpDef] = {}

    def register(self, op: OpDef) -> None:
        """Add ``op``; raises ``ValueError`` for a duplicate or malformed definition."""
        if op.name in self._ops:
            raise ValueError(f"op '{op.name}' is registered twice")
        if "." not in op.name and op.name != "python":
            raise ValueError(f"op name '{op.name}' must be namespaced, e.g. 'image.{op.name}'")
        jsonschema.Draft202012Validator.check_schema(dict(op.params_schema))
        if not op.devices or not op.devices <= {"cpu", "gpu"}:
            raise ValueError(f"op '{op.name}': devices must be a subset of {{cpu, gpu}}")
        for path_param in op.path_params:
            if path_param not in op.params_schema.get("properties", {}):
                raise ValueError(f"op '{op.name}': path param '{path_param}' is not in its schema")
        self._ops[op.name] = op

    def register_all(self, ops: Iterable[OpDef]) -> None:
        for op in ops:
            self.register(op)

    def get(self, name: str) -> OpDef | None:
        return self._ops.get(name)

    def names(self) -> list[str]:
        return sorted(self._ops)

    def __contains__(self, name: object) -> bool:
        return name in self._ops

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._ops[n] for n in self.names())


def _load_builtins(registry: OpRegistry) -> None:
    for module_name in _BUILTIN_MODULES:
        module = importlib.import_module(module_name)
        registry.register_all(module.OPS)


def _load_plugins(registry: OpRegistry) -> None:
    for ep in entry_points(group="dagserve.ops"):
        try:
            registry.register_all(ep.load()())
        except Exception as exc:  # a broken plugin must not take the built-ins down
            log.error("dagserve: op plugin %r failed to load: %s", ep.name, exc)


def builtin_registry() -> OpRegistry:
    """The built-in ops only, without plugins (what the published JSON Schema describes)."""
    registry = OpRegistry()
    _load_builtins(registry)
    return registry


@cache
def default_registry() -> OpRegistry:
    """Built-in ops and every installed plugin's ops (built once per process)."""
    registry = OpRegistry()
    _load_builtins(registry)
    _load_plugins(registry)
    return registry
