"""Batches of ragged items for models with dynamic dimensions: pad each batch to its widest item.

A text recogniser (PP-OCR's CRNN/SVTR) reads ``[N, 3, 48, W]`` with ``W`` free per
call: crops of different widths batch together once each is right-padded to the
widest crop of the batch, which is what PaddleOCR and RapidOCR do and what the model
was trained for (its CTC head reads the padded tail as blank). Padding to the widest
item of each batch, rather than to width buckets, keeps the batcher's rule the same
for every node; the price is compute on the padding of narrower items.

Device-generic: works on any array type with ``shape``, ``dtype`` and an array
namespace (NumPy, CuPy); the output is one fresh array with a leading batch dim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["pad_to_widest"]


def _namespace(x: Any) -> Any:
    namespace = getattr(x, "__array_namespace__", None)
    if namespace is not None:
        try:
            return namespace()
        except Exception:  # numpy<2: no array API namespace
            pass
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    import numpy

    return numpy


def pad_to_widest(items: Sequence[Any], value: float = 0.0, min_shape: Sequence[int | None] | None = None) -> Any:
    """Stack ``items`` (same rank and dtype) after padding each at the end of every dim to the largest.

    Args:
        items: per-item arrays, no batch dim.
        value: what the padding holds.
        min_shape: per dim, a size the batch is padded to at least (``None``: none).

    Returns:
        ``[len(items), *widest]``, the items in the top-left corner of each row.

    Raises:
        ValueError: no items, or items of different ranks or dtypes.
    """
    if not items:
        raise ValueError("cannot pad an empty batch")
    rank = len(items[0].shape)
    dtype = items[0].dtype
    for k, item in enumerate(items):
        if len(item.shape) != rank:
            raise ValueError(f"item {k} has rank {len(item.shape)} but item 0 has rank {rank}")
        if item.dtype != dtype:
            raise ValueError(f"item {k} is {item.dtype} but item 0 is {dtype}")
    shape = [max(int(item.shape[d]) for item in items) for d in range(rank)]
    if min_shape is not None:
        if len(min_shape) != rank:
            raise ValueError(f"min_shape {list(min_shape)} has {len(min_shape)} dims but the items have {rank}")
        shape = [max(s, m) if m is not None else s for s, m in zip(shape, min_shape)]
    xp = _namespace(items[0])
    out = xp.full((len(items), *shape), value, dtype=dtype)
    for k, item in enumerate(items):
        index = (k, *(slice(0, int(n)) for n in item.shape))
        out[index] = item
    return out
