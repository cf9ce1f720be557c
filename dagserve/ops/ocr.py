"""OCR ops: the steps of a PP-OCR style pipeline around its three models.

A text pipeline is ``decode -> ocr.det_prepare -> detector -> ocr.db_boxes``, then,
per text line, ``image.warp_quad -> ocr.text_resize -> angle classifier ->
image.rotate when upside down -> ocr.text_resize -> recogniser -> ocr.ctc_decode``.
The geometry is OpenCV's (contours, minimum-area rectangles, perspective warps) and
pyclipper's (the DB "unclip" polygon offset), as in PaddleOCR and RapidOCR; the
defaults are PP-OCRv4's (``docs/ops.md`` has the conventions and the parity tests
against RapidOCR itself).

Boxes are quadrilaterals ``float32[K,4,2]``: ``(x, y)`` corners clockwise from the
top-left, lines sorted in reading order (top to bottom, then left to right on one
line).
"""

from __future__ import annotations

from dagserve.ops.base import InferContext, OpDef, PortDef
from dagserve.types import TensorType

__all__ = ["OPS"]

_TRANSFORM = TensorType("float32", (6,))


def _hwc_uint8(ctx: InferContext, port: str) -> TensorType | None:
    if not ctx.expect(port, dtypes=("uint8",), ranks=(3,), layouts=("hwc",),
                      expected="an image uint8[H,W,C] (hwc)",
                      hint="feed it from 'image.decode' (OCR models read 8-bit BGR images: color: bgr)"):
        return None
    t: TensorType = ctx.inputs[port]
    return t


def _infer_det_prepare(ctx: InferContext) -> dict[str, TensorType]:
    image = _hwc_uint8(ctx, "image")
    if image is None:
        return {}
    c = image.shape[2]
    return {
        "image": TensorType("uint8", ("H", "W", c), layout="hwc", ragged=True),
        "input": TensorType("float32", (c, "H32", "W32"), layout="chw", ragged=True),
        "transform": _TRANSFORM,
    }


def _infer_db_boxes(ctx: InferContext) -> dict[str, TensorType]:
    ok = ctx.expect("probability", dtypes=("float32",), ranks=(2, 3),
                    expected="float32[1,H,W] or [H,W] (the DB detector's probability map)")
    ok = _hwc_uint8(ctx, "image") is not None and ok
    ok = ctx.expect("transform", dtypes=("float32",), shape=(6,), expected="float32[6] (from ocr.det_prepare)") and ok
    if not ok:
        return {}
    quads = TensorType("float32", ("K", 4, 2), ragged=True)
    return {"quads": quads, "boxes": quads, "scores": TensorType("float32", ("K",), ragged=True)}


def _infer_warp_quad(ctx: InferContext) -> dict[str, TensorType]:
    image = _hwc_uint8(ctx, "image")
    ok = ctx.expect("quad", dtypes=("float32",), shape=(4, 2),
                    expected="float32[4,2] (corners clockwise from the top-left)",
                    hint="crop one quadrilateral per item: fan out over the boxes with 'for_each'")
    if image is None or not ok:
        return {}
    return {"image": TensorType("uint8", ("h", "w", image.shape[2]), layout="hwc", ragged=True)}


def _infer_rotate(ctx: InferContext) -> dict[str, TensorType]:
    if not ctx.expect("image", ranks=(3,), layouts=("hwc",), expected="an image [H,W,C] (hwc)"):
        return {}
    image: TensorType = ctx.inputs["image"]
    h, w, c = image.shape
    if ctx.params["degrees"] in (90, 270):
        h, w = w, h
    return {"image": TensorType(image.dtype, (h, w, c), layout="hwc", ragged=image.ragged)}


def _infer_text_resize(ctx: InferContext) -> dict[str, TensorType]:
    image = _hwc_uint8(ctx, "image")
    if image is None:
        return {}
    c = image.shape[2]
    height = ctx.params["height"]
    width = ctx.params.get("width")
    if width is not None:
        return {"image": TensorType("float32", (c, height, width), layout="chw")}
    return {"image": TensorType("float32", (c, height, "W"), layout="chw", ragged=True)}


def _infer_ctc_decode(ctx: InferContext) -> dict[str, TensorType]:
    if not ctx.expect("probabilities", dtypes=("float32",), ranks=(2,),
                      expected="float32[T,C] per item (the recogniser's softmax over C classes per step)"):
        return {}
    return {"text": TensorType("bytes", ()), "score": TensorType("float32", ())}


_MEAN_STD = {"type": "array", "items": {"type": "number"}, "minItems": 3, "maxItems": 3}

OPS = [
    OpDef(
        name="ocr.det_prepare",
        summary="Scale an image for a DB text detector (sides multiples of 32) and normalize it.",
        inputs=(PortDef("image", "uint8[H,W,C] hwc (BGR for PP-OCR)"),),
        outputs=(
            PortDef("image", "the working image that boxes refer to (the input itself unless it had to be "
                             "scaled or padded)"),
            PortDef("input", "float32[C,H32,W32] chw, (x / 255 - mean) / std"),
            PortDef("transform", "float32[6] source -> working image"),
        ),
        infer=_infer_det_prepare,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "limit_side_len": {"type": "integer", "minimum": 32, "default": 736,
                                   "description": "scale so the shorter side (limit_type min) reaches this, "
                                                  "or the longer side (max) stays within it"},
                "limit_type": {"enum": ["min", "max"], "default": "min"},
                "max_side_len": {"type": "integer", "minimum": 32, "default": 2000,
                                 "description": "larger images are scaled down first"},
                "min_side_len": {"type": "integer", "minimum": 1, "default": 30,
                                 "description": "smaller images are scaled up first"},
                "min_height": {"type": "integer", "minimum": 0, "default": 30,
                               "description": "images this low (or wider than width_height_ratio) are padded "
                                              "with black above and below"},
                "width_height_ratio": {"type": "number", "default": 8,
                                       "description": "-1 turns the wide-image padding off"},
                "mean": {**_MEAN_STD, "default": [0.5, 0.5, 0.5]},
                "std": {**_MEAN_STD, "default": [0.5, 0.5, 0.5]},
            },
        },
        kernel="dagserve.ops.kernels.ocr:det_prepare",
    ),
    OpDef(
        name="ocr.db_boxes",
        summary="Text quadrilaterals from a DB probability map (threshold, contours, unclip), in reading order.",
        inputs=(
            PortDef("probability", "float32[1,H,W] DB probability map"),
            PortDef("image", "the working image (ocr.det_prepare.image): boxes are clipped to it"),
            PortDef("transform", "float32[6] from ocr.det_prepare: maps boxes back to source pixels"),
        ),
        outputs=(
            PortDef("quads", "float32[K,4,2] in the working image's pixels (to crop from it)"),
            PortDef("boxes", "float32[K,4,2] in the source image's pixels"),
            PortDef("scores", "float32[K] mean probability inside each box"),
        ),
        infer=_infer_db_boxes,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.3,
                              "description": "pixels above it are text"},
                "box_threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.5,
                                  "description": "boxes whose mean probability is lower are dropped"},
                "unclip_ratio": {"type": "number", "exclusiveMinimum": 0, "default": 1.6},
                "max_candidates": {"type": "integer", "minimum": 1, "default": 1000},
                "dilate": {"type": "boolean", "default": True, "description": "dilate the text mask 2x2"},
                "score_mode": {"enum": ["fast", "slow"], "default": "fast",
                               "description": "fast: mean over the box; slow: over the contour"},
            },
        },
        kernel="dagserve.ops.kernels.ocr:db_boxes",
    ),
    OpDef(
        name="image.warp_quad",
        summary="Cut a quadrilateral out of an image, straightened by a perspective warp.",
        inputs=(PortDef("image", "uint8[H,W,C] hwc"), PortDef("quad", "float32[4,2] clockwise from top-left")),
        outputs=(PortDef("image", "uint8[h,w,C] hwc, ragged"),),
        infer=_infer_warp_quad,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "rotate_tall": {"type": "number", "minimum": 0, "default": 1.5,
                                "description": "turn crops at least this much taller than wide by 90° "
                                               "(vertical text); 0 turns it off"},
            },
        },
        kernel="dagserve.ops.kernels.ocr:warp_quad",
    ),
    OpDef(
        name="image.rotate",
        summary="Rotate an image by 90, 180 or 270 degrees (counter-clockwise).",
        inputs=(PortDef("image"),),
        outputs=(PortDef("image"),),
        infer=_infer_rotate,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "required": ["degrees"],
            "properties": {"degrees": {"enum": [90, 180, 270]}},
        },
        kernel="dagserve.ops.kernels.ocr:rotate",
    ),
    OpDef(
        name="ocr.text_resize",
        summary="Resize a text line to a fixed height keeping its aspect, normalize to [-1, 1], CHW.",
        inputs=(PortDef("image", "uint8[h,w,C] hwc text line"),),
        outputs=(PortDef("image", "float32[C,height,W] chw (W: the line's width, or 'width' padded)"),),
        infer=_infer_text_resize,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "height": {"type": "integer", "minimum": 1, "default": 48},
                "width": {"type": "integer", "minimum": 1,
                          "description": "pad (with 0) or squeeze every line to this width; without it each line "
                                         "keeps its own width (ceil(height * w / h))"},
                "min_width": {"type": "integer", "minimum": 1, "default": 1,
                              "description": "pad narrower lines to this width"},
            },
        },
        kernel="dagserve.ops.kernels.ocr:text_resize",
    ),
    OpDef(
        name="ocr.ctc_decode",
        summary="Greedy CTC decoding of a recogniser's output into UTF-8 text and a mean confidence.",
        inputs=(PortDef("probabilities", "float32[T,C] per item"),),
        outputs=(PortDef("text", "bytes, UTF-8"), PortDef("score", "float32 mean probability of the kept steps")),
        infer=_infer_ctc_decode,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "required": ["characters"],
            "properties": {
                "characters": {"type": "string",
                               "description": "an ONNX model whose metadata holds the character list "
                                              "('character', one per line, as PaddleOCR exports it), or a "
                                              "text file with one character per line"},
                "metadata_key": {"type": "string", "default": "character"},
            },
        },
        path_params=("characters",),
        kernel="dagserve.ops.kernels.ocr:ctc_decode",
    ),
]
