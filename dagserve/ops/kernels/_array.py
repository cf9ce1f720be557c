"""Arrays on either device, for the built-in kernels.

Kernels are written once against an *array namespace* ``xp`` (``numpy`` on the
CPU, ``cupy`` on a GPU) wherever the algorithm allows, so the GPU algorithm is the
same code as a CPU twin that the test suite exercises on machines without a GPU.
This module provides the pieces that code needs:

* :func:`cupy_or_none` / :func:`require_cupy` — CuPy, imported lazily and guarded
  with ``cupy.cuda.is_available()``: CuPy imports fine on a machine without a GPU
  and then fails on every array operation, so importing it is no test at all.
* :func:`array_namespace` — ``numpy`` or ``cupy``, whichever owns an array,
  without importing CuPy for NumPy arrays.
* :class:`DeviceArrays` — one kernel instance's device: its namespace, a context
  that makes its GPU current, and conversion of inputs (NumPy, CuPy or any DLPack
  producer) to arrays of that device without copies where memory is shared.
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager, nullcontext
from types import ModuleType
from typing import Any

import numpy as np

from dagserve.errors import MissingExtraError, UnrecoverableError
from dagserve.types import Device

__all__ = [
    "DeviceArrays",
    "array_namespace",
    "cupy_or_none",
    "is_cupy_array",
    "require_cupy",
    "to_host",
]

_lock = threading.Lock()
_cupy_state: dict[str, Any] = {}

_DLPACK_CPU = 1  # kDLCPU in DLPack's DLDeviceType
_DLPACK_CUDA = (2, 3, 13)  # kDLCUDA, kDLCUDAHost, kDLCUDAManaged


def cupy_or_none() -> ModuleType | None:
    """CuPy when it is installed *and* a CUDA device is usable, else ``None``.

    The answer is computed once per process: ``cupy.cuda.is_available()`` opens the
    driver, which is not free.
    """
    with _lock:
        if "module" not in _cupy_state:
            module: ModuleType | None
            try:
                import cupy

                module = cupy if cupy.cuda.is_available() else None
            except Exception:  # not installed, or a broken CUDA install: no GPU for us
                module = None
            _cupy_state["module"] = module
        result: ModuleType | None = _cupy_state["module"]
        return result


def require_cupy(what: str) -> ModuleType:
    """CuPy for a kernel placed on a GPU, or an error that says what is missing.

    Raises:
        MissingExtraError: CuPy is not installed (``pip install 'dagserve[gpu]'``).
        UnrecoverableError: CuPy is installed but no CUDA device is usable.
    """
    try:
        import cupy  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(what, "cupy", "gpu") from exc
    module = cupy_or_none()
    if module is None:
        raise UnrecoverableError(
            f"{what} needs a CUDA GPU but cupy.cuda.is_available() is False; "
            "compile with --target cpu (or device: auto) on this machine"
        )
    return module


def is_cupy_array(x: Any) -> bool:
    """True for a ``cupy.ndarray`` (checked by type name: no CuPy import needed)."""
    return type(x).__module__.split(".")[0] == "cupy" and hasattr(x, "device")


def array_namespace(x: Any) -> ModuleType:
    """``numpy`` or ``cupy``: the namespace whose functions operate on ``x``.

    Raises:
        TypeError: ``x`` is neither a NumPy nor a CuPy array.
    """
    if isinstance(x, (np.ndarray, np.generic)):
        return np
    if is_cupy_array(x):
        return require_cupy("a CuPy array")
    raise TypeError(f"expected a NumPy or CuPy array, got {type(x).__name__}")


def to_host(x: Any) -> np.ndarray:
    """A NumPy array for ``x`` (a download for a CuPy array, else zero-copy where possible)."""
    if isinstance(x, np.ndarray):
        return x
    if is_cupy_array(x):
        return x.get()  # type: ignore[no-any-return]
    return np.asarray(x)


def _dlpack_device_type(x: Any) -> int | None:
    try:
        return int(x.__dlpack_device__()[0])
    except Exception:
        return None


class DeviceArrays:
    """The arrays of one kernel instance's device.

    Attributes:
        device: the placement from :class:`~dagserve.ops.base.KernelContext`.
        xp: ``numpy`` on the CPU, ``cupy`` on a GPU.
    """

    def __init__(self, device: Device, what: str) -> None:
        self.device = device
        self.xp: ModuleType = require_cupy(what) if device.is_gpu else np

    @property
    def is_gpu(self) -> bool:
        return self.device.is_gpu

    def scope(self) -> AbstractContextManager[Any]:
        """Make this kernel's GPU the current device (a no-op on the CPU).

        The runtime also makes the instance's stream current; CuPy calls made inside
        this scope are queued on that stream.
        """
        if not self.device.is_gpu:
            return nullcontext()
        return self.xp.cuda.Device(self.device.index)  # type: ignore[no-any-return]

    def asarray(self, x: Any, port: str) -> Any:
        """``x`` as an array of this device: shared memory when it already lives there.

        On the CPU: NumPy arrays pass through, CPU DLPack producers are wrapped with
        ``numpy.from_dlpack``, bytes and scalars become NumPy arrays; a GPU array is
        refused (the compiler inserts a copy node for every device change, so one
        reaching a CPU kernel is a wiring bug, not something to paper over).
        On a GPU: CuPy arrays pass through, CUDA DLPack producers are wrapped with
        ``cupy.from_dlpack``, host data is uploaded.

        Raises:
            TypeError: a GPU array was fed to a CPU kernel.
        """
        if isinstance(x, np.ndarray) and not self.device.is_gpu:
            return x
        if not self.device.is_gpu:
            if is_cupy_array(x):
                raise TypeError(f"input '{port}' is a GPU array but the kernel runs on the CPU")
            if hasattr(x, "__dlpack__"):
                kind = _dlpack_device_type(x)
                if kind == _DLPACK_CPU:
                    return np.from_dlpack(x)
                if kind in _DLPACK_CUDA:
                    raise TypeError(f"input '{port}' is a GPU array but the kernel runs on the CPU")
            return np.asarray(x)
        cp = self.xp
        if isinstance(x, cp.ndarray):
            return x
        if hasattr(x, "__dlpack__") and _dlpack_device_type(x) in _DLPACK_CUDA:
            return cp.from_dlpack(x)
        return cp.asarray(np.asarray(x))

    def to_numpy(self, x: Any) -> np.ndarray:
        """A host copy of a device array (or ``x`` itself on the CPU)."""
        return to_host(x)
