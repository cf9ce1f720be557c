"""Safe YAML loading that remembers where every key and value came from.

PyYAML's composer already knows each node's start and end mark; the usual
``yaml.safe_load`` throws them away and silently keeps the last of two equal keys.
:func:`load_yaml` walks the composed node tree itself: it builds plain Python data
(dicts, lists, scalars), a :class:`SourceMap` from each value's path to its span,
and a diagnostic for every duplicate key.

Only plain data is constructed: mappings, lists, strings, numbers, booleans and
null. Any other tag (``!!python/...``, ``!!binary``, ``!!set``, custom ``!tags``)
is a syntax error, even on a list or mapping, whose tag the walk would otherwise
drop silently; timestamps stay the strings the user wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from dagserve.diagnostics import Diagnostic, Span

__all__ = ["Path_", "SourceMap", "YamlDocument", "load_yaml"]

Path_ = tuple[str | int, ...]
"""A path into the document, e.g. ``("nodes", "decode", "params", "color")``."""


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


_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")
)
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_STR = "tag:yaml.org,2002:str"
_SEQ, _MAP = "tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"


def _refuse_tag(node: yaml.Node) -> None:
    raise yaml.constructor.ConstructorError(
        None, None,
        f"the tag '{node.tag.replace('tag:yaml.org,2002:', '!!')}' is not allowed in a spec "
        "(only plain mappings, lists, strings, numbers, booleans and null)",
        node.start_mark,
    )


def _span(file: str, node: yaml.Node) -> Span:
    start, end = node.start_mark, node.end_mark
    return Span(file, start.line + 1, start.column + 1, end.line + 1, end.column + 1)


class _Builder:
    def __init__(self, file: str, loader: yaml.SafeLoader | yaml.CSafeLoader) -> None:
        self.file = file
        self.loader = loader
        self.source = SourceMap(file)
        self.diagnostics: list[Diagnostic] = []

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.source.values[path] = _span(self.file, node)
        if isinstance(node, yaml.MappingNode):
            if node.tag != _MAP:
                _refuse_tag(node)
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _SEQ:
                _refuse_tag(node)
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        if node.tag == _TIMESTAMP:
            return str(node.value)
        if node.tag == _STR:
            return node.value  # the common case, without construct_object's bookkeeping
        if node.tag not in _SCALAR_TAGS:
            _refuse_tag(node)
        return self.loader.yaml_constructors[node.tag](self.loader, node)

    def _key(self, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        return self.build(node, ("<key>",))

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        seen: dict[Any, Span] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self._key(key_node)
            span = _span(self.file, key_node)
            if isinstance(key, (dict, list)):
                continue
            if key in seen:
                first = seen[key]
                self.diagnostics.append(
                    Diagnostic(
                        "E-DUP-KEY",
                        f"duplicate key {key!r} (first defined at line {first.line})",
                        span,
                        hint="YAML keeps only one of them; remove or rename the other",
                    )
                )
            else:
                seen[key] = span
        self.loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node)
            if isinstance(key, (dict, list)):
                key = str(key)
            child = (*path, key)
            self.source.keys[child] = _span(self.file, key_node)
            out[key] = self.build(value_node, child)
        return out


def load_yaml(text: str, file: str) -> YamlDocument:
    """Parse one YAML document safely, keeping source positions.

    Args:
        text: the YAML source.
        file: the name used in spans (usually the path as the user gave it).

    Returns:
        The document; on a syntax error ``data`` is ``None`` and ``diagnostics`` holds
        one ``E-YAML`` error at the position PyYAML reports.

    The parse runs on libyaml when PyYAML has it (about 10x faster, which matters for
    pipelines of thousands of nodes); a spec with a syntax error is parsed again by
    the pure-Python parser, so messages are the same wherever dagserve runs.
    """
    if _FAST_LOADER is not None:
        doc = _load(text, file, _FAST_LOADER)
        if doc.data is not None or not doc.diagnostics:
            return doc
    return _load(text, file, yaml.SafeLoader)


_FAST_LOADER: type | None = getattr(yaml, "CSafeLoader", None)


def _load(text: str, file: str, loader_class: type) -> YamlDocument:
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return YamlDocument({}, SourceMap(file), [])
        builder = _Builder(file, loader)
        data = builder.build(root, ())
        return YamlDocument(data, builder.source, builder.diagnostics)
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
        return YamlDocument(None, SourceMap(file), [diag])
    except yaml.YAMLError as exc:
        return YamlDocument(None, SourceMap(file), [Diagnostic("E-YAML", f"YAML error: {exc}", file=file)])
    finally:
        loader.dispose()
