"""JSON Schema failures become diagnostics with stable codes, positions and readable messages."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from dagserve.spec.document import parse_spec
from dagserve.spec.schema import pipeline_schema, schema_diagnostics, validate_against
from dagserve.spec.source import load_yaml

REPO = Path(__file__).resolve().parents[2]


def diagnose(text: str) -> list[tuple[str, int, str]]:
    doc = load_yaml(text, "s.yaml")
    return [(d.code, d.span.line if d.span else 0, d.message) for d in schema_diagnostics(doc.data, doc.source)]


BASE = """\
dagserve: 1
name: p
inputs:
  x: {dtype: float32, shape: [4]}
outputs:
  y: a.y
nodes:
  a:
    op: tensor.identity
    inputs: {x: inputs.x}
"""


def test_the_schema_is_valid_and_the_published_copy_is_identical() -> None:
    from dagserve.spec.schema import packaged_schema_text

    jsonschema.Draft202012Validator.check_schema(pipeline_schema())
    published = (REPO / "schemas" / "pipeline.schema.json").read_text(encoding="utf-8")
    assert published == packaged_schema_text()
    jsonschema.Draft202012Validator.check_schema(json.loads(published))


def test_a_valid_spec_has_no_schema_diagnostics() -> None:
    assert diagnose(BASE) == []


def test_unknown_key_is_e_schema_key_at_the_key_with_a_suggestion() -> None:
    ((code, line, message),) = diagnose(BASE + "    instnaces: 2\n")
    assert (code, line) == ("E-SCHEMA-KEY", 11)
    assert message == "unknown key 'instnaces' in node 'a'; did you mean 'instances'?"


def test_missing_field_is_e_schema_required() -> None:
    ((code, _, message),) = diagnose(BASE.replace("name: p\n", ""))
    assert code == "E-SCHEMA-REQUIRED" and message == "the spec is missing the required field 'name'"


def test_wrong_type_names_both_the_expected_type_and_the_value() -> None:
    ((code, line, message),) = diagnose(BASE + "max_batch_size: [8]\n")
    assert (code, line) == ("E-SCHEMA-TYPE", 11)
    assert message == "'max_batch_size' must be an integer, not a list"


def test_boolean_is_not_an_integer() -> None:
    ((code, _, _),) = diagnose(BASE + "max_batch_size: true\n")
    assert code == "E-SCHEMA-TYPE"


def test_spec_version_other_than_1_is_e_version() -> None:
    ((code, line, message),) = diagnose(BASE.replace("dagserve: 1", "dagserve: '1'"))
    assert (code, line) == ("E-VERSION", 1) and '"1"' in message


def test_enum_value_lists_the_choices_and_suggests_one() -> None:
    doc = load_yaml(BASE.replace("float32", "flaot32"), "s.yaml")
    (d,) = schema_diagnostics(doc.data, doc.source)
    assert d.code == "E-SCHEMA-VALUE" and "did you mean 'float32'?" in d.message
    assert d.hint is not None and '"float32"' in d.hint and '"bytes"' in d.hint


def test_pattern_failure_explains_the_form_not_the_regex() -> None:
    doc = load_yaml(BASE + "    device: cuda\n", "s.yaml")
    (d,) = schema_diagnostics(doc.data, doc.source)
    assert d.code == "E-SCHEMA-VALUE" and "^(" not in d.message
    assert d.hint is not None and "gpu:K" in d.hint


def test_values_that_json_cannot_show_do_not_crash_messages() -> None:
    for value in ("!!binary aGk=", "2024-01-02", ".inf"):
        doc = load_yaml(BASE.replace("name: p", f"name: {value}"), "s.yaml")
        if doc.data is None:  # refused by the loader
            continue
        for d in schema_diagnostics(doc.data, doc.source):
            assert d.message


def test_empty_spec_gives_one_error_naming_the_file() -> None:
    doc = load_yaml("# nothing\n", "empty.yaml")
    (d,) = schema_diagnostics(doc.data, doc.source)
    assert d.code == "E-SCHEMA-REQUIRED" and d.location == "empty.yaml"
    assert "the spec is empty" in d.message


def test_a_list_is_not_a_spec() -> None:
    ((code, line, _),) = diagnose("- a\n- b\n")
    assert (code, line) == ("E-SCHEMA-TYPE", 1)


def test_all_problems_are_reported_not_just_the_first() -> None:
    text = BASE.replace("name: p\n", "") + "    instances: 0\n    colour: red\n"
    found = {code for code, _, _ in diagnose(text)}
    assert found == {"E-SCHEMA-REQUIRED", "E-SCHEMA-VALUE", "E-SCHEMA-KEY"}


def test_param_failures_are_all_e_param() -> None:
    schema = {"type": "object", "additionalProperties": False, "required": ["size"],
              "properties": {"size": {"type": "integer", "minimum": 1}, "mode": {"enum": ["a", "b"]}}}
    doc = load_yaml("nodes: {n: {params: {size: 0, mode: c, extra: 1}}}\n", "s.yaml")
    found = validate_against(schema, doc.data["nodes"]["n"]["params"], doc.source,
                             ("nodes", "n", "params"), kind="param")
    assert {d.code for d in found} == {"E-PARAM"} and len(found) == 3
    missing = validate_against(schema, {}, doc.source, ("nodes", "n", "params"), kind="param")
    assert [d.message for d in missing] == ["node 'n' is missing the required param 'size'"]


def test_integral_floats_become_ints_in_the_typed_spec(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(BASE.replace("[4]", "[4.0, -1]") + "    instances: 2.0\nmax_batch_size: 4.0\n")
    spec, diagnostics = parse_spec(path)
    assert diagnostics == [] and spec is not None
    assert spec.max_batch_size == 4 and isinstance(spec.max_batch_size, int)
    assert spec.nodes["a"].instances == 2 and isinstance(spec.nodes["a"].instances, int)
    assert spec.inputs["x"].shape == (4, "?") and isinstance(spec.inputs["x"].shape[0], int)


@pytest.mark.parametrize("name", ["Decode", "1st", "with-dash", "inputs", "outputs"])
def test_bad_node_names_are_e_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(BASE.replace("  a:\n", f"  {name}:\n").replace("y: a.y", "y: inputs.x"))
    _, diagnostics = parse_spec(path)
    assert [(d.code, d.span.line) for d in diagnostics] == [("E-NAME", 8)]


def test_one_of_reports_the_problem_of_the_alternative_the_value_fits() -> None:
    # an output written as a mapping is checked as the mapping form: its unknown key,
    # not "must be a mapping or a string, not a mapping"
    ((code, line, message),) = diagnose(BASE.replace("y: a.y", "y: {from: a.y, extra: 1}"))
    assert (code, line) == ("E-SCHEMA-KEY", 6) and message == "unknown key 'extra' in pipeline output 'y'"
    ((code, _, message),) = diagnose(BASE.replace("y: a.y", "y: ''"))
    assert (code, message) == ("E-SCHEMA-VALUE", "pipeline output 'y' must not be empty")
    # a value no alternative fits names the allowed types
    ((code, _, message),) = diagnose(BASE.replace("y: a.y", "y: 3"))
    assert (code, message) == ("E-SCHEMA-TYPE", "pipeline output 'y' must be a mapping or a string, not 3")


@pytest.mark.parametrize("text", ["---\n", "~\n", "", "# only a comment\n"])
def test_a_spec_that_is_only_a_document_marker_or_null_says_it_is_empty(tmp_path: Path, text: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    spec, diagnostics = parse_spec(path)
    assert spec is None
    (d,) = diagnostics
    assert d.code == "E-SCHEMA-REQUIRED" and "the spec is empty" in d.message


@pytest.mark.parametrize("name", ["input:0", "dense/Softmax:0", "input.1", "serving_default_x:0", "my-output", "_x"])
def test_wire_names_of_exported_models_are_legal_pipeline_input_and_output_names(tmp_path: Path, name: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(BASE.replace("  x: {", f"  '{name}': {{").replace("inputs.x", f"inputs.{name}")
                    .replace("  y: a.y", f"  '{name}': a.y"))
    spec, diagnostics = parse_spec(path)
    assert diagnostics == [] and spec is not None
    assert list(spec.inputs) == [name] and list(spec.outputs) == [name]
    ref = spec.nodes["a"].inputs["x"][0]
    assert ref.is_input and ref.port == name


@pytest.mark.parametrize("name", ["my output", "0in", ":0", "a\"b", "x;y", "/abs"])
def test_names_that_are_not_wire_names_are_e_name(tmp_path: Path, name: str) -> None:
    path = tmp_path / "s.yaml"
    quoted = json.dumps(name)
    path.write_text(BASE.replace("  y: a.y", f"  {quoted}: a.y"))
    _, diagnostics = parse_spec(path)
    assert [(d.code, d.span.line) for d in diagnostics] == [("E-NAME", 6)]
    assert "letters, digits and _ . : / -" in diagnostics[0].message
