"""Kernel of ``classify.topk``: the k best classes of each item, with scores and labels.

Batched: ``logits`` arrives as ``[N, C]`` (or a list of ``[C]`` items when ragged)
and every output has the same leading dimension. Per item:

* ``softmax`` (default on) turns logits into probabilities, numerically stable:
  ``exp(x - max(x)) / sum(...)`` in float32 (float64 for float64 input);
* the top ``k`` are sorted by descending score with a *stable* sort: equal scores
  keep ascending class index (``numpy.argsort(-x, kind="stable")[:k]``);
* ``labels`` (``bytes[k]``, UTF-8) is produced when the node has a labels file, one
  label per non-empty line, read once when the kernel is built.

A NaN or infinite logit fails its item with a clear error: the ranking of such a
vector means nothing, and the runtime retries a failed batch item by item so only
that request fails.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dagserve.ops.base import KernelContext
from dagserve.ops.kernels._array import DeviceArrays
from dagserve.ops.kernels._common import KernelInputError, check_dtype, op_params, readable

__all__ = ["TopKKernel", "read_labels", "softmax", "topk"]

_FLOATS = ("float16", "float32", "float64")


def read_labels(path: str) -> list[bytes]:
    """One UTF-8 label per non-empty line of ``path`` (trailing newline stripped)."""
    with open(path, encoding="utf-8") as fh:
        return [line.rstrip("\r\n").encode("utf-8") for line in fh if line.strip()]


def softmax(xp: Any, x: Any) -> Any:
    """Softmax over the last axis, stable against large logits."""
    shifted = x - x.max(axis=-1, keepdims=True)
    e = xp.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def _stable_desc(xp: Any, x: Any) -> Any:
    if xp is np:
        return np.argsort(-x, axis=-1, kind="stable")
    return xp.argsort(-x, axis=-1)  # CuPy sorts with a stable radix sort


class TopKKernel:
    """``classify.topk`` (batched; see the module docstring)."""

    per_item = False

    def __init__(self, ctx: KernelContext) -> None:
        p = op_params(ctx)
        self.arrays = DeviceArrays(ctx.device, f"node '{ctx.node}' ({ctx.op})")
        self.xp = self.arrays.xp
        self.k = int(p["k"])
        self.softmax = bool(p["softmax"])
        path = ctx.files.get("labels") if ctx.files else None
        self.labels: np.ndarray | None = None
        if path is not None:
            names = read_labels(path)
            self.labels = np.empty(len(names), dtype=object)
            self.labels[:] = names

    def _rows(self, logits: Any) -> dict[str, Any]:
        """Top-k of ``[..., C]`` logits (any leading dims)."""
        xp = self.xp
        check_dtype(logits, _FLOATS, "input 'logits'")
        if logits.ndim < 1 or logits.shape[-1] == 0:
            raise KernelInputError(f"input 'logits' must be [C] per item with C >= 1, got {readable(logits.shape)}")
        classes = int(logits.shape[-1])
        if self.k > classes:
            raise KernelInputError(f"classify.topk has k={self.k} but the logits have only {classes} classes")
        if self.labels is not None and len(self.labels) != classes:
            raise KernelInputError(
                f"the labels file has {len(self.labels)} labels but the logits have {classes} classes"
            )
        work = logits.astype(np.float64 if logits.dtype == np.float64 else np.float32, copy=False)
        finite = xp.isfinite(work).all(axis=-1)
        if not bool(finite.all()):
            bad = np.nonzero(np.asarray(finite if xp is np else finite.get()).reshape(-1) == 0)[0]
            raise KernelInputError(f"input 'logits' holds NaN or infinite values (items {bad.tolist()[:8]})")
        if self.softmax:
            work = softmax(xp, work)
        order = _stable_desc(xp, work)[..., : self.k]
        out = {
            "scores": xp.take_along_axis(work, order, axis=-1).astype(np.float32, copy=False),
            "indices": order.astype(np.int64, copy=False),
        }
        if self.labels is not None:
            host = order if xp is np else order.get()
            out["labels"] = self.labels[host]
        return out

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if "logits" not in inputs:
            raise KernelInputError("classify.topk needs input 'logits'")
        value = inputs["logits"]
        with self.arrays.scope():
            if isinstance(value, (list, tuple)):
                items = [self._rows(self.arrays.asarray(v, "logits")) for v in value]
                return {key: [item[key] for item in items] for key in (items[0] if items else {})}
            return self._rows(self.arrays.asarray(value, "logits"))


def topk(ctx: KernelContext) -> TopKKernel:
    """Factory of ``classify.topk`` (batched)."""
    return TopKKernel(ctx)
