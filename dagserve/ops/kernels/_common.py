"""Pieces every built-in kernel shares: the input error, params with defaults, checks."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from dagserve.errors import KernelInputError
from dagserve.ops._params import with_defaults
from dagserve.ops.base import KernelContext, OpDef

__all__ = ["KernelInputError", "check_dtype", "op_params", "readable"]


@cache
def _builtin_ops() -> dict[str, OpDef]:
    from dagserve.ops import classify, detect, image, ocr, tensor

    return {op.name: op for module in (image, detect, classify, tensor, ocr) for op in module.OPS}


def op_params(ctx: KernelContext) -> dict[str, Any]:
    """The node's params with the op schema's defaults filled in.

    The compiler already fills defaults into a plan; doing it again here keeps a
    kernel correct when it is built by hand (tests, benchmarks, notebooks).
    """
    op = _builtin_ops().get(ctx.op)
    params = dict(ctx.params)
    return with_defaults(dict(op.params_schema), params) if op is not None else params


def check_dtype(x: Any, allowed: tuple[str, ...], what: str) -> None:
    """Raise :class:`KernelInputError` unless ``x.dtype`` is one of ``allowed``."""
    name = np.dtype(x.dtype).name
    if name not in allowed:
        raise KernelInputError(f"{what} must be {'|'.join(allowed)}, got {name}{readable(x.shape)}")


def readable(shape: Any) -> str:
    """``(3, 4)`` -> ``"[3,4]"`` for messages."""
    return "[" + ",".join(str(int(d)) for d in shape) + "]"
