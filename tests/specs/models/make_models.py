"""Make the tiny ONNX models the compiler tests read signatures from.

They are fixtures for *compile-time* checks (names, dtypes, shapes, batch
dimensions); their weights are fixed by a seed and never judged. The real,
trained models of the example pipelines live in ``pipelines/models/``.

Run: ``python tests/specs/models/make_models.py`` (writes next to this file).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).parent
OPSET = [helper.make_operatorsetid("", 17)]


def _save(graph: onnx.GraphProto, name: str) -> None:
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="dagserve-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, HERE / name)


def tiny_detector(batch: int | str = "N", name: str = "tiny_detector.onnx") -> None:
    """images float32[batch,3,64,64] -> output0 float32[batch,6,64] (YOLOv8 layout, 2 classes)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (6, 3, 8, 8)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([0, 6, 64], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["images", "w"], ["conv"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Reshape", ["conv", "shape"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 6, 64])],
        [w, shape],
    )
    _save(graph, name)


def tiny_classifier() -> None:
    """images float32[N,3,32,32] -> logits float32[N,10]."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (3, 10)).astype(np.float32), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny_classifier",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [w],
    )
    _save(graph, "tiny_classifier.onnx")


def two_inputs() -> None:
    """a float32[N,4], b float32[N,4] -> sum float32[N,4]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])], "two_inputs",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 4])],
    )
    _save(graph, "two_inputs.onnx")


def external_data_missing() -> None:
    """tiny_classifier with its weight in 'external_missing.onnx.data', which is then deleted:
    the model file alone looks fine, and ONNX Runtime would only fail when the node loads."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (3, 10)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
         helper.make_node("Flatten", ["pooled"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"])],
        "external_missing",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=OPSET, producer_name="dagserve-tests")
    model.ir_version = 8
    onnx.save(model, HERE / "external_missing.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="external_missing.onnx.data", size_threshold=0)
    (HERE / "external_missing.onnx.data").unlink()


def exporter_dims() -> None:
    """x float32[p2o.DynamicDimension.0, p2o.DynamicDimension.4] -> y (same): Paddle2ONNX's dim names."""
    dims = ["p2o.DynamicDimension.0", "p2o.DynamicDimension.4"]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "exporter_dims",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
    )
    _save(graph, "exporter_dims.onnx")


if __name__ == "__main__":
    tiny_detector()
    tiny_detector(batch=1, name="tiny_detector_b1.onnx")
    tiny_classifier()
    two_inputs()
    external_data_missing()
    exporter_dims()
    (HERE / "not_a_model.onnx").write_bytes(b"this is not a protobuf \x00\xff\x13 at all")
    print("wrote", sorted(p.name for p in HERE.glob("*.onnx")))
