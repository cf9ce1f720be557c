"""The source-mapped YAML loader: positions, duplicate keys, merge keys, safe tags, errors."""

from __future__ import annotations

import pytest

from dagserve.spec.source import load_yaml

SPEC = """\
dagserve: 1
nodes:
  decode:
    op: image.decode
    inputs: {data: inputs.image}
    list: [a, bb, ccc]
"""


def test_values_and_keys_keep_their_line_and_column() -> None:
    doc = load_yaml(SPEC, "s.yaml")
    assert doc.diagnostics == []
    src = doc.source
    assert (src.value(("dagserve",)).line, src.value(("dagserve",)).col) == (1, 11)
    key = src.key(("nodes", "decode"))
    assert (key.line, key.col, key.end_col) == (3, 3, 9)
    ref = src.value(("nodes", "decode", "inputs", "data"))
    assert (ref.line, ref.col, ref.end_line, ref.end_col) == (5, 20, 5, 32)
    item = src.value(("nodes", "decode", "list", 2))
    assert (item.line, item.col, item.end_col) == (6, 19, 22)
    assert src.file == "s.yaml" and ref.file == "s.yaml"


def test_a_missing_path_falls_back_to_its_nearest_ancestor() -> None:
    src = load_yaml(SPEC, "s.yaml").source
    assert src.value(("nodes", "decode", "params", "color")) == src.value(("nodes", "decode"))
    assert src.key(("nodes", "decode", "params")) == src.value(("nodes", "decode"))


def test_duplicate_top_level_key_is_reported_at_the_second() -> None:
    doc = load_yaml("name: a\nx: 1\nname: b\n", "s.yaml")
    (d,) = doc.diagnostics
    assert d.code == "E-DUP-KEY" and (d.span.line, d.span.col) == (3, 1)
    assert "duplicate key 'name' (first defined at line 1)" in d.message


def test_duplicate_nested_and_flow_keys_are_reported() -> None:
    doc = load_yaml("a:\n  b: {c: 1, c: 2}\n  b: 3\n", "s.yaml")
    assert sorted((d.code, d.span.line, d.span.col) for d in doc.diagnostics) == [
        ("E-DUP-KEY", 2, 13), ("E-DUP-KEY", 3, 3),
    ]


def test_keys_that_differ_only_in_type_are_not_duplicates() -> None:
    assert load_yaml("1: a\n'1': b\n", "s.yaml").diagnostics == []


def test_merge_keys_merge_and_may_be_overridden_without_a_duplicate_error() -> None:
    text = """\
a: &base {op: math.add, params: {value: 1}}
b:
  <<: *base
  params: {value: 2}
"""
    doc = load_yaml(text, "s.yaml")
    assert doc.diagnostics == []
    assert doc.data["b"] == {"op": "math.add", "params": {"value": 2}}
    assert doc.source.value(("b", "op")).line == 1  # a merged value keeps the anchor's position
    assert doc.source.value(("b", "params", "value")).line == 4


def test_aliases_resolve_to_the_anchor_value() -> None:
    doc = load_yaml("a: &d gpu:0\nb: *d\n", "s.yaml")
    assert doc.data == {"a": "gpu:0", "b": "gpu:0"}


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/name:os.system ''\n",
        "a: !!python/object/apply:os.system ['echo hi']\n",
        "a: !!python/tuple [1, 2]\n",
        "a: !!set {x, y}\n",
        "a: !!omap [{x: 1}]\n",
        "a: !!binary aGk=\n",
        "a: !custom value\n",
        "!!python/object:builtins.dict {}\n",
    ],
)
def test_unsafe_and_non_plain_tags_are_refused(text: str) -> None:
    doc = load_yaml(text, "s.yaml")
    assert doc.data is None
    (d,) = doc.diagnostics
    assert d.code == "E-YAML" and "is not allowed in a spec" in d.message
    assert d.span is not None and d.span.line == 1


def test_plain_tags_and_timestamps_load_as_plain_data() -> None:
    doc = load_yaml("a: !!str 12\nb: !!float 1\nc: 2024-01-02\nd: [!!int '3']\n", "s.yaml")
    assert doc.diagnostics == []
    assert doc.data == {"a": "12", "b": 1.0, "c": "2024-01-02", "d": [3]}


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_document_is_an_empty_mapping(text: str) -> None:
    doc = load_yaml(text, "s.yaml")
    assert doc.data == {} and doc.diagnostics == []


def test_syntax_error_reports_the_position() -> None:
    doc = load_yaml("a: 1\nb: [1, 2\nc: 3\n", "s.yaml")
    assert doc.data is None
    (d,) = doc.diagnostics
    assert d.code == "E-YAML" and d.span is not None and d.span.line == 3
    assert d.message.startswith("YAML syntax error: ")


def test_unclosed_flow_at_end_of_file_points_at_what_was_left_open() -> None:
    doc = load_yaml("a: 1\nb: {c: 1\n", "s.yaml")
    (d,) = doc.diagnostics
    assert (d.span.line, d.span.col) == (2, 4)  # the '{', not past the last line


def test_tab_indentation_is_a_syntax_error() -> None:
    (d,) = load_yaml("a:\n\t- 1\n", "s.yaml").diagnostics
    assert d.code == "E-YAML" and d.span.line == 2 and "'\\t'" in d.message


def test_a_second_document_is_refused_with_a_readable_message() -> None:
    (d,) = load_yaml("a: 1\n---\nb: 2\n", "s.yaml").diagnostics
    assert d.code == "E-YAML" and d.span.line == 2
    assert d.message == ("YAML syntax error: expected a single document in the stream, "
                         "but found another document")


def test_merge_of_a_scalar_is_a_syntax_error() -> None:
    (d,) = load_yaml("<<: 3\n", "s.yaml").diagnostics
    assert d.code == "E-YAML"


def test_libyaml_and_pure_python_parsers_give_the_same_data_and_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    import dagserve.spec.source as source

    specs = Path(__file__).resolve().parents[1] / "specs"
    texts = [SPEC] + [p.read_text() for p in sorted((specs / "good").glob("*.yaml"))]
    fast = [load_yaml(t, "s.yaml") for t in texts]
    monkeypatch.setattr(source, "_FAST_LOADER", None)
    slow = [load_yaml(t, "s.yaml") for t in texts]
    for a, b in zip(fast, slow):
        assert a.data == b.data
        assert a.source.values == b.source.values and a.source.keys == b.source.keys


def test_syntax_errors_read_the_same_with_or_without_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    import dagserve.spec.source as source

    bad = "a: 1\nb: {c: 1\n"
    with_fast = load_yaml(bad, "s.yaml").diagnostics
    monkeypatch.setattr(source, "_FAST_LOADER", None)
    assert load_yaml(bad, "s.yaml").diagnostics == with_fast
