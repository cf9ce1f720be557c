"""Bounded fuzzing of the spec loader: no input escapes as an exception, and both parsers agree.

Hypothesis builds texts from YAML's structural characters, anchors and aliases,
merge keys, long digit runs, control and invisible characters, and mutates real
specs of the corpus. The run is bounded by ``max_examples`` (a few seconds); the
``derandomize`` setting makes it the same run every time, so CI cannot flake.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dagserve.spec.source as source
from dagserve.compiler import compile_file
from dagserve.compiler.context import CompileOptions
from dagserve.spec.source import load_yaml

SPECS = Path(__file__).resolve().parents[1] / "specs"
CORPUS = [p.read_text(encoding="utf-8") for p in sorted(SPECS.glob("*/*.yaml"))]
FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TOKENS = st.sampled_from([
    "a", "b", "nodes", "op", ":", ": ", "- ", "\n", "  ", "    ", "[", "]", "{", "}", ",", "'", '"', "#",
    "&x ", "*x", "&y ", "*y", "<<: ", "!!str ", "!!int ", "!!python/name:os.system ", "!t ", "---\n", "...\n",
    "~", "null", "1", "-1", "0x1F", "1e400", "9" * 4400, ".inf", "true", "yes", "?", "|\n", ">\n", "\t",
    "\r", "\r\n", "\x0c", "\x1b[31m", "\x00", "\u00a0", "\u200b", "\u2028", "\u2029", "\x85", "\ufeff",
    "\\", "%YAML 1.1\n", "@", "`", "é", "\U0001f600",
])
texts = st.lists(TOKENS, max_size=40).map("".join)


def _mutate(text: str, at: int, insert: str, cut: int) -> str:
    at = at % (len(text) + 1)
    return text[:at] + insert + text[at + cut:]


mutated = st.builds(_mutate, st.sampled_from(CORPUS), st.integers(0, 10_000), st.one_of(TOKENS, st.text(max_size=3)),
                    st.integers(0, 3))


def _both(text: str) -> tuple[source.YamlDocument, source.YamlDocument]:
    saved = source._FAST_LOADER
    try:
        source._FAST_LOADER = getattr(yaml, "CSafeLoader", None)
        fast = load_yaml(text, "s.yaml")
        source._FAST_LOADER = None
        slow = load_yaml(text, "s.yaml")
    finally:
        source._FAST_LOADER = saved
    return fast, slow


def _check(text: str) -> None:
    fast, slow = _both(text)  # raising anything at all fails the test
    for doc in (fast, slow):
        if doc.data is None:
            assert [d.code for d in doc.diagnostics] == ["E-YAML"], doc.diagnostics
            assert doc.diagnostics[0].message
        else:
            assert {d.code for d in doc.diagnostics} <= {"E-DUP-KEY"}
    assert (fast.data is None) == (slow.data is None), (text, fast.diagnostics, slow.diagnostics)
    assert fast.data == slow.data
    assert fast.source.values == slow.source.values


@FUZZ
@given(texts)
def test_generated_texts_never_raise_and_read_the_same_with_either_parser(text: str) -> None:
    _check(text)


@FUZZ
@given(mutated)
def test_mutated_corpus_specs_never_raise_and_read_the_same_with_either_parser(text: str) -> None:
    _check(text)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(mutated)
def test_mutated_corpus_specs_compile_to_diagnostics_never_to_a_crash(tmp_path_factory: pytest.TempPathFactory,
                                                                      text: str) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    path = root / "s.yaml"
    path.write_text(text, encoding="utf-8")
    result = compile_file(str(path), CompileOptions(debug=True), root=str(root))
    assert all(d.code != "E-INTERNAL" for d in result.diagnostics), [d.one_line() for d in result.diagnostics]
