"""``dali.image``: decode -> resize or letterbox -> normalize, fused in one NVIDIA DALI pipeline.

One node replaces ``image.decode`` + ``image.letterbox``/``image.resize`` +
``image.normalize`` for encoded-bytes input. On the CPU, DALI runs a CPU-only
pipeline (``device_id=None``; about twice as fast as Pillow for decode+resize on
these machines); on a GPU it decodes with nvJPEG (``mixed``) and resizes and
normalizes on the device. Extra: ``pip install 'dagserve[dali]'``; without it the
node is an ``E-EXTRA`` error at compile time.

Outputs match the image ops' conventions (docs/ops.md): ``image`` is
``(x * scale - mean) / std`` in ``layout`` (``chw`` by default) and ``dtype``;
``transform`` is ``float32[6] = [sx, sy, tx, ty, src_w, src_h]`` so boxes map back
with ``(x - tx) / sx``. Letterbox geometry is image.letterbox's: ``r = min(H/h, W/w)``
(capped at 1 without ``scale_up``), the scaled size rounded half to even
(Python's ``round``), at least 1 pixel, and ``(H - nh) // 2`` rows of ``fill`` on
top when ``center`` (else all padding right/bottom).
"""

from __future__ import annotations

from functools import cache

from dagserve.ops._params import INTERPOLATION, SCALE, SIZE
from dagserve.ops.base import InferContext, OpDef, PortDef
from dagserve.types import TensorType

__all__ = ["OPS", "dali_missing"]

TRANSFORM = TensorType("float32", (6,))


@cache
def dali_missing() -> str | None:
    """Why ``nvidia.dali`` cannot be imported (``None`` when it can); checked once per process."""
    try:
        import nvidia.dali  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install failing on its own imports
        return f"{type(exc).__name__}: {exc}"
    return None


def _infer(ctx: InferContext) -> dict[str, TensorType]:
    missing = dali_missing()
    if missing is not None:
        ctx.problem("E-EXTRA", f"node '{ctx.node}' (op dali.image) needs NVIDIA DALI, which cannot be imported "
                    f"({missing})", hint="pip install 'dagserve[dali]'")
        return {}
    if not ctx.expect("data", dtypes=("bytes",), shape=(), expected="bytes[] (one encoded image per item)"):
        return {}
    h, w = ctx.params["size"]
    channels = 1 if ctx.params["color"] == "gray" else 3
    for key in ("mean", "std"):
        values = ctx.params.get(key)
        if values is not None and len(values) not in (1, channels):
            ctx.problem("E-PARAM", f"node '{ctx.node}' param '{key}' has {len(values)} values but the image has "
                        f"{channels} channel(s)")
            return {}
    layout = ctx.params["layout"]
    shape = (channels, h, w) if layout == "chw" else (h, w, channels)
    return {"image": TensorType(ctx.params["dtype"], shape, layout=layout), "transform": TRANSFORM}


OPS = [
    OpDef(
        name="dali.image",
        summary="Decode, resize or letterbox, and normalize encoded images in one DALI pipeline (extra: dali).",
        inputs=(PortDef("data", "encoded image bytes (JPEG, PNG, BMP, TIFF, WebP...)", host=True),),
        outputs=(
            PortDef("image", "the normalized image, [C,H,W] (chw) or [H,W,C] (hwc)"),
            PortDef("transform", "float32[6] source -> output mapping"),
        ),
        infer=_infer,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "required": ["size"],
            "properties": {
                "size": SIZE,
                "mode": {"description": "'resize' stretches to size; 'letterbox' keeps the aspect ratio and pads.",
                         "enum": ["resize", "letterbox"], "default": "resize"},
                "fill": {"description": "Letterbox padding value (before normalization).",
                         "type": "integer", "minimum": 0, "maximum": 255, "default": 114},
                "center": {"description": "Letterbox: pad equally on both sides (else only right/bottom).",
                           "type": "boolean", "default": True},
                "scale_up": {"description": "Letterbox: allow enlarging small images.", "type": "boolean",
                             "default": True},
                "interpolation": INTERPOLATION,
                "antialias": {"description": "Low-pass filter when shrinking (cv2.INTER_LINEAR has none).",
                              "type": "boolean", "default": False},
                "color": {"enum": ["rgb", "bgr", "gray"], "default": "rgb"},
                "scale": {**SCALE, "default": 1},
                "mean": {"type": "array", "items": {"type": "number"}, "minItems": 1},
                "std": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1},
                "layout": {"enum": ["chw", "hwc"], "default": "chw"},
                "dtype": {"enum": ["float32", "float16", "uint8"], "default": "float32"},
                "threads": {"description": "DALI worker threads per instance.", "type": "integer", "minimum": 1,
                            "default": 1},
                "max_pixels": {"description": "Refuse images with more pixels (decompression-bomb guard).",
                               "type": "integer", "minimum": 1, "default": 64_000_000},
                "max_batch": {"description": "DALI's batch size; larger batches run in chunks.",
                              "type": "integer", "minimum": 1, "default": 64},
            },
        },
        devices=frozenset({"cpu", "gpu"}),
        kernel="dagserve.backends.dali_backend:create",
    ),
]
