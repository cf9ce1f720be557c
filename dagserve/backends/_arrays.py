"""Array plumbing the model backends share: dtypes, contiguity, checks, fixed batches, CuPy.

Backends receive whatever the previous node produced: NumPy arrays on the CPU,
CuPy arrays (or torch tensors) on a GPU, or anything else that speaks DLPack.
This module answers the few questions every backend asks about such an object
without importing a framework that is not already in use:

* :func:`dtype_name` - the dagserve dtype name of an array of any of those kinds;
* :func:`ensure_contiguous` - a C-contiguous array (a copy only when needed),
  because ONNX Runtime and TensorRT read raw buffers and refuse strides;
* :func:`check_input` - a ``ValueError`` that names the model input, what it
  expects and what it received, before a framework says something cryptic;
* :func:`pad_batch` / :func:`cut_batch` - run a model whose batch dimension is
  fixed at ``k`` on a smaller batch (zero rows added, then cut off again);
* :func:`require_cupy` - CuPy for a GPU kernel, or an error naming the extra.
"""

from __future__ import annotations

from typing import Any

from dagserve.errors import MissingExtraError, UnrecoverableError
from dagserve.types import Dim, TensorType, render_shape

__all__ = [
    "DLPACK_CPU",
    "DLPACK_CUDA",
    "InFlight",
    "check_input",
    "cut_batch",
    "dlpack_device_type",
    "dtype_name",
    "ensure_contiguous",
    "fixed_batch",
    "framework",
    "pad_batch",
    "require_cupy",
    "to_host",
    "unknown_to_one",
    "warmup_failed",
]

DLPACK_CPU = 1
"""``kDLCPU`` in DLPack's ``DLDeviceType``."""
DLPACK_CUDA = 2
"""``kDLCUDA`` in DLPack's ``DLDeviceType``."""


def framework(x: Any) -> str:
    """``numpy``, ``cupy``, ``torch`` or the top-level module of ``x``'s type."""
    return type(x).__module__.split(".")[0]


def dtype_name(x: Any) -> str:
    """The dagserve dtype name of an array (``float32``, ``bytes`` for object/str arrays)."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return type(x).__name__
    if framework(x) == "torch":
        return str(dtype).removeprefix("torch.")
    kind = getattr(dtype, "kind", "")
    if kind in ("O", "S", "U"):
        return "bytes"
    return str(dtype)


def dlpack_device_type(x: Any) -> int:
    """DLPack device type of ``x`` (``DLPACK_CPU`` for NumPy and anything without the protocol)."""
    device = getattr(x, "__dlpack_device__", None)
    if device is None:
        return DLPACK_CPU
    return int(device()[0])


def ensure_contiguous(x: Any) -> Any:
    """``x`` itself when it is C-contiguous, else a C-contiguous copy on the same device.

    ONNX Runtime's DLPack import and TensorRT's tensor addresses take dense
    row-major buffers only; a transposed view must be packed first.
    """
    kind = framework(x)
    if kind == "torch":
        return x if x.is_contiguous() else x.contiguous()
    flags = getattr(x, "flags", None)
    if flags is not None and not flags["C_CONTIGUOUS"]:
        if kind == "cupy":
            import cupy

            return cupy.ascontiguousarray(x)
        import numpy as np

        return np.ascontiguousarray(x)
    return x


def _describe(dtype: str, shape: tuple[Dim, ...]) -> str:
    return f"{dtype}{render_shape(shape)}"


def check_input(model: str, name: str, want: TensorType, x: Any) -> None:
    """Check one input against the model's declared type (full shape, batch dim included).

    Args:
        model: how to name the model in the message (its file or class).
        name: the model input's name.
        want: the model's type for that input; symbolic dims accept any size.
        x: the array about to be fed.

    Raises:
        ValueError: wrong dtype, rank or fixed dimension; the message names the
            input, what the model expects and what it received.
    """
    got_dtype = dtype_name(x)
    shape = getattr(x, "shape", None)
    if shape is None:
        raise ValueError(f"model input '{name}' of {model} expects an array {_describe(want.dtype, want.shape)} "
                         f"but received a {type(x).__name__}")
    got_shape = tuple(int(d) for d in shape)
    fits = (
        got_dtype == want.dtype
        and len(got_shape) == want.rank
        and all(not isinstance(w, int) or w == g for w, g in zip(want.shape, got_shape))
    )
    if not fits:
        raise ValueError(f"model input '{name}' of {model} expects {_describe(want.dtype, want.shape)} "
                         f"but received {_describe(got_dtype, got_shape)}")


def fixed_batch(types: dict[str, TensorType]) -> int | None:
    """The fixed batch size ``k`` of a model whose inputs all have dim 0 fixed, else ``None``."""
    sizes = {t.shape[0] for t in types.values() if t.shape}
    if len(sizes) == 1:
        size = next(iter(sizes))
        if isinstance(size, int):
            return size
    return None


def pad_fixed_batch(label: str, name: str, x: Any, fixed: int | None) -> tuple[Any, int | None]:
    """``x`` padded along dim 0 to a model's fixed batch, and how many items it held.

    Returns ``(x, None)`` when the model's batch is not fixed (or ``x`` has no dims).

    Raises:
        ValueError: the batch is larger than the model's fixed batch.
    """
    if fixed is None or not len(getattr(x, "shape", ())):
        return x, None
    items = int(x.shape[0])
    if items > fixed:
        raise ValueError(f"model input '{name}' of {label} has a fixed batch of {fixed} "
                         f"but received a batch of {items}")
    return pad_batch(x, fixed), items


def pad_batch(x: Any, size: int) -> Any:
    """``x`` with zero rows appended along dim 0 up to ``size`` (``x`` itself when it has them)."""
    have = int(x.shape[0])
    if have >= size:
        return x
    kind = framework(x)
    if kind == "torch":
        import torch

        return torch.cat([x, x.new_zeros((size - have, *x.shape[1:]))])
    if kind == "cupy":
        import cupy as xp
    else:
        import numpy as xp  # type: ignore[no-redef]
    return xp.concatenate([x, xp.zeros((size - have, *x.shape[1:]), dtype=x.dtype)])


def cut_batch(y: Any, padded: int, items: int) -> Any:
    """The first ``items`` rows of an output computed on a batch padded to ``padded`` (a view)."""
    shape = getattr(y, "shape", None)
    if items < padded and shape is not None and len(shape) and int(shape[0]) == padded:
        return y[:items]
    return y


def unknown_to_one(shape: tuple[Dim, ...], batch: int = 1) -> tuple[int, ...]:
    """A concrete shape for warm-up: symbolic dims become 1 (dim 0 becomes ``batch`` if symbolic)."""
    out = []
    for i, d in enumerate(shape):
        if isinstance(d, int):
            out.append(d)
        else:
            out.append(batch if i == 0 else 1)
    return tuple(out)


def warmup_failed(op: str, label: str, exc: BaseException) -> str:
    """The log line for an automatic warm-up (zeros, empty strings) that failed.

    Such inputs need not be valid for a valid model (Triton's ``simple_string`` casts
    its strings to numbers), so the model loads anyway; the line says what failed
    and how to give the node real sample values instead.
    """
    return (f"{op}: the automatic warm-up of {label} on zeros/empty strings failed, the model is loaded "
            f"without it: {type(exc).__name__}: {str(exc).strip()[:500]}. Give the node 'warmup: {{inputs: "
            "{...}}' with valid sample values, or 'warmup: false'")


def to_host(x: Any) -> Any:
    """A NumPy array for ``x``: itself, a zero-copy view of a CPU DLPack producer, or a download."""
    import numpy as np

    if isinstance(x, np.ndarray):
        return x
    kind = framework(x)
    if kind == "cupy":
        return x.get()
    if kind == "torch":
        return x.detach().cpu().numpy()
    if hasattr(x, "__dlpack__") and dlpack_device_type(x) == DLPACK_CPU:
        return np.from_dlpack(x)
    return np.asarray(x)


def require_cupy(what: str, device_index: int) -> Any:
    """CuPy with a usable CUDA device ``device_index``, for a kernel placed on a GPU.

    CuPy imports fine on a machine without a GPU and then fails on every
    operation, so availability is checked, not just the import.

    Raises:
        MissingExtraError: CuPy is not installed.
        UnrecoverableError: no usable CUDA device with that index.
    """
    try:
        import cupy
    except ImportError as exc:
        raise MissingExtraError(what, "cupy", "gpu") from exc
    try:
        available = cupy.cuda.is_available()
        count = cupy.cuda.runtime.getDeviceCount() if available else 0
    except Exception:  # a broken driver install reads as "no GPU"
        available, count = False, 0
    if not available or device_index >= count:
        raise UnrecoverableError(f"{what} is placed on gpu:{device_index} but "
                                 f"{'no CUDA device is usable' if not count else f'only {count} GPU(s) exist'}; "
                                 "compile with --target cpu (or device: auto)")
    return cupy




class InFlight:
    """Keeps a GPU kernel's inputs alive until the work that reads them has finished.

    CuPy's memory pool hands a freed block back to the stream that allocated it.
    When a producer's array is read by work enqueued on *another* stream (ours)
    and the last Python reference dies before that work ends, the producer's
    next allocation could reuse the block under our feet. So a kernel that
    enqueues asynchronous work :meth:`hold` s its inputs with an event recorded
    after the work; they are dropped at the next :meth:`hold` (after that event
    has passed, which it almost always has by then) or at :meth:`drain`.
    """

    def __init__(self) -> None:
        self._event: Any = None
        self._refs: list[Any] = []

    def hold(self, refs: list[Any], event: Any) -> None:
        """Keep ``refs`` until ``event`` (recorded after the work that reads them) has passed.

        ``event`` is anything with ``synchronize()``: a CuPy or a torch CUDA event.
        """
        self.drain()
        self._refs = refs
        self._event = event

    def drain(self) -> None:
        """Wait for the held work, then drop its inputs."""
        if self._event is not None:
            self._event.synchronize()
        self._event, self._refs = None, []
