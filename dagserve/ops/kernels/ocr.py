"""Kernels of the OCR ops (CPU; every one is per item).

The geometry follows PaddleOCR's reference post-processing, which RapidOCR ships
too, step for step, so that a served OCR pipeline returns the lines RapidOCR
returns for the same image (the tests compare with RapidOCR's own functions):

* ``det_prepare``: RapidOCR's ``preprocess`` (scale down past ``max_side_len``, up
  below ``min_side_len``), its black padding of very low or wide images, then the
  detector's resize to multiples of 32 (``limit_side_len``) and normalization.
* ``db_boxes``: binarize, dilate 2x2, ``cv2.findContours``; per contour the minimum
  area rectangle, its mean probability, the unclip by ``area * ratio / perimeter``
  with pyclipper, the rectangle again, scaling to the working image, clockwise
  order, clipping, and the reading-order sort.
* ``warp_quad``: ``cv2.getPerspectiveTransform`` + ``warpPerspective`` (cubic,
  border replicated), turned by 90° when the crop is tall.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dagserve.errors import MissingExtraError
from dagserve.ops.base import KernelContext
from dagserve.ops.kernels._common import KernelInputError, op_params, readable

__all__ = ["ctc_decode", "db_boxes", "det_prepare", "read_characters", "rotate", "text_resize", "warp_quad"]


def _image(inputs: dict[str, Any], port: str = "image") -> np.ndarray:
    x = np.asarray(inputs[port])
    if x.ndim != 3 or x.dtype != np.uint8 or 0 in x.shape:
        raise KernelInputError(f"input '{port}' must be a non-empty uint8 image [H,W,C], "
                               f"got {x.dtype}{readable(x.shape)}")
    return x


def _round32(side: float) -> int:
    return int(round(side / 32) * 32)


def _resize32(image: np.ndarray, ratio: float) -> np.ndarray:
    """``image`` scaled by ``ratio``, each side then rounded to a multiple of 32 (as PP-OCR does)."""
    import cv2

    h, w = image.shape[:2]
    new_h, new_w = _round32(int(h * ratio)), _round32(int(w * ratio))
    if new_h <= 0 or new_w <= 0:
        raise KernelInputError(f"image {w}x{h} is too small to scale for text detection")
    return cv2.resize(image, (new_w, new_h))


class DetPrepareKernel:
    """``ocr.det_prepare``: working image, detector input and the source -> working transform."""

    per_item = True

    def __init__(self, ctx: KernelContext) -> None:
        p = op_params(ctx)
        self.limit_side_len = int(p["limit_side_len"])
        self.limit_type: str = p["limit_type"]
        self.max_side_len = int(p["max_side_len"])
        self.min_side_len = int(p["min_side_len"])
        self.min_height = int(p["min_height"])
        self.width_height_ratio = float(p["width_height_ratio"])
        self.mean = np.asarray(p["mean"], dtype=np.float64)
        self.std = np.asarray(p["std"], dtype=np.float64)

    def _working(self, image: np.ndarray) -> tuple[np.ndarray, float, float, int]:
        """The image boxes refer to, its scale against the source (x, y), and the top padding."""
        h, w = image.shape[:2]
        work, sx, sy = image, 1.0, 1.0
        if max(h, w) > self.max_side_len:
            work = _resize32(image, self.max_side_len / max(h, w))
        elif min(h, w) < self.min_side_len:
            work = _resize32(image, self.min_side_len / min(h, w))
        if work is not image:
            sx, sy = work.shape[1] / w, work.shape[0] / h
        wh, ww = work.shape[:2]
        wide = self.width_height_ratio != -1 and ww / wh > self.width_height_ratio
        top = 0
        if wh <= self.min_height or wide:
            import cv2

            new_h = max(int(ww / self.width_height_ratio), self.min_height) * 2
            top = int(abs(new_h - wh) / 2)
            work = cv2.copyMakeBorder(work, top, top, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        return work, sx, sy, top

    def _detector_input(self, work: np.ndarray) -> np.ndarray:
        h, w = work.shape[:2]
        if self.limit_type == "max":
            ratio = self.limit_side_len / max(h, w) if max(h, w) > self.limit_side_len else 1.0
        else:
            ratio = self.limit_side_len / min(h, w) if min(h, w) < self.limit_side_len else 1.0
        resized = _resize32(work, ratio)
        normalized = (resized.astype(np.float32) * (1 / 255.0) - self.mean) / self.std
        return np.ascontiguousarray(normalized.transpose(2, 0, 1), dtype=np.float32)

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        image = _image(inputs)
        work, sx, sy, top = self._working(image)
        h, w = image.shape[:2]
        transform = np.array([sx, sy, 0.0, float(top), w, h], dtype=np.float32)
        return {"image": work, "input": self._detector_input(work), "transform": transform}


def _mini_box(contour: np.ndarray) -> tuple[np.ndarray, float]:
    """The minimum-area rectangle of ``contour``: 4 corners from the top-left, and its shorter side."""
    import cv2

    rect = cv2.minAreaRect(contour)
    points = sorted(cv2.boxPoints(rect).tolist(), key=lambda p: p[0])
    left = (0, 1) if points[1][1] > points[0][1] else (1, 0)
    right = (2, 3) if points[3][1] > points[2][1] else (3, 2)
    box = np.array([points[left[0]], points[right[0]], points[right[1]], points[left[1]]], dtype=np.float32)
    return box, min(rect[1])


def _mean_inside(probability: np.ndarray, polygon: np.ndarray) -> float:
    """Mean of ``probability`` over the pixels inside ``polygon``."""
    import cv2

    h, w = probability.shape
    x0 = int(np.clip(np.floor(polygon[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(polygon[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(polygon[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(polygon[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), dtype=np.uint8)
    shifted = (polygon - np.array([x0, y0], dtype=polygon.dtype)).astype(np.int32)
    cv2.fillPoly(mask, shifted.reshape(1, -1, 2), 1)
    return float(cv2.mean(probability[y0:y1 + 1, x0:x1 + 1], mask)[0])


def _unclip(box: np.ndarray, ratio: float) -> np.ndarray:
    """Grow a box by ``area * ratio / perimeter`` (DB's unclip), with pyclipper's round offset."""
    try:
        import pyclipper
    except ImportError as exc:
        raise MissingExtraError("ocr.db_boxes", "pyclipper", "ocr") from exc
    points = box.astype(np.float64)
    x, y = points[:, 0], points[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    perimeter = float(np.linalg.norm(points - np.roll(points, -1, axis=0), axis=1).sum())
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    grown = offset.Execute(area * ratio / perimeter) if perimeter > 0 else []
    return np.array(grown[0] if len(grown) == 1 else [p for path in grown for p in path],
                    dtype=np.float32).reshape(-1, 1, 2)


def _clockwise(points: np.ndarray) -> np.ndarray:
    """Corners ordered top-left, top-right, bottom-right, bottom-left."""
    by_x = points[np.argsort(points[:, 0], kind="stable")]
    left = by_x[:2][np.argsort(by_x[:2, 1], kind="stable")]
    right = by_x[2:][np.argsort(by_x[2:, 1], kind="stable")]
    return np.array([left[0], right[0], right[1], left[1]], dtype=np.float32)


def reading_order(quads: list[np.ndarray]) -> list[int]:
    """Indices of ``quads`` top to bottom, left to right within a line (tops within 10 px)."""
    order = sorted(range(len(quads)), key=lambda i: (quads[i][0][1], quads[i][0][0]))
    for i in range(len(order) - 1):
        for j in range(i, -1, -1):
            a, b = quads[order[j]], quads[order[j + 1]]
            if abs(b[0][1] - a[0][1]) < 10 and b[0][0] < a[0][0]:
                order[j], order[j + 1] = order[j + 1], order[j]
            else:
                break
    return order


class DbBoxesKernel:
    """``ocr.db_boxes``: quadrilaterals and scores from one probability map."""

    per_item = True

    def __init__(self, ctx: KernelContext) -> None:
        p = op_params(ctx)
        self.threshold = float(p["threshold"])
        self.box_threshold = float(p["box_threshold"])
        self.unclip_ratio = float(p["unclip_ratio"])
        self.max_candidates = int(p["max_candidates"])
        self.dilate = bool(p["dilate"])
        self.slow = p["score_mode"] == "slow"

    def _candidates(self, probability: np.ndarray, dest_w: int, dest_h: int) -> tuple[list[np.ndarray], list[float]]:
        import cv2

        mask: Any = (probability > self.threshold).astype(np.uint8)
        if self.dilate:
            mask = cv2.dilate(mask, np.ones((2, 2), dtype=np.uint8))
        contours, _ = cv2.findContours(mask * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        h, w = probability.shape
        quads, scores = [], []
        for contour in contours[: self.max_candidates]:
            box, short = _mini_box(contour)
            if short < 3:
                continue
            score = _mean_inside(probability, contour.reshape(-1, 2) if self.slow else box)
            if score < self.box_threshold:
                continue
            grown = _unclip(box, self.unclip_ratio)
            if len(grown) < 3:
                continue
            box, short = _mini_box(grown)
            if short < 5:
                continue
            box[:, 0] = np.clip(np.round(box[:, 0] / w * dest_w), 0, dest_w)
            box[:, 1] = np.clip(np.round(box[:, 1] / h * dest_h), 0, dest_h)
            quads.append(box.astype(np.int32).astype(np.float32))
            scores.append(score)
        return quads, scores

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        probability = np.asarray(inputs["probability"], dtype=np.float32)
        if probability.ndim == 3:
            if probability.shape[0] != 1:
                raise KernelInputError(f"input 'probability' must be [1,H,W], got {readable(probability.shape)}")
            probability = probability[0]
        if probability.ndim != 2 or 0 in probability.shape:
            raise KernelInputError(f"input 'probability' must be [1,H,W] or [H,W], got {readable(probability.shape)}")
        image = _image(inputs)
        transform = np.asarray(inputs["transform"], dtype=np.float64)
        work_h, work_w = image.shape[:2]
        quads, scores = self._candidates(probability, work_w, work_h)
        kept, kept_scores = [], []
        for quad, score in zip(quads, scores):
            quad = _clockwise(quad)
            quad[:, 0] = np.clip(quad[:, 0], 0, work_w - 1).astype(np.int32)
            quad[:, 1] = np.clip(quad[:, 1], 0, work_h - 1).astype(np.int32)
            if int(np.linalg.norm(quad[0] - quad[1])) <= 3 or int(np.linalg.norm(quad[0] - quad[3])) <= 3:
                continue
            kept.append(quad)
            kept_scores.append(score)
        order = reading_order(kept)
        work_quads = np.array([kept[i] for i in order], dtype=np.float32).reshape(-1, 4, 2)
        sx, sy, tx, ty, src_w, src_h = transform.tolist()
        boxes = work_quads.copy()
        boxes[..., 0] = np.clip((boxes[..., 0] - tx) / sx, 0, src_w)
        boxes[..., 1] = np.clip((boxes[..., 1] - ty) / sy, 0, src_h)
        return {"quads": work_quads, "boxes": boxes,
                "scores": np.array([kept_scores[i] for i in order], dtype=np.float32)}


class WarpQuadKernel:
    """``image.warp_quad``: the quadrilateral, straightened to a ``w x h`` rectangle."""

    per_item = True

    def __init__(self, ctx: KernelContext) -> None:
        self.rotate_tall = float(op_params(ctx)["rotate_tall"])

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        import cv2

        image = _image(inputs)
        quad = np.asarray(inputs["quad"], dtype=np.float32)
        if quad.shape != (4, 2) or not np.isfinite(quad).all():
            raise KernelInputError(f"input 'quad' must be 4 finite (x, y) corners [4,2], got {readable(quad.shape)}")
        width = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
        height = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
        if width < 1 or height < 1:
            raise KernelInputError(f"quadrilateral {quad.tolist()} is empty ({width}x{height} pixels)")
        target = np.array([[0, 0], [width, 0], [width, height], [0, height]], dtype=np.float32)
        matrix = cv2.getPerspectiveTransform(quad, target)
        crop = cv2.warpPerspective(image, matrix, (width, height), borderMode=cv2.BORDER_REPLICATE,
                                   flags=cv2.INTER_CUBIC)
        if crop.ndim == 2:
            crop = crop[:, :, None]
        if self.rotate_tall and crop.shape[0] / crop.shape[1] >= self.rotate_tall:
            crop = np.ascontiguousarray(np.rot90(crop))
        return {"image": crop}


class RotateKernel:
    """``image.rotate``: by a multiple of 90° counter-clockwise (a fresh contiguous array)."""

    per_item = True

    def __init__(self, ctx: KernelContext) -> None:
        self.turns = int(op_params(ctx)["degrees"]) // 90

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        image = np.asarray(inputs["image"])
        if image.ndim != 3:
            raise KernelInputError(f"input 'image' must be [H,W,C], got {readable(image.shape)}")
        return {"image": np.ascontiguousarray(np.rot90(image, self.turns))}


class TextResizeKernel:
    """``ocr.text_resize``: a text line at a fixed height, normalized to [-1, 1], CHW, right-padded with 0."""

    per_item = True

    def __init__(self, ctx: KernelContext) -> None:
        p = op_params(ctx)
        self.height = int(p["height"])
        self.width: int | None = int(p["width"]) if p.get("width") is not None else None
        self.min_width = int(p["min_width"])

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        import cv2

        image = _image(inputs)
        h, w, c = image.shape
        resized_w = math.ceil(self.height * w / h)
        if self.width is not None:
            resized_w = min(resized_w, self.width)
        out_w = self.width if self.width is not None else max(resized_w, self.min_width)
        resized = cv2.resize(image, (resized_w, self.height)).reshape(self.height, resized_w, c)
        out = np.zeros((c, self.height, out_w), dtype=np.float32)
        out[:, :, :resized_w] = (resized.transpose(2, 0, 1).astype(np.float32) / 255 - 0.5) / 0.5
        return {"image": out}


def read_characters(path: str, key: str = "character") -> list[str]:
    """The recogniser's classes: blank, the characters, and a space (PaddleOCR's CTC layout).

    ``path`` is an ONNX model whose metadata ``key`` holds the characters one per
    line (as PaddleOCR's exporter writes it), or a text file of one per line.

    Raises:
        ValueError: the model has no such metadata, or the list is empty.
    """
    if path.endswith(".onnx"):
        import onnx

        model = onnx.load(path, load_external_data=False)
        meta = {p.key: p.value for p in model.metadata_props}
        if key not in meta:
            raise ValueError(f"model {path} has no metadata '{key}' (it has: {sorted(meta) or 'none'}); "
                             "give a character file instead")
        lines = meta[key].splitlines()
    else:
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\r\n") for line in f]
    if not lines:
        raise ValueError(f"the character list in {path} is empty")
    return ["", *lines, " "]


class CtcDecodeKernel:
    """``ocr.ctc_decode``: best path, repeats merged, blanks dropped; score = mean kept probability."""

    per_item = True

    def __init__(self, ctx: KernelContext) -> None:
        params = op_params(ctx)
        self.characters = read_characters(ctx.files.get("characters", params["characters"]), params["metadata_key"])

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        probabilities = np.asarray(inputs["probabilities"])
        if probabilities.ndim != 2 or probabilities.shape[1] != len(self.characters):
            raise KernelInputError(f"input 'probabilities' must be [T,{len(self.characters)}] (one column per "
                                   f"character of the list, blank and space included), got "
                                   f"{readable(probabilities.shape)}")
        best = probabilities.argmax(axis=1)
        keep = best != 0
        keep[1:] &= best[1:] != best[:-1]
        chosen = best[keep]
        text = "".join(self.characters[i] for i in chosen.tolist())
        score = float(probabilities.max(axis=1)[keep].mean()) if chosen.size else 0.0
        out_text = np.empty((), dtype=object)
        out_text[()] = text.encode("utf-8")
        return {"text": out_text, "score": np.array(score, dtype=np.float32)}


def det_prepare(ctx: KernelContext) -> DetPrepareKernel:
    """Factory of ``ocr.det_prepare``."""
    return DetPrepareKernel(ctx)


def db_boxes(ctx: KernelContext) -> DbBoxesKernel:
    """Factory of ``ocr.db_boxes``."""
    return DbBoxesKernel(ctx)


def warp_quad(ctx: KernelContext) -> WarpQuadKernel:
    """Factory of ``image.warp_quad``."""
    return WarpQuadKernel(ctx)


def rotate(ctx: KernelContext) -> RotateKernel:
    """Factory of ``image.rotate``."""
    return RotateKernel(ctx)


def text_resize(ctx: KernelContext) -> TextResizeKernel:
    """Factory of ``ocr.text_resize``."""
    return TextResizeKernel(ctx)


def ctc_decode(ctx: KernelContext) -> CtcDecodeKernel:
    """Factory of ``ocr.ctc_decode``."""
    return CtcDecodeKernel(ctx)
