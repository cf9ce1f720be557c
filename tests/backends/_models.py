"""Tiny ONNX models built in the tests, so each test states exactly what it runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_OPSET = [helper.make_operatorsetid("", 17)]


def save(graph: onnx.GraphProto, path: Path) -> str:
    model = helper.make_model(graph, opset_imports=_OPSET, producer_name="dagserve-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return str(path)


def affine(path: Path, batch: int | str = "N") -> str:
    """x float32[batch,4] -> y = relu(x @ W + b) float32[batch,3], total = sum(x, 1) float32[batch]."""
    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.normal(0, 1, (4, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(0, 1, (3,)).astype(np.float32), "B")
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["y"]),
        helper.make_node("ReduceSum", ["x", "axes"], ["total"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "affine",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3]),
         helper.make_tensor_value_info("total", TensorProto.FLOAT, [batch])],
        [w, b, axes],
    )
    return save(graph, path)


def doubler(path: Path) -> str:
    """x float32[N,T] -> y = 2x (a symbolic non-batch dim, for warm-up)."""
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])], "doubler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "T"])],
        [two],
    )
    return save(graph, path)


def strings(path: Path) -> str:
    """s string[N] -> same string[N] (the one dtype DLPack cannot carry)."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["out"])], "strings",
        [helper.make_tensor_value_info("s", TensorProto.STRING, ["N"])],
        [helper.make_tensor_value_info("out", TensorProto.STRING, ["N"])],
    )
    return save(graph, path)


def simple(path: Path) -> str:
    """Triton's ``simple`` example model: INPUT0, INPUT1 int32[N,16] -> OUTPUT0 = sum, OUTPUT1 = difference."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
         helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"])], "simple",
        [helper.make_tensor_value_info("INPUT0", TensorProto.INT32, [-1, 16]),
         helper.make_tensor_value_info("INPUT1", TensorProto.INT32, [-1, 16])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.INT32, [-1, 16]),
         helper.make_tensor_value_info("OUTPUT1", TensorProto.INT32, [-1, 16])],
    )
    return save(graph, path)


SIMPLE_SPEC = """
    dagserve: 1
    name: simple
    max_batch_size: 8
    inputs:
      INPUT0: {dtype: int32, shape: [16]}
      INPUT1: {dtype: int32, shape: [16]}
    outputs:
      OUTPUT0: model.OUTPUT0
      OUTPUT1: model.OUTPUT1
    nodes:
      model:
        op: model.onnx
        inputs: {INPUT0: inputs.INPUT0, INPUT1: inputs.INPUT1}
        params: {path: simple.onnx}
    """
"""A spec serving :func:`simple` (saved as ``simple.onnx`` beside it) fed straight from the request."""


def chain_spec(name: str) -> str:
    """A spec of two :func:`simple` models, the second fed by the first's (read-only) outputs."""
    return f"""
    dagserve: 1
    name: {name}
    max_batch_size: 8
    inputs:
      INPUT0: {{dtype: int32, shape: [16]}}
      INPUT1: {{dtype: int32, shape: [16]}}
    outputs:
      OUTPUT0: second.OUTPUT0
      OUTPUT1: second.OUTPUT1
    nodes:
      first:
        op: model.onnx
        inputs: {{INPUT0: inputs.INPUT0, INPUT1: inputs.INPUT1}}
        params: {{path: simple.onnx}}
      second:
        op: model.onnx
        inputs: {{INPUT0: first.OUTPUT0, INPUT1: first.OUTPUT1}}
        params: {{path: simple.onnx}}
    """
