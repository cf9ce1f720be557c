"""docs/diagnostics.md documents every code, and its examples are what dagserve prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dagserve.diagnostics import CODES

from .conftest import SPECS, compile_spec_file
from .test_bad_specs import BAD, expected

DOC = Path(__file__).resolve().parents[2] / "docs" / "diagnostics.md"
HEADING = re.compile(r"^### ([EW]-[A-Z-]+) — (.+)$", re.M)


def sections() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    found = list(HEADING.finditer(text))
    return {m.group(1): text[m.end():found[i + 1].start() if i + 1 < len(found) else len(text)]
            for i, m in enumerate(found)}


def test_every_code_is_documented_once_with_its_meaning_an_example_and_a_fix() -> None:
    text = DOC.read_text(encoding="utf-8")
    headings = HEADING.findall(text)
    assert sorted(code for code, _ in headings) == sorted(CODES)
    for code, meaning in headings:
        assert meaning.replace("`", "'") == CODES[code], code
    for code, body in sections().items():
        assert "Example" in body and "Fix:" in body, code


def test_every_code_used_in_the_corpus_exists() -> None:
    assert {code for path in BAD for code, _ in expected(path)} <= set(CODES)


@pytest.mark.parametrize("code", sorted(set(CODES) - {"E-IO", "E-EXTRA", "E-INTERNAL"}))
def test_the_documented_example_spec_produces_the_documented_message(code: str) -> None:
    body = sections()[code]
    match = re.search(r"Example \(`([a-z0-9_]+\.yaml)`\): `([^`]+)`", body)
    assert match, f"{code}: no 'Example (`spec.yaml`): `message`'"
    spec, message = match.groups()
    assert (SPECS / "bad" / spec).exists()
    messages = {d.message for d in compile_spec_file(SPECS / "bad" / spec).diagnostics if d.code == code}
    # paths that depend on the machine are written as /srv/pipelines in the docs
    assert any(m.replace(str(SPECS), "/srv/pipelines") == message for m in messages), (messages, message)
