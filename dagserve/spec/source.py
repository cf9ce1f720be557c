"""Safe YAML loading that remembers where every key and value came from.

The usual ``yaml.safe_load`` throws positions away, silently keeps the last of two
equal keys, recurses once per nesting level and expands aliases without limit.
:func:`load_yaml` instead reads PyYAML's *event* stream (the parser's output, before
composition) in one loop with an explicit stack, and builds plain Python data
(dicts, lists, scalars), a :class:`SourceMap` from each value's path to its span, and
a diagnostic for every duplicate key. Reading events itself is what lets it refuse,
with an ``E-YAML`` at a position, what would otherwise escape as a Python exception
or run for minutes:

* values nested more than :data:`MAX_DEPTH` levels deep (no recursion at all);
* an alias that refers to the collection it is part of (``a: &x [*x]``);
* aliases that expand to far more values than the text holds (the "billion laughs"
  pattern): see :data:`ALIAS_BUDGET`;
* integers longer than Python converts (``sys.get_int_max_str_digits()``);
* characters YAML does not allow (form feed, an ANSI escape pasted from a terminal,
  other control characters), checked before parsing so both parsers agree;
* invisible characters that change what the text means while looking right in an
  editor: line separators (U+2028, U+2029, U+0085, which YAML counts as line breaks
  and editors do not) anywhere, and no-break or zero-width spaces in indentation.

Only plain data is constructed: mappings, lists, strings, numbers, booleans and
null. Any other tag (``!!python/...``, ``!!binary``, ``!!set``, custom ``!tags``)
is a syntax error, even on a list or mapping; timestamps stay the strings the user
wrote. Merge keys (``<<: *base``) work as in PyYAML: merged keys come first, the
mapping's own keys override them, and merged values keep the anchor's positions.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any

import yaml

from dagserve.diagnostics import Diagnostic, Span, describe_char

__all__ = [
    "ALIAS_BUDGET",
    "MAX_DEPTH",
    "Path_",
    "SourceMap",
    "YamlDocument",
    "load_yaml",
]

Path_ = tuple[str | int, ...]
"""A path into the document, e.g. ``("nodes", "decode", "params", "color")``."""

MAX_DEPTH = 64
"""Most levels of nested lists and mappings a spec may have (real specs use under 10)."""

ALIAS_BUDGET = 50_000
"""Values that aliases may add beyond the text, or 10 per value written, whichever is more.

A spec that reuses an anchored ``params`` block on each of 10,000 nodes stays far
below 10 per written value; a 2 KB "billion laughs" document hits the budget after
a few milliseconds instead of running for minutes and filling memory.
"""


@dataclass
class SourceMap:
    """Spans of the values (and of the keys) of a loaded document, by path."""

    file: str
    values: dict[Path_, Span] = field(default_factory=dict)
    keys: dict[Path_, Span] = field(default_factory=dict)

    def value(self, path: Path_) -> Span | None:
        """The span of the value at ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get(())

    def key(self, path: Path_) -> Span | None:
        """The span of the key that holds ``path``; falls back to the value's span."""
        path = tuple(path)
        return self.keys.get(path) or self.value(path)


@dataclass
class YamlDocument:
    """The result of :func:`load_yaml`: data (``None`` on a syntax error) and its source map."""

    data: Any
    source: SourceMap
    diagnostics: list[Diagnostic]
    duplicates: list[Path_] = field(default_factory=list)
    """The path of each duplicate key (reported as ``E-DUP-KEY``): its value is ambiguous."""


# --- characters -------------------------------------------------------------------------------

_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")
"""What YAML does not allow, the line separators it counts as line breaks (editors do not),
and a byte-order mark anywhere but at the start (the two parsers read it differently)."""
_INVISIBLE = "\u00a0\u1680\u2000-\u200d\u202f\u205f\u2060\u3000\ufeff"
_INVISIBLE_INDENT = re.compile(f"^[ \t]*([{_INVISIBLE}])", re.MULTILINE)
_BREAK = re.compile(r"\r\n|\r|\n")


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of ``text[index]`` as editors count: only CR, LF and CRLF break lines."""
    prefix = text[:index]
    line = len(_BREAK.findall(prefix)) + 1
    start = max(prefix.rfind("\n"), prefix.rfind("\r")) + 1
    return line, index - start + 1


def _character_problem(text: str, file: str) -> Diagnostic | None:
    """The first character that YAML refuses or that would make the text mean what it does not show."""
    found = _FORBIDDEN.search(text, 1 if text.startswith("\ufeff") else 0)
    indent = _INVISIBLE_INDENT.search(text)
    if indent is not None and indent.start(1) == 0 and text[0] == "\ufeff":
        indent = _INVISIBLE_INDENT.search(text, 1)  # a byte-order mark opening the file is fine
    if found is None and indent is None:
        return None
    if found is not None and (indent is None or found.start() < indent.start(1)):
        index, ch = found.start(), found.group()
        if ch in "\u2028\u2029\x85":
            message = (f"the spec contains {describe_char(ch)}, an invisible line break that YAML "
                       "counts as a new line but editors do not show")
            hint = "delete it; in a double-quoted string write it as an escape (\\u2028) if it is really meant"
        elif ch == "\ufeff":
            message = f"the spec contains {describe_char(ch)} (a byte-order mark) after its start"
            hint = "delete it; it is left over from joining two files"
        else:
            message = f"the spec contains {describe_char(ch)}, a control character YAML does not allow"
            hint = ("delete it (an ANSI colour code pasted from a terminal?)" if ch == "\x1b"
                    else "delete it; write it as an escape in a double-quoted string if it is really meant")
    else:
        assert indent is not None
        index, ch = indent.start(1), indent.group(1)
        message = f"the indentation contains {describe_char(ch)}; YAML indents with plain spaces only"
        hint = "retype the indentation of this line with spaces"
    line, col = _position(text, index)
    return Diagnostic("E-YAML", f"YAML syntax error: {message}", Span(file, line, col, line, col + 1),
                      hint=hint, file=file)


# --- building data from events ----------------------------------------------------------------

_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")
)
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_MERGE = "tag:yaml.org,2002:merge"
_SEQ, _MAP = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"


class _Refused(Exception):
    """A document the loader refuses, with the message and the mark to report it at."""

    def __init__(self, message: str, mark: Any, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.mark, self.hint = message, mark, hint


def _tag_name(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")


def _refuse_tag(tag: str, mark: Any) -> None:
    raise yaml.constructor.ConstructorError(
        None, None,
        f"the tag '{_tag_name(tag)}' is not allowed in a spec "
        "(only plain mappings, lists, strings, numbers, booleans and null)",
        mark,
    )


def _copy(value: Any) -> Any:
    """A fresh copy of plain data: an alias gives each place its own lists and dicts."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


@dataclass
class _Anchored:
    """What an anchor names: its value, and its spans relative to it (for each alias to copy)."""

    value: Any
    values: list[tuple[Path_, Span]]
    keys: list[tuple[Path_, Span]]


@dataclass
class _Frame:
    """An open list or mapping."""

    path: Path_
    value: Any
    start: Any
    anchor: str | None
    log_start: int
    key_log_start: int
    is_map: bool
    flow: bool = False
    key: Any = None
    key_span: Span | None = None
    key_is_merge: bool = False
    has_key: bool = False
    seen: dict[Any, Span] = field(default_factory=dict)
    merges: list[Any] = field(default_factory=list)
    """The value of each ``<<`` entry (a mapping, or a list of them), in the order written."""


class _Builder:
    def __init__(self, file: str, loader: Any) -> None:
        self.file = file
        self.loader = loader
        self.diagnostics: list[Diagnostic] = []
        self.duplicates: list[Path_] = []
        self.values: list[tuple[Path_, Span]] = []
        self.keys: list[tuple[Path_, Span]] = []
        self.anchors: dict[str, _Anchored | None] = {}  # None: still open
        self.anchor_marks: dict[str, Any] = {}
        self.written = 0
        self.expanded = 0
        self.unsure = False
        """True when the text holds something libyaml and PyYAML are known to read differently."""

    def span(self, start: Any, end: Any) -> Span:
        return Span(self.file, start.line + 1, start.column + 1, end.line + 1, end.column + 1)

    # the document --------------------------------------------------------------------------

    def document(self) -> tuple[bool, Any]:
        """Read the stream; ``(False, None)`` when it holds no document."""
        loader = self.loader
        loader.get_event()  # StreamStart
        if loader.check_event(yaml.StreamEndEvent):
            loader.get_event()
            return False, None
        document = loader.get_event()  # DocumentStart
        value = self.node()
        loader.get_event()  # DocumentEnd
        if not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            raise yaml.composer.ComposerError("expected a single document in the stream",
                                              document.start_mark, "but found another document",
                                              event.start_mark)
        loader.get_event()
        return True, value

    def node(self) -> Any:
        """Build the next value (a scalar, or a whole list or mapping) without recursion."""
        loader = self.loader
        stack: list[_Frame] = []
        path: Path_ = ()
        while True:
            event = loader.get_event()
            kind = type(event)
            if stack:
                top = stack[-1]
                if top.is_map and not top.has_key:
                    path = (*top.path, "<key>")
                elif top.is_map:
                    path = (*top.path, "<<") if top.key_is_merge else (*top.path, top.key)
                else:
                    path = (*top.path, len(top.value))
            if kind is yaml.ScalarEvent:
                value = self.scalar(event)
                if stack and stack[-1].is_map and not stack[-1].has_key:
                    self.map_key(stack[-1], event, value)
                    continue
                self.record(path, self.scalar_span(event, stack), event.anchor, value)
            elif kind is yaml.AliasEvent:
                if stack and stack[-1].is_map and not stack[-1].has_key:
                    raise _Refused("an alias cannot be a mapping key", event.start_mark)
                value = self.alias(event, path, stack)
            elif kind is yaml.SequenceStartEvent or kind is yaml.MappingStartEvent:
                is_map = kind is yaml.MappingStartEvent
                tag = event.tag
                if tag is None or tag == "!":
                    tag = loader.resolve(yaml.MappingNode if is_map else yaml.SequenceNode, None, event.implicit)
                if tag != (_MAP if is_map else _SEQ):
                    _refuse_tag(tag, event.start_mark)
                if stack and stack[-1].is_map and not stack[-1].has_key:
                    raise _Refused("a mapping key must be a plain value, not a "
                                   f"{'mapping' if is_map else 'list'}", event.start_mark)
                if len(stack) >= MAX_DEPTH:
                    raise _Refused(f"values are nested more than {MAX_DEPTH} levels deep", event.start_mark,
                                   hint="a spec needs a handful of levels; this looks generated or broken")
                self.written += 1
                if event.anchor is not None:
                    self.open_anchor(event.anchor, event.start_mark)
                stack.append(_Frame(path, {} if is_map else [], event.start_mark, event.anchor,
                                    len(self.values), len(self.keys), is_map, bool(event.flow_style)))
                continue
            else:  # SequenceEnd or MappingEnd
                frame = stack.pop()
                value = self.close(frame, event)
            if not stack:
                return value
            self.add(stack[-1], value)

    def add(self, frame: _Frame, value: Any) -> None:
        if not frame.is_map:
            frame.value.append(value)
            return
        if frame.key_is_merge:
            frame.merges.append(value)
        else:
            frame.value[frame.key] = value
        frame.has_key = False

    def scalar_span(self, event: Any, stack: list[_Frame]) -> Span:
        """Where a scalar is; an empty one (``a:`` with nothing after it) is where its owner is.

        libyaml and PyYAML put the marks of a value that is not there in different places
        (the next line, or the end of the key); what owns it is the same for both.
        """
        if event.value or event.style not in (None, "", "plain"):
            return self.span(event.start_mark, event.end_mark)
        if stack and stack[-1].is_map and stack[-1].key_span is not None and stack[-1].has_key:
            key = stack[-1].key_span
            return Span(self.file, key.end_line, key.end_col, key.end_line, key.end_col)
        mark = stack[-1].start if stack else None
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        return Span(self.file, line, col, line, col)

    def map_key(self, frame: _Frame, event: Any, key: Any) -> None:
        span = self.scalar_span(event, [frame])
        frame.key_span = span
        frame.has_key = True
        frame.key_is_merge = self._tag(event) == _MERGE
        if frame.key_is_merge:
            return
        if key in frame.seen:
            first = frame.seen[key]
            self.duplicates.append((*frame.path, key))
            self.diagnostics.append(Diagnostic(
                "E-DUP-KEY", f"duplicate key {key!r} (first defined at line {first.line})", span,
                hint="YAML keeps only one of them; remove or rename the other"))
        else:
            frame.seen[key] = span
        frame.key = key
        self.keys.append(((*frame.path, key), span))
        if event.anchor is not None:
            self.anchors[event.anchor] = _Anchored(key, [((), span)], [])

    def _tag(self, event: Any) -> str:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.loader.resolve(yaml.ScalarNode, event.value, event.implicit)
        return str(tag)

    def scalar(self, event: Any) -> Any:
        self.written += 1
        if "?" in event.value and not event.style:
            self.unsure = True  # libyaml takes 'f?x' and '[x?]' in flow context; PyYAML refuses them
        tag = self._tag(event)
        if event.anchor is not None:
            self.open_anchor(event.anchor, event.start_mark)
        if tag == _STR or tag == _TIMESTAMP or tag == _MERGE:
            return event.value
        if tag not in _SCALAR_TAGS:
            _refuse_tag(tag, event.start_mark)
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, style=event.style)
        try:
            return self.loader.yaml_constructors[tag](self.loader, node)
        except Exception as exc:  # PyYAML's constructors raise ValueError, and IndexError on '!!int '
            digits, limit = sum(c.isdigit() for c in event.value), sys.get_int_max_str_digits()
            if tag == _INT and limit and digits > limit:
                raise _Refused(f"the integer is {digits} digits long; dagserve reads integers of at most "
                               f"{limit} digits",
                               event.start_mark, hint="quote it if it is meant as a string") from exc
            raise _Refused(f"cannot read {event.value[:40]!r} as {_tag_name(tag)}: {exc}", event.start_mark) from exc

    # anchors and aliases -------------------------------------------------------------------

    def open_anchor(self, anchor: str, mark: Any) -> None:
        if anchor in self.anchors:
            first = self.anchor_marks[anchor].line + 1
            raise _Refused(f"the anchor '&{anchor}' is defined twice (first at line {first})", mark,
                           hint="give each anchor its own name")
        self.anchors[anchor] = None
        self.anchor_marks[anchor] = mark

    def record(self, path: Path_, span: Span, anchor: str | None, value: Any) -> None:
        self.values.append((path, span))
        if anchor is not None:
            self.anchors[anchor] = _Anchored(value, [((), span)], [])

    def close(self, frame: _Frame, event: Any) -> Any:
        value = frame.value
        if frame.merges:
            value = self.merge(frame)
        if frame.flow or len(self.values) == frame.log_start:
            span = self.span(frame.start, event.end_mark)
        else:  # a block ends where its last value ends (the parsers disagree on the end mark)
            last = self.values[-1][1]
            span = Span(self.file, frame.start.line + 1, frame.start.column + 1, last.end_line, last.end_col)
        self.values.append((frame.path, span))
        if frame.anchor is not None:
            cut = len(frame.path)
            self.anchors[frame.anchor] = _Anchored(
                value,
                [((), span)] + [(p[cut:], s) for p, s in self.values[frame.log_start:-1]],
                [(p[cut:], s) for p, s in self.keys[frame.key_log_start:]],
            )
        return value

    def alias(self, event: Any, path: Path_, stack: list[_Frame]) -> Any:
        name = event.anchor
        if name not in self.anchors:
            raise yaml.composer.ComposerError(None, None, f"found undefined alias {name!r}", event.start_mark)
        anchored = self.anchors[name]
        if anchored is None:
            line = self.anchor_marks[name].line + 1
            raise _Refused(f"the alias '*{name}' refers to the anchor '&{name}' (line {line}) that contains it; "
                           "a spec cannot contain itself", event.start_mark,
                           hint="anchor a smaller part, or write the value out")
        self.expanded += len(anchored.values)
        if self.expanded > max(ALIAS_BUDGET, 10 * self.written):
            raise _Refused(f"aliases expand to {self.expanded:,} values or more from {self.written:,} written; "
                           "refusing a document that grows exponentially (a 'billion laughs')",
                           event.start_mark, hint="write the repeated parts out, or nest fewer aliases")
        self.values.extend(((*path, *p), s) for p, s in anchored.values)
        self.keys.extend(((*path, *p), s) for p, s in anchored.keys)
        return _copy(anchored.value)

    def merge(self, frame: _Frame) -> dict[Any, Any]:
        """Apply the ``<<`` entries of a mapping as PyYAML's ``flatten_mapping`` does.

        Merged keys come first, in the order written; of a key merged twice (``<<: [*a, *b]``)
        the first occurrence wins, and the mapping's own keys win over all.
        """
        order: list[tuple[int | None, dict[Any, Any]]] = []
        for value in frame.merges:
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, dict) for v in items):
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", frame.start,
                    "expected a mapping or list of mappings for merging, "
                    f"but found {'list' if isinstance(value, list) else 'scalar'}", frame.start)
            order.extend(enumerate(value) if isinstance(value, list) else [(None, value)])
        merged: dict[Any, Any] = {}
        winner: dict[Any, int | None] = {}
        for index, source in order:
            for key, item in source.items():
                if key not in merged:
                    merged[key] = item
                    winner[key] = index
        merged.update(frame.value)
        # the merged values' spans were recorded under PATH.<<[.i]; move the winning ones to PATH.KEY
        prefix = (*frame.path, "<<")
        cut = len(prefix)
        own = set(frame.value)
        listed = isinstance(frame.merges[0], list)
        for log, start in ((self.values, frame.log_start), (self.keys, frame.key_log_start)):
            entries = log[start:]
            del log[start:]
            for path, span in entries:
                if path[:cut] != prefix:
                    log.append((path, span))
                    continue
                rest, index = path[cut:], None
                if listed:
                    if not rest:
                        continue
                    index, rest = rest[0], rest[1:]  # type: ignore[assignment]
                if rest and rest[0] not in own and rest[0] in winner and winner[rest[0]] == index:
                    log.append(((*frame.path, *rest), span))
        return merged


def load_yaml(text: str, file: str) -> YamlDocument:
    """Parse one YAML document safely, keeping source positions.

    Args:
        text: the YAML source.
        file: the name used in spans (usually the path as the user gave it).

    Returns:
        The document; on a syntax error ``data`` is ``None`` and ``diagnostics`` holds
        one ``E-YAML`` error at the position of the problem. An empty document (no
        text, only comments, ``---`` or ``~``) is an empty mapping.

    The parse runs on libyaml when PyYAML has it (faster, which matters for pipelines
    of thousands of nodes); a spec with a syntax error, or with a tab anywhere, is
    parsed by the pure-Python parser, so verdicts and messages are the same wherever
    dagserve runs (``tests/compiler/test_fuzz_loader.py`` checks it).
    """
    problem = _character_problem(text, file)
    if problem is not None:
        return YamlDocument(None, SourceMap(file), [problem])
    if _FAST_LOADER is not None and "\t" not in text:
        # PyYAML's pure-Python parser is the reference. libyaml's verdict is taken when it
        # accepts a text without the constructs where the two are known to differ: tabs
        # as separators ('a:\tb', 'a: b\t') and '?' inside plain values in flow context
        # ('[x?]'); a text libyaml refuses is parsed again too, for PyYAML's verdict and
        # message. tests/compiler/test_fuzz_loader.py looks for more such constructs.
        doc, unsure = _load(text, file, _FAST_LOADER)
        if (doc.data is not None or not doc.diagnostics) and not unsure:
            return doc
    return _load(text, file, yaml.SafeLoader)[0]


_FAST_LOADER: type | None = getattr(yaml, "CSafeLoader", None)


def _load(text: str, file: str, loader_class: type) -> tuple[YamlDocument, bool]:
    """Parse with one loader class; the caller has checked the characters (``_character_problem``).

    Returns the document, and whether it holds a construct the two parsers read differently.
    """
    doc, builder = _parse(text, file, loader_class)
    return doc, builder is not None and builder.unsure


def _parse(text: str, file: str, loader_class: type) -> tuple[YamlDocument, _Builder | None]:
    builder: _Builder | None = None
    loader = None
    try:
        loader = loader_class(text)
        builder = _Builder(file, loader)
        found, data = builder.document()
        if not found or data is None:
            return YamlDocument({}, SourceMap(file), builder.diagnostics), builder
        source = SourceMap(file, dict(builder.values), dict(builder.keys))
        return YamlDocument(data, source, builder.diagnostics, builder.duplicates), builder
    except _Refused as exc:
        at = Span(file, exc.mark.line + 1, exc.mark.column + 1, exc.mark.line + 1, exc.mark.column + 2)
        return YamlDocument(None, SourceMap(file),
                            [Diagnostic("E-YAML", f"YAML error: {exc.message}", at, hint=exc.hint, file=file)]), builder
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        if mark is not None and exc.context_mark is not None and mark.index >= len(text.rstrip()):
            # "found <stream end>": point at what was left open, not past the last line
            mark = exc.context_mark
        span = Span(file, mark.line + 1, mark.column + 1, mark.line + 1, mark.column + 2) if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem and exc.problem.startswith("but "):
            text_ = f"{exc.context}, {problem}"  # "expected a single document ..., but found another"
        else:
            text_ = problem + (f" ({exc.context})" if exc.context and exc.problem else "")
        diag = Diagnostic("E-YAML", f"YAML syntax error: {text_}", span, file=file)
        return YamlDocument(None, SourceMap(file), [diag]), builder
    except yaml.YAMLError as exc:
        return YamlDocument(None, SourceMap(file), [Diagnostic("E-YAML", f"YAML error: {exc}", file=file)]), builder
    finally:
        if loader is not None:
            loader.dispose()
