"""``model.onnx`` at run time: an ONNX Runtime session fed through I/O binding and DLPack.

Why I/O binding: ``session.run(None, feeds)`` converts every input to a NumPy
array and copies every output into a new one, which on a GPU means a device ->
host -> device round trip per node. With an ``IOBinding`` the inputs are bound as
``OrtValue`` objects made from the producer's memory (no copy: a NumPy array,
read-only or not, through ``OrtValue.ortvalue_from_numpy``; a CuPy array or torch
tensor through ``OrtValue.from_dlpack``) and the
outputs are bound to the node's device, where ONNX Runtime allocates them; they
come back as arrays that *share* the ``OrtValue``'s memory (``numpy.from_dlpack``
on the CPU, ``cupy.from_dlpack`` on a GPU). The only copy the backend ever makes
is packing a non-contiguous input (ONNX Runtime refuses strided DLPack tensors).

Outputs on the CPU are read-only NumPy views of ONNX Runtime's buffers; each
run gets new buffers (outputs are bound anew per call), so a result handed to
the next node is never overwritten by a later batch.

Batch dimension: when the pipeline batches, dim 0 of every model input and
output is the batch dimension and the kernel is batched; a model whose dim 0 is
fixed at ``k`` runs smaller batches padded with zero rows (outputs cut back).
When the pipeline does not batch, each request's tensor is one item and is fed
as it is (the kernel is per item).

On ``gpu:K`` the session uses the CUDA execution provider (TensorRT too when
``providers`` asks for it) on device ``K``, and runs on the instance's own CUDA
stream (``user_compute_stream``), so consecutive nodes are stream-ordered without
a device-wide synchronisation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from contextlib import nullcontext
from typing import Any

from dagserve.backends._arrays import (
    DLPACK_CUDA,
    check_input,
    cut_batch,
    dlpack_device_type,
    ensure_contiguous,
    fixed_batch,
    pad_fixed_batch,
    require_cupy,
    to_host,
    unknown_to_one,
    warmup_failed,
)
from dagserve.errors import MissingExtraError, UnrecoverableError
from dagserve.ops.base import KernelContext
from dagserve.types import UNKNOWN, Device, Dim, TensorType

__all__ = ["OnnxRuntimeKernel", "create", "ort_dtype", "session_options"]

log = logging.getLogger(__name__)

# ONNX Runtime's type strings -> dagserve dtype names.
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(bool)": "bool",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(string)": "bytes",
}

# Short provider names a spec may use -> ONNX Runtime's names.
_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
_GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")

_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def ort_dtype(type_string: str) -> str:
    """dagserve dtype name of an ONNX Runtime type string such as ``tensor(float)``."""
    return _ORT_TYPES.get(type_string, type_string)


def _ort_shape(shape: Any) -> tuple[Dim, ...]:
    dims: list[Dim] = []
    for d in shape or ():
        if isinstance(d, int) and d > 0:
            dims.append(d)
        elif isinstance(d, str) and d:
            dims.append(d)
        else:
            dims.append(UNKNOWN)
    return tuple(dims)


_shared_arena_lock = threading.Lock()
_shared_arena: list[bool] = []  # [True] once this process's shared CPU arena is registered


def _register_shared_cpu_arena() -> None:
    """Register one CPU arena allocator with ONNX Runtime's environment (once per process).

    By default each session owns an arena that grows to its peak and is freed with the
    session; every reload then leaves its freed arena chunks scattered through the C
    heap, where glibc cannot hand them back (measured: a pipeline started and closed
    100 times went from ~120 MB to ~235 MB RSS, ~130 MB with the shared arena and
    ``malloc_trim``). Sessions that opt in (``session.use_env_allocators``) share this
    arena, so a reloaded pipeline reuses the memory of the one it replaced.
    """
    import onnxruntime as ort

    with _shared_arena_lock:
        if _shared_arena:
            return
        info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
        # (max_mem 0 = no limit, -1 = ORT's defaults for the extend strategy, initial chunk, max dead bytes)
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, -1, -1, -1))
        _shared_arena.append(True)


def session_options(params: Mapping[str, Any], shared_arena: bool = False) -> Any:
    """``onnxruntime.SessionOptions`` from a node's params (threads, optimisation level).

    With ``shared_arena`` the session allocates its CPU tensors from the process's one
    shared arena (:func:`_register_shared_cpu_arena`) instead of an arena of its own.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(params.get("intra_op_threads", 1))
    options.inter_op_num_threads = int(params.get("inter_op_threads", 1))
    level = _OPT_LEVELS[params.get("optimization_level", "all")]
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    options.log_severity_level = 3  # errors only: ORT's warnings would go to stderr per session
    if shared_arena:
        _register_shared_cpu_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
    return options


ONNXRUNTIME_GPU_SWAP = "pip uninstall -y onnxruntime && pip install 'onnxruntime-gpu[cuda,cudnn]>=1.26'"
"""How a GPU user replaces the CPU build (a base dependency) with the CUDA 13 one: both are the module
``onnxruntime`` and overwrite each other, so no extra can install it beside the CPU build."""


def _providers(params: Mapping[str, Any], device: Device, stream: Any) -> list[Any]:
    """The provider list for ``device``: names or ``(name, options)`` pairs, in preference order.

    Raises:
        MissingExtraError: a GPU placement and no CUDA provider in this onnxruntime.
        UnrecoverableError: ``providers`` names one this onnxruntime does not have.
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    asked = params.get("providers")
    if asked:
        names = [_PROVIDER_ALIASES.get(p.lower(), p) for p in asked]
    elif device.is_gpu:
        names = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    else:
        names = ["CPUExecutionProvider"]
    if device.is_gpu and "CUDAExecutionProvider" not in available:
        raise MissingExtraError(
            f"model.onnx on {device} (ONNX Runtime's CUDA execution provider)", "onnxruntime-gpu", "gpu",
            then=f" && {ONNXRUNTIME_GPU_SWAP} (one onnxruntime distribution per environment: docs/backends.md)")
    missing = [n for n in names if n not in available]
    if missing:
        raise UnrecoverableError(f"model.onnx: execution provider(s) {', '.join(missing)} are not available in "
                                 f"this onnxruntime (it has {', '.join(available)})")
    if not device.is_gpu and any(n in _GPU_PROVIDERS for n in names):
        raise UnrecoverableError(f"model.onnx: providers {names} ask for a GPU but the node is placed on the cpu")
    out: list[Any] = []
    for name in names:
        if name == "CUDAExecutionProvider":
            options: dict[str, str] = {"device_id": str(device.index)}
            if stream is not None and getattr(stream, "ptr", None):
                options["user_compute_stream"] = str(stream.ptr)
            out.append((name, options))
        elif name == "TensorrtExecutionProvider":
            out.append((name, {"device_id": str(device.index)}))
        else:
            out.append(name)
    return out


class OnnxRuntimeKernel:
    """One instance of a ``model.onnx`` node: its session, I/O binding and device.

    Attributes:
        per_item: True when the pipeline does not batch (each request's tensor is
            fed whole), False when dim 0 is the batch dimension.
        inputs / outputs: the session's types (full shapes, batch dim included).
    """

    def __init__(self, path: str, params: Mapping[str, Any], device: Device, batched: bool,
                 stream: Any = None, name: str = "model.onnx") -> None:
        import onnxruntime as ort

        self.per_item = not batched
        self.device = device
        self.stream = stream
        self.label = f"'{path}' (node '{name}')"
        self._cupy = require_cupy(f"model.onnx node '{name}'", device.index) if device.is_gpu else None
        providers = _providers(params, device, stream)
        try:
            # The shared arena only on the CPU: GPU sessions allocate on the device, and mixing
            # environment allocators with CUDA's pinned ones is not what ORT tests.
            options = session_options(params, shared_arena=not device.is_gpu)
            self.session = ort.InferenceSession(path, sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... classes
            raise UnrecoverableError(f"model.onnx: ONNX Runtime cannot load {self.label}: {exc}") from exc
        if device.is_gpu and not any(p in _GPU_PROVIDERS for p in self.session.get_providers()):
            raise UnrecoverableError(
                f"model.onnx: {self.label} is placed on {device} but ONNX Runtime could not start a GPU provider "
                f"(it runs {self.session.get_providers()}); check the CUDA and cuDNN libraries")
        self.inputs = {a.name: TensorType(ort_dtype(a.type), _ort_shape(a.shape)) for a in self.session.get_inputs()}
        self.outputs = {a.name: TensorType(ort_dtype(a.type), _ort_shape(a.shape)) for a in self.session.get_outputs()}
        self._fixed_batch = fixed_batch(self.inputs) if batched else None
        self._binding = self.session.io_binding()
        # String tensors travel neither through DLPack nor through I/O binding ("only binding
        # non-string tensors is supported"): such models run through session.run (host copies).
        self._strings = any(t.dtype == "bytes" for t in (*self.inputs.values(), *self.outputs.values()))
        self._out_device = ("cuda", device.index) if device.is_gpu else ("cpu", 0)
        if params.get("warmup", True):
            try:
                self.warmup()
            except Exception as exc:  # zeros and empty strings need not be valid inputs of a valid model
                log.warning(warmup_failed("model.onnx", self.label, exc))

    # -- binding --------------------------------------------------------------------------------

    def _ortvalue(self, x: Any) -> Any:
        """An OrtValue sharing ``x``'s memory.

        A NumPy array goes through ``OrtValue.ortvalue_from_numpy``, which borrows
        its buffer (the OrtValue keeps the array alive) whether or not the array is
        writeable. DLPack cannot: NumPy refuses to export a read-only array to a
        pre-1.0 DLPack consumer such as ONNX Runtime, and read-only arrays are the
        rule here, not the exception - a request tensor is a ``np.frombuffer`` view
        of the message and an ONNX Runtime output is a read-only view of its buffer.
        """
        import numpy as np
        import onnxruntime as ort

        x = ensure_contiguous(x)
        if isinstance(x, np.ndarray):
            return ort.OrtValue.ortvalue_from_numpy(x)
        if dlpack_device_type(x) == DLPACK_CUDA and self.stream is not None:
            # Export on this instance's stream, so the producer's work is ordered before ours.
            return ort.OrtValue.from_dlpack(x.__dlpack__(stream=self.stream.ptr))
        return ort.OrtValue.from_dlpack(x)

    def _wrap_output(self, value: Any) -> Any:
        """The array for one output OrtValue, sharing its memory."""
        if not value.is_tensor():
            raise ValueError(f"model {self.label} returned a non-tensor output, which dagserve cannot pass on")
        if self._cupy is not None and value.device_name().lower() != "cpu":
            return self._cupy.from_dlpack(value)
        import numpy as np

        return np.from_dlpack(value)

    # -- running --------------------------------------------------------------------------------

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run one batch (or one unbatched item); returns ``{output name: array}``.

        Raises:
            ValueError: an input is missing, or has the wrong dtype or shape.
        """
        missing = [n for n in self.inputs if n not in inputs]
        if missing:
            raise ValueError(f"model {self.label} needs input(s) {', '.join(missing)}; got {', '.join(inputs)}")
        items = padded = 0
        feeds = {}
        for name, want in self.inputs.items():
            x = inputs[name]
            x, held = pad_fixed_batch(self.label, name, x, self._fixed_batch)
            if held is not None:
                items, padded = held, int(self._fixed_batch or 0)
            check_input(f"model {self.label}", name, want, x)
            feeds[name] = x
        arrays = self._run_strings(feeds) if self._strings else self._run_bound(feeds)
        return {name: cut_batch(a, padded, items) if padded else a for name, a in zip(self.outputs, arrays)}

    def _run_bound(self, feeds: dict[str, Any]) -> list[Any]:
        """Run through I/O binding: inputs bound in place, outputs allocated on the node's device."""
        binding = self._binding
        binding.clear_binding_inputs()
        binding.clear_binding_outputs()
        for name, x in feeds.items():
            binding.bind_ortvalue_input(name, self._ortvalue(x))
        device_type, device_id = self._out_device
        for name in self.outputs:
            binding.bind_output(name, device_type, device_id)
        self.session.run_with_iobinding(binding)
        values = binding.get_outputs()
        binding.clear_binding_inputs()  # drop our references to the inputs' memory
        return [self._wrap_output(v) for v in values]

    def _run_strings(self, feeds: dict[str, Any]) -> list[Any]:
        """Run a model with string tensors through ``session.run``.

        dagserve's ``bytes`` items are raw bytes; ONNX strings are UTF-8 text, so
        bytes are decoded on the way in and encoded on the way out.
        """
        import numpy as np

        plain = {}
        for name, x in feeds.items():
            x = to_host(x)
            if self.inputs[name].dtype == "bytes":
                try:
                    x = np.vectorize(lambda v: v.decode("utf-8") if isinstance(v, bytes) else str(v),
                                     otypes=[object])(x)
                except UnicodeDecodeError as exc:
                    raise ValueError(f"model input '{name}' of {self.label} is a string tensor and needs "
                                     f"UTF-8 text: {exc}") from exc
            plain[name] = x
        results = self.session.run(list(self.outputs), plain)
        out = []
        for name, y in zip(self.outputs, results):
            if self.outputs[name].dtype == "bytes":
                y = np.vectorize(lambda v: v.encode("utf-8") if isinstance(v, str) else bytes(v), otypes=[object])(y)
            elif self._cupy is not None:
                y = self._cupy.asarray(y)
            out.append(y)
        return out

    def warmup(self) -> None:
        """Run zeros of the model's input shapes (symbolic dims = 1) once, so the first
        request does not pay for ONNX Runtime's lazy initialisation (arena, kernels, CUDA)."""
        import numpy as np

        xp = self._cupy if self._cupy is not None else np
        on_device = self._cupy.cuda.Device(self.device.index) if self._cupy is not None else nullcontext()
        with on_device:
            feeds: dict[str, Any] = {}
            for name, t in self.inputs.items():
                shape = unknown_to_one(t.shape)
                if t.dtype == "bytes":
                    feeds[name] = np.full(shape, b"", dtype=object)
                else:
                    feeds[name] = xp.zeros(shape, dtype=t.dtype)
            self(feeds)


def create(ctx: KernelContext) -> OnnxRuntimeKernel:
    """Kernel factory of ``model.onnx`` (``OpDef.kernel``): one session per node instance."""
    path = ctx.files.get("path") or ctx.params["path"]
    return OnnxRuntimeKernel(path, ctx.params, ctx.device, ctx.batched, ctx.stream, ctx.node)
