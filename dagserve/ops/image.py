"""Image ops: decode, resize, letterbox, normalize, crop (definitions and type rules).

Conventions every image op shares (see docs/ops.md):

* An image item is ``[H, W, C]`` with layout ``hwc`` (``C`` = 3 for RGB/BGR, 1 for
  gray) unless an op turns it into ``chw``. Decoded images are *ragged*: their H and
  W differ per item, so a batch of them is a list.
* A *transform* is ``float32[6] = [sx, sy, tx, ty, src_w, src_h]``: a point ``(x, y)``
  of the source image lands at ``(x * sx + tx, y * sy + ty)`` in the op's output, so
  ``detect.nms`` maps boxes back with ``(x - tx) / sx``.
* Pixel centres are at half-integers (OpenCV's convention): output pixel ``i``
  samples source coordinate ``(i + 0.5) / s - 0.5``.
"""

from __future__ import annotations

from dagserve.ops._params import FLOAT_DTYPES, INTERPOLATION, SCALE, SIZE
from dagserve.ops.base import InferContext, OpDef, PortDef
from dagserve.types import TensorType

__all__ = ["OPS"]

_IMAGE_DTYPES = ("uint8", "uint16", "float16", "float32")
TRANSFORM = TensorType("float32", (6,))
MAX_PIXELS_DEFAULT = 64_000_000
MAX_REQUEST_PIXELS_DEFAULT = 128_000_000
"""Pixels one request's images may declare together: 8 images of 16 MP, ~384 MB of RGB."""


def _image_in(ctx: InferContext, port: str = "image") -> TensorType | None:
    """The input image if it is ``[H,W,C]`` hwc; reports a mismatch otherwise."""
    if not ctx.expect(
        port,
        dtypes=_IMAGE_DTYPES,
        ranks=(3,),
        layouts=("hwc",),
        expected="an image uint8|uint16|float16|float32[H,W,C] (hwc)",
        hint="image ops read HWC images; put them before any node that makes CHW",
    ):
        return None
    t: TensorType = ctx.inputs[port]
    return t


def _infer_decode(ctx: InferContext) -> dict[str, TensorType]:
    data = ctx.inputs.get("data")
    if isinstance(data, TensorType) and data.dtype == "uint8":
        # A file's bytes as a uint8 tensor per item (Triton's preprocessing examples send
        # them so): uint8[L], uniform ([N, L] per request, zero-padded) or ragged.
        if not ctx.expect("data", dtypes=("uint8",), ranks=(1,),
                          expected="bytes[] or uint8[L] (one encoded image per item)"):
            return {}
    elif not ctx.expect("data", dtypes=("bytes",), shape=(),
                        expected="bytes[] or uint8[L] (one encoded image per item)"):
        return {}
    channels = 1 if ctx.params["color"] == "gray" else 3
    return {"image": TensorType("uint8", ("H", "W", channels), layout="hwc", ragged=True)}


def _infer_resize(ctx: InferContext) -> dict[str, TensorType]:
    image = _image_in(ctx)
    if image is None:
        return {}
    h, w = ctx.params["size"]
    return {
        "image": TensorType(image.dtype, (h, w, image.shape[2]), layout="hwc"),
        "transform": TRANSFORM,
    }


def _infer_letterbox(ctx: InferContext) -> dict[str, TensorType]:
    image = _image_in(ctx)
    if image is None:
        return {}
    h, w = ctx.params["size"]
    c = image.shape[2]
    dtype = ctx.params.get("dtype") or image.dtype
    shape = (c, h, w) if ctx.params["layout"] == "chw" else (h, w, c)
    return {
        "image": TensorType(dtype, shape, layout=ctx.params["layout"]),
        "transform": TRANSFORM,
    }


def _infer_normalize(ctx: InferContext) -> dict[str, TensorType]:
    if not ctx.expect("image", ranks=(3,), layouts=("hwc", "chw"),
                      expected="an image [H,W,C] (hwc) or [C,H,W] (chw)"):
        return {}
    image: TensorType = ctx.inputs["image"]
    src_layout = image.layout or "hwc"
    dst_layout = ctx.params.get("layout") or src_layout
    c = image.shape[2] if src_layout == "hwc" else image.shape[0]
    for key in ("mean", "std"):
        values = ctx.params.get(key)
        if values is not None and len(values) not in (1,) and isinstance(c, int) and len(values) != c:
            ctx.problem(
                "E-PARAM",
                f"node '{ctx.node}' param '{key}' has {len(values)} values but the image has {c} channels",
                param=key,
            )
    hw = image.shape[:2] if src_layout == "hwc" else image.shape[1:]
    shape = (*hw, c) if dst_layout == "hwc" else (c, *hw)
    return {"image": TensorType(ctx.params["dtype"], shape, layout=dst_layout, ragged=image.ragged)}


def _infer_crop(ctx: InferContext) -> dict[str, TensorType]:
    image = _image_in(ctx)
    if image is None:
        return {}
    if "box" in ctx.inputs:
        if ctx.params.get("box") is not None:
            ctx.problem("E-PARAM", f"node '{ctx.node}' gets its crop box both from input 'box' and from "
                        "param 'box'", param="box", hint="keep one of them")
            return {}
        if not ctx.expect("box", dtypes=("float32",), shape=(4,), expected="float32[4] (x0,y0,x1,y1)"):
            return {}
    elif ctx.params.get("box") is None:
        ctx.problem("E-PORT", f"node '{ctx.node}' needs a crop box: feed input 'box' or set param 'box'")
        return {}
    size = ctx.params.get("size")
    if size:
        return {"image": TensorType(image.dtype, (size[0], size[1], image.shape[2]), layout="hwc")}
    return {"image": TensorType(image.dtype, ("h", "w", image.shape[2]), layout="hwc", ragged=True)}


OPS = [
    OpDef(
        name="image.decode",
        summary="Decode JPEG/PNG/WebP/BMP bytes to an HWC uint8 image (EXIF orientation applied).",
        inputs=(PortDef("data", "encoded image bytes", host=True),),
        outputs=(PortDef("image", "uint8[H,W,C] hwc, ragged"),),
        infer=_infer_decode,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "color": {"enum": ["rgb", "bgr", "gray"], "default": "rgb"},
                "max_pixels": {
                    "description": "Refuse images with more pixels (decompression-bomb guard).",
                    "type": "integer", "minimum": 1, "default": MAX_PIXELS_DEFAULT,
                },
                "max_request_pixels": {
                    "description": "Refuse a request whose images declare more pixels together, before any is "
                                   "decoded (per-request memory guard).",
                    "type": "integer", "minimum": 1, "default": MAX_REQUEST_PIXELS_DEFAULT,
                },
                "exif_transpose": {"type": "boolean", "default": True},
            },
        },
        devices=frozenset({"cpu", "gpu"}),
        kernel="dagserve.ops.kernels.image:decode",
    ),
    OpDef(
        name="image.resize",
        summary="Resize to a fixed [height, width] (aspect not kept).",
        inputs=(PortDef("image"),),
        outputs=(PortDef("image"), PortDef("transform", "float32[6] source -> output mapping")),
        infer=_infer_resize,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "required": ["size"],
            "properties": {
                "size": SIZE,
                "interpolation": INTERPOLATION,
                "antialias": {"type": "boolean", "default": False},
            },
        },
        devices=frozenset({"cpu", "gpu"}),
        kernel="dagserve.ops.kernels.image:resize",
    ),
    OpDef(
        name="image.letterbox",
        summary="Resize keeping aspect ratio, pad to [height, width], optionally cast/scale/CHW.",
        inputs=(PortDef("image"),),
        outputs=(PortDef("image"), PortDef("transform", "float32[6] source -> output mapping")),
        infer=_infer_letterbox,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "required": ["size"],
            "properties": {
                "size": SIZE,
                "fill": {"type": "integer", "minimum": 0, "maximum": 255, "default": 114},
                "interpolation": INTERPOLATION,
                "layout": {"enum": ["hwc", "chw"], "default": "hwc"},
                "dtype": {"enum": ["uint8", *FLOAT_DTYPES]},
                "scale": {**SCALE, "default": 1},
                "center": {"description": "Pad equally on both sides (else only right/bottom).",
                           "type": "boolean", "default": True},
                "scale_up": {"description": "Allow enlarging small images.", "type": "boolean", "default": True},
            },
        },
        devices=frozenset({"cpu", "gpu"}),
        kernel="dagserve.ops.kernels.image:letterbox",
    ),
    OpDef(
        name="image.normalize",
        summary="(x * scale - mean) / std, cast, and optional HWC <-> CHW.",
        inputs=(PortDef("image"),),
        outputs=(PortDef("image"),),
        infer=_infer_normalize,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "scale": {**SCALE, "default": 1},
                "mean": {"type": "array", "items": {"type": "number"}, "minItems": 1},
                "std": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1},
                "dtype": {"enum": list(FLOAT_DTYPES), "default": "float32"},
                "layout": {"enum": ["hwc", "chw"]},
            },
        },
        devices=frozenset({"cpu", "gpu"}),
        kernel="dagserve.ops.kernels.image:normalize",
    ),
    OpDef(
        name="image.crop",
        summary="Crop a box (x0, y0, x1, y1 in pixels) from each image, optionally resizing it.",
        inputs=(PortDef("image"), PortDef("box", "float32[4]", optional=True)),
        outputs=(PortDef("image"),),
        infer=_infer_crop,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
                "size": SIZE,
                "interpolation": INTERPOLATION,
            },
        },
        devices=frozenset({"cpu", "gpu"}),
        kernel="dagserve.ops.kernels.image:crop",
    ),
]
