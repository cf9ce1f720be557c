"""Diagnostics: stable codes, severities, source spans, and their rendering.

The compiler never stops at the first problem: every pass adds
:class:`Diagnostic` objects to a :class:`DiagnosticBag`, and the CLI renders them
all at once, sorted by position, as text (with the source line and a caret) or as
JSON for editors and CI.

The codes in :data:`CODES` are a public, stable contract (documented in
``docs/diagnostics.md``): tests, editors and CI scripts match on them.
"""

from __future__ import annotations

import difflib
import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "CODES",
    "Diagnostic",
    "DiagnosticBag",
    "Severity",
    "Span",
    "describe_char",
    "did_you_mean",
    "name_invisible",
    "render_json",
    "render_text",
]

Severity = Literal["error", "warning"]

CODES: dict[str, str] = {
    # spec and schema
    "E-IO": "the spec file cannot be read",
    "E-YAML": "YAML syntax error",
    "E-DUP-KEY": "a mapping has the same key twice",
    "E-SCHEMA-KEY": "a key the spec format does not have",
    "E-SCHEMA-TYPE": "a value of the wrong type",
    "E-SCHEMA-REQUIRED": "a required field is missing",
    "E-SCHEMA-VALUE": "a value outside what the field allows",
    "E-VERSION": "an unsupported spec version",
    "E-NAME": "an invalid or reserved node, input or output name",
    "E-PATH": "a path that is absolute or leaves the pipeline repository",
    # graph
    "E-REF": "a reference to a node or pipeline input that does not exist",
    "E-REF-SYNTAX": "a reference that is not 'inputs.NAME' or 'NODE.PORT'",
    "E-PORT": "a port that the node's op does not have, or a required port left unfed",
    "E-CYCLE": "the graph has a cycle",
    "W-UNUSED-INPUT": "a pipeline input that no node reads",
    "W-DEAD-NODE": "a node whose results reach no pipeline output",
    # ops and models
    "E-OP": "an op that does not exist",
    "E-PARAM": "an unknown or invalid op parameter",
    "E-MODEL-FILE": "a model file that is missing",
    "E-MODEL": "a model file that cannot be read as a model",
    "E-MODEL-INPUT": "a node input that the model does not have, or a model input left unfed",
    "E-EXTRA": "an optional dependency that is not installed",
    # types
    "E-DTYPE": "the producer's dtype differs from what the consumer expects",
    "E-RANK": "the producer's rank differs from what the consumer expects",
    "E-SHAPE": "a fixed dimension differs between producer and consumer",
    "E-LAYOUT": "the producer's layout differs from what the consumer expects",
    "E-RAGGED": "items of varying size reach a port that needs a uniform batch",
    # placement and batching
    "E-DEVICE": "a node is placed on a device its op cannot run on",
    "E-BATCH": "a batch size the node or its model cannot take",
    "W-BATCH": "batching settings that have no effect",
    # the compiler itself
    "E-INTERNAL": "a bug in dagserve (please report it)",
}


@dataclass(frozen=True, order=True)
class Span:
    """A region of a source file; lines and columns are 1-based, end exclusive."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a spec.

    Attributes:
        code: a key of :data:`CODES`.
        message: what is wrong, naming both sides of a mismatch.
        span: where in the spec; ``None`` when the problem has no position
            (then ``file`` still names the spec).
        hint: how to fix it, when dagserve can tell.
        node: the node the problem belongs to, if any.
    """

    code: str
    message: str
    span: Span | None = None
    hint: str | None = None
    node: str | None = None
    file: str | None = None

    def __post_init__(self) -> None:
        if self.code not in CODES:
            raise ValueError(f"undocumented diagnostic code {self.code!r}")
        if _INVISIBLE.search(self.message):  # a value quoted in the message hides a character
            object.__setattr__(self, "message", name_invisible(self.message))

    @property
    def severity(self) -> Severity:
        return "warning" if self.code.startswith("W-") else "error"

    @property
    def location(self) -> str:
        if self.span:
            return str(self.span)
        return self.file or "<spec>"

    def one_line(self) -> str:
        return f"{self.location}: {self.severity}[{self.code}]: {self.message}"

    def sort_key(self) -> tuple[str, int, int, str]:
        if self.span:
            return (self.span.file, self.span.line, self.span.col, self.code)
        return (self.file or "", 0, 0, self.code)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "file": self.span.file if self.span else self.file,
        }
        if self.span:
            out.update(
                line=self.span.line,
                col=self.span.col,
                end_line=self.span.end_line,
                end_col=self.span.end_col,
            )
        if self.hint:
            out["hint"] = self.hint
        if self.node:
            out["node"] = self.node
        return out


@dataclass
class DiagnosticBag:
    """Collects diagnostics across passes; de-duplicates identical ones.

    Adding is O(1) (a set of those seen beside the list): a spec of 10,000 nodes may
    give thousands of diagnostics, and comparing each with all earlier ones was
    quadratic.
    """

    items: list[Diagnostic] = field(default_factory=list)
    _seen: set[Diagnostic] = field(default_factory=set, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._seen.update(self.items)

    def add(self, diagnostic: Diagnostic) -> None:
        if diagnostic not in self._seen:
            self._seen.add(diagnostic)
            self.items.append(diagnostic)

    def replace(self, old: Diagnostic, new: Diagnostic) -> None:
        """Put ``new`` where ``old`` is (e.g. an error that absorbs the warnings it caused)."""
        self.items[self.items.index(old)] = new
        self._seen.discard(old)
        self._seen.add(new)

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        for d in diagnostics:
            self.add(d)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.items)

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=Diagnostic.sort_key)

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(self.sorted())

    def __len__(self) -> int:
        return len(self.items)


_INVISIBLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\xa0\u1680\u2000-\u200f\u2028-\u202f\u205f-\u206f"
                        "\u3000\ufeff]")
"""Characters an editor shows as nothing or as a plain space (tab and newline excepted)."""
_CONTROL_NAMES = {
    "\x00": "a NUL character", "\x07": "a bell character", "\x08": "a backspace",
    "\x0b": "a vertical tab", "\x0c": "a form feed", "\x0d": "a carriage return",
    "\x1b": "an escape character", "\x7f": "a delete character", "\x85": "a NEXT LINE character",
}


def describe_char(ch: str) -> str:
    """A character by name and code point: ``a no-break space (U+00A0)``."""
    code = f"U+{ord(ch):04X}"
    if ch in _CONTROL_NAMES:
        return f"{_CONTROL_NAMES[ch]} ({code})"
    name = unicodedata.name(ch, "")
    if not name:
        return f"a control character ({code})"
    article = "an" if name[0] in "AEIOU" else "a"
    return f"{article} {name.lower()} ({code})"


def name_invisible(text: str) -> str:
    """``text`` with each invisible character shown as ``<U+XXXX>`` and named at the end.

    ``'image\u00a0'`` reads as ``'image '`` or ``'image'`` in a terminal; the message
    must say what is really there.
    """
    found: dict[str, None] = {}

    def show(match: re.Match[str]) -> str:
        found.setdefault(match.group())
        return f"<U+{ord(match.group()):04X}>"

    shown = _INVISIBLE.sub(show, text)
    if not found:
        return text
    names = "; ".join(f"<U+{ord(c):04X}> is {describe_char(c)}" for c in found)
    return f"{shown} ({names}, which an editor does not show)"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when a choice is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def _source_lines(file: str, cache: dict[str, list[str]]) -> list[str]:
    if file not in cache:
        try:
            # lines as editors and the YAML loader count them: not str.splitlines(), which
            # also breaks at form feeds, U+2028 and other characters editors show inline
            cache[file] = _LINE_BREAK.split(Path(file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            cache[file] = []
    return cache[file]


def _excerpt(d: Diagnostic, cache: dict[str, list[str]]) -> list[str]:
    """The source line and a caret under the span, like rustc and clang print."""
    if d.span is None:
        return []
    lines = _source_lines(d.span.file, cache)
    if not 1 <= d.span.line <= len(lines):
        return []
    raw = lines[d.span.line - 1].rstrip(" \t")
    width = len(str(d.span.line))
    start = max(d.span.col - 1, 0)
    if d.span.end_line == d.span.line and d.span.end_col > d.span.col:
        length = d.span.end_col - d.span.col
    else:
        length = max(len(raw) - start, 1)
    # a terminal would act on an escape code or hide a no-break space: show them as <U+XXXX>
    # (tabs stay tabs, and are kept in the caret line so the caret stays under the culprit)
    text = _INVISIBLE.sub(_code_point, raw)
    pad = "".join("\t" if c == "\t" else " " * len(_INVISIBLE.sub(_code_point, c)) for c in raw[:start])
    length = len(_INVISIBLE.sub(_code_point, raw[start:start + length])) or length
    gutter = " " * width
    return [
        f" {d.span.line} | {text}",
        f" {gutter} | {pad}{'^' * max(length, 1)}",
    ]


def _code_point(match: re.Match[str]) -> str:
    return f"<U+{ord(match.group()):04X}>"


def render_text(diagnostics: Iterable[Diagnostic]) -> str:
    """Render diagnostics for a terminal, ending with an ``N errors, M warnings`` line."""
    cache: dict[str, list[str]] = {}
    out: list[str] = []
    items = sorted(diagnostics, key=Diagnostic.sort_key)
    for d in items:
        out.append(d.one_line())
        out.extend(_excerpt(d, cache))
        if d.hint:
            out.append(f"  hint: {d.hint}")
    n_err = sum(d.severity == "error" for d in items)
    n_warn = len(items) - n_err
    out.append(f"{n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}")
    return "\n".join(out)


def render_json(diagnostics: Iterable[Diagnostic]) -> str:
    """Render diagnostics as a JSON document: ``{"diagnostics": [...], "errors": n, ...}``."""
    items = sorted(diagnostics, key=Diagnostic.sort_key)
    n_err = sum(d.severity == "error" for d in items)
    doc = {
        "diagnostics": [d.to_json() for d in items],
        "errors": n_err,
        "warnings": len(items) - n_err,
    }
    return json.dumps(doc, indent=2)
