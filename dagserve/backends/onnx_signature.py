"""Read an ONNX model's signature without running it (only the ``onnx`` package)."""

from __future__ import annotations

import os
from typing import Any

from dagserve.backends.base import ModelSignature, SignatureError
from dagserve.types import UNKNOWN, Dim, TensorType

__all__ = ["read_onnx_signature"]


def _dtype(elem_type: int) -> str:
    import numpy as np
    from onnx import TensorProto, helper

    if elem_type == TensorProto.STRING:
        return "bytes"
    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)))
    except (KeyError, TypeError, ValueError):
        return f"onnx:{TensorProto.DataType.Name(elem_type)}"


def _tensor_type(value_info: Any) -> TensorType:
    tensor = value_info.type.tensor_type
    dims: list[Dim] = []
    if tensor.HasField("shape"):
        for d in tensor.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(str(d.dim_param))
            else:
                dims.append(UNKNOWN)
    return TensorType(_dtype(tensor.elem_type), tuple(dims))


def read_onnx_signature(path: str) -> ModelSignature:
    """Inputs (initializers excluded) and outputs of the ONNX model at ``path``.

    Raises:
        SignatureError: ``E-MODEL-FILE`` when the file is missing, ``E-MODEL`` when it
            is not a readable ONNX model.
    """
    if not os.path.isfile(path):
        raise SignatureError("E-MODEL-FILE", f"model file '{path}' does not exist")
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, Exception) as exc:  # protobuf raises several kinds on garbage
        raise SignatureError("E-MODEL", f"'{path}' is not a readable ONNX model: {exc}") from exc
    graph = model.graph
    if not graph.input and not graph.output:
        raise SignatureError("E-MODEL", f"'{path}' is not an ONNX model (no graph inputs or outputs)")
    initializers = {init.name for init in graph.initializer}
    inputs = {vi.name: _tensor_type(vi) for vi in graph.input if vi.name not in initializers}
    outputs = {vi.name: _tensor_type(vi) for vi in graph.output}
    return ModelSignature(inputs, outputs, "onnx")
