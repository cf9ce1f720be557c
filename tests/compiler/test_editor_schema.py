"""The JSON Schema for editors: generated op part, reproducible, and as strict as the compiler on ops."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from dagserve.cli import main
from dagserve.compiler.editor_schema import editor_schema, editor_schema_text
from dagserve.ops.registry import builtin_registry
from dagserve.spec.schema import GENERATED_DEF, packaged_schema_text, pipeline_schema

from .conftest import SPECS, compile_spec_file

REPO = Path(__file__).resolve().parents[2]
FILES = [REPO / "dagserve" / "spec" / "pipeline.schema.json", REPO / "schemas" / "pipeline.schema.json"]
GOOD = sorted((SPECS / "good").glob("*.yaml")) + sorted((REPO / "pipelines").rglob("*.yaml"))


def _errors(path: Path) -> list[str]:
    validator = jsonschema.Draft202012Validator(json.loads(FILES[1].read_text(encoding="utf-8")))
    return [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text(encoding="utf-8")))]


def test_the_committed_files_are_what_dagserve_schema_writes() -> None:
    text = editor_schema_text()
    for path in FILES:
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(REPO)} is out of date: run 'dagserve schema "
            "-o dagserve/spec/pipeline.schema.json -o schemas/pipeline.schema.json'")
    assert packaged_schema_text() == text
    assert main(["schema", "--check", *(f"-o{p}" for p in FILES)]) == 0


def test_schema_check_fails_on_a_stale_copy_and_writing_fixes_it(tmp_path: Path) -> None:
    stale = tmp_path / "pipeline.schema.json"
    stale.write_text(json.dumps(pipeline_schema()), encoding="utf-8")
    assert main(["schema", "--check", "-o", str(stale)]) == 1
    assert main(["schema", "-o", str(stale)]) == 0
    assert main(["schema", "--check", "-o", str(stale)]) == 0


def test_generation_is_reproducible_and_covers_every_builtin_op() -> None:
    assert editor_schema_text() == editor_schema_text()
    schema = editor_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    names = builtin_registry().names()
    assert schema["$defs"][GENERATED_DEF]["properties"]["op"]["enum"] == names
    assert [r["if"]["properties"]["op"]["const"] for r in schema["$defs"][GENERATED_DEF]["allOf"]] == names


def test_the_loader_validates_structure_only() -> None:
    structural = pipeline_schema()
    assert GENERATED_DEF not in structural["$defs"] and "allOf" not in structural["$defs"]["node"]
    # an unknown op is the compiler's E-OP, not also a schema error
    codes = [d.code for d in compile_spec_file(SPECS / "bad" / "unknown_op.yaml").diagnostics]
    assert codes == ["E-OP"]


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_every_good_spec_is_valid_for_the_editor(path: Path) -> None:
    assert _errors(path) == []


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("unknown_op.yaml", "is not one of"), ("unknown_param.yaml", "'colour' was unexpected"),
     ("missing_required_param.yaml", "is a required property"), ("param_wrong_type.yaml", "is not of type")],
)
def test_the_editor_flags_unknown_ops_and_bad_params_as_validate_does(name: str, fragment: str) -> None:
    path = SPECS / "bad" / name
    assert any(fragment in m for m in _errors(path)), _errors(path)
    assert any(d.code in ("E-OP", "E-PARAM") for d in compile_spec_file(path).diagnostics)
