"""``model.tensorrt`` at run time: a serialized engine executed on the instance's CUDA stream.

Each instance deserializes the engine on its GPU and owns one execution context.
A call binds the inputs' device memory directly (``set_tensor_address`` with the
CuPy array's pointer; a strided input is packed first), sets the dynamic input
shapes, allocates the outputs as CuPy arrays once their shapes are known, and
enqueues the engine with ``execute_async_v3`` on the instance's stream. Nothing
synchronises the host: the runtime records an event after the kernel and the
next node waits on it, so the outputs are handed on as CuPy arrays, without a
copy, while the engine may still be running.

Batch rule as for every model backend: with a batching pipeline dim 0 is the
batch; an engine whose dim 0 is fixed at ``k`` runs smaller batches padded with
zeros. Batches outside the engine's optimisation profile fail with a message
that gives the profile's range.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dagserve.backends._arrays import (
    DLPACK_CUDA,
    InFlight,
    check_input,
    cut_batch,
    dlpack_device_type,
    ensure_contiguous,
    fixed_batch,
    pad_fixed_batch,
    require_cupy,
    warmup_failed,
)
from dagserve.backends.base import SignatureError
from dagserve.errors import MissingExtraError, UnrecoverableError
from dagserve.ops.base import KernelContext
from dagserve.types import Device

__all__ = ["TensorRTKernel", "create"]

log = logging.getLogger(__name__)


class TensorRTKernel:
    """One instance of a ``model.tensorrt`` node: engine, execution context and stream."""

    def __init__(self, path: str, params: Mapping[str, Any], device: Device, batched: bool,
                 stream: Any = None, name: str = "model.tensorrt") -> None:
        if not device.is_gpu:
            raise UnrecoverableError(f"model.tensorrt node '{name}' is placed on {device}; TensorRT runs on a GPU only")
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise MissingExtraError("model.tensorrt", "tensorrt", "gpu") from exc
        from dagserve.backends.tensorrt_signature import deserialize_engine, engine_signature

        self.per_item = not batched
        self.label = f"'{path}' (node '{name}')"
        self._trt = trt
        self._cupy = cp = require_cupy(f"model.tensorrt node '{name}'", device.index)
        self.device = device
        with cp.cuda.Device(device.index):
            try:
                self.engine = deserialize_engine(path)
            except SignatureError as exc:
                raise UnrecoverableError(f"model.tensorrt: {exc}") from exc
            self.context = self.engine.create_execution_context()
            if self.context is None:
                raise UnrecoverableError(f"model.tensorrt: cannot create an execution context for {self.label} "
                                         "(out of GPU memory?)")
            self.stream = stream if stream is not None else cp.cuda.Stream(non_blocking=True)
        signature = engine_signature(self.engine)
        self.inputs = signature.inputs
        self.outputs = signature.outputs
        for tensor in self.inputs:
            if self.engine.is_shape_inference_io(tensor):
                raise UnrecoverableError(f"model.tensorrt: input '{tensor}' of {self.label} is a shape tensor "
                                         "(read on the host), which dagserve does not feed")
        self._fixed_batch = fixed_batch(self.inputs) if batched else None
        self._dtypes = {n: t.dtype for n, t in {**self.inputs, **self.outputs}.items()}
        self._inflight = InFlight()
        if params.get("warmup", True):
            self.warmup()

    def _profile(self, name: str) -> str:
        try:
            low, _, high = self.engine.get_tensor_profile_shape(name, 0)
            return f"; the engine's profile accepts shapes from {tuple(low)} to {tuple(high)}"
        except Exception:
            return ""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Enqueue one batch on the instance's stream; returns ``{output name: CuPy array}``.

        Raises:
            ValueError: a missing input, a host or wrong-typed input, or a shape the
                engine's optimisation profile does not accept.
            RuntimeError: TensorRT refused to enqueue the engine.
        """
        cp = self._cupy
        context = self.context
        items = padded = 0
        keep: list[Any] = []  # the bound inputs, held until the engine has read them
        with cp.cuda.Device(self.device.index), self.stream:
            for name, want in self.inputs.items():
                if name not in inputs:
                    raise ValueError(f"model {self.label} needs input '{name}'; got {', '.join(inputs)}")
                x = inputs[name]
                if dlpack_device_type(x) != DLPACK_CUDA:
                    raise ValueError(f"model input '{name}' of {self.label} is in host memory but TensorRT reads "
                                     "device memory (the compiler inserts an upload before a GPU node)")
                if not hasattr(x, "data") or not hasattr(x.data, "ptr"):
                    x = cp.from_dlpack(x)
                x, held = pad_fixed_batch(self.label, name, x, self._fixed_batch)
                if held is not None:
                    items, padded = held, int(self._fixed_batch or 0)
                x = ensure_contiguous(x)
                check_input(f"model {self.label}", name, want, x)
                if not context.set_input_shape(name, tuple(int(d) for d in x.shape)):
                    raise ValueError(f"model input '{name}' of {self.label}: TensorRT does not accept shape "
                                     f"{tuple(x.shape)}{self._profile(name)}")
                context.set_tensor_address(name, x.data.ptr)
                keep.append(x)
            out: dict[str, Any] = {}
            for name in self.outputs:
                shape = tuple(int(d) for d in context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise ValueError(f"output '{name}' of {self.label} has a data-dependent shape {shape}, "
                                     "which dagserve does not support yet")
                y = cp.empty(shape, dtype=self._dtypes[name])
                context.set_tensor_address(name, y.data.ptr)
                out[name] = y
            if not context.execute_async_v3(self.stream.ptr):
                raise RuntimeError(f"TensorRT failed to enqueue {self.label} (see TensorRT's log above)")
            self._inflight.hold([*keep, *inputs.values()], self.stream.record())
        if padded:
            out = {n: cut_batch(y, padded, items) for n, y in out.items()}
        return out

    def warmup(self) -> None:
        """Run zeros once at the profile's optimal shapes (or dims of 1), then wait for them."""
        cp = self._cupy
        feeds = {}
        with cp.cuda.Device(self.device.index), self.stream:
            for name, t in self.inputs.items():
                try:
                    shape = tuple(int(d) for d in self.engine.get_tensor_profile_shape(name, 0)[1])
                except Exception:
                    shape = tuple(d if isinstance(d, int) else 1 for d in t.shape)
                feeds[name] = cp.zeros(shape, dtype=t.dtype)
        try:
            self(feeds)
            self.stream.synchronize()
        except Exception as exc:  # zeros need not be a valid input of a valid engine: load it anyway
            log.warning(warmup_failed("model.tensorrt", self.label, exc))


def create(ctx: KernelContext) -> TensorRTKernel:
    """Kernel factory of ``model.tensorrt`` (``OpDef.kernel``): one execution context per instance."""
    path = ctx.files.get("path") or ctx.params["path"]
    return TensorRTKernel(path, ctx.params, ctx.device, ctx.batched, ctx.stream, ctx.node)
