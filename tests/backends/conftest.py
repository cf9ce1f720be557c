"""Shared helpers of the backend tests: tiny models, spec compilation, kernel contexts.

ONNX models are built in the tests with ``onnx.helper`` (or taken from
``tests/specs/models``) so every expected value is computed independently by
calling ONNX Runtime directly. Torch and DALI tests skip, with the reason, when
the optional package is not installed.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dagserve.compiler import CompileResult, compile_file
from dagserve.compiler.context import CompileOptions
from dagserve.ops.base import KernelContext
from dagserve.types import CPU, Device

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
MODELS = HERE.parent / "specs" / "models"


def kernel_context(op: str, params: dict[str, Any], *, files: dict[str, str] | None = None,
                   batched: bool = True, device: Device = CPU, node: str = "node") -> KernelContext:
    """A KernelContext like the runtime builds for one instance of a node."""
    return KernelContext(node=node, op=op, params=params, device=device, batched=batched,
                         input_types={}, output_types={}, files=files or {})


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A pipeline repository under tmp_path with the tiny models and the python fixtures copied in."""
    (tmp_path / "models").mkdir()
    for model in MODELS.glob("*.onnx"):
        shutil.copyfile(model, tmp_path / "models" / model.name)
    shutil.copytree(FIXTURES, tmp_path / "handlers")
    return tmp_path


@pytest.fixture
def compile_text(repo: Path) -> Callable[..., CompileResult]:
    """Compile a spec given as text, inside ``repo``."""

    def run(text: str, target: str = "cpu", name: str = "spec.yaml") -> CompileResult:
        path = repo / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return compile_file(str(path), CompileOptions(target=target, debug=True), root=str(repo))

    return run


def errors(result: CompileResult) -> list[tuple[str, str]]:
    """(code, message) of every error of a compilation."""
    return [(d.code, d.message) for d in result.diagnostics if d.severity == "error"]
