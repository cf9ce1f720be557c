"""The typed, source-mapped pipeline document.

:func:`parse_spec` reads a spec file and returns a :class:`PipelineSpec` whose every
part remembers its span, plus the diagnostics found while reading it: YAML errors,
duplicate keys, schema violations, bad names, malformed references. The compiler
builds its IR from a ``PipelineSpec``; nothing after this module sees YAML.
"""

from __future__ import annotations

import gc
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagserve.diagnostics import Diagnostic, Span
from dagserve.spec.schema import schema_problems
from dagserve.spec.source import Path_, SourceMap, load_yaml
from dagserve.types import UNKNOWN, Dim

__all__ = [
    "NodeSpec",
    "OutputSpec",
    "PipelineSpec",
    "Ref",
    "TensorSpec",
    "gc_paused",
    "parse_ref",
    "parse_spec",
    "resolve_path",
]

NODE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
TENSOR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]*$")
"""Pipeline input and output names: wire names as Triton takes them, so a model exported from
TensorFlow ('input:0', 'dense/Softmax:0') or PyTorch ('input.1') can be served under its own
names. A reference splits at its first dot only, so ``inputs.input:0`` and ``inputs.input.1``
still read one pipeline input."""
TENSOR_RULE = "a letter or '_', then letters, digits and _ . : / -"
RESERVED = frozenset({"inputs", "outputs"})
# ports may hold dots, and ':', '/', '-' as in models exported from TensorFlow ('dense/Softmax:0')
_PORT = re.compile(r"^[A-Za-z0-9_:/-]+(\.[A-Za-z0-9_:/-]+)*$")


@dataclass(frozen=True)
class Ref:
    """A parsed reference: ``inputs.NAME`` or ``NODE.PORT``."""

    text: str
    node: str | None
    """The producing node, or ``None`` for a pipeline input."""
    port: str
    """The node's output port, or the pipeline input's name."""
    span: Span | None = field(default=None, compare=False)

    @property
    def is_input(self) -> bool:
        return self.node is None


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[Dim, ...]
    layout: str | None = None
    ragged: bool = False
    description: str = ""
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class OutputSpec:
    name: str
    ref: Ref
    description: str = ""
    span: Span | None = field(default=None, compare=False)


@dataclass(frozen=True)
class NodeSpec:
    name: str
    op: str
    inputs: dict[str, tuple[Ref, ...]]
    params: dict[str, Any]
    device: str = "auto"
    instances: int = 1
    batching: dict[str, Any] | None = None
    description: str = ""
    warmup: bool | dict[str, Any] = True
    """``true``, ``false`` or ``{"inputs": {port: item}}`` (see docs/spec.md, warm-up)."""
    variadic: frozenset[str] = frozenset()
    """Input ports written as a list in the spec."""
    span: Span | None = field(default=None, compare=False)
    unchecked: frozenset[str] = frozenset()
    """Fields whose schema error was reported; read as their defaults and not checked
    further. ``params`` and ``inputs`` also when the node has an unknown key (it may be
    a misspelt one of them)."""
    unreadable_ports: frozenset[str] = frozenset()
    """Input ports with a reference that could not be read (schema error or ``E-REF-SYNTAX``)."""


@dataclass
class PipelineSpec:
    """A pipeline as written, with positions. Built by :func:`parse_spec`."""

    file: str
    root: str
    name: str
    version: int
    description: str
    max_batch_size: int
    inputs: dict[str, TensorSpec]
    outputs: dict[str, OutputSpec]
    nodes: dict[str, NodeSpec]
    source: SourceMap
    text: str = ""
    unreadable: frozenset[str] = frozenset()
    """Inputs (``inputs.NAME``) and nodes written in the spec but left out of it because
    their error was reported: references to them fail without a diagnostic of their own."""
    partial: frozenset[str] = frozenset()
    """What the spec lacks because of reported errors: a section ("inputs", "outputs",
    "nodes") that is missing or unreadable as a whole, and "refs" when a reference could
    not be read. The compiler then reports no reference into such a section, and no
    reachability warning that the missing part could explain."""

    @property
    def spec_dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.file))


def parse_ref(text: str, span: Span | None) -> Ref | Diagnostic:
    """Parse a reference, or explain why it is not one."""
    head, dot, port = text.partition(".")
    if not dot or not head or not port or not _PORT.match(port):
        return Diagnostic(
            "E-REF-SYNTAX",
            f"'{text}' is not a reference",
            span,
            hint="write 'inputs.NAME' for a pipeline input or 'NODE.PORT' for a node's output",
        )
    if head == "inputs":
        return Ref(text, None, port, span)
    if head == "outputs":
        return Diagnostic(
            "E-REF-SYNTAX",
            f"'{text}' refers to a pipeline output; only inputs and node ports can be read",
            span,
        )
    return Ref(text, head, port, span)


def resolve_path(value: str, spec_file: str, root: str) -> tuple[str | None, str | None]:
    """Resolve a path written in a spec; return ``(absolute path, None)`` or ``(None, why)``.

    Paths are relative to the spec file and must stay inside the pipeline
    repository ``root`` (symlinks are followed before the check).
    """
    if os.path.isabs(value) or value.startswith("~"):
        return None, f"absolute path '{value}' is not allowed; write it relative to the spec file"
    base = os.path.dirname(os.path.abspath(spec_file))
    resolved = os.path.realpath(os.path.join(base, value))
    real_root = os.path.realpath(root)
    if os.path.commonpath([resolved, real_root]) != real_root:
        return None, f"path '{value}' leaves the pipeline repository '{root}'"
    return resolved, None


def _int(value: Any) -> Any:
    """JSON Schema counts 8.0 as an integer; make it 8, so plans (and hashes) agree."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _int(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_int(v) for v in value]
    return value


def _dim(value: Any) -> Dim:
    value = _int(value)
    if value == -1 or value == UNKNOWN:
        return UNKNOWN
    return value if isinstance(value, int) else str(value)


class _Reader:
    """Turns loaded data into a :class:`PipelineSpec`, checking names and references.

    Parts with a schema error (``broken``: the paths the schema diagnostics are about)
    are read as their defaults or left out, and recorded (``unchecked``, ``unreadable``,
    ``partial``), so that the compiler still checks everything else and reports every
    independent problem in one run, without cascading errors from the broken parts.
    """

    def __init__(self, data: dict[str, Any], source: SourceMap, broken: set[Path_] | None = None) -> None:
        self.data = data
        self.source = source
        self.diagnostics: list[Diagnostic] = []
        self.broken: dict[Path_, None] = dict.fromkeys(broken or ())
        self.unreadable: set[str] = set()
        self.partial: set[str] = set()

    def _is_broken(self, path: Path_) -> bool:
        """Whether a schema error is about ``path`` or anything inside it."""
        n = len(path)
        return any(p[:n] == path for p in self.broken)

    def _fields(self, path: Path_) -> set[str]:
        """The fields directly under ``path`` that have a schema error somewhere inside."""
        n = len(path)
        return {str(p[n]) for p in self.broken if len(p) > n and p[:n] == path}

    def _value(self, key: str, default: Any) -> Any:
        return default if self._is_broken((key,)) else self.data.get(key, default)

    def _section(self, key: str) -> dict[Any, Any]:
        value = self.data.get(key)
        if not isinstance(value, dict) or (key,) in self.broken:
            self.partial.add(key)  # missing, not a mapping, or empty where entries are required
            return value if isinstance(value, dict) else {}
        return value

    def _name_check(self, kind: str, name: str, pattern: re.Pattern[str], path: tuple[str, ...]) -> None:
        span = self.source.key(path)
        if kind == "node" and name in RESERVED:
            self.diagnostics.append(
                Diagnostic("E-NAME", f"'{name}' is reserved and cannot name a node", span,
                           hint=f"rename the node, e.g. '{name}_node'")
            )
        elif not pattern.match(name):
            rule = "[a-z_][a-z0-9_]*" if kind == "node" else f"[A-Za-z_][A-Za-z0-9_.:/-]* ({TENSOR_RULE})"
            self.diagnostics.append(
                Diagnostic("E-NAME", f"invalid {kind} name '{name}': names must match {rule}", span)
            )

    def _ref(self, text: Any, path: tuple[str | int, ...]) -> Ref | None:
        if not isinstance(text, str) or self._is_broken(path):
            self.partial.add("refs")
            return None
        parsed = parse_ref(text, self.source.value(path))
        if isinstance(parsed, Diagnostic):
            self.diagnostics.append(parsed)
            self.partial.add("refs")
            return None
        return parsed

    def inputs(self) -> dict[str, TensorSpec]:
        out = {}
        for name, body in self._section("inputs").items():
            name = str(name)
            self._name_check("input", name, TENSOR_NAME, ("inputs", name))
            if self._is_broken(("inputs", name)) or not isinstance(body, dict):
                self.unreadable.add(f"inputs.{name}")
                continue
            out[name] = TensorSpec(
                name,
                body["dtype"],
                tuple(_dim(d) for d in body["shape"]),
                body.get("layout"),
                bool(body.get("ragged", False)),
                body.get("description", ""),
                self.source.key(("inputs", name)),
            )
        return out

    def outputs(self) -> dict[str, OutputSpec]:
        out = {}
        for name, body in self._section("outputs").items():
            name = str(name)
            self._name_check("output", name, TENSOR_NAME, ("outputs", name))
            path: tuple[str, ...] = ("outputs", name)
            text, desc = body, ""
            if isinstance(body, dict):
                text, path = body.get("from"), ("outputs", name, "from")
                desc = "" if self._is_broken(("outputs", name, "description")) else body.get("description", "")
            ref = self._ref(text, path)
            if ref is not None:
                out[name] = OutputSpec(name, ref, desc, self.source.key(("outputs", name)))
        return out

    def nodes(self) -> dict[str, NodeSpec]:
        out = {}
        known = {"op", "description", "inputs", "params", "device", "instances", "batching"}
        for name, body in self._section("nodes").items():
            name = str(name)
            self._name_check("node", name, NODE_NAME, ("nodes", name))
            base_path: Path_ = ("nodes", name)
            if not isinstance(body, dict) or base_path in self.broken or name in RESERVED:
                self.unreadable.add(name)
                continue
            unchecked = self._fields(base_path)
            if unchecked - known:  # an unknown key may be a misspelt 'params' or 'inputs'
                unchecked |= {"params", "inputs"}

            def field_(key: str, default: Any, body: dict[Any, Any] = body, unchecked: set[str] = unchecked) -> Any:
                return default if key in unchecked and key not in ("params", "inputs") else body.get(key, default)

            inputs: dict[str, tuple[Ref, ...]] = {}
            variadic, unreadable_ports = set(), set()
            raw_inputs = body.get("inputs") or {}
            if ("nodes", name, "inputs") in self.broken or not isinstance(raw_inputs, dict):
                raw_inputs = {}
            for port, value in raw_inputs.items():
                port = str(port)
                base = ("nodes", name, "inputs", port)
                if isinstance(value, list):
                    variadic.add(port)
                    refs = [self._ref(v, (*base, i)) for i, v in enumerate(value)]
                else:
                    refs = [self._ref(value, base)]
                if None in refs or self._is_broken(base):
                    unreadable_ports.add(port)
                inputs[port] = tuple(r for r in refs if r is not None)
            params = body.get("params") or {}
            if "params" in self._fields(base_path) or not isinstance(params, dict):
                params = {}
            op = field_("op", "")
            out[name] = NodeSpec(
                name=name,
                op=op if isinstance(op, str) else "",
                inputs=inputs,
                params=dict(params),
                device=field_("device", "auto"),
                instances=_int(field_("instances", 1)),
                batching=_int(field_("batching", None)),
                description=field_("description", ""),
                warmup=field_("warmup", True),
                variadic=frozenset(variadic),
                span=self.source.key(("nodes", name)),
                unchecked=frozenset(unchecked),
                unreadable_ports=frozenset(unreadable_ports),
            )
        return out


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while reading or compiling a spec.

    Reading and compiling allocate hundreds of thousands of long-lived objects (the
    data, its source map, the IR) and almost no cyclic garbage; the collector's
    repeated scans of that growing heap were half the time of a 10,000-node compile.
    Reference counting still frees everything acyclic, and the collector resumes
    (if it was on) when the block ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def parse_spec(path: str | os.PathLike[str], root: str | None = None) -> tuple[PipelineSpec | None, list[Diagnostic]]:
    """Read, schema-check and type a spec file.

    Args:
        path: the spec file. Spans use it as given, so messages show the path the
            user typed.
        root: the pipeline repository; paths in the spec may not leave it.
            Default: the spec's own directory.

    Returns:
        ``(spec, diagnostics)``; ``spec`` is ``None`` when the file is not a
        well-formed spec (then ``diagnostics`` says why).
    """
    with gc_paused():
        return _parse_spec(os.fspath(path), root)


def _parse_spec(file: str, root: str | None) -> tuple[PipelineSpec | None, list[Diagnostic]]:
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return None, [Diagnostic("E-IO", f"cannot read spec: {reason}", file=file)]
    doc = load_yaml(text, file)
    diagnostics = list(doc.diagnostics)
    if doc.data is None:
        return None, diagnostics
    problems = schema_problems(doc.data, doc.source)
    diagnostics.extend(d for _, d in problems)
    if (not isinstance(doc.data, dict) or not doc.data or any(not path for path, _ in problems)
            or any(d.code == "E-VERSION" for _, d in problems)):
        return None, diagnostics  # not a spec at all: nothing else is worth checking
    # the rest is read around the schema errors, so the compiler reports the others too
    reader = _Reader(doc.data, doc.source, {path for path, _ in problems} | set(doc.duplicates))
    name = reader._value("name", "")
    spec = PipelineSpec(
        file=file,
        root=os.path.abspath(root) if root else os.path.dirname(os.path.abspath(file)),
        name=name if isinstance(name, str) else "",
        version=_int(reader._value("version", 1)),
        description=reader._value("description", ""),
        max_batch_size=_int(reader._value("max_batch_size", 0)),
        inputs=reader.inputs(),
        outputs=reader.outputs(),
        nodes=reader.nodes(),
        source=doc.source,
        text=text,
        unreadable=frozenset(reader.unreadable),
        partial=frozenset(reader.partial),
    )
    diagnostics.extend(reader.diagnostics)
    return spec, diagnostics
