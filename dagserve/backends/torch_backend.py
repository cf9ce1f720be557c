"""``model.torch`` at run time: a ``torch.export`` program or a TorchScript module.

Inputs come in through DLPack (``torch.from_dlpack``), so a NumPy array on the
CPU or a CuPy array on a GPU becomes a tensor over the same memory; the model
runs under ``torch.inference_mode()``. Outputs go out without copies: NumPy
views (``Tensor.numpy()``) on the CPU, CuPy arrays (``cupy.from_dlpack``) on a
GPU, because the kernels downstream are written against NumPy/CuPy.

On a GPU every instance runs on its own CUDA stream: the runtime's stream for the
instance (wrapped with ``torch.cuda.ExternalStream``), so the hand-off to the next
node is stream-ordered like every other kernel's.

Batch rule as for every model backend: when the pipeline batches, dim 0 is the
batch dimension (a fixed dim 0 of ``k`` runs smaller batches padded with zeros);
when it does not, each request's tensor is fed whole (a per-item kernel).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

from dagserve.backends._arrays import (
    InFlight,
    check_input,
    cut_batch,
    dtype_name,
    fixed_batch,
    pad_fixed_batch,
    require_cupy,
    unknown_to_one,
    warmup_failed,
)
from dagserve.backends.base import SignatureError
from dagserve.errors import MissingExtraError, UnrecoverableError
from dagserve.ops.base import KernelContext
from dagserve.types import Device

__all__ = ["TorchKernel", "create"]

log = logging.getLogger(__name__)


def _flatten_outputs(result: Any) -> list[Any]:
    """The model's outputs in order: a tensor, a tuple/list of tensors, or a dict of them."""
    if isinstance(result, Mapping):
        return list(result.values())
    if isinstance(result, (tuple, list)):
        return list(result)
    return [result]


class TorchKernel:
    """One instance of a ``model.torch`` node: the loaded module, its device and stream."""

    def __init__(self, path: str, params: Mapping[str, Any], device: Device, batched: bool,
                 stream: Any = None, name: str = "model.torch") -> None:
        try:
            import torch
        except ImportError as exc:
            raise MissingExtraError("model.torch", "torch", "torch") from exc
        from dagserve.backends.torch_signature import EXPORT_SUFFIXES, load_torchscript, read_torch_signature

        self.per_item = not batched
        self.label = f"'{path}' (node '{name}')"
        try:
            self.signature = read_torch_signature(path, params)
        except SignatureError as exc:
            raise UnrecoverableError(f"model.torch: {exc}") from exc
        self.inputs = self.signature.inputs
        self.outputs = self.signature.outputs
        self._fixed_batch = fixed_batch(self.inputs) if batched else None
        self._torch = torch
        self._cupy = None
        self._stream: Any = None
        self._inflight = InFlight()
        if device.is_gpu:
            self._cupy = require_cupy(f"model.torch node '{name}'", device.index)
            if not torch.cuda.is_available():
                raise UnrecoverableError(f"model.torch: {self.label} is placed on {device} but this torch has no "
                                         f"CUDA support (torch {torch.__version__}); install a CUDA build of torch")
            self.torch_device = torch.device("cuda", device.index)
            if stream is not None and getattr(stream, "ptr", None):
                self._stream = torch.cuda.ExternalStream(stream.ptr, device=self.torch_device)
            else:
                self._stream = torch.cuda.Stream(device=self.torch_device)
        else:
            self.torch_device = torch.device("cpu")
        try:
            if path.lower().endswith(EXPORT_SUFFIXES):
                self.module = torch.export.load(path).module().to(self.torch_device)
            else:
                self.module = load_torchscript(torch, path, self.torch_device).eval()
        except Exception as exc:
            raise UnrecoverableError(f"model.torch: torch cannot load {self.label}: {exc}") from exc
        if params.get("warmup", True):
            self.warmup()

    def _tensor(self, name: str, x: Any) -> Any:
        torch = self._torch
        if isinstance(x, torch.Tensor):
            t = x
        else:
            try:
                t = torch.from_dlpack(x)
            except (TypeError, BufferError, RuntimeError) as exc:
                raise ValueError(f"model input '{name}' of {self.label}: cannot pass a {type(x).__name__} "
                                 f"to torch without a copy ({exc})") from exc
        if t.device != self.torch_device:
            raise ValueError(f"model input '{name}' of {self.label} is on {t.device} but the model runs on "
                             f"{self.torch_device}")
        return t

    def _export(self, t: Any) -> Any:
        torch = self._torch
        if not isinstance(t, torch.Tensor):
            return t
        if self._cupy is not None:
            return self._cupy.from_dlpack(t)
        try:
            return t.numpy()
        except TypeError:  # a dtype NumPy lacks (bfloat16): hand on the tensor (it speaks DLPack)
            return t

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run one batch (or one unbatched item); returns ``{output name: array}``.

        Raises:
            ValueError: a missing input, a wrong dtype/shape, or a wrong output count.
        """
        torch = self._torch
        items = padded = 0
        args = []
        for name, want in self.inputs.items():
            if name not in inputs:
                raise ValueError(f"model {self.label} needs input '{name}'; got {', '.join(inputs)}")
            x = inputs[name]
            x, held = pad_fixed_batch(self.label, name, x, self._fixed_batch)
            if held is not None:
                items, padded = held, int(self._fixed_batch or 0)
            check_input(f"model {self.label}", name, want, x)
            args.append(x)
        stream_ctx = torch.cuda.stream(self._stream) if self._stream is not None else nullcontext()
        with stream_ctx, torch.inference_mode():
            tensors = [self._tensor(n, x) for n, x in zip(self.inputs, args)]
            results = _flatten_outputs(self.module(*tensors))
            if self._stream is not None:  # the inputs must outlive the kernels reading them
                self._inflight.hold([*args, *tensors], self._stream.record_event())
        if len(results) != len(self.outputs):
            raise ValueError(f"model {self.label} returned {len(results)} outputs but its signature has "
                             f"{len(self.outputs)} ({', '.join(self.outputs)})")
        out = {}
        for name, value in zip(self.outputs, results):
            array = self._export(value)
            out[name] = cut_batch(array, padded, items) if padded else array
        return out

    def warmup(self) -> None:
        """Run zeros once (symbolic dims = 1) and check the outputs against the signature.

        For TorchScript the output types are declared by the user, so this is where
        a wrong declaration is caught: at load, not at the first request.

        Raises:
            UnrecoverableError: the model fails on zeros, or returns other types than declared.
        """
        torch = self._torch
        feeds = {}
        for name, t in self.inputs.items():
            feeds[name] = torch.zeros(unknown_to_one(t.shape), dtype=getattr(torch, t.dtype),
                                      device=self.torch_device)
        try:
            out = self(feeds)
        except Exception as exc:  # zeros need not be a valid input of a valid model: load it anyway
            log.warning(warmup_failed("model.torch", self.label, exc))
            return
        for name, want in self.outputs.items():
            got = out[name]
            rank = len(getattr(got, "shape", ()))
            if dtype_name(got) != want.dtype or rank != want.rank:
                raise UnrecoverableError(
                    f"model.torch: output '{name}' of {self.label} is {dtype_name(got)} of rank {rank} but the "
                    f"signature says {want.render()}; fix params 'outputs'")


def create(ctx: KernelContext) -> TorchKernel:
    """Kernel factory of ``model.torch`` (``OpDef.kernel``): one loaded module per instance."""
    path = ctx.files.get("path") or ctx.params["path"]
    return TorchKernel(path, ctx.params, ctx.device, ctx.batched, ctx.stream, ctx.node)
