"""The layers of DESIGN.md §4 stay honest: lower layers never import higher ones.

Checked statically on the import statements of every module, so an import hidden
in a function (the usual way heavy dependencies are made lazy) counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dagserve"

# layer -> the dagserve layers it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "types": ("spec", "compiler", "ops", "backends", "runtime", "server", "cli", "api"),
    "diagnostics": ("spec", "compiler", "ops", "backends", "runtime", "server", "cli", "api"),
    "spec": ("compiler", "ops", "backends", "runtime", "server", "cli", "api"),
    "compiler": ("runtime", "server", "cli", "api"),
    "ops": ("compiler", "runtime", "server", "cli", "api"),
    "backends": ("compiler", "runtime", "server", "cli", "api"),
    "runtime": ("server", "cli"),
    "importers": ("runtime", "server", "cli", "api"),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n.split(".")[1] for n in names if n.startswith("dagserve.") and n.count(".") >= 1}


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0].removesuffix(".py")


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_no_higher_layer(path: Path) -> None:
    layer = _layer(path)
    bad = _imports(path) & set(FORBIDDEN.get(layer, ()))
    assert not bad, f"dagserve/{path.relative_to(PACKAGE)} ({layer}) imports {sorted(bad)}"


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from dagserve.runtime.pipeline import Pipeline\n", encoding="utf-8")
    assert _imports(module) == {"runtime"}
