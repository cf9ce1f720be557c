"""The compiler passes, in the order they run. Each is a module with ``run(ctx) -> bool``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dagserve.compiler.context import CompileContext
from dagserve.compiler.passes import (
    acyclic,
    batching,
    build,
    ops,
    placement,
    reachability,
    types,
)

__all__ = ["PASSES", "PassSpec"]


@dataclass(frozen=True)
class PassSpec:
    """A pass: its name, its function, and whether later passes need it error-free."""

    name: str
    run: Callable[[CompileContext], bool]
    stop_on_error: bool


PASSES: tuple[PassSpec, ...] = (
    PassSpec("resolve", build.run, stop_on_error=False),
    PassSpec("acyclic", acyclic.run, stop_on_error=False),
    PassSpec("reachability", reachability.run, stop_on_error=False),
    PassSpec("ops", ops.run, stop_on_error=False),
    PassSpec("types", types.run, stop_on_error=True),
    PassSpec("placement", placement.run, stop_on_error=True),
    PassSpec("batching", batching.run, stop_on_error=True),
)
