"""Batch items and their values: split a batch into items without copying, gather items
into a batch without copying when they already sit side by side in memory.

A node's output for a batch of B items is an array with a leading batch dimension
(uniform port) or a list of B arrays (ragged port). Each item keeps an
:class:`ItemValue`: the batch array it came from and its index, so that when the
next node's batch is exactly a contiguous run of the same array, the consumer gets
``base[start:stop]`` — a view of the producer's memory (same data pointer), which
is the zero-copy hand-off. Anything else is gathered with one stack (a copy that
no batching server can avoid).

Works with any array type that supports indexing, slicing and the array API's
``stack`` (NumPy on the CPU, CuPy on the GPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ItemValue", "array_module", "gather", "scatter"]


@dataclass(frozen=True, slots=True)
class ItemValue:
    """One item's value: ``base[index]`` when ``index`` is set, else ``base`` itself.

    ``ready`` is the CUDA event recorded on the producer's stream after it wrote
    ``base`` (GPU only): a consumer on another stream waits on it before reading.
    """

    base: Any
    index: int | None = None
    ready: Any = None

    def get(self) -> Any:
        return self.base if self.index is None else self.base[self.index]


def array_module(x: Any) -> Any:
    """``numpy`` or ``cupy``, whichever owns ``x`` (array-API namespace when available)."""
    namespace = getattr(x, "__array_namespace__", None)
    if namespace is not None:
        try:
            return namespace()
        except Exception:  # numpy<2 or an array type with a partial implementation
            pass
    module = type(x).__module__.split(".")[0]
    if module == "cupy":
        import cupy

        return cupy
    import numpy

    return numpy


def scatter(batch: Any, count: int, ragged: bool, ready: Any = None) -> list[ItemValue]:
    """Split a node's output for ``count`` items into item values (no copies).

    Raises:
        ValueError: the output does not hold ``count`` items.
    """
    if ragged or isinstance(batch, (list, tuple)):
        if len(batch) != count:
            raise ValueError(f"returned {len(batch)} items for a batch of {count}")
        return [ItemValue(v, None, ready) for v in batch]
    shape = getattr(batch, "shape", None)
    if count == 1 and shape and shape[0] == 1:  # the common single-item batch, without the general path
        return [ItemValue(batch, 0, ready)]
    if shape is None or len(shape) == 0 or shape[0] != count:
        got = "a scalar" if not shape else f"leading dimension {shape[0]}"
        raise ValueError(f"returned {got} for a batch of {count}")
    return [ItemValue(batch, i, ready) for i in range(count)]


def gather(values: Sequence[ItemValue], ragged: bool) -> Any:
    """The batch input for ``values`` in order: a view when possible, else a stack.

    A ragged port gets a list of per-item arrays.
    """
    if ragged:
        return [v.get() for v in values]
    first = values[0]
    if first.index is not None:
        base = first.base
        start = first.index
        if len(values) == 1:  # one item: the whole base when it holds just that item, else a one-row view
            return base if start == 0 and base.shape[0] == 1 else base[start:start + 1]
        contiguous = all(
            v.base is base and v.index == start + k for k, v in enumerate(values)
        )
        if contiguous:
            stop = start + len(values)
            if start == 0 and stop == base.shape[0]:
                return base
            return base[start:stop]
    items = [v.get() for v in values]
    if not hasattr(items[0], "shape"):  # bytes items of an object array
        import numpy

        out = numpy.empty(len(items), dtype=object)
        out[:] = items
        return out
    xp = array_module(items[0])
    return xp.stack(items)
