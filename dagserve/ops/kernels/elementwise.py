"""Kernels of the element-wise ops on two tensors (``tensor.add`` ... ``tensor.greater_equal``).

Batched and device-generic (``xp`` is NumPy or CuPy, the same code on both). A
uniform input arrives as one array whose first axis is the batch, a ragged one as a
list of per-item arrays; when either input is a list the op runs item by item and
returns a list. Broadcasting is per item: the lower-rank input gets unit axes
inserted *after* the batch axis, so the batch axis never meets an item axis.

Inputs are only read; every result is a fresh C-contiguous array. Integer ``div``
floors and refuses a zero divisor (NumPy would give 0 with a warning); float ``div``
follows IEEE 754 (``x/0 = ±inf``, ``0/0 = nan``).
"""

from __future__ import annotations

import builtins
from contextlib import nullcontext
from typing import Any

import numpy as np

from dagserve.ops.base import KernelContext
from dagserve.ops.elementwise import ARITHMETIC, COMPARISONS
from dagserve.ops.kernels._common import KernelInputError, readable
from dagserve.ops.kernels.tensor import _Batched

__all__ = [
    "BinaryKernel", "add", "div", "equal", "greater", "greater_equal", "less", "less_equal", "max", "min",
    "mul", "not_equal", "sub",
]

_NUMBERS = frozenset("iuf")  # dtype kinds arithmetic takes
_ORDERED = frozenset("biuf")  # ... and min/max and comparisons


class BinaryKernel(_Batched):
    """``y = f(a, b)`` with per-item NumPy broadcasting; ``f`` names an ``xp`` function."""

    def __init__(self, ctx: KernelContext, suffix: str) -> None:
        super().__init__(ctx)
        self.suffix = suffix
        self.comparison = suffix in COMPARISONS
        self.function = (COMPARISONS if self.comparison else ARITHMETIC)[suffix][0]
        self.kinds = _ORDERED if self.comparison or suffix in ("min", "max") else _NUMBERS

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        for port in ("a", "b"):
            if port not in inputs:
                raise KernelInputError(f"{self.ctx.op} needs input '{port}'")
        a, b = inputs["a"], inputs["b"]
        with self.arrays.scope():
            if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
                items_a, items_b = self._items(a, "a"), self._items(b, "b")
                if len(items_a) != len(items_b):
                    raise KernelInputError(f"{self.ctx.op} got {len(items_a)} items on 'a' but "
                                           f"{len(items_b)} on 'b'")
                return {"y": [self._apply(x, y, 0) for x, y in zip(items_a, items_b)]}
            return {"y": self._apply(self.arrays.asarray(a, "a"), self.arrays.asarray(b, "b"), 1)}

    def _items(self, value: Any, port: str) -> list[Any]:
        if isinstance(value, (list, tuple)):
            return [self.arrays.asarray(v, port) for v in value]
        array = self.arrays.asarray(value, port)
        return [array[i] for i in range(int(array.shape[0]))]

    def _apply(self, a: Any, b: Any, lead: int) -> Any:
        for port, x in (("a", a), ("b", b)):
            if x.dtype.kind not in self.kinds:
                raise KernelInputError(f"input '{port}' of {self.ctx.op} must be "
                                       f"{'numeric or bool' if 'b' in self.kinds else 'numeric'}, "
                                       f"got {x.dtype}{readable(x.shape[lead:])}")
        if a.dtype != b.dtype:
            raise KernelInputError(f"inputs of {self.ctx.op} must have the same dtype, got {a.dtype} and {b.dtype}")
        if lead and a.shape[:lead] != b.shape[:lead]:
            raise KernelInputError(f"{self.ctx.op} got batches of {a.shape[0]} and {b.shape[0]} items")
        rank = builtins.max(a.ndim, b.ndim)
        a, b = self._align(a, rank, lead), self._align(b, rank, lead)
        try:
            np.broadcast_shapes(tuple(a.shape), tuple(b.shape))
        except ValueError:
            raise KernelInputError(f"{self.ctx.op} inputs do not broadcast: items of shape "
                                   f"{readable(a.shape[lead:])} and {readable(b.shape[lead:])}") from None
        if self.suffix == "div" and a.dtype.kind in "iu":
            if bool(self.xp.any(b == 0)):
                raise KernelInputError(f"{self.ctx.op}: integer division by zero")
            function = "floor_divide"
        else:
            function = self.function
        # IEEE results (inf, nan) are the answer for floats; NumPy would also warn about them
        with np.errstate(all="ignore") if self.xp is np else nullcontext():
            out = getattr(self.xp, function)(a, b)
        return self.xp.ascontiguousarray(out)

    @staticmethod
    def _align(x: Any, rank: int, lead: int) -> Any:
        """``x`` with unit axes inserted after the batch axis up to ``rank`` (a view)."""
        if x.ndim == rank:
            return x
        shape = tuple(x.shape)
        return x.reshape(shape[:lead] + (1,) * (rank - x.ndim) + shape[lead:])


def add(ctx: KernelContext) -> BinaryKernel:
    """Factory of ``tensor.add``."""
    return BinaryKernel(ctx, "add")


def sub(ctx: KernelContext) -> BinaryKernel:
    """Factory of ``tensor.sub``."""
    return BinaryKernel(ctx, "sub")


def mul(ctx: KernelContext) -> BinaryKernel:
    """Factory of ``tensor.mul``."""
    return BinaryKernel(ctx, "mul")


def div(ctx: KernelContext) -> BinaryKernel:
    """Factory of ``tensor.div``."""
    return BinaryKernel(ctx, "div")


def min(ctx: KernelContext) -> BinaryKernel:  # shadows the builtin on purpose: the op's name
    """Factory of ``tensor.min``."""
    return BinaryKernel(ctx, "min")


def max(ctx: KernelContext) -> BinaryKernel:  # shadows the builtin on purpose: the op's name
    """Factory of ``tensor.max``."""
    return BinaryKernel(ctx, "max")


def equal(ctx: KernelContext) -> BinaryKernel:
    """Factory of ``tensor.equal``."""
    return BinaryKernel(ctx, "equal")


def not_equal(ctx: KernelContext) -> BinaryKernel:
    """Factory of ``tensor.not_equal``."""
    return BinaryKernel(ctx, "not_equal")


def less(ctx: KernelContext) -> BinaryKernel:
    """Factory of ``tensor.less``."""
    return BinaryKernel(ctx, "less")


def less_equal(ctx: KernelContext) -> BinaryKernel:
    """Factory of ``tensor.less_equal``."""
    return BinaryKernel(ctx, "less_equal")


def greater(ctx: KernelContext) -> BinaryKernel:
    """Factory of ``tensor.greater``."""
    return BinaryKernel(ctx, "greater")


def greater_equal(ctx: KernelContext) -> BinaryKernel:
    """Factory of ``tensor.greater_equal``."""
    return BinaryKernel(ctx, "greater_equal")
