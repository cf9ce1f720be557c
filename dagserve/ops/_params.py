"""Shared pieces of op params schemas, the parsing of their values, and the checks
JSON Schema cannot make.

JSON Schema accepts values that parse but cannot work: ``.nan`` is a number that
passes every ``minimum``/``maximum`` (all comparisons with NaN are false), ``32.0``
is an "integer" (Draft 2020-12 counts integral floats), and ``"1/0"`` matches the
fraction pattern. :func:`value_problems` finds them, so the compiler reports them
with the param's line instead of a kernel failing (or silently misbehaving) later.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from fractions import Fraction
from typing import Any

__all__ = ["SCALE", "SIZE", "ParamProblem", "parse_scale", "value_problems", "with_defaults"]

SIZE: dict[str, Any] = {
    "description": "[height, width] in pixels.",
    "type": "array",
    "items": {"type": "integer", "minimum": 1, "maximum": 65536},
    "minItems": 2,
    "maxItems": 2,
}

SCALE: dict[str, Any] = {
    "description": "A multiplier: a number or a fraction written 'a/b' (e.g. '1/255').",
    "oneOf": [
        {"type": "number"},
        {"type": "string", "format": "fraction", "pattern": r"^\s*-?[0-9.]+\s*/\s*[0-9.]+\s*$"},
    ],
}

INTERPOLATION: dict[str, Any] = {"enum": ["nearest", "bilinear", "area"], "default": "bilinear"}

FLOAT_DTYPES = ("float16", "float32", "float64")
NUMERIC_DTYPES = (
    "bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
    *FLOAT_DTYPES,
)


def parse_scale(value: Any) -> float:
    """``0.5`` -> 0.5, ``"1/255"`` -> 1/255 (exactly as a float).

    Raises:
        ValueError: a part of the fraction is not a number (``"1..2/3"``).
        ZeroDivisionError: the denominator is zero.
    """
    if isinstance(value, str):
        num, den = value.split("/")
        return float(Fraction(num.strip()) / Fraction(den.strip()))
    return float(value)


ParamProblem = tuple[tuple[str | int, ...], str]
"""Where in the params (a path of keys and indices) and what is wrong."""


def _types(schema: dict[str, Any]) -> set[str]:
    declared = schema.get("type")
    return set(declared) if isinstance(declared, list) else {declared} if isinstance(declared, str) else set()


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"


def _alternative(schema: dict[str, Any], value: Any) -> dict[str, Any]:
    """The ``oneOf``/``anyOf`` alternative whose type fits ``value`` (the schema itself if none)."""
    kind = _json_type(value)
    for key in ("oneOf", "anyOf"):
        for sub in schema.get(key, ()):
            if isinstance(sub, dict):
                types = _types(sub)
                if kind in types or (kind == "integer" and "number" in types):
                    return sub
                if kind == "number" and "integer" in types and "number" not in types:
                    return sub
    return schema


def _walk(schema: Any, value: Any, path: tuple[str | int, ...]) -> Iterator[ParamProblem]:
    if not isinstance(schema, dict):
        return
    schema = _alternative(schema, value)
    types = _types(schema)
    if isinstance(value, float):
        if not math.isfinite(value):
            yield path, f"must be a finite number, not {value}"
        elif "integer" in types and "number" not in types:
            yield path, f"must be an integer, not {value!r} (write {int(value)})"
    elif isinstance(value, str) and schema.get("format") == "fraction":
        try:
            parse_scale(value)
        except ZeroDivisionError:
            yield path, f"is '{value}', a division by zero"
        except ValueError:
            yield path, f"is '{value}', which is not a fraction of two numbers (e.g. '1/255')"
    elif isinstance(value, list):
        items = schema.get("items")
        for i, item in enumerate(value):
            yield from _walk(items, item, (*path, i))
    elif isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            yield from _walk(props.get(key, extra), item, (*path, key))


def value_problems(schema: dict[str, Any], params: dict[str, Any]) -> list[ParamProblem]:
    """The values of ``params`` (already valid against ``schema``) that cannot work:
    non-finite numbers, integral floats where the schema wants an integer (``32.0``),
    and fractions that divide by zero or are not numbers."""
    return list(_walk(schema, params, ()))


def with_defaults(schema: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the top-level ``default`` of every absent property filled in."""
    out = dict(params)
    for name, prop in schema.get("properties", {}).items():
        if name not in out and isinstance(prop, dict) and "default" in prop:
            out[name] = prop["default"]
    return out
