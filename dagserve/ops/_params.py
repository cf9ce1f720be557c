"""Shared pieces of op params schemas, and the parsing of their values."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

__all__ = ["SCALE", "SIZE", "parse_scale", "with_defaults"]

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
        {"type": "string", "pattern": r"^\s*-?[0-9.]+\s*/\s*[0-9.]+\s*$"},
    ],
}

INTERPOLATION: dict[str, Any] = {"enum": ["nearest", "bilinear", "area"], "default": "bilinear"}

FLOAT_DTYPES = ("float16", "float32", "float64")
NUMERIC_DTYPES = (
    "bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
    *FLOAT_DTYPES,
)


def parse_scale(value: Any) -> float:
    """``0.5`` -> 0.5, ``"1/255"`` -> 1/255 (exactly as a float)."""
    if isinstance(value, str):
        num, den = value.split("/")
        return float(Fraction(num.strip()) / Fraction(den.strip()))
    return float(value)


def with_defaults(schema: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the top-level ``default`` of every absent property filled in."""
    out = dict(params)
    for name, prop in schema.get("properties", {}).items():
        if name not in out and isinstance(prop, dict) and "default" in prop:
            out[name] = prop["default"]
    return out
