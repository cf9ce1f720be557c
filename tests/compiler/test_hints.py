"""Hints of rank mismatches: K detections per image into a per-box port, and which side of a
model edge has the batch dimension."""

from __future__ import annotations

from collections.abc import Callable

from dagserve.backends.base import ModelSignature
from dagserve.compiler import CompileResult
from dagserve.ops.base import InferContext
from dagserve.ops.models import infer_model
from dagserve.types import TensorType

CompileText = Callable[..., CompileResult]

DETECT = """
dagserve: 1
name: p
max_batch_size: 2
inputs:
  images: {dtype: float32, shape: [3, 64, 64]}
outputs:
  y: last.%s
nodes:
  detector:
    op: model.onnx
    inputs: {images: inputs.images}
    params: {path: models/tiny_detector.onnx}
  nms:
    op: detect.nms
    inputs: {predictions: detector.output0}
    params: {pad: %s}
  last:
%s
"""

PER_BOX_HINT = ("'nms.boxes' has a varying number of [4] rows per item (float32[K,4], ragged: e.g. K detections "
                "per image), but input '{port}' takes exactly one [4] per item: pick one row per item in a "
                "'python' op (e.g. the best detection), or feed a port that takes all the rows")


def test_detections_into_a_crop_box_get_the_per_box_hint(compile_text: CompileText) -> None:
    last = "    op: image.crop\n    inputs: {image: inputs.images, box: nms.boxes}"
    result = compile_text(DETECT % ("image", "false", last))
    errors = [d for d in result.diagnostics if d.code == "E-RANK"]
    assert len(errors) == 1 and errors[0].hint == PER_BOX_HINT.format(port="box")
    assert "expects float32[4] (x0,y0,x1,y1) but 'nms.boxes' produces float32[N,K,4] (ragged)" in errors[0].message


def test_detections_into_a_per_box_model_input_get_the_per_box_hint_not_the_batch_one(
        compile_text: CompileText) -> None:
    last = ("    op: model.onnx\n    inputs: {a: nms.boxes, b: nms.boxes}\n"
            "    params: {path: models/two_inputs.onnx}")
    result = compile_text(DETECT % ("sum", "false", last))
    hints = sorted(d.hint or "" for d in result.diagnostics if d.code == "E-RANK")
    assert hints == [PER_BOX_HINT.format(port="a"), PER_BOX_HINT.format(port="b")]
    assert not any("no batch dimension" in h for h in hints)


def test_padded_detections_are_uniform_and_not_called_ragged(compile_text: CompileText) -> None:
    last = "    op: image.crop\n    inputs: {image: inputs.images, box: nms.boxes}"
    result = compile_text(DETECT % ("image", "true", last))
    (d,) = [d for d in result.diagnostics if d.code == "E-RANK"]
    assert "ragged" not in (d.hint or "")


def ctx(inputs: dict[str, TensorType]) -> InferContext:
    return InferContext("m", "model.onnx", {"path": "m.onnx"}, inputs, {k: f"prep.{k}" for k in inputs}, True,
                        {"path": "/abs/m.onnx"})


def test_a_model_with_a_symbolic_batch_dim_is_not_said_to_have_none() -> None:
    sig = ModelSignature({"x": TensorType("float32", ("batch", 4))}, {"y": TensorType("float32", ("batch", 4))},
                         "onnx")
    c = ctx({"x": TensorType("float32", (2, 4))})
    infer_model(c, sig)
    (problem,) = c.problems
    assert problem.code == "E-RANK"
    assert problem.hint == ("the model's first dimension 'batch' is its batch dimension, which the pipeline "
                            "supplies (max_batch_size > 0): each item must be [4], but the items of 'prep.x' "
                            "carry one more leading dimension ([2,4])")


def test_a_model_whose_fixed_shape_is_the_items_still_gets_the_no_batch_dim_hint() -> None:
    sig = ModelSignature({"x": TensorType("float32", (3, 4))}, {"y": TensorType("float32", (3, 4))}, "onnx")
    c = ctx({"x": TensorType("float32", (3, 4))})
    infer_model(c, sig)
    (problem,) = c.problems
    assert problem.code == "E-RANK" and "the model has no batch dimension" in (problem.hint or "")
