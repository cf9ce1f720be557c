"""Tensor types the compiler reasons about: dtype, symbolic shape, layout, device.

A :class:`TensorType` describes one *batch item* of a tensor that flows along an
edge. When the pipeline batches (``max_batch_size > 0``) every tensor also has a
leading batch dimension ``N`` that is not part of ``shape``; :meth:`TensorType.render`
shows it so messages read like the tensors users see (``float32[N,3,640,640]``).

Dimensions are ``int`` (fixed), a symbol such as ``"H"`` (unknown but named, so two
ports sharing a symbol are known to agree), or ``"?"`` (unknown). A *ragged* type
has per-item dimensions that may differ from item to item (decoded images); ragged
items travel as lists until an op makes them uniform.

This module is the bottom layer: the compiler, the ops and the runtime import it;
it imports nothing of dagserve.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

__all__ = [
    "DTYPES",
    "LAYOUTS",
    "UNKNOWN",
    "DType",
    "Device",
    "Dim",
    "TensorType",
    "dims_compatible",
    "parse_device",
    "parse_dtype",
    "render_shape",
]

Dim = int | str
"""A dimension: a non-negative int, a symbol (``"H"``), or ``"?"`` (unknown)."""

UNKNOWN: str = "?"

# Spec dtype name -> (numpy dtype name, KServe v2 / Triton datatype name).
DTYPES: dict[str, tuple[str, str]] = {
    "bool": ("bool", "BOOL"),
    "uint8": ("uint8", "UINT8"),
    "uint16": ("uint16", "UINT16"),
    "uint32": ("uint32", "UINT32"),
    "uint64": ("uint64", "UINT64"),
    "int8": ("int8", "INT8"),
    "int16": ("int16", "INT16"),
    "int32": ("int32", "INT32"),
    "int64": ("int64", "INT64"),
    "float16": ("float16", "FP16"),
    "float32": ("float32", "FP32"),
    "float64": ("float64", "FP64"),
    "bytes": ("object", "BYTES"),
}

DType = str
"""A dtype name, one of :data:`DTYPES`' keys."""

LAYOUTS: frozenset[str] = frozenset({"hwc", "chw", "hw"})
"""Per-item image layouts. ``None`` on a type means "not an image / unknown"."""

_DEVICE_RE = re.compile(r"^(cpu|gpu)(?::(\d+))?$")


def parse_dtype(name: str) -> DType:
    """Return the canonical dtype for ``name`` (accepts Triton names like ``FP32``).

    Raises:
        ValueError: the name is not a dtype dagserve knows.
    """
    if name in DTYPES:
        return name
    for spec_name, (_, triton) in DTYPES.items():
        if name.upper() in (triton, f"TYPE_{triton}"):
            return spec_name
    raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}")


@dataclass(frozen=True, order=True)
class Device:
    """A placement: ``cpu`` or ``gpu:K``. The compiler resolves ``auto`` before this exists."""

    kind: str
    index: int = 0

    def __str__(self) -> str:
        return "cpu" if self.kind == "cpu" else f"gpu:{self.index}"

    @property
    def is_gpu(self) -> bool:
        return self.kind == "gpu"


CPU = Device("cpu")


def parse_device(text: str) -> Device:
    """Parse ``cpu``, ``gpu`` or ``gpu:K`` (``auto`` is resolved by the compiler).

    Raises:
        ValueError: the text is not a concrete device.
    """
    match = _DEVICE_RE.match(text)
    if not match:
        raise ValueError(f"invalid device {text!r}; expected cpu, gpu, gpu:K or auto")
    kind, index = match.group(1), match.group(2)
    if kind == "cpu":
        if index is not None:
            raise ValueError(f"invalid device {text!r}: cpu takes no index")
        return CPU
    return Device("gpu", int(index or 0))


def render_shape(shape: tuple[Dim, ...], batched: bool = False) -> str:
    dims = (["N"] if batched else []) + [str(d) for d in shape]
    return "[" + ",".join(dims) + "]"


def dims_compatible(a: Dim, b: Dim) -> bool:
    """Two dims may describe the same tensor: equal ints, or either not fixed."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return True


@dataclass(frozen=True)
class TensorType:
    """The type of one batch item on an edge.

    Attributes:
        dtype: element type name (see :data:`DTYPES`).
        shape: per-item dimensions, without the batch dimension.
        layout: ``hwc``/``chw``/``hw`` for images, else ``None``.
        ragged: items may differ in their non-fixed dims, so a batch is a list.
        device: where the tensor lives; ``None`` until placement.
    """

    dtype: DType
    shape: tuple[Dim, ...]
    layout: str | None = None
    ragged: bool = False
    device: Device | None = field(default=None, compare=True)

    @property
    def rank(self) -> int:
        return len(self.shape)

    def with_device(self, device: Device) -> TensorType:
        return replace(self, device=device)

    def render(self, batched: bool = False) -> str:
        """``uint8[N,H,W,3] (hwc, ragged)`` - the form used in every message."""
        text = f"{self.dtype}{render_shape(self.shape, batched)}"
        notes = [n for n in (self.layout, "ragged" if self.ragged else None) if n]
        return f"{text} ({', '.join(notes)})" if notes else text

    def to_json(self) -> dict[str, object]:
        return {
            "dtype": self.dtype,
            "shape": list(self.shape),
            "layout": self.layout,
            "ragged": self.ragged,
            "device": str(self.device) if self.device else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> TensorType:
        device = data.get("device")
        shape = data["shape"]
        assert isinstance(shape, list)
        return cls(
            dtype=str(data["dtype"]),
            shape=tuple(shape),
            layout=data.get("layout"),  # type: ignore[arg-type]
            ragged=bool(data.get("ragged", False)),
            device=parse_device(device) if isinstance(device, str) else None,
        )
