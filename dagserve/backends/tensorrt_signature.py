"""Read the signature of a serialized TensorRT engine (TensorRT 10's name-based API).

An engine records its I/O tensors: ``num_io_tensors``, and per name its mode
(input/output), dtype and shape. Dynamic dims are ``-1``; dim 0 becomes the
symbol ``N`` (the batch dimension when the pipeline batches) and any other
dynamic dim ``<tensor>_<axis>``, so distinct dynamic dims are never assumed
equal. Deserializing an engine needs TensorRT *and* a CUDA GPU: an engine is
only valid for the TensorRT version and GPU it was built for, which is why
``model.tensorrt`` is a GPU-only op (the compiler refuses it on a CPU target
before reading the file).
"""

from __future__ import annotations

import os
import re
from typing import Any

from dagserve.backends.base import ModelSignature, SignatureError
from dagserve.types import Dim, TensorType

__all__ = ["deserialize_engine", "engine_signature", "import_tensorrt", "read_tensorrt_signature", "trt_dtype"]


def import_tensorrt() -> Any:
    """``tensorrt``, or a ``SignatureError`` (``E-EXTRA``) naming the extra to install."""
    try:
        import tensorrt
    except ImportError as exc:
        raise SignatureError("E-EXTRA", "model.tensorrt needs tensorrt: pip install 'dagserve[gpu]'",
                             hint="pip install 'dagserve[gpu]' (tensorrt-cu13)") from exc
    return tensorrt


def trt_dtype(trt: Any, dtype: Any) -> str:
    """dagserve dtype name of a ``tensorrt.DataType`` (``trt:NAME`` for types NumPy lacks)."""
    import numpy as np

    try:
        return np.dtype(trt.nptype(dtype)).name
    except (TypeError, ValueError, KeyError):
        return f"trt:{getattr(dtype, 'name', dtype)}"


def _symbol(tensor: str, axis: int) -> str:
    return "N" if axis == 0 else re.sub(r"\W", "_", f"{tensor}_{axis}")


def deserialize_engine(path: str) -> Any:
    """The ``ICudaEngine`` in ``path``.

    Raises:
        SignatureError: ``E-EXTRA`` without tensorrt, ``E-MODEL`` when TensorRT
            cannot deserialize the file (not an engine, another TensorRT version
            or GPU, or no CUDA device).
    """
    trt = import_tensorrt()
    with open(path, "rb") as fh:
        data = fh.read()
    why = ""
    engine = None
    try:
        runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        engine = runtime.deserialize_cuda_engine(data)
    except Exception as exc:  # no CUDA device, driver mismatch, ...
        why = f": {exc}"
    if engine is None:
        raise SignatureError(
            "E-MODEL",
            f"TensorRT {trt.__version__} cannot deserialize '{path}'{why}",
            hint="an engine runs only with the TensorRT version and GPU it was built for, and needs a CUDA "
                 "device to be read; rebuild it here, or use model.onnx with the TensorRT provider",
        )
    return engine


def engine_signature(engine: Any) -> ModelSignature:
    """Inputs and outputs of a deserialized engine, in the engine's I/O order."""
    import tensorrt as trt

    inputs: dict[str, TensorType] = {}
    outputs: dict[str, TensorType] = {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dims: list[Dim] = [int(d) if int(d) >= 0 else _symbol(name, axis)
                           for axis, d in enumerate(engine.get_tensor_shape(name))]
        t = TensorType(trt_dtype(trt, engine.get_tensor_dtype(name)), tuple(dims))
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            inputs[name] = t
        else:
            outputs[name] = t
    return ModelSignature(inputs, outputs, "tensorrt")


def read_tensorrt_signature(path: str, params: dict[str, Any] | None = None) -> ModelSignature:
    """Inputs and outputs (full shapes, ``-1`` dims as symbols) of the engine at ``path``.

    Raises:
        SignatureError: ``E-MODEL-FILE``, ``E-EXTRA`` or ``E-MODEL`` (see :func:`deserialize_engine`).
    """
    if not os.path.isfile(path):
        raise SignatureError("E-MODEL-FILE", f"model file '{path}' does not exist")
    return engine_signature(deserialize_engine(path))
