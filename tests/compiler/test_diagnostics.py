"""The diagnostics layer: de-duplication in linear time, invisible characters named, editor lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagserve.diagnostics import Diagnostic, DiagnosticBag, Span, render_text


def test_adding_n_diagnostics_compares_each_with_a_set_not_with_all_earlier_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = 0
    original = Diagnostic.__eq__

    def counting(self: Diagnostic, other: object) -> bool:
        nonlocal calls
        calls += 1
        return original(self, other)

    monkeypatch.setattr(Diagnostic, "__eq__", counting)
    bag = DiagnosticBag()
    n = 3000
    for i in range(n):
        bag.add(Diagnostic("W-DEAD-NODE", f"node 'n{i}' is dead", Span("s.yaml", i + 1, 1, i + 1, 2)))
    bag.add(Diagnostic("W-DEAD-NODE", "node 'n7' is dead", Span("s.yaml", 8, 1, 8, 2)))  # a duplicate
    assert len(bag) == n
    assert calls < 2 * n  # the list scan did n * (n - 1) / 2


def test_replace_keeps_the_position_and_the_de_duplication() -> None:
    a, b, c = (Diagnostic("E-REF", m) for m in ("a", "b", "c"))
    bag = DiagnosticBag([a, b])
    bag.replace(a, c)
    bag.add(c)
    bag.add(a)
    assert bag.items == [c, b, a]


@pytest.mark.parametrize(
    ("char", "name"),
    [("\u00a0", "a no-break space (U+00A0)"), ("\u200b", "a zero width space (U+200B)"),
     ("\u2028", "a line separator (U+2028)"), ("\x1b", "an escape character (U+001B)"),
     ("\u202e", "a right-to-left override (U+202E)")],
)
def test_a_message_quoting_an_invisible_character_names_it(char: str, name: str) -> None:
    d = Diagnostic("E-NAME", f"invalid input name 'image{char}'")
    assert char not in d.message
    assert d.message == f"invalid input name 'image<U+{ord(char):04X}>' (<U+{ord(char):04X}> is {name}, " \
                        "which an editor does not show)"


def test_the_excerpt_shows_control_characters_and_keeps_the_caret_under_the_culprit(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("a: 1\nname: \x1b[31mred\x0c\nb: \u2028x\n", encoding="utf-8")
    text = render_text([Diagnostic("E-YAML", "m", Span(str(path), 2, 7, 2, 8)),
                        Diagnostic("E-YAML", "m", Span(str(path), 3, 4, 3, 5))])
    lines = text.splitlines()
    assert lines[1] == " 2 | name: <U+001B>[31mred<U+000C>"
    assert lines[2] == "   |       ^^^^^^^^"
    assert lines[4] == " 3 | b: <U+2028>x", "a U+2028 does not start a new excerpt line"
    assert lines[5] == "   |    ^^^^^^^^"
