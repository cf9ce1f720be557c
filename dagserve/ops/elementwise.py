"""Element-wise ops on two tensors: arithmetic (``tensor.add``, ``sub``, ``mul``, ``div``,
``min``, ``max``) and comparisons (``tensor.equal``, ``not_equal``, ``less``,
``less_equal``, ``greater``, ``greater_equal``), with NumPy broadcasting.

Rules the type rule checks at compile time (documented in docs/ops.md):

* **Broadcasting** is NumPy's, applied to the *item* shapes (the batch dimension is
  never broadcast against an item dimension): shapes are aligned from the right and
  each pair of dims must be equal or one of them 1. A symbolic dim meets a fixed dim
  ``k != 1`` as ``k`` (the symbol must then be 1 or ``k``, which the kernel checks per
  batch); two different symbols give an unknown dim ``?``.
* **Dtypes**: both inputs must have the same dtype - no implicit promotion, because
  NumPy's (``int32 + float32 -> float64``) silently changes what the next node gets.
  Arithmetic needs numbers (not bool, not bytes); ``min``/``max`` and comparisons
  also take bool. Arithmetic keeps the dtype, comparisons give bool.
* **Integer division** floors (NumPy's ``floor_divide``, Python's ``//``); an integer
  division by zero fails the item instead of giving NumPy's silent 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dagserve.ops._params import NUMERIC_DTYPES
from dagserve.ops.base import InferContext, OpDef, PortDef
from dagserve.types import UNKNOWN, Dim, TensorType

__all__ = ["ARITHMETIC", "COMPARISONS", "OPS", "BroadcastError", "broadcast_shapes"]

_NUMBERS = NUMERIC_DTYPES[1:]  # without bool
_ORDERED = NUMERIC_DTYPES

ARITHMETIC: dict[str, tuple[str, str]] = {
    # op suffix -> (NumPy/CuPy function, summary)
    "add": ("add", "a + b, element-wise with broadcasting."),
    "sub": ("subtract", "a - b, element-wise with broadcasting."),
    "mul": ("multiply", "a * b, element-wise with broadcasting."),
    "div": ("divide", "a / b (integers: floor division), element-wise with broadcasting."),
    "min": ("minimum", "The smaller of a and b, element-wise with broadcasting (NaN propagates)."),
    "max": ("maximum", "The larger of a and b, element-wise with broadcasting (NaN propagates)."),
}

COMPARISONS: dict[str, tuple[str, str]] = {
    "equal": ("equal", "a == b as bool, element-wise with broadcasting."),
    "not_equal": ("not_equal", "a != b as bool, element-wise with broadcasting."),
    "less": ("less", "a < b as bool, element-wise with broadcasting."),
    "less_equal": ("less_equal", "a <= b as bool, element-wise with broadcasting."),
    "greater": ("greater", "a > b as bool, element-wise with broadcasting."),
    "greater_equal": ("greater_equal", "a >= b as bool, element-wise with broadcasting."),
}


class BroadcastError(ValueError):
    """Two shapes that cannot broadcast; ``axis`` counts from the end (-1 = last)."""

    def __init__(self, axis: int, a: Dim, b: Dim) -> None:
        super().__init__(f"dim {axis} is {a} in one and {b} in the other")
        self.axis, self.a, self.b = axis, a, b


def _broadcast_dim(a: Dim, b: Dim, axis: int) -> Dim:
    if a == b:
        return a
    if a == 1:
        return b
    if b == 1:
        return a
    if isinstance(a, int) and isinstance(b, int):
        raise BroadcastError(axis, a, b)
    if isinstance(a, int):  # b is a symbol or '?': it can only be 1 or a
        return a
    if isinstance(b, int):
        return b
    return UNKNOWN  # two different symbols (or '?'): either may be 1


def broadcast_shapes(a: Sequence[Dim], b: Sequence[Dim]) -> tuple[Dim, ...]:
    """The NumPy broadcast of two symbolic shapes.

    With only ints it equals ``numpy.broadcast_shapes``; a symbol that meets a fixed
    ``k != 1`` becomes ``k``, a symbol that meets 1 or itself stays, two different
    symbols become ``?``.

    Raises:
        BroadcastError: two fixed dims differ and neither is 1.
    """
    rank = max(len(a), len(b))
    pa = (1,) * (rank - len(a)) + tuple(a)
    pb = (1,) * (rank - len(b)) + tuple(b)
    return tuple(_broadcast_dim(x, y, axis - rank) for axis, (x, y) in enumerate(zip(pa, pb)))


def _layout(a: TensorType, b: TensorType, shape: tuple[Dim, ...]) -> str | None:
    """The layout of the input the result has the shape of (a per-channel constant keeps chw)."""
    layouts = {t.layout for t in (a, b) if t.shape == shape and t.layout} - {None}
    others = {t.layout for t in (a, b) if t.layout} - layouts
    return next(iter(layouts)) if len(layouts) == 1 and not others else None


def _cast_target(a: str, b: str) -> str:
    """The dtype to suggest casting to: the float one of an int/float pair, else NumPy's promotion."""
    floats = [d for d in (a, b) if d.startswith("float")]
    if len(floats) == 1:
        return floats[0]
    return np.result_type(a, b).name


def _rule(comparison: bool, allowed: tuple[str, ...]):  # type: ignore[no-untyped-def]
    kinds = "numeric (int, uint, float) or bool" if "bool" in allowed else "numeric (int, uint or float)"

    def infer(ctx: InferContext) -> dict[str, TensorType]:
        ok = True
        for port in ("a", "b"):
            if not ctx.expect(port, dtypes=allowed, expected=f"a {kinds} tensor",
                              hint=None if "bool" in allowed else
                              "arithmetic on bool is not defined here: cast to an integer dtype first"):
                ok = False
        if not ok:
            return {}
        a: TensorType = ctx.inputs["a"]
        b: TensorType = ctx.inputs["b"]
        if a.dtype != b.dtype:
            common = _cast_target(a.dtype, b.dtype)
            cast = " and ".join(f"'{p}'" for p, t in (("a", a), ("b", b)) if t.dtype != common)
            ctx.mismatch("E-DTYPE", "b", b, f"{a.dtype} (the dtype of '{ctx.source('a')}' on input 'a')",
                         hint=f"{ctx.op} takes two tensors of the same dtype (no implicit promotion): "
                         f"cast input {cast} to {common} with a 'tensor.cast' node")
            return {}
        try:
            shape = broadcast_shapes(a.shape, b.shape)
        except BroadcastError as exc:
            ctx.problem("E-SHAPE", f"inputs of node '{ctx.node}' do not broadcast: '{ctx.source('a')}' "
                        f"produces {a.render(ctx.batched)} and '{ctx.source('b')}' produces "
                        f"{b.render(ctx.batched)}; item dim {exc.axis} is {exc.a} against {exc.b}", "b",
                        hint="NumPy broadcasting: aligned from the last dim, each pair of dims must be "
                        "equal or one of them 1")
            return {}
        dtype = "bool" if comparison else a.dtype
        return {"y": TensorType(dtype, shape, _layout(a, b, shape), a.ragged or b.ragged)}

    return infer


def _op(suffix: str, function: str, summary: str, comparison: bool) -> OpDef:
    allowed = _ORDERED if comparison or suffix in ("min", "max") else _NUMBERS
    return OpDef(
        name=f"tensor.{suffix}",
        summary=summary,
        inputs=(PortDef("a"), PortDef("b")),
        outputs=(PortDef("y", "bool, broadcast shape" if comparison else "the inputs' dtype, broadcast shape"),),
        infer=_rule(comparison, allowed),
        params_schema={"type": "object", "additionalProperties": False, "properties": {}},
        devices=frozenset({"cpu", "gpu"}),
        kernel=f"dagserve.ops.kernels.elementwise:{suffix}",
    )


OPS = [
    *(_op(suffix, fn, summary, False) for suffix, (fn, summary) in ARITHMETIC.items()),
    *(_op(suffix, fn, summary, True) for suffix, (fn, summary) in COMPARISONS.items()),
]
