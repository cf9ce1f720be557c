"""The type rule of model nodes (infer_model) against hand-made signatures."""

from __future__ import annotations

from dagserve.backends.base import ModelSignature
from dagserve.ops.base import InferContext
from dagserve.ops.models import infer_model
from dagserve.types import TensorType

SIG = ModelSignature(
    inputs={"images": TensorType("float32", ("batch", 3, "H", "W"))},
    outputs={"boxes": TensorType("float32", ("batch", "H", 4)), "n": TensorType("int64", ())},
    format="onnx",
)


def ctx(inputs: dict[str, TensorType], batched: bool = True, params: dict | None = None) -> InferContext:  # type: ignore[type-arg]
    return InferContext("det", "model.onnx", {"path": "m.onnx", **(params or {})}, inputs,
                        {k: f"prep.{k}" for k in inputs}, batched, {"path": "/abs/m.onnx"})


def test_outputs_drop_the_batch_dim_and_bind_symbols_from_the_inputs() -> None:
    c = ctx({"images": TensorType("float32", (3, 64, 48))})
    out = infer_model(c, SIG)
    assert c.problems == []
    assert out == {"boxes": TensorType("float32", (64, 4)), "n": TensorType("int64", ())}
    assert c.meta["max_batch"] is None


def test_a_fixed_first_dim_limits_the_batch() -> None:
    sig = ModelSignature({"x": TensorType("float32", (2, 4))}, {"y": TensorType("float32", (2, 4))}, "onnx")
    c = ctx({"x": TensorType("float32", (4,))})
    assert infer_model(c, sig) == {"y": TensorType("float32", (4,))}
    assert c.meta["max_batch"] == 2


def test_messages_name_the_model_file_as_written_in_the_spec() -> None:
    c = ctx({"image": TensorType("float32", (3, 64, 64))})
    infer_model(c, SIG)
    (problem,) = c.problems  # the misnamed port; 'images' is not reported unfed again
    assert problem.code == "E-MODEL-INPUT" and "model 'm.onnx'" in problem.message
    assert problem.message.endswith("did you mean 'images'?")


def test_a_batched_pipeline_feeding_a_model_without_batch_dim_says_so() -> None:
    sig = ModelSignature({"x": TensorType("float32", (4,))}, {"y": TensorType("float32", (4,))}, "onnx")
    c = ctx({"x": TensorType("float32", (4,))})
    infer_model(c, sig)
    (problem,) = c.problems
    assert problem.code == "E-RANK" and "has no batch dimension" in (problem.hint or "")


def test_the_batch_hint_is_not_given_when_the_shapes_differ_anyway() -> None:
    sig = ModelSignature({"x": TensorType("float32", ("N", 4))}, {"y": TensorType("float32", ("N", 4))}, "onnx")
    c = ctx({"x": TensorType("float32", (4, 1))})
    infer_model(c, sig)
    (problem,) = c.problems
    assert problem.code == "E-RANK" and problem.hint is None


def test_layouts_naming_an_input_the_model_lacks_is_e_param() -> None:
    c = ctx({"images": TensorType("float32", (3, 64, 64))}, params={"layouts": {"image": "chw"}})
    infer_model(c, SIG)
    (problem,) = c.problems
    assert problem.code == "E-PARAM" and problem.param == "layouts" and "did you mean 'images'?" in problem.message


def test_a_declared_layout_is_checked_against_the_producer() -> None:
    c = ctx({"images": TensorType("float32", (3, 64, 64), layout="hwc")}, params={"layouts": {"images": "chw"}})
    infer_model(c, SIG)
    (problem,) = c.problems
    assert problem.code == "E-LAYOUT" and "expects float32[N,3,H,W] (chw)" in problem.message
