"""Read an ONNX model's signature without running it (only the ``onnx`` package).

Two things are checked beyond the graph's inputs and outputs, because ONNX Runtime
would only find them when the node loads: every tensor stored as *external data*
(``model.onnx`` + ``model.onnx.data``, the format of models over 2 GB) names a file
that exists next to the model and is long enough for the bytes it claims.

Symbolic dims keep their names, so two ports that share one are known to agree;
names that are not symbols in the spec's grammar (exporters write
``p2o.DynamicDimension.4``, ``batch/2`` or ``unk__3 + 1``) are rewritten to one
(``p2o_DynamicDimension_4``): a dotted name in a message reads like a
``NODE.PORT`` reference, and the spec could not name it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

from dagserve.backends.base import ModelSignature, SignatureError
from dagserve.types import UNKNOWN, Dim, TensorType

__all__ = ["read_onnx_signature", "symbol_name"]

_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NOT_SYMBOL = re.compile(r"[^A-Za-z0-9_]+")


def symbol_name(text: str) -> str:
    """``text`` as a symbol of the spec grammar: runs of other characters become ``_``.

    ``"p2o.DynamicDimension.4"`` -> ``"p2o_DynamicDimension_4"``, ``"2*s0"`` -> ``"_2_s0"``;
    a name that already is a symbol is returned unchanged.
    """
    if _SYMBOL.match(text):
        return text
    name = _NOT_SYMBOL.sub("_", text.strip()).strip("_") or "dim"
    return name if _SYMBOL.match(name) else f"_{name}"


class _Symbols:
    """One spec symbol per distinct exporter name. Names that already are symbols keep
    them; a rewritten name never takes one of those (two names that clean up alike stay apart)."""

    def __init__(self, names: set[str]) -> None:
        self.names: dict[str, str] = {n: n for n in names if _SYMBOL.match(n)}

    def __call__(self, text: str) -> str:
        if text not in self.names:
            base = symbol_name(text)
            name, k = base, 2
            taken = set(self.names.values())
            while name in taken:
                name, k = f"{base}_{k}", k + 1
            self.names[text] = name
        return self.names[text]


def _dim_params(values: Any) -> set[str]:
    return {d.dim_param for vi in values for d in vi.type.tensor_type.shape.dim if d.dim_param}


def _dtype(elem_type: int) -> str:
    import numpy as np
    from onnx import TensorProto, helper

    if elem_type == TensorProto.STRING:
        return "bytes"
    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)))
    except (KeyError, TypeError, ValueError):
        return f"onnx:{TensorProto.DataType.Name(elem_type)}"


def _tensor_type(value_info: Any, symbols: _Symbols) -> TensorType:
    tensor = value_info.type.tensor_type
    dims: list[Dim] = []
    if tensor.HasField("shape"):
        for d in tensor.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(symbols(str(d.dim_param)))
            else:
                dims.append(UNKNOWN)
    return TensorType(_dtype(tensor.elem_type), tuple(dims))


def _graph_tensors(graph: Any) -> Iterator[Any]:
    """Every tensor a graph holds: initializers and attribute tensors, subgraphs included."""
    from onnx import AttributeProto

    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == AttributeProto.GRAPH:
                yield from _graph_tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graph_tensors(sub)


def _check_external_data(path: str, graph: Any) -> None:
    """Raise unless every external-data tensor's file exists and holds its bytes."""
    from onnx import TensorProto

    base = os.path.dirname(os.path.abspath(path))
    for tensor in _graph_tensors(graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        location = info.get("location", "")
        where = f"model '{path}' keeps tensor '{tensor.name}' in external data file '{location}'"
        if not location or os.path.isabs(location) or ".." in location.replace("\\", "/").split("/"):
            raise SignatureError("E-MODEL", f"{where}, which is not a file name next to the model",
                                 hint="external data files must sit next to the model (onnx.save with "
                                 "save_as_external_data=True writes them so)")
        data = os.path.join(base, location)
        if not os.path.isfile(data):
            raise SignatureError("E-MODEL-FILE", f"{where}, which does not exist (looked for {data})",
                                 hint="copy the data file next to the model: it is part of the model")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", 0) or 0)
        except ValueError:
            raise SignatureError("E-MODEL", f"{where} with an offset or length that is not a number") from None
        size = os.path.getsize(data)
        if offset + length > size:
            raise SignatureError("E-MODEL", f"{where}, bytes {offset}..{offset + length}, but the file has "
                                 f"only {size} bytes (truncated?)")


def read_onnx_signature(path: str) -> ModelSignature:
    """Inputs (initializers excluded) and outputs of the ONNX model at ``path``.

    Raises:
        SignatureError: ``E-MODEL-FILE`` when the file or one of its external data
            files is missing, ``E-MODEL`` when it is not a readable ONNX model or an
            external data file is outside the model's directory or too short.
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
    _check_external_data(path, graph)
    initializers = {init.name for init in graph.initializer}
    symbols = _Symbols(_dim_params([*graph.input, *graph.output]))
    inputs = {vi.name: _tensor_type(vi, symbols) for vi in graph.input if vi.name not in initializers}
    outputs = {vi.name: _tensor_type(vi, symbols) for vi in graph.output}
    return ModelSignature(inputs, outputs, "onnx")
