"""Non-maximum suppression with OpenCV's exact conventions, on NumPy or CuPy.

Two algorithms compute the same kept set, both written against an array namespace:

* :func:`nms_greedy` — the CPU algorithm: visit candidates by descending score,
  keep one, drop every later candidate that overlaps it too much, repeat. Each
  round is one vectorised IoU of the kept box against the survivors, so the work is
  O(kept x candidates) and there is no Python loop over box pairs.
* :func:`nms_matrix` — the GPU algorithm: the suppression matrix ("candidate j is
  suppressed by earlier candidate i") is computed on the device in row blocks, bit
  packed, and scanned greedily on the host. The device does all the O(n^2) work; the
  host scan only touches rows of kept boxes.

Conventions, identical to ``cv2.dnn.NMSBoxes`` (OpenCV's ``NMSFast_``):

* a candidate passes when ``score > score_threshold`` (strictly greater, in
  float32); NaN scores never pass;
* candidates are ordered by descending score with a stable sort (ties keep input
  order);
* IoU is computed on the boxes as given, in float64, with areas ``w * h`` (no "+1"
  pixel), as ``overlap = 1 - float32(1 - inter / union)``; two boxes whose areas sum
  to ~0 count as overlapping completely (OpenCV's ``jaccardDistance``);
* a candidate is suppressed when ``overlap > iou_threshold`` (kept when ``<=``);
* class-aware NMS only compares boxes of the same label — the result of
  ``cv2.dnn.NMSBoxesBatched`` whenever its coordinate-offset trick separates classes
  (non-negative coordinates);
* ``max_detections`` truncates the kept list (``NMSBoxes``' ``top_k`` instead caps
  the candidates *before* suppression; the tests compare with ``top_k = 0``).

Boxes with a negative width or height have zero area here (OpenCV multiplies the
two negative sides); candidates with a non-finite coordinate are dropped.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["nms_greedy", "nms_matrix", "overlap", "stable_order"]

_DBL_EPSILON = float(np.finfo(np.float64).eps)
_BLOCK = 512


def stable_order(xp: ModuleType, scores: Any) -> Any:
    """Indices that sort ``scores`` descending, ties in input order."""
    if xp is np:
        return np.argsort(-scores, kind="stable")
    return xp.argsort(-scores)  # CuPy's sort is a stable radix sort


def overlap(xp: ModuleType, a: Any, area_a: Any, b: Any, area_b: Any) -> Any:
    """OpenCV's ``rectOverlap`` of boxes ``a`` and ``b`` (xyxy float64, broadcasting): float32."""
    iw = xp.minimum(a[..., 2], b[..., 2]) - xp.maximum(a[..., 0], b[..., 0])
    ih = xp.minimum(a[..., 3], b[..., 3]) - xp.maximum(a[..., 1], b[..., 1])
    inter = xp.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    total = area_a + area_b
    with np.errstate(divide="ignore", invalid="ignore"):
        distance = xp.where(total <= _DBL_EPSILON, 0.0, 1.0 - inter / (total - inter))
    # xp.subtract, not `scalar - array`: a NumPy scalar on the left must not meet a CuPy array.
    return xp.subtract(np.float32(1.0), distance.astype(np.float32))


def areas(xp: ModuleType, boxes: Any) -> Any:
    """``w * h`` of xyxy boxes, with negative sides counted as 0."""
    return xp.maximum(boxes[:, 2] - boxes[:, 0], 0.0) * xp.maximum(boxes[:, 3] - boxes[:, 1], 0.0)


def nms_greedy(xp: ModuleType, boxes: Any, scores: Any, labels: Any, iou_threshold: float,
               max_detections: int, class_aware: bool) -> np.ndarray:
    """Indices (into the inputs) of the kept boxes, by descending score.

    Candidates are sorted once; each kept box is compared with the *contiguous tail*
    of the sorted candidates after it (views, no gathers), marking what it suppresses.

    Args:
        boxes: ``float64[N, 4]`` xyxy.
        scores: ``float32[N]`` (already above the score threshold).
        labels: ``int64[N]`` class of each box.
    """
    n = int(boxes.shape[0])
    if n == 0 or max_detections <= 0:
        return np.zeros(0, np.int64)
    order = stable_order(xp, scores)
    b = boxes[order]
    x0, y0, x1, y1 = (xp.ascontiguousarray(b[:, k]) for k in range(4))
    area = xp.maximum(x1 - x0, 0.0) * xp.maximum(y1 - y0, 0.0)
    lab = labels[order]
    threshold = np.float32(iou_threshold)
    one = np.float32(1.0)
    suppressed = xp.zeros(n, dtype=bool)
    keep: list[int] = []
    i = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        while True:
            keep.append(i)
            j = i + 1
            if len(keep) >= max_detections or j >= n:
                break
            iw = xp.minimum(x1[i], x1[j:]) - xp.maximum(x0[i], x0[j:])
            ih = xp.minimum(y1[i], y1[j:]) - xp.maximum(y0[i], y0[j:])
            inter = xp.maximum(iw, 0.0) * xp.maximum(ih, 0.0)
            total = area[i] + area[j:]
            distance = xp.where(total <= _DBL_EPSILON, 0.0, 1.0 - inter / (total - inter))
            sup = xp.subtract(one, distance.astype(np.float32)) > threshold
            if class_aware:
                sup &= lab[j:] == lab[i]
            tail = suppressed[j:]
            tail |= sup
            nxt = int(xp.argmin(tail))  # first candidate not suppressed yet
            if bool(tail[nxt]):
                break
            i = j + nxt
    kept = order[xp.asarray(np.asarray(keep, np.int64))]
    return np.asarray(kept if xp is np else kept.get(), dtype=np.int64)


def nms_matrix(xp: ModuleType, boxes: Any, scores: Any, labels: Any, iou_threshold: float,
               max_detections: int, class_aware: bool, block: int = _BLOCK) -> np.ndarray:
    """Same result as :func:`nms_greedy`, computed the GPU way (see the module docstring)."""
    n = int(boxes.shape[0])
    if n == 0 or max_detections <= 0:
        return np.zeros(0, np.int64)
    order = stable_order(xp, scores)
    b = boxes[order]
    area = areas(xp, b)
    lab = labels[order]
    threshold = np.float32(iou_threshold)
    columns = xp.arange(n)
    removed = np.zeros(n, dtype=bool)
    keep: list[int] = []
    for start in range(0, n, block):
        stop = min(start + block, n)
        if removed[start:stop].all():
            continue
        rows = xp.arange(start, stop)
        sup = overlap(xp, b[start:stop, None, :], area[start:stop, None], b[None, :, :], area[None, :]) > threshold
        sup &= columns[None, :] > rows[:, None]
        if class_aware:
            sup &= lab[start:stop, None] == lab[None, :]
        packed = xp.packbits(sup.reshape(-1))
        host = np.unpackbits(packed if xp is np else packed.get(), count=(stop - start) * n)
        matrix = host.reshape(stop - start, n).view(bool)
        for i in range(start, stop):
            if removed[i]:
                continue
            keep.append(i)
            if len(keep) >= max_detections:
                break
            removed |= matrix[i - start]
        if len(keep) >= max_detections:
            break
    kept = order[xp.asarray(np.asarray(keep, np.int64))]
    return np.asarray(kept if xp is np else kept.get(), dtype=np.int64)
