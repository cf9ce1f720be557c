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


# --- what a spec must never do: escape as a Python exception, run unbounded, or hide a character ---

_LAUGHS = "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]\n" for i in range(1, 10)
)


@pytest.fixture(params=["libyaml", "pure-python"])
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once with libyaml's CSafeLoader and once with PyYAML's pure-Python loader."""
    import yaml

    import dagserve.spec.source as source

    if request.param == "libyaml":
        if not getattr(yaml, "__with_libyaml__", False):
            pytest.skip("PyYAML is built without libyaml")
        monkeypatch.setattr(source, "_FAST_LOADER", yaml.CSafeLoader)
    else:
        monkeypatch.setattr(source, "_FAST_LOADER", None)
    return str(request.param)


@pytest.mark.parametrize(
    ("text", "line", "col", "fragment"),
    [
        ("a: &x [*x]\n", 1, 8, "the alias '*x' refers to the anchor '&x' (line 1) that contains it"),
        ("a:\n  b: &x {c: *x}\n", 2, 13, "refers to the anchor '&x' (line 2) that contains it"),
        ("a: " + "[" * 300 + "]" * 300 + "\n", 1, 67, "nested more than 64 levels deep"),
        ("".join("  " * i + "k:\n" for i in range(300)) + "  " * 300 + "v\n", 65, 129, "nested more than 64"),
        ("a: 1\nname: x\f\n", 2, 8, "a form feed (U+000C), a control character YAML does not allow"),
        ("name: \x1b[31mred\x1b[0m\n", 1, 7, "an escape character (U+001B)"),
        ("a: " + "7" * 5000 + "\n", 1, 4, "the integer is 5000 digits long"),
        (_LAUGHS, 5, 25, "refusing a document that grows exponentially"),
        ("a:\n\u00a0 b: 1\n", 2, 1, "the indentation contains a no-break space (U+00A0)"),
        ("a:\n  \u200bb: 1\n", 2, 3, "the indentation contains a zero width space (U+200B)"),
        ("a: \"x\u2028y\"\nb: 1\n", 1, 6, "a line separator (U+2028), an invisible line break"),
        ("# note\u2029\na: 1\n", 1, 7, "a paragraph separator (U+2029)"),
        ("a: \x85\n", 1, 4, "a NEXT LINE character (U+0085)"),
        ("a: &x 1\nb: &x 2\n", 2, 4, "the anchor '&x' is defined twice (first at line 1)"),
        ("{[a]: 1}\n", 1, 2, "a mapping key must be a plain value, not a list"),
    ],
)
def test_bad_yaml_is_one_e_yaml_at_its_position_with_either_loader(
    loader: str, text: str, line: int, col: int, fragment: str
) -> None:
    doc = load_yaml(text, "s.yaml")
    assert doc.data is None
    (d,) = doc.diagnostics
    assert d.code == "E-YAML" and fragment in d.message, d.message
    assert d.span is not None and (d.span.line, d.span.col) == (line, col)


def test_lines_are_counted_as_editors_count_them(loader: str) -> None:
    # CR LF and a lone CR are line breaks; a form feed is refused at the line an editor shows
    doc = load_yaml("a: 1\r\nb: 2\rc:\r\n\t- 1\n", "s.yaml")
    (d,) = doc.diagnostics
    assert d.span is not None and d.span.line == 4
    (d,) = load_yaml("a: 1\r\nb: 2\r\nc: \x0c\n", "s.yaml").diagnostics
    assert d.span is not None and (d.span.line, d.span.col) == (3, 4)


def test_a_byte_order_mark_opening_the_file_is_fine(loader: str) -> None:
    doc = load_yaml("\ufeffa: 1\n", "s.yaml")
    assert doc.diagnostics == [] and doc.data == {"a": 1}


@pytest.mark.parametrize("text", ["---\n", "~\n", "--- ~\n", "---\n...\n"])
def test_a_document_that_is_only_null_is_empty(loader: str, text: str) -> None:
    doc = load_yaml(text, "s.yaml")
    assert doc.data == {} and doc.diagnostics == []


def test_anchors_reused_on_many_nodes_stay_within_the_alias_budget(loader: str) -> None:
    text = "base: &p {value: 2, perm: [1, 0], more: {a: 1, b: [1, 2, 3]}}\nnodes:\n" + "".join(
        f"  n{i}: {{params: *p}}\n" for i in range(3000)
    )
    doc = load_yaml(text, "s.yaml")
    assert doc.diagnostics == []
    assert doc.data["nodes"]["n2999"]["params"]["more"]["b"] == [1, 2, 3]
    assert doc.data["nodes"]["n1"]["params"] is not doc.data["nodes"]["n2"]["params"]
    assert doc.source.value(("nodes", "n2999", "params", "more", "b", 2)).line == 1


def test_merge_precedence_is_pyyaml_s(loader: str) -> None:
    import yaml

    texts = [
        "a: &a {x: 1, y: 2}\nb: &b {y: 3, z: 4}\nc:\n  <<: [*a, *b]\n  z: 5\n",
        "a: &a {x: {q: 1}, y: 2}\nc:\n  w: 0\n  <<: *a\n  y: 7\n",
        "a: &a [1, {b: &c 2}]\nd: [*a, *c]\ne: {<<: {k: 1}}\n",
    ]
    for text in texts:
        doc = load_yaml(text, "s.yaml")
        assert doc.diagnostics == [] and doc.data == yaml.safe_load(text)
        assert list(doc.data["c" if "c:" in text else "e"]) == list(yaml.safe_load(text)["c" if "c:" in text else "e"])
    doc = load_yaml(texts[0], "s.yaml")
    assert doc.source.value(("c", "x")).line == 1 and doc.source.value(("c", "y")).line == 1
    assert doc.source.value(("c", "z")).line == 5


def test_both_loaders_give_the_same_verdict_and_message_on_every_spec_of_the_corpus(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pathlib import Path

    import yaml

    import dagserve.spec.source as source

    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("PyYAML is built without libyaml")
    specs = Path(__file__).resolve().parents[1] / "specs"
    texts = [p.read_text(encoding="utf-8") for p in sorted(specs.glob("*/*.yaml"))]
    monkeypatch.setattr(source, "_FAST_LOADER", yaml.CSafeLoader)
    fast = [load_yaml(t, "s.yaml") for t in texts]
    monkeypatch.setattr(source, "_FAST_LOADER", None)
    slow = [load_yaml(t, "s.yaml") for t in texts]
    for a, b in zip(fast, slow):
        assert (a.data, a.diagnostics) == (b.data, b.diagnostics)
        assert a.source.values == b.source.values


@pytest.mark.parametrize("text", ["a: !!int \n", "a: !!int abc\n", "a: !!float x\n", "a: !!bool maybe\n"])
def test_a_scalar_its_tag_cannot_read_is_e_yaml_not_an_exception(loader: str, text: str) -> None:
    (d,) = load_yaml(text, "s.yaml").diagnostics
    assert d.code == "E-YAML" and "cannot read" in d.message and d.span is not None and d.span.line == 1


@pytest.mark.parametrize(
    "text",
    ["a: {b: f?x}\n", "a: [f?x]\n", "a: [x?]\n", "shape: [?, H]\n", "a: {b?: 1}\n", "%x\n---\na: 1\n",
     "a:\tb\n", "a: b\t\n", "a: [b,\tc]\n", "a: 'b'\t\n", "? a\n", "a\ufeff\n"],
)
def test_texts_libyaml_and_pyyaml_read_differently_get_one_verdict(monkeypatch: pytest.MonkeyPatch,
                                                                   text: str) -> None:
    import yaml

    import dagserve.spec.source as source

    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("PyYAML is built without libyaml")
    monkeypatch.setattr(source, "_FAST_LOADER", yaml.CSafeLoader)
    fast = load_yaml(text, "s.yaml")
    monkeypatch.setattr(source, "_FAST_LOADER", None)
    slow = load_yaml(text, "s.yaml")
    assert (fast.data, fast.diagnostics, fast.source.values) == (slow.data, slow.diagnostics, slow.source.values)
