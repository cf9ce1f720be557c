"""Check a loaded spec against ``pipeline.schema.json`` and turn failures into diagnostics.

jsonschema reports *what* failed and *where* (a path into the document); the
source map turns the path into ``file:line:col``. Each jsonschema validator kind
maps to one stable code, and messages are rewritten to say what the user wrote and
what the format expects (with "did you mean" for misspelt keys).
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError

from dagserve.diagnostics import Diagnostic, did_you_mean
from dagserve.spec.source import Path_, SourceMap

__all__ = [
    "GENERATED_DEF",
    "packaged_schema_text",
    "pipeline_schema",
    "schema_diagnostics",
    "schema_problems",
    "validate_against",
    "validate_with_paths",
]

_JSON_TYPES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


GENERATED_DEF = "ops"
"""The part of the packaged schema generated from the op registry (``dagserve schema``)."""


def packaged_schema_text() -> str:
    """The text of ``pipeline.schema.json`` as shipped (structure plus the generated op part)."""
    return resources.files("dagserve.spec").joinpath("pipeline.schema.json").read_text("utf-8")


@cache
def pipeline_schema() -> dict[str, Any]:
    """The structural pipeline JSON Schema: the packaged file without its generated op part.

    The loader checks structure only; op names and params are the compiler's
    (``E-OP``, ``E-PARAM``), and the generated part exists for editors
    (``dagserve.compiler.editor_schema``).
    """
    schema: dict[str, Any] = json.loads(packaged_schema_text())
    schema.get("$defs", {}).pop(GENERATED_DEF, None)
    schema.get("$defs", {}).get("node", {}).pop("allOf", None)
    return schema


def _where(path: Path_, prefix: Path_) -> str:
    """A readable name for a path: ``node 'decode' param 'color'``."""
    full = (*prefix, *path)
    if len(full) >= 2 and full[0] == "nodes":
        where = f"node '{full[1]}'"
        rest = full[2:]
        if len(rest) >= 2 and rest[0] == "params":
            return f"{where} param '{'.'.join(map(str, rest[1:]))}'"
        if rest == ("params",):
            return f"the params of {where}"
        if rest:
            return f"{where} field '{'.'.join(map(str, rest))}'"
        return where
    if len(full) >= 2 and full[0] in ("inputs", "outputs"):
        kind = "input" if full[0] == "inputs" else "output"
        rest = full[2:]
        suffix = f" field '{'.'.join(map(str, rest))}'" if rest else ""
        return f"pipeline {kind} '{full[1]}'{suffix}"
    if not full:
        return "the spec"
    return f"'{'.'.join(map(str, full))}'"


def _type_names(expected: Any) -> str:
    names = expected if isinstance(expected, list) else [expected]
    return " or ".join(_JSON_TYPES.get(str(n), str(n)) for n in names)


def _show(value: Any) -> str:
    """A value as the user would write it; never fails (bytes, dates, ... use repr)."""
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _describe_value(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return _show(value)


def _one_diagnostic(
    error: ValidationError, source: SourceMap, prefix: Path_, code_prefix: str
) -> Diagnostic:
    path: Path_ = tuple(error.absolute_path)
    full = (*prefix, *path)
    where = _where(path, prefix)
    kind = error.validator
    schema = error.schema if isinstance(error.schema, dict) else {}
    param = code_prefix == "param"

    if kind == "additionalProperties" and isinstance(error.instance, dict):
        known = set(schema.get("properties", {}))
        extra = sorted(str(k) for k in error.instance if k not in known)
        key = extra[0] if extra else "?"
        allowed = ", ".join(sorted(known)) or "none"
        code = "E-PARAM" if param else "E-SCHEMA-KEY"
        return Diagnostic(
            code,
            f"unknown key '{key}' in {where}{did_you_mean(key, known)}",
            source.key((*full, key)),
            hint=f"allowed keys: {allowed}",
        )
    if kind == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else "?"
        at = full
        while at and at not in source.keys:  # e.g. no 'params:' at all: point at the node
            at = at[:-1]
        if param and not path:
            return Diagnostic("E-PARAM", f"{_where((), prefix[:2])} is missing the required param '{missing}'",
                              source.key(at))
        code = "E-PARAM" if param else "E-SCHEMA-REQUIRED"
        return Diagnostic(code, f"{where} is missing the required field '{missing}'", source.key(at))
    if kind == "type":
        code = "E-PARAM" if param else "E-SCHEMA-TYPE"
        return Diagnostic(
            code,
            f"{where} must be {_type_names(error.validator_value)}, "
            f"not {_describe_value(error.instance)}",
            source.value(full),
        )
    if kind == "const" and full == ("dagserve",):
        return Diagnostic(
            "E-VERSION",
            f"unsupported spec version {_show(error.instance)}; this dagserve reads version 1",
            source.value(full),
            hint="write 'dagserve: 1' at the top of the spec",
        )
    if kind in ("oneOf", "anyOf"):
        types = sorted(
            {str(s["type"]) for s in error.validator_value if isinstance(s, dict) and "type" in s}
            | {"string" for s in error.validator_value if isinstance(s, dict) and "$ref" in s}
        )
        code = "E-PARAM" if param else "E-SCHEMA-TYPE"
        return Diagnostic(
            code,
            f"{where} must be {_type_names(types) if types else 'of another form'}, "
            f"not {_describe_value(error.instance)}",
            source.value(full),
        )
    if kind == "enum":
        choices = ", ".join(_show(c) for c in error.validator_value)
        guess = did_you_mean(str(error.instance), [str(c) for c in error.validator_value])
        code = "E-PARAM" if param else "E-SCHEMA-VALUE"
        return Diagnostic(
            code,
            f"{where} is {_show(error.instance)}{guess}",
            source.value(full),
            hint=f"allowed values: {choices}",
        )
    code = "E-PARAM" if param else "E-SCHEMA-VALUE"
    if kind == "pattern":
        # the regex itself means little to a user; the field's description says the form
        described = error
        while described is not None and not (isinstance(described.schema, dict)
                                             and described.schema.get("description")):
            described = described.parent  # e.g. the oneOf whose string alternative this is
        hint = described.schema["description"] if described is not None else f"expected: {error.validator_value}"
        return Diagnostic(code, f"{where} is {_show(error.instance)}, which is not of the expected form",
                          source.value(full), hint=hint)
    if kind == "minLength" and error.validator_value == 1:
        return Diagnostic(code, f"{where} must not be empty", source.value(full))
    return Diagnostic(code, f"{where}: {error.message}", source.value(full))


_VALIDATORS: dict[int, tuple[dict[str, Any], jsonschema.Draft202012Validator]] = {}


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with local ``$ref: '#/$defs/x'`` replaced by their targets.

    jsonschema resolves a ``$ref`` through ``referencing`` every time it meets one,
    which is most of the cost of checking a pipeline of thousands of nodes. Our
    schemas have no recursive refs, so inlining them once is exact.
    """
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/") and ref[8:] in defs:
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**_inline_refs(defs[ref[8:]], defs), **_inline_refs(rest, defs)}
        return {k: _inline_refs(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """One validator per schema object (op params schemas are checked once per node)."""
    cached = _VALIDATORS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    validator = jsonschema.Draft202012Validator(_inline_refs(dict(schema), schema.get("$defs", {})))
    _VALIDATORS[id(schema)] = (schema, validator)  # keeps the schema alive, so its id stays unique
    return validator


def validate_against(
    schema: dict[str, Any],
    instance: Any,
    source: SourceMap,
    prefix: Path_ = (),
    kind: str = "spec",
) -> list[Diagnostic]:
    """Validate ``instance`` (found at ``prefix`` in the document) against ``schema``.

    Args:
        kind: ``"spec"`` for the pipeline format, ``"param"`` for an op's params
            (every failure is then ``E-PARAM``).
    """
    return [d for _, d in validate_with_paths(schema, instance, source, prefix, kind)]


def validate_with_paths(
    schema: dict[str, Any],
    instance: Any,
    source: SourceMap,
    prefix: Path_ = (),
    kind: str = "spec",
) -> list[tuple[Path_, Diagnostic]]:
    """:func:`validate_against`, each diagnostic with the path of the value it is about.

    For an unknown key the path is the key's (``nodes.a.instnaces``), not the mapping's,
    so a reader can tell which parts of the document are still usable.
    """
    validator = _validator(schema)
    out = []
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        for error_ in _fitting_alternative(error):
            d = _one_diagnostic(error_, source, prefix, kind)
            path: Path_ = (*prefix, *error_.absolute_path)
            if error_.validator == "additionalProperties" and isinstance(error_.instance, dict):
                known = set(error_.schema.get("properties", {})) if isinstance(error_.schema, dict) else set()
                extra = sorted(str(k) for k in error_.instance if k not in known)
                path = (*path, extra[0]) if extra else path
            elif error_.validator == "required" and "'" in error_.message:
                path = (*path, error_.message.split("'")[1])  # the missing field's own path
            out.append((path, d if d.span or d.file else replace(d, file=source.file)))
    return out


def _fitting_alternative(error: ValidationError) -> list[ValidationError]:
    """For a ``oneOf``/``anyOf`` failure, the errors of the alternative the value's type fits.

    ``y: {from: a.y, extra: 1}`` is an object, so the object alternative of an output
    applies and its real problem is the unknown key ``extra``; "must be a mapping or
    a string, not a mapping" would be true of neither. When no alternative has the
    value's type, the ``oneOf`` error itself says which types are allowed.
    """
    if error.validator not in ("oneOf", "anyOf") or not error.context:
        return [error]
    by_alternative: dict[int, list[ValidationError]] = {}
    for sub in error.context:
        by_alternative.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
    for index in sorted(by_alternative):
        subs = by_alternative[index]
        if not any(s.validator == "type" and not s.relative_path for s in subs):
            return [e for s in sorted(subs, key=lambda e: list(map(str, e.absolute_path)))
                    for e in _fitting_alternative(s)]
    return [error]


def schema_diagnostics(data: Any, source: SourceMap) -> list[Diagnostic]:
    """Every way ``data`` breaks the pipeline schema."""
    return [d for _, d in schema_problems(data, source)]


def schema_problems(data: Any, source: SourceMap) -> list[tuple[Path_, Diagnostic]]:
    """:func:`schema_diagnostics` with the path each one is about (``()``: the whole spec)."""
    if not isinstance(data, dict):
        return [(
            (),
            Diagnostic(
                "E-SCHEMA-TYPE",
                f"a pipeline spec must be a mapping, not {_describe_value(data)}",
                source.value(()),
                file=source.file,
            ),
        )]
    if data == {} and not source.values:
        return [((), Diagnostic("E-SCHEMA-REQUIRED", "the spec is empty; a pipeline needs at least 'dagserve', "
                                "'name', 'inputs', 'outputs' and 'nodes'", file=source.file,
                                hint="start from an example in pipelines/ or docs/spec.md"))]
    return validate_with_paths(pipeline_schema(), data, source)
