"""Kernel of ``detect.nms``: decode a detector's raw output, suppress, map boxes back.

Per item (each image has its own number of detections). Steps:

1. **candidates** — per anchor, the best class and its score (``yolov5``: objectness
   x class probability), kept when ``score > score_threshold`` and the box is finite;
   boxes become xyxy in float64 (``cx ± w/2`` for the YOLO layouts);
2. **suppression** — :mod:`._nms` (greedy on the CPU, suppression matrix on a GPU),
   class-aware unless ``class_agnostic``, at most ``max_detections`` kept;
3. **mapping** — through the ``transform`` of ``image.letterbox``/``image.resize``:
   ``x_src = (x - tx) / sx``, ``y_src = (y - ty) / sy``, clipped to
   ``[0, src_w] x [0, src_h]`` when ``clip`` (without a transform boxes stay in the
   detector's coordinates and are not clipped);
4. **outputs** — ``boxes float32[K,4]``, ``scores float32[K]``, ``labels int64[K]``,
   ``count int32[]``; with ``pad`` every output has ``max_detections`` rows, the
   padding being boxes and scores 0 and labels -1.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dagserve.ops.base import KernelContext
from dagserve.ops.kernels._array import DeviceArrays, to_host
from dagserve.ops.kernels._common import KernelInputError, check_dtype, op_params, readable
from dagserve.ops.kernels._nms import nms_greedy, nms_matrix

__all__ = ["NmsKernel", "candidates", "nms"]

_FLOATS = ("float16", "float32", "float64")


def _xyxy(xp: Any, cxcywh: Any) -> Any:
    """``[N, 4]`` centre/size boxes -> xyxy, in float64 (exact for float32 inputs)."""
    c = cxcywh.astype(np.float64)
    half_w, half_h = c[:, 2] / 2, c[:, 3] / 2
    return xp.stack([c[:, 0] - half_w, c[:, 1] - half_h, c[:, 0] + half_w, c[:, 1] + half_h], axis=1)


def candidates(xp: Any, fmt: str, inputs: dict[str, Any], score_threshold: float) -> tuple[Any, Any, Any]:
    """The boxes (float64 xyxy), scores (float32) and labels (int64) above the threshold.

    Raises:
        KernelInputError: a missing input, a wrong rank, shape or dtype.
    """
    threshold = np.float32(score_threshold)
    if fmt == "boxes_scores":
        boxes, scores = inputs.get("boxes"), inputs.get("scores")
        if boxes is None or scores is None:
            raise KernelInputError("detect.nms with format 'boxes_scores' needs inputs 'boxes' and 'scores'")
        check_dtype(boxes, _FLOATS, "input 'boxes'")
        check_dtype(scores, _FLOATS, "input 'scores'")
        if scores.ndim == 1:
            scores = scores[:, None]
        if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.ndim != 2 or scores.shape[0] != boxes.shape[0]:
            raise KernelInputError(
                f"detect.nms expects boxes [A,4] and scores [A,C] per item, got {readable(boxes.shape)} "
                f"and {readable(scores.shape)}"
            )
        if scores.shape[1] == 0:
            raise KernelInputError("input 'scores' has no classes (shape [A,0])")
        cls = scores.astype(np.float32, copy=False)
        best = cls.max(axis=1)
        index = xp.nonzero(best > threshold)[0]
        labels = cls[index].argmax(axis=1)
        xyxy = boxes[index].astype(np.float64)
        score = best[index]
    else:
        pred = inputs.get("predictions")
        if pred is None:
            raise KernelInputError(f"detect.nms with format '{fmt}' needs input 'predictions'")
        check_dtype(pred, _FLOATS, "input 'predictions'")
        base = 4 if fmt == "yolov8" else 5
        rows_axis = 0 if fmt == "yolov8" else 1
        if pred.ndim != 2 or pred.shape[rows_axis] <= base:
            layout = "[4+C,A]" if fmt == "yolov8" else "[A,5+C]"
            raise KernelInputError(
                f"detect.nms format '{fmt}' expects predictions {layout} with C >= 1 per item, "
                f"got {readable(pred.shape)}"
            )
        # Row reductions below are ~40x slower on a column-major view: make it C order once.
        pred = xp.ascontiguousarray(pred.astype(np.float32, copy=False))
        if fmt == "yolov8":
            cls = pred[4:]  # [C, A]
            best = cls.max(axis=0)
            index = xp.nonzero(best > threshold)[0]
            labels = cls[:, index].argmax(axis=0)
            xyxy = _xyxy(xp, pred[:4, index].T)
            score = best[index]
        else:
            cls = pred[:, 5:]
            best = pred[:, 4] * cls.max(axis=1)
            index = xp.nonzero(best > threshold)[0]
            labels = cls[index].argmax(axis=1)
            xyxy = _xyxy(xp, pred[index, :4])
            score = best[index]
    finite = xp.isfinite(xyxy).all(axis=1)
    if not bool(finite.all()):
        xyxy, score, labels = xyxy[finite], score[finite], labels[finite]
    return xyxy, score.astype(np.float32, copy=False), labels.astype(np.int64, copy=False)


class NmsKernel:
    """``detect.nms`` for one item (see the module docstring)."""

    per_item = True

    def __init__(self, ctx: KernelContext) -> None:
        p = op_params(ctx)
        self.arrays = DeviceArrays(ctx.device, f"node '{ctx.node}' ({ctx.op})")
        self.xp = self.arrays.xp
        self.format: str = p["format"]
        self.iou_threshold = float(p["iou_threshold"])
        self.score_threshold = float(p["score_threshold"])
        self.max_detections = int(p["max_detections"])
        self.class_aware = not bool(p["class_agnostic"])
        self.pad = bool(p["pad"])
        self.clip = bool(p["clip"])
        self._suppress = nms_matrix if self.arrays.is_gpu else nms_greedy

    def _transform(self, value: Any) -> tuple[float, ...] | None:
        if value is None:
            return None
        t = np.asarray(to_host(value), dtype=np.float64).reshape(-1)
        if t.size != 6:
            raise KernelInputError(
                f"input 'transform' must be float32[6] (sx, sy, tx, ty, src_w, src_h), got {t.size} values"
            )
        sx, sy, tx, ty, w, h = (float(v) for v in t)
        if not all(math.isfinite(v) for v in t) or sx <= 0 or sy <= 0 or w <= 0 or h <= 0:
            raise KernelInputError(f"input 'transform' {t.tolist()} is not a valid image transform "
                                   "(scales and source size must be positive and finite)")
        return sx, sy, tx, ty, w, h

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        xp = self.xp
        with self.arrays.scope():
            arrays = {k: self.arrays.asarray(v, k) for k, v in inputs.items()
                      if k in ("predictions", "boxes", "scores") and v is not None}
            transform = self._transform(inputs.get("transform"))
            boxes, scores, labels = candidates(xp, self.format, arrays, self.score_threshold)
            keep = self._suppress(xp, boxes, scores, labels, self.iou_threshold, self.max_detections,
                                  self.class_aware)
            index = xp.asarray(keep)
            boxes, scores, labels = boxes[index], scores[index], labels[index]
            if transform is not None:
                sx, sy, tx, ty, w, h = transform
                boxes = (boxes - xp.asarray([tx, ty, tx, ty])) / xp.asarray([sx, sy, sx, sy])
                if self.clip:
                    boxes = xp.clip(boxes, 0.0, xp.asarray([w, h, w, h]))
            count = int(keep.shape[0])
            out_boxes = boxes.astype(np.float32)
            if self.pad:
                k = self.max_detections
                padded_boxes = xp.zeros((k, 4), np.float32)
                padded_scores = xp.zeros(k, np.float32)
                padded_labels = xp.full(k, -1, np.int64)
                padded_boxes[:count] = out_boxes
                padded_scores[:count] = scores
                padded_labels[:count] = labels
                out_boxes, scores, labels = padded_boxes, padded_scores, padded_labels
            return {
                "boxes": out_boxes,
                "scores": scores.astype(np.float32, copy=False),
                "labels": labels,
                "count": xp.asarray(np.int32(count)),
            }


def nms(ctx: KernelContext) -> NmsKernel:
    """Factory of ``detect.nms`` (per item)."""
    return NmsKernel(ctx)
