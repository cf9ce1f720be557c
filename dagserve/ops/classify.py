"""``classify.topk``: the k best classes of a logits/probabilities vector, with labels."""

from __future__ import annotations

from dagserve.ops.base import InferContext, OpDef, PortDef
from dagserve.types import TensorType

__all__ = ["OPS"]


def _infer_topk(ctx: InferContext) -> dict[str, TensorType]:
    if not ctx.expect("logits", dtypes=("float16", "float32", "float64"), ranks=(1,),
                      expected="float32[C] (one score per class)"):
        return {}
    classes = ctx.inputs["logits"].shape[0]
    k = ctx.params["k"]
    if isinstance(classes, int) and k > classes:
        ctx.problem("E-PARAM", f"node '{ctx.node}' param 'k' is {k} but '{ctx.source('logits')}' has "
                    f"only {classes} classes", hint=f"set k to at most {classes}", param="k")
        return {}
    labels_file = ctx.files.get("labels")
    if labels_file is not None:
        try:
            with open(labels_file, encoding="utf-8") as fh:
                labels = [line.rstrip("\n") for line in fh if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            ctx.problem("E-PARAM", f"node '{ctx.node}' cannot read labels file: {exc}", param="labels")
            return {}
        if isinstance(classes, int) and len(labels) != classes:
            ctx.problem("E-PARAM", f"node '{ctx.node}' labels file has {len(labels)} labels but "
                        f"'{ctx.source('logits')}' has {classes} classes", param="labels")
    out = {
        "scores": TensorType("float32", (k,)),
        "indices": TensorType("int64", (k,)),
    }
    if labels_file is not None:
        out["labels"] = TensorType("bytes", (k,))
    return out


OPS = [
    OpDef(
        name="classify.topk",
        summary="Top-k classes (optional softmax) with their scores and labels.",
        inputs=(PortDef("logits", "float32[C]"),),
        outputs=(
            PortDef("scores", "float32[k]"),
            PortDef("indices", "int64[k]"),
            PortDef("labels", "bytes[k], when a labels file is given", optional=True),
        ),
        infer=_infer_topk,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "k": {"type": "integer", "minimum": 1, "default": 5},
                "softmax": {"type": "boolean", "default": True},
                "labels": {"description": "A text file, one label per line.", "type": "string"},
            },
        },
        devices=frozenset({"cpu", "gpu"}),
        kernel="dagserve.ops.kernels.classify:topk",
        path_params=("labels",),
    ),
]
