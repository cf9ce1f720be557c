"""Tensors on the KServe v2 / Triton wire <-> NumPy arrays.

Inputs arrive either as ``raw_input_contents`` (one little-endian buffer per
input, in input order; BYTES elements each prefixed by a 4-byte length) or as
typed ``contents`` fields. Outputs always go back raw, as Triton does. Decoding
never trusts the client: sizes are checked against the declared shape before any
array is built, and every problem is an :class:`InvalidInputError` naming the
tensor.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from dagserve.errors import InvalidInputError
from dagserve.types import DTYPES

__all__ = [
    "MAX_ELEMENTS",
    "TRITON_TO_SPEC",
    "check_shape",
    "decode_bytes",
    "encode_bytes",
    "from_contents",
    "from_raw",
    "to_raw",
    "triton_dtype",
]

TRITON_TO_SPEC: dict[str, str] = {triton: spec for spec, (_, triton) in DTYPES.items()}

_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def triton_dtype(spec_dtype: str) -> str:
    """``float32`` -> ``FP32``."""
    return DTYPES[spec_dtype][1]


_WIRE_DTYPES: dict[str, np.dtype[Any]] = {
    triton: np.dtype(np_name) if spec in ("bytes", "bool") else np.dtype(np_name).newbyteorder("<")
    for spec, (np_name, triton) in DTYPES.items()
}
"""KServe datatype -> the (little-endian) NumPy dtype of its raw bytes."""

_DATATYPE_OF: dict[np.dtype[Any], str] = {np.dtype(np_name): triton for np_name, triton in DTYPES.values()}
"""NumPy dtype -> KServe datatype (native byte order; the hot path of every response)."""


def _np_dtype(triton: str, name: str) -> np.dtype[Any]:
    dtype = _WIRE_DTYPES.get(triton)
    if dtype is None:
        raise InvalidInputError(f"input '{name}': unsupported datatype '{triton}'")
    return dtype


MAX_ELEMENTS = 2**48
"""Most elements a shape may describe, counting its non-zero dimensions only.

No tensor that fits in a message comes near it; a shape such as ``[0, 2**63-1]``
(zero elements, but no array can have that shape) is refused with it instead of
failing deep inside NumPy.
"""


def check_shape(name: str, shape: Sequence[int]) -> int:
    """The element count of an input's shape, refusing negative and impossibly large dimensions.

    Raises:
        InvalidInputError: a negative dimension, or non-zero dimensions that
            multiply to more than :data:`MAX_ELEMENTS`.
    """
    count = 1
    nonzero = 1
    for d in shape:
        if d < 0:
            raise InvalidInputError(f"input '{name}': shape {list(shape)} has a negative dimension")
        count *= d
        nonzero *= d or 1
    if nonzero > MAX_ELEMENTS:
        raise InvalidInputError(
            f"input '{name}': shape {list(shape)} is impossibly large: its non-zero dimensions multiply to "
            f"{nonzero} elements (at most {MAX_ELEMENTS} are accepted, even with a zero dimension)")
    return count



def decode_bytes(buffer: bytes | memoryview, count: int, name: str) -> np.ndarray[Any, Any]:
    """Parse ``count`` length-prefixed BYTES elements into an object array."""
    view = memoryview(buffer)
    if count * 4 > len(view):
        # Checked before allocating: a claimed shape must not make the server allocate for it.
        raise InvalidInputError(
            f"input '{name}': {count} BYTES elements need at least {count * 4} bytes (a 4-byte length each) "
            f"but {len(view)} were sent")
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise InvalidInputError(f"input '{name}': BYTES data ends after {i} of {count} elements")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInputError(
                f"input '{name}': BYTES element {i} claims {length} bytes but only {len(view) - offset} remain")
        out[i] = bytes(view[offset:offset + length])
        offset += length
    if offset != len(view):
        raise InvalidInputError(f"input '{name}': {len(view) - offset} unexpected bytes after {count} BYTES elements")
    return out


def encode_bytes(array: np.ndarray[Any, Any]) -> bytes:
    """Serialise an object/bytes array as length-prefixed elements (row-major)."""
    parts = []
    for item in np.asarray(array, dtype=object).reshape(-1):
        data = item if isinstance(item, (bytes, bytearray)) else str(item).encode("utf-8")
        parts.append(struct.pack("<I", len(data)))
        parts.append(bytes(data))
    return b"".join(parts)


def from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview) -> np.ndarray[Any, Any]:
    """An array view of a raw input buffer (no copy for fixed-size dtypes)."""
    count = check_shape(name, shape)
    if datatype == "BYTES":
        return decode_bytes(raw, count, name).reshape(tuple(shape))
    dtype = _np_dtype(datatype, name)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInputError(
            f"input '{name}': {datatype}{list(shape)} needs {expected} bytes of raw data but {len(raw)} were sent")
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(shape))


def from_contents(name: str, datatype: str, shape: Sequence[int], contents: Any) -> np.ndarray[Any, Any]:
    """An array from the typed ``contents`` field of an input tensor."""
    count = check_shape(name, shape)
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInputError(f"input '{name}': datatype '{datatype}' cannot be sent in typed contents; "
                                "use raw_input_contents")
    values = getattr(contents, field)
    if len(values) != count:
        raise InvalidInputError(
            f"input '{name}': shape {list(shape)} needs {count} values but {len(values)} were sent in {field}")
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        out[:] = list(values)
        return out.reshape(tuple(shape))
    try:
        return np.asarray(values, dtype=_np_dtype(datatype, name)).reshape(tuple(shape))
    except OverflowError as exc:  # int_contents carries INT8/INT16 as int32, uint_contents UINT8/16 as uint32
        raise InvalidInputError(f"input '{name}': a value in {field} does not fit {datatype}: {exc}") from None


def to_raw(array: Any) -> tuple[str, list[int], bytes]:
    """(datatype, shape, raw bytes) of an output array."""
    arr = np.asarray(array)
    if arr.dtype.kind in ("O", "S", "U"):
        return "BYTES", list(arr.shape), encode_bytes(arr)
    datatype = _DATATYPE_OF.get(arr.dtype)
    if datatype is None:
        if arr.dtype.byteorder != ">" or arr.dtype.newbyteorder("=") not in _DATATYPE_OF:
            raise ValueError(f"output dtype {arr.dtype} has no KServe datatype")
        arr = arr.astype(arr.dtype.newbyteorder("<"))
        datatype = _DATATYPE_OF[arr.dtype.newbyteorder("=")]
    return datatype, list(arr.shape), arr.tobytes()
