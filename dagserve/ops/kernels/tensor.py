"""Kernels of the small tensor ops: identity, cast, transpose, concat, split, slice, add, mul.

All are **batched** and device-generic (``xp`` is NumPy or CuPy): a uniform input
arrives as one array whose first axis is the batch, a ragged input as a list of
per-item arrays, and the output keeps the same form. Axes and permutations in
params are *per item* (axis 0 is an item's first axis); the batch axis always
stays first.

Memory: ``identity`` returns the very same object; ``cast`` to the input's own
dtype returns the input; every other result is a C-contiguous array (a
transpose or a strided slice is copied once, so the next node - often a model
runtime that refuses strided inputs - gets plain memory). ``cast`` follows NumPy's
casting (floats to integers truncate toward zero; out-of-range values wrap), and
``add``/``mul`` keep the input dtype (integer overflow wraps, as in NumPy).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import Any

import numpy as np

from dagserve.ops.base import KernelContext
from dagserve.ops.kernels._array import DeviceArrays
from dagserve.ops.kernels._common import KernelInputError, op_params, readable

__all__ = ["add", "cast", "concat", "identity", "mul", "slice", "split", "transpose"]


def _is_list(x: Any) -> bool:
    return isinstance(x, (list, tuple))


class _Batched:
    """A batched kernel applying ``one(item_or_batch, batched)`` to uniform or ragged input."""

    per_item = False
    inline = False

    def __init__(self, ctx: KernelContext) -> None:
        self.ctx = ctx
        self.params = op_params(ctx)
        self.arrays = DeviceArrays(ctx.device, f"node '{ctx.node}' ({ctx.op})")
        self.xp = self.arrays.xp

    def _x(self, inputs: dict[str, Any]) -> Any:
        if "x" not in inputs:
            raise KernelInputError(f"{self.ctx.op} needs input 'x'")
        return inputs["x"]

    def _map(self, value: Any, fn: Callable[[Any, int], Any]) -> Any:
        """``fn(array, lead)`` per item of a list (lead 0), or once on a batch (lead 1)."""
        if _is_list(value):
            return [fn(self.arrays.asarray(v, "x"), 0) for v in value]
        return fn(self.arrays.asarray(value, "x"), 1)

    def _axis(self, axis: int, rank: int, lead: int) -> int:
        """An item axis (negative counts from the end) as an axis of the array."""
        item_rank = rank - lead
        if not -item_rank <= axis < item_rank:
            raise KernelInputError(f"axis {axis} is out of range for items of rank {item_rank}")
        return (axis % item_rank) + lead


class IdentityKernel(_Batched):
    """``tensor.identity``: the input object itself (zero copy)."""

    inline = True

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"y": self._x(inputs)}


class CastKernel(_Batched):
    """``tensor.cast``: ``x.astype(dtype)``; the input itself when the dtype already matches."""

    def __init__(self, ctx: KernelContext) -> None:
        super().__init__(ctx)
        name = self.params["dtype"]
        if name == "bytes":
            raise ValueError(f"node '{ctx.node}': tensor.cast cannot cast to bytes")
        self.dtype = np.dtype(name)

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        def one(x: Any, lead: int) -> Any:
            if x.dtype == object:
                raise KernelInputError("tensor.cast cannot cast bytes")
            return x.astype(self.dtype, copy=False)

        with self.arrays.scope():
            return {"y": self._map(self._x(inputs), one)}


class TransposeKernel(_Batched):
    """``tensor.transpose``: permute each item's axes (contiguous result)."""

    def __init__(self, ctx: KernelContext) -> None:
        super().__init__(ctx)
        self.perm = tuple(int(p) for p in self.params["perm"])
        if sorted(self.perm) != list(range(len(self.perm))):
            raise ValueError(f"node '{ctx.node}': perm {list(self.perm)} is not a permutation")

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        def one(x: Any, lead: int) -> Any:
            if x.ndim - lead != len(self.perm):
                raise KernelInputError(
                    f"tensor.transpose perm {list(self.perm)} needs items of rank {len(self.perm)}, "
                    f"got {readable(x.shape[lead:])}"
                )
            axes = tuple(range(lead)) + tuple(p + lead for p in self.perm)
            return self.xp.ascontiguousarray(x.transpose(axes))

        with self.arrays.scope():
            return {"y": self._map(self._x(inputs), one)}


class ConcatKernel(_Batched):
    """``tensor.concat``: join the parts (one per reference) along an item axis."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        parts = self._x(inputs)
        if not _is_list(parts) or not parts:
            raise KernelInputError("tensor.concat needs a list of inputs 'x'")
        axis = int(self.params["axis"])
        with self.arrays.scope():
            if any(_is_list(p) for p in parts):  # ragged: concatenate item by item
                count = len(parts[0]) if _is_list(parts[0]) else int(parts[0].shape[0])
                items = [[p[i] for p in parts] for i in range(count)]
                return {"y": [self._join([self.arrays.asarray(v, "x") for v in row], axis, 0) for row in items]}
            return {"y": self._join([self.arrays.asarray(p, "x") for p in parts], axis, 1)}

    def _join(self, arrays: list[Any], axis: int, lead: int) -> Any:
        first = arrays[0]
        ax = self._axis(axis, first.ndim, lead)
        for k, a in enumerate(arrays[1:], start=1):
            same = a.ndim == first.ndim and all(
                a.shape[d] == first.shape[d] for d in range(a.ndim) if d != ax
            )
            if not same or a.dtype != first.dtype:
                raise KernelInputError(
                    f"tensor.concat part {k} is {a.dtype}{readable(a.shape)} but part 0 is "
                    f"{first.dtype}{readable(first.shape)}; they must match except on axis {axis}"
                )
        return self.xp.concatenate(arrays, axis=ax)


class SplitKernel(_Batched):
    """``tensor.split``: parts ``y0, y1, ...`` of the given sizes along an item axis."""

    def __init__(self, ctx: KernelContext) -> None:
        super().__init__(ctx)
        self.sizes = [int(s) for s in self.params["sizes"]]
        self.axis = int(self.params["axis"])
        bounds = np.cumsum(self.sizes)
        self.cuts = [int(c) for c in bounds[:-1]]
        self.total = int(bounds[-1])

    def _split(self, x: Any, lead: int) -> list[Any]:
        ax = self._axis(self.axis, x.ndim, lead)
        if int(x.shape[ax]) != self.total:
            raise KernelInputError(
                f"tensor.split sizes {self.sizes} add up to {self.total} but axis {self.axis} has {x.shape[ax]}"
            )
        return [self.xp.ascontiguousarray(part) for part in self.xp.split(x, self.cuts, axis=ax)]

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        value = self._x(inputs)
        with self.arrays.scope():
            if _is_list(value):
                per_item = [self._split(self.arrays.asarray(v, "x"), 0) for v in value]
                return {f"y{i}": [parts[i] for parts in per_item] for i in range(len(self.sizes))}
            parts = self._split(self.arrays.asarray(value, "x"), 1)
            return {f"y{i}": part for i, part in enumerate(parts)}


class SliceKernel(_Batched):
    """``tensor.slice``: ``x[start:stop:step]`` along an item axis (contiguous result)."""

    def __init__(self, ctx: KernelContext) -> None:
        super().__init__(ctx)
        p = self.params
        self.axis = int(p["axis"])
        stop = p.get("stop")
        self.slice = builtins.slice(int(p["start"]), None if stop is None else int(stop), int(p["step"]))

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        def one(x: Any, lead: int) -> Any:
            ax = self._axis(self.axis, x.ndim, lead)
            index = [builtins.slice(None)] * x.ndim
            index[ax] = self.slice
            part = x[tuple(index)]
            if part.shape[ax] == 0:
                raise KernelInputError(f"tensor.slice {self.slice} of axis {self.axis} (size {x.shape[ax]}) is empty")
            return self.xp.ascontiguousarray(part)

        with self.arrays.scope():
            return {"y": self._map(self._x(inputs), one)}


class _ScalarKernel(_Batched):
    """``math.add`` / ``math.mul``: an elementwise op with the scalar ``value``, dtype kept."""

    ufunc = "add"

    def __init__(self, ctx: KernelContext) -> None:
        super().__init__(ctx)
        self.value = self.params["value"]

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        op = getattr(self.xp, self.ufunc)

        def one(x: Any, lead: int) -> Any:
            if x.dtype == object or x.dtype == bool:
                raise KernelInputError(f"math.{self.ufunc[:3]} needs a numeric tensor, got {x.dtype}")
            dtype = x.dtype
            if dtype.kind in "iu":
                if isinstance(self.value, float) and not float(self.value).is_integer():
                    raise KernelInputError(f"math.{self.ufunc[:3]} of {dtype} input by non-integer {self.value}")
                info = np.iinfo(dtype)
                if not info.min <= int(self.value) <= info.max:
                    raise KernelInputError(f"value {self.value} does not fit the input dtype {dtype}")
            return op(x, dtype.type(self.value), dtype=dtype)

        with self.arrays.scope():
            return {"y": self._map(self._x(inputs), one)}


class AddKernel(_ScalarKernel):
    ufunc = "add"


class MulKernel(_ScalarKernel):
    ufunc = "multiply"


def identity(ctx: KernelContext) -> IdentityKernel:
    """Factory of ``tensor.identity``."""
    return IdentityKernel(ctx)


def cast(ctx: KernelContext) -> CastKernel:
    """Factory of ``tensor.cast``."""
    return CastKernel(ctx)


def transpose(ctx: KernelContext) -> TransposeKernel:
    """Factory of ``tensor.transpose``."""
    return TransposeKernel(ctx)


def concat(ctx: KernelContext) -> ConcatKernel:
    """Factory of ``tensor.concat``."""
    return ConcatKernel(ctx)


def split(ctx: KernelContext) -> SplitKernel:
    """Factory of ``tensor.split``."""
    return SplitKernel(ctx)


def slice(ctx: KernelContext) -> SliceKernel:  # shadows the builtin on purpose: the op's name
    """Factory of ``tensor.slice``."""
    return SliceKernel(ctx)


def add(ctx: KernelContext) -> AddKernel:
    """Factory of ``math.add``."""
    return AddKernel(ctx)


def mul(ctx: KernelContext) -> MulKernel:
    """Factory of ``math.mul``."""
    return MulKernel(ctx)
