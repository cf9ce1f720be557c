"""Fixtures of the runtime tests: a registry with the test ops, specs compiled from text.

There is no pytest-asyncio here: async tests call :func:`run_async`, which runs a
coroutine on a fresh event loop under a hard timeout, so a hang fails fast.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dagserve.compiler.context import CompileOptions
from dagserve.compiler.driver import compile_file
from dagserve.compiler.plan import Plan
from dagserve.ops.registry import OpRegistry
from dagserve.runtime.pipeline import Pipeline

from ._kernels import make_registry, reset

T = TypeVar("T")

_REGISTRY: OpRegistry | None = None


def registry() -> OpRegistry:
    """The built-in ops plus the test ops (built once)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = make_registry()
    return _REGISTRY


def run_async(coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
    """Run ``coro`` on a new event loop; fail (not hang) after ``timeout`` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def compile_text(text: str, directory: Path, name: str = "spec.yaml") -> Plan:
    """Compile a spec given as YAML text (written under ``directory``) with the test ops."""
    path = directory / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    result = compile_file(str(path), CompileOptions(target="cpu", debug=True), root=str(directory),
                          registry=registry())
    assert result.plan is not None, "\n".join(d.one_line() for d in result.diagnostics)
    return result.plan


@pytest.fixture(autouse=True)
def _clean_records() -> Iterator[None]:
    reset()
    yield
    reset()


@pytest.fixture
def make_pipeline(tmp_path: Path) -> Callable[..., Pipeline]:
    """Compile spec text into a (not yet started) :class:`Pipeline` with the test registry."""
    counter = iter(range(1000))

    def make(text: str, **kwargs: Any) -> Pipeline:
        plan = compile_text(text, tmp_path, f"spec{next(counter)}.yaml")
        return Pipeline(plan, registry=registry(), **kwargs)

    return make
