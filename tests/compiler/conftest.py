"""Shared fixtures of the compiler tests: where the spec fixtures live, and a compile helper.

Every compilation in these tests runs with ``debug=True``, so ``Graph.lint()`` checks
the IR's invariants after every pass, for good and broken specs alike.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from dagserve.compiler import CompileResult, compile_file
from dagserve.compiler.context import CompileOptions

SPECS = Path(__file__).resolve().parents[1] / "specs"
MODELS = SPECS / "models"


def compile_spec_file(path: Path | str, target: str = "cpu", root: Path | str = SPECS) -> CompileResult:
    """Compile a spec with IR linting after every pass."""
    return compile_file(str(path), CompileOptions(target=target, debug=True), root=str(root))


def codes(result: CompileResult) -> list[tuple[str, int]]:
    """(code, line) of every diagnostic, line 0 when it has no position."""
    return sorted((d.code, d.span.line if d.span else 0) for d in result.diagnostics)


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """Write a spec (dedented) into a fresh repository under tmp_path; returns its path.

    The tiny models are copied into ``tmp_path/models`` (copied, not linked: a
    link would resolve outside the repository) so specs can say
    ``path: models/two_inputs.onnx``.
    """
    models = tmp_path / "models"
    if not models.exists():
        models.mkdir()
        for model in MODELS.glob("*.onnx"):
            shutil.copyfile(model, models / model.name)

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def compile_text(write_spec: Callable[..., Path], tmp_path: Path) -> Callable[..., CompileResult]:
    """Compile a spec given as text (repository: tmp_path)."""

    def run(text: str, target: str = "cpu", name: str = "spec.yaml") -> CompileResult:
        return compile_spec_file(write_spec(text, name), target=target, root=tmp_path)

    return run
