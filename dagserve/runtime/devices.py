"""Devices at run time: per-instance CUDA streams, stream-ordered hand-offs, copy kernels.

On the CPU everything here is a no-op. On a GPU each node instance owns a CUDA
stream; after its kernel the runner records an event on that stream, and a
consumer running on another stream waits on that event before reading (the
semantics of DLPack's ``__dlpack__(stream=...)``), so no hand-off needs a
device-wide synchronisation. CuPy is imported only when a GPU node exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from dagserve.errors import MissingExtraError, UnrecoverableError
from dagserve.ops.base import KernelContext
from dagserve.types import Device

__all__ = ["CopyKernel", "InstanceDevice", "to_host"]


def _cupy() -> Any:
    try:
        import cupy
    except ImportError as exc:
        raise MissingExtraError("running a node on a GPU", "cupy", "gpu") from exc
    if not cupy.cuda.is_available():
        raise UnrecoverableError("the plan places nodes on a GPU but no CUDA device is available; "
                                 "compile with --target cpu (or device: auto)")
    return cupy


class InstanceDevice:
    """The device side of one node instance: its stream, and event bookkeeping."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.stream: Any = None
        self._cupy: Any = None
        if device.is_gpu:
            cp = _cupy()
            self._cupy = cp
            with cp.cuda.Device(device.index):
                self.stream = cp.cuda.Stream(non_blocking=True)

    @property
    def is_gpu(self) -> bool:
        return self.stream is not None

    def activate(self) -> AbstractContextManager[Any]:
        """Make this instance's device and stream current (in the worker thread)."""
        if self.stream is None:
            return nullcontext()
        cp = self._cupy
        device = cp.cuda.Device(self.device.index)

        class _Both:
            def __enter__(inner) -> None:
                device.__enter__()
                self.stream.__enter__()

            def __exit__(inner, *exc: object) -> None:
                self.stream.__exit__(*exc)
                device.__exit__(*exc)

        return _Both()

    def wait_for(self, events: Iterable[Any]) -> None:
        """Order this stream after the producers' events (no host synchronisation).

        A CPU instance reading GPU results blocks until they are finished instead.
        """
        seen = set()
        for event in events:
            if event is not None and id(event) not in seen:
                seen.add(id(event))
                if self.stream is None:
                    event.synchronize()
                else:
                    self.stream.wait_event(event)

    def record(self) -> Any:
        """An event marking the end of the work queued so far (``None`` on the CPU)."""
        if self.stream is None:
            return None
        return self.stream.record()


def to_host(x: Any) -> Any:
    """A NumPy view or copy of ``x`` (zero-copy for NumPy and CPU DLPack producers)."""
    if isinstance(x, np.ndarray):
        return x
    module = type(x).__module__.split(".")[0]
    if module == "cupy":
        return x.get()
    if module == "torch":
        return x.detach().cpu().numpy()
    if isinstance(x, (list, tuple)):
        return [to_host(v) for v in x]
    if hasattr(x, "__dlpack__"):
        return np.from_dlpack(x)
    return np.asarray(x)


class CopyKernel:
    """A host <-> device transfer that the compiler inserted (op ``copy``).

    Uploads use the instance's stream; downloads wait for the stream so the host
    sees finished data. Ragged ports (lists) are copied item by item.
    """

    per_item = False

    def __init__(self, ctx: KernelContext) -> None:
        self.device = ctx.device
        self.stream = ctx.stream
        self._cupy: Any = _cupy() if self.device.is_gpu or any(
            t.device is not None and t.device.is_gpu for t in ctx.input_types.values()
        ) else None

    def _move(self, x: Any) -> Any:
        if isinstance(x, list):
            return [self._move(v) for v in x]
        if self.device.is_gpu:
            return self._cupy.asarray(x)
        if self._cupy is not None and type(x).__module__.split(".")[0] == "cupy":
            return self._cupy.asnumpy(x, stream=self.stream, blocking=True)
        return to_host(x)

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"value": self._move(inputs["value"])}
