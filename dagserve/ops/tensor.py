"""Small tensor ops pipelines need between steps: identity, cast, transpose, concat,
split, slice, and scalar arithmetic (``math.add``, ``math.mul``).

Axes and permutations are per batch item: axis 0 is the first dimension of an item,
never the batch dimension.
"""

from __future__ import annotations

import numpy as np

from dagserve.ops._params import NUMERIC_DTYPES
from dagserve.ops.base import InferContext, OpDef, PortDef
from dagserve.types import UNKNOWN, Dim, TensorType

__all__ = ["OPS"]

_ANY_DTYPE = (*NUMERIC_DTYPES, "bytes")
_LAYOUT_PERMS = {("hwc", (2, 0, 1)): "chw", ("chw", (1, 2, 0)): "hwc"}


def _x(ctx: InferContext) -> TensorType | None:
    t = ctx.inputs.get("x")
    return t if isinstance(t, TensorType) else None


def _axis(ctx: InferContext, rank: int, axis: int, port: str = "x") -> int | None:
    if not -rank <= axis < rank:
        ctx.problem("E-PARAM", f"node '{ctx.node}' param 'axis' is {axis} but '{ctx.source(port)}' "
                    f"has rank {rank} per item", param="axis")
        return None
    return axis % rank


def _infer_identity(ctx: InferContext) -> dict[str, TensorType]:
    x = _x(ctx)
    return {"y": x} if x else {}


def _infer_cast(ctx: InferContext) -> dict[str, TensorType]:
    x = _x(ctx)
    if x is None:
        return {}
    if x.dtype == "bytes" or ctx.params["dtype"] == "bytes":
        ctx.mismatch("E-DTYPE", "x", x, "a numeric tensor (bytes cannot be cast)")
        return {}
    return {"y": TensorType(ctx.params["dtype"], x.shape, x.layout, x.ragged)}


def _infer_transpose(ctx: InferContext) -> dict[str, TensorType]:
    x = _x(ctx)
    if x is None:
        return {}
    perm = tuple(ctx.params["perm"])
    if sorted(perm) != list(range(x.rank)):
        ctx.problem("E-PARAM", f"node '{ctx.node}' param 'perm' {list(perm)} is not a permutation of "
                    f"the {x.rank} axes of '{ctx.source('x')}' ({x.render(ctx.batched)})", param="perm")
        return {}
    layout = _LAYOUT_PERMS.get((x.layout or "", perm))
    return {"y": TensorType(x.dtype, tuple(x.shape[i] for i in perm), layout, x.ragged)}


def _infer_concat(ctx: InferContext) -> dict[str, TensorType]:
    parts = ctx.inputs.get("x")
    if not isinstance(parts, list) or not parts or any(p is None for p in parts):
        return {}
    first = parts[0]
    axis = _axis(ctx, first.rank, ctx.params["axis"])
    if axis is None:
        return {}
    total: Dim = 0
    for i, part in enumerate(parts):
        want = [None if a == axis else d for a, d in enumerate(first.shape)]
        if not ctx.expect("x", dtypes=(first.dtype,), shape=tuple(want), index=i,
                          expected=f"{first.dtype} matching {ctx.source('x', 0)} except on axis {axis}"):
            return {}
        d = part.shape[axis]
        total = total + d if isinstance(total, int) and isinstance(d, int) else UNKNOWN
    shape = tuple(total if a == axis else d for a, d in enumerate(first.shape))
    return {"y": TensorType(first.dtype, shape, first.layout, any(p.ragged for p in parts))}


def _infer_split(ctx: InferContext) -> dict[str, TensorType]:
    x = _x(ctx)
    if x is None:
        return {}
    axis = _axis(ctx, x.rank, ctx.params["axis"])
    if axis is None:
        return {}
    sizes = ctx.params["sizes"]
    dim = x.shape[axis]
    if isinstance(dim, int) and sum(sizes) != dim:
        ctx.problem("E-PARAM", f"node '{ctx.node}' param 'sizes' adds up to {sum(sizes)} but axis {axis} "
                    f"of '{ctx.source('x')}' has {dim}", param="sizes")
        return {}
    return {
        f"y{i}": TensorType(x.dtype, tuple(s if a == axis else d for a, d in enumerate(x.shape)),
                            None, x.ragged)
        for i, s in enumerate(sizes)
    }


def _infer_slice(ctx: InferContext) -> dict[str, TensorType]:
    x = _x(ctx)
    if x is None:
        return {}
    axis = _axis(ctx, x.rank, ctx.params["axis"])
    if axis is None:
        return {}
    dim = x.shape[axis]
    start, stop, step = ctx.params["start"], ctx.params.get("stop"), ctx.params["step"]
    if isinstance(dim, int):
        new: Dim = len(range(*slice(start, stop, step).indices(dim)))
        if new == 0:
            ctx.problem("E-PARAM", f"node '{ctx.node}' slice [{start}:{stop}:{step}] of axis {axis} "
                        f"(size {dim}) is empty", param="start")
            return {}
    else:
        new = UNKNOWN
    shape = tuple(new if a == axis else d for a, d in enumerate(x.shape))
    return {"y": TensorType(x.dtype, shape, None, x.ragged)}


def _value_fits(ctx: InferContext, dtype: str) -> bool:
    """Report a ``value`` the input dtype cannot hold (the kernel would refuse every item)."""
    value = ctx.params["value"]
    if dtype.startswith("float"):
        largest = float(np.finfo(dtype).max)
        if abs(value) <= largest:
            return True
        ctx.problem("E-PARAM", f"node '{ctx.node}' param 'value' is {value}, which does not fit the {dtype} "
                    f"input '{ctx.source('x')}' (largest {largest:g})", param="value",
                    hint="cast the input to a wider float dtype first (tensor.cast), or use a smaller value")
        return False
    info = np.iinfo(dtype)
    if info.min <= value <= info.max:
        return True
    ctx.problem("E-PARAM", f"node '{ctx.node}' param 'value' is {value}, which does not fit the {dtype} "
                f"input '{ctx.source('x')}' ({info.min} to {info.max})", param="value",
                hint="cast the input to a wider dtype first (tensor.cast), or use a value in range")
    return False


def _infer_arith(ctx: InferContext) -> dict[str, TensorType]:
    if not ctx.expect("x", dtypes=NUMERIC_DTYPES[1:], expected="a numeric tensor"):
        return {}
    x = _x(ctx)
    assert x is not None
    if isinstance(ctx.params["value"], float) and not x.dtype.startswith("float"):
        ctx.problem("E-DTYPE", f"node '{ctx.node}' adds/multiplies a float value to "
                    f"{x.dtype} input '{ctx.source('x')}'", "x",
                    hint="cast the input to float32 first, or use an integer value")
        return {}
    if not _value_fits(ctx, x.dtype):
        return {}
    return {"y": x}


def _unary(name: str, summary: str, infer, props: dict, required=()) -> OpDef:  # type: ignore[no-untyped-def]
    return OpDef(
        name=name,
        summary=summary,
        inputs=(PortDef("x"),),
        outputs=(PortDef("y"),),
        infer=infer,
        params_schema={"type": "object", "additionalProperties": False,
                       "required": list(required), "properties": props},
        devices=frozenset({"cpu", "gpu"}),
        kernel=f"dagserve.ops.kernels.tensor:{name.split('.')[1]}",
    )


OPS = [
    _unary("tensor.identity", "Pass the input through unchanged (no copy).", _infer_identity, {}),
    _unary("tensor.cast", "Cast to another dtype.", _infer_cast,
           {"dtype": {"enum": list(_ANY_DTYPE)}}, required=("dtype",)),
    _unary("tensor.transpose", "Permute the item's axes.", _infer_transpose,
           {"perm": {"type": "array", "items": {"type": "integer", "minimum": 0}}}, required=("perm",)),
    OpDef(
        name="tensor.concat",
        summary="Concatenate tensors along an item axis.",
        inputs=(PortDef("x", "a list of references", variadic=True),),
        outputs=(PortDef("y"),),
        infer=_infer_concat,
        params_schema={"type": "object", "additionalProperties": False,
                       "properties": {"axis": {"type": "integer", "default": 0}}},
        devices=frozenset({"cpu", "gpu"}),
        kernel="dagserve.ops.kernels.tensor:concat",
    ),
    OpDef(
        name="tensor.split",
        summary="Split along an item axis into parts y0, y1, ... of the given sizes.",
        inputs=(PortDef("x"),),
        outputs=(),
        infer=_infer_split,
        params_schema={"type": "object", "additionalProperties": False, "required": ["sizes"],
                       "properties": {"axis": {"type": "integer", "default": 0},
                                      "sizes": {"type": "array", "minItems": 1,
                                                "items": {"type": "integer", "minimum": 1}}}},
        devices=frozenset({"cpu", "gpu"}),
        kernel="dagserve.ops.kernels.tensor:split",
        dynamic_ports=True,
    ),
    _unary("tensor.slice", "x[start:stop:step] along an item axis.", _infer_slice,
           {"axis": {"type": "integer", "default": 0}, "start": {"type": "integer", "default": 0},
            "stop": {"type": "integer"}, "step": {"type": "integer", "minimum": 1, "default": 1}}),
    _unary("math.add", "x + value.", _infer_arith, {"value": {"type": "number"}}, required=("value",)),
    _unary("math.mul", "x * value.", _infer_arith, {"value": {"type": "number"}}, required=("value",)),
]
