"""``detect.nms``: decode raw detector output, suppress overlaps, map boxes to the source.

Input layouts (``format`` param), per batch item:

* ``yolov8`` — ``float32[4+C, A]``: rows ``cx, cy, w, h`` then C class scores
  (YOLOv8 / YOLO11 raw ONNX export, no objectness).
* ``yolov5`` — ``float32[A, 5+C]``: ``cx, cy, w, h, objectness`` then C class
  probabilities; score = objectness x class probability.
* ``boxes_scores`` — ``boxes`` ``float32[A,4]`` (``xyxy``) and ``scores`` ``float32[A,C]``.

Outputs are ragged per item: ``boxes float32[K,4]`` (xyxy, source pixels when a
``transform`` is fed), ``scores float32[K]``, ``labels int64[K]``, and ``count int32[]``.
"""

from __future__ import annotations

from dagserve.ops.base import InferContext, OpDef, PortDef
from dagserve.types import TensorType

__all__ = ["OPS"]

_FLOATS = ("float16", "float32")


_FORMAT_PORTS = {"yolov8": ("predictions",), "yolov5": ("predictions",), "boxes_scores": ("boxes", "scores")}


def _classes(ctx: InferContext) -> int | str:
    fmt = ctx.params["format"]
    for port in ("predictions", "boxes", "scores"):
        if port in ctx.inputs and port not in _FORMAT_PORTS[fmt]:
            other = "boxes_scores" if port != "predictions" else "yolov8 or yolov5"
            ctx.problem("E-PORT", f"node '{ctx.node}' has format '{fmt}', which does not read input '{port}' "
                        f"(only format {other} does)", port,
                        hint="set param 'format' to the layout the detector produces, or remove the input")
            return "?"
    if fmt == "boxes_scores":
        if "boxes" not in ctx.inputs:
            ctx.problem("E-PORT", f"node '{ctx.node}' with format 'boxes_scores' needs input 'boxes'",
                        hint="feed 'boxes' with float32[A,4] boxes (xyxy)")
            return "?"
        if not ctx.expect("boxes", dtypes=_FLOATS, shape=(None, 4), expected="float32[A,4] (xyxy)"):
            return "?"
        if "scores" not in ctx.inputs:
            ctx.problem("E-PORT", f"node '{ctx.node}' with format 'boxes_scores' needs input 'scores'",
                        hint="feed 'scores' with float32[A,C] class scores")
            return "?"
        if not ctx.expect("scores", dtypes=_FLOATS, ranks=(2,), expected="float32[A,C]"):
            return "?"
        return ctx.inputs["scores"].shape[1]
    if "predictions" not in ctx.inputs:
        ctx.problem("E-PORT", f"node '{ctx.node}' with format '{fmt}' needs input 'predictions'")
        return "?"
    if not ctx.expect("predictions", dtypes=_FLOATS, ranks=(2,),
                      expected=f"float32[{'4+C,A' if fmt == 'yolov8' else 'A,5+C'}] ({fmt} layout)"):
        return "?"
    t: TensorType = ctx.inputs["predictions"]
    rows = t.shape[0] if fmt == "yolov8" else t.shape[1]
    base = 4 if fmt == "yolov8" else 5
    if isinstance(rows, int):
        if rows <= base:
            ctx.mismatch(
                "E-SHAPE", "predictions", t,
                f"float32[{'4+C,A' if fmt == 'yolov8' else 'A,5+C'}] with C >= 1 ({fmt} layout)",
                hint="set param 'format' to the layout the detector produces (yolov8, yolov5, boxes_scores)",
            )
            return "?"
        return rows - base
    return "?"


def _infer_nms(ctx: InferContext) -> dict[str, TensorType]:
    classes = _classes(ctx)
    if classes == "?" and ctx.problems:
        return {}
    if "transform" in ctx.inputs and not ctx.expect(
        "transform", dtypes=("float32",), shape=(6,), expected="float32[6] (from image.letterbox/resize)"
    ):
        return {}
    names = ctx.params.get("class_names")
    if names is not None and isinstance(classes, int) and len(names) != classes:
        ctx.problem("E-PARAM", f"node '{ctx.node}' param 'class_names' has {len(names)} names "
                    f"but the detector has {classes} classes", param="class_names")
    ctx.meta["classes"] = classes
    k = ctx.params["max_detections"] if ctx.params["pad"] else "K"
    ragged = not ctx.params["pad"]
    return {
        "boxes": TensorType("float32", (k, 4), ragged=ragged),
        "scores": TensorType("float32", (k,), ragged=ragged),
        "labels": TensorType("int64", (k,), ragged=ragged),
        "count": TensorType("int32", ()),
    }


OPS = [
    OpDef(
        name="detect.nms",
        summary="Non-maximum suppression over YOLOv8/YOLOv5/boxes+scores output, boxes mapped to the source.",
        inputs=(
            PortDef("predictions", "raw detector output (yolov8/yolov5)", optional=True),
            PortDef("boxes", "float32[A,4] xyxy (format boxes_scores)", optional=True),
            PortDef("scores", "float32[A,C] (format boxes_scores)", optional=True),
            PortDef("transform", "float32[6] from image.letterbox/resize", optional=True),
        ),
        outputs=(
            PortDef("boxes", "float32[K,4] xyxy"),
            PortDef("scores", "float32[K]"),
            PortDef("labels", "int64[K]"),
            PortDef("count", "int32[] number of detections"),
        ),
        infer=_infer_nms,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "format": {"enum": ["yolov8", "yolov5", "boxes_scores"], "default": "yolov8"},
                "iou_threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.45},
                "score_threshold": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.25},
                "max_detections": {"type": "integer", "minimum": 1, "maximum": 100000, "default": 100},
                "class_agnostic": {"type": "boolean", "default": False},
                "pad": {"description": "Pad outputs to max_detections (uniform batch); count says how many are real.",
                        "type": "boolean", "default": False},
                "class_names": {"type": "array", "items": {"type": "string"}},
                "clip": {"description": "Clip boxes to the source image.", "type": "boolean", "default": True},
            },
        },
        devices=frozenset({"cpu", "gpu"}),
        kernel="dagserve.ops.kernels.detect:nms",
    ),
]
