"""The kernel of ``dali.image``: one NVIDIA DALI pipeline per node instance.

The pipeline is built once at load: ``external_source`` (the batch of encoded
images) -> ``decoders.image`` (``cpu``, or ``mixed`` = nvJPEG on a GPU) ->
``resize`` (to ``size``, or to the letterboxed size computed from
``peek_image_shape``) -> ``slice`` with padding (letterbox) ->
``crop_mirror_normalize`` (scale/mean/std, layout, dtype). The letterbox geometry
is computed inside the pipeline and returned beside the image, so ``transform``
is exactly what DALI did, not a re-derivation.

Feeding: DALI's default executor prefetches, so feeding one batch and running
repeatedly fails; the pipeline is built with ``prefetch_queue_depth=1,
exec_pipelined=False, exec_async=False``: each call feeds one batch and runs it
once. A DALI error leaves the pipeline unusable ("no longer valid"), so the
kernel rebuilds it after any failure and reports the failure as a ``ValueError``
(the runtime then retries item by item, so one corrupt image fails only its own
request).

Outputs are copied out of DALI's buffers (DALI reuses them on the next run): a
NumPy array on the CPU; on a GPU a CuPy array copied on the instance's stream,
on which DALI also returns its outputs (``Pipeline.run(cuda_stream)``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from dagserve.backends._arrays import InFlight, require_cupy
from dagserve.errors import MissingExtraError, UnrecoverableError
from dagserve.ops._params import parse_scale
from dagserve.ops.base import KernelContext
from dagserve.types import Device

__all__ = ["DaliImageKernel", "create"]


def _dali_error(exc: BaseException) -> str:
    """The useful part of a DALI pipeline error: the operator and what it encountered."""
    text = str(exc)
    op = ""
    marker = "operator `"
    if marker in text:
        op = text.split(marker, 1)[1].split("`", 1)[0].removeprefix("nvidia.dali.")
    detail = text.split("encountered:", 1)[1] if "encountered:" in text else text
    lines = [ln.strip() for ln in detail.splitlines() if ln.strip() and "C++ context" not in ln
             and "no longer valid" not in ln]
    reason = "; ".join(lines[:3]) or type(exc).__name__
    return f"{op}: {reason}" if op else reason


def _round_half_even(dmath: Any, x: Any) -> Any:
    """Python's ``round`` (half to even) as DALI arithmetic, for non-negative ``x``."""
    t = dmath.floor(x + 0.5)
    half = (t - x) == 0.5
    odd = (t - 2.0 * dmath.floor(t * 0.5)) == 1.0
    return t - half * odd


class DaliImageKernel:
    """One instance of a ``dali.image`` node (a batched kernel)."""

    per_item = False

    def __init__(self, params: Mapping[str, Any], device: Device, stream: Any = None, name: str = "dali.image") -> None:
        try:
            import nvidia.dali  # noqa: F401
        except ImportError as exc:
            raise MissingExtraError("dali.image", "nvidia.dali", "dali") from exc
        self.node = name
        self.params = dict(params)
        self.device = device
        self.stream = stream
        self.max_batch = int(params.get("max_batch", 64))
        self.max_pixels = int(params.get("max_pixels", 64_000_000))
        self._cupy = require_cupy(f"dali.image node '{name}'", device.index) if device.is_gpu else None
        if self._cupy is not None and self.stream is None:
            with self._cupy.cuda.Device(device.index):
                self.stream = self._cupy.cuda.Stream(non_blocking=True)
        self._inflight = InFlight()  # GPU: our copy out of DALI's buffers, before DALI reuses them
        self._pipe = self._build()

    # -- the pipeline ---------------------------------------------------------------------------

    def _normalization(self, channels: int) -> tuple[list[float], list[float]]:
        """CMN's mean and std for ``(x * scale - mean) / std``.

        CMN computes ``(x - mean') / std'``; with ``mean' = mean / scale`` and
        ``std' = std / scale`` that is ``(x * scale - mean) / std`` for any non-zero scale.
        """
        p = self.params
        scale = parse_scale(p.get("scale", 1))
        mean = [float(v) for v in (p.get("mean") or [0.0])]
        std = [float(v) for v in (p.get("std") or [1.0])]
        if len(mean) == 1:
            mean *= channels
        if len(std) == 1:
            std *= channels
        if scale == 0:
            raise UnrecoverableError(f"dali.image node '{self.node}': scale must not be 0")
        return [m / scale for m in mean], [s / scale for s in std]

    def _build(self) -> Any:
        import nvidia.dali.fn as dali_fn
        import nvidia.dali.math as dali_math
        import nvidia.dali.types as dali_types
        from nvidia.dali import Pipeline

        # DALI's generated operator modules are not typed for mypy; treat them as dynamic.
        fn: Any = dali_fn
        dmath: Any = dali_math
        types: Any = dali_types

        p = self.params
        gpu = self.device.is_gpu
        out_h, out_w = (int(v) for v in p["size"])
        color = {"rgb": types.RGB, "bgr": types.BGR, "gray": types.GRAY}[p.get("color", "rgb")]
        channels = 1 if p.get("color") == "gray" else 3
        interpolation = p.get("interpolation", "bilinear")
        interp = types.INTERP_NN if interpolation == "nearest" else types.INTERP_LINEAR
        antialias = bool(p.get("antialias", False)) or interpolation == "area"
        dtype = {"float32": types.FLOAT, "float16": types.FLOAT16, "uint8": types.UINT8}[p.get("dtype", "float32")]
        mean, std = self._normalization(channels)
        pipe = Pipeline(
            batch_size=self.max_batch,
            num_threads=int(p.get("threads", 1)),
            device_id=self.device.index if gpu else None,
            prefetch_queue_depth=1,
            exec_pipelined=False,
            exec_async=False,
        )
        with pipe:
            data = fn.external_source(name="data", dtype=types.UINT8, ndim=1, device="cpu")
            images = fn.decoders.image(data, device="mixed" if gpu else "cpu", output_type=color)
            # The source size from the encoded header (EXIF orientation applied, like the decoder):
            # a CPU value on both devices, so the geometry below never crosses GPU -> CPU.
            # Geometry in float64, so sizes round exactly as image.letterbox rounds them in Python.
            src = fn.cast(fn.peek_image_shape(data), dtype=types.FLOAT64)
            src_h, src_w = src[0], src[1]
            if p.get("mode", "resize") == "letterbox":
                ratio = dmath.min(out_h / src_h, out_w / src_w)
                if not p.get("scale_up", True):
                    ratio = dmath.min(ratio, 1.0)
                new_h = dmath.clamp(_round_half_even(dmath, src_h * ratio), 1.0, float(out_h))
                new_w = dmath.clamp(_round_half_even(dmath, src_w * ratio), 1.0, float(out_w))
                resized = fn.resize(images, size=fn.cast(fn.stack(new_h, new_w), dtype=types.FLOAT),
                                    interp_type=interp, antialias=antialias, subpixel_scale=False)
                if p.get("center", True):
                    top, left = dmath.floor((out_h - new_h) * 0.5), dmath.floor((out_w - new_w) * 0.5)
                else:
                    top, left = new_h * 0.0, new_w * 0.0
                start = fn.cast(fn.stack(-top, -left), dtype=types.INT32)
                # padding happens before normalization, so the raw fill value is what gets normalized
                resized = fn.slice(resized, start=start, shape=[out_h, out_w], axes=[0, 1],
                                   out_of_bounds_policy="pad", fill_values=float(p.get("fill", 114)))
                geometry = fn.stack(new_w / src_w, new_h / src_h, left, top, src_w, src_h)
            else:
                resized = fn.resize(images, size=[out_h, out_w], interp_type=interp, antialias=antialias)
                geometry = fn.stack(out_w / src_w, out_h / src_h, src_w * 0.0, src_h * 0.0, src_w, src_h)
            image = fn.crop_mirror_normalize(resized, dtype=dtype, output_layout=p.get("layout", "chw").upper(),
                                             mean=mean, std=std)
            pipe.set_outputs(image, fn.cast(geometry, dtype=types.FLOAT))
        try:
            pipe.build()
        except Exception as exc:
            raise UnrecoverableError(f"dali.image node '{self.node}': DALI cannot build its pipeline on "
                                     f"{self.device}: {_dali_error(exc)}") from exc
        return pipe

    # -- running --------------------------------------------------------------------------------

    def _encoded(self, data: Any) -> list[Any]:
        """Each item as a uint8 array over its bytes, after the decompression-bomb guard."""
        import numpy as np

        items = list(data) if not isinstance(data, (bytes, bytearray)) else [data]
        arrays = []
        for k, item in enumerate(items):
            if isinstance(item, np.ndarray) and item.dtype == np.uint8:
                raw = item.reshape(-1)
            elif isinstance(item, (bytes, bytearray, memoryview, np.bytes_)):
                raw = np.frombuffer(item, dtype=np.uint8)
            else:
                raise ValueError(f"item {k}: expected encoded image bytes, got {type(item).__name__}")
            if raw.size == 0:
                raise ValueError(f"item {k}: the encoded image is empty")
            self._guard(raw, k)
            arrays.append(raw)
        return arrays

    def _guard(self, raw: Any, k: int) -> None:
        """Refuse an image whose header announces more than ``max_pixels`` pixels (read by Pillow,
        header only, ~20 us); formats Pillow cannot identify are left to DALI."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(raw.tobytes())) as im:
                w, h = im.size
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            return
        if w * h > self.max_pixels:
            raise ValueError(f"item {k}: image of {w}x{h} = {w * h} pixels exceeds max_pixels {self.max_pixels}")

    def _run_chunk(self, arrays: list[Any]) -> tuple[Any, Any]:
        import numpy as np

        self._inflight.drain()
        try:
            self._pipe.feed_input("data", arrays)
            if self._cupy is not None:
                image, geometry = self._pipe.run(self.stream.ptr)
            else:
                image, geometry = self._pipe.run()
        except Exception as exc:
            self._pipe = self._build()  # DALI's pipeline is unusable after an error
            what = "the image" if len(arrays) == 1 else f"a batch of {len(arrays)} images"
            reason = _dali_error(exc)
            if "decoders.image" in reason or "peek_image_shape" in reason:
                raise ValueError(f"DALI cannot decode {what} (corrupt, truncated or not an image format it "
                                 f"reads): {reason}") from exc
            raise ValueError(f"DALI could not process {what}: {reason}") from exc
        transform = np.array(geometry.as_tensor(), dtype=np.float32, copy=True)
        if self._cupy is not None:
            cp = self._cupy
            with cp.cuda.Device(self.device.index), self.stream:
                dense = image.as_tensor()
                copy = cp.from_dlpack(dense).copy()
                self._inflight.hold([dense, image], self.stream.record())
                # the transform is tiny; it goes up so every output of a GPU node is on the GPU
                return copy, cp.asarray(transform)
        return np.array(image.as_tensor(), copy=True), transform

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Decode and preprocess a batch; returns ``image`` [N,...] and ``transform`` float32[N,6].

        Raises:
            ValueError: an item that is not bytes, is empty, is too large, or that
                DALI cannot decode (the whole call fails; the runtime retries per item).
        """
        arrays = self._encoded(inputs["data"])
        images, transforms = [], []
        for start in range(0, len(arrays), self.max_batch):
            image, transform = self._run_chunk(arrays[start:start + self.max_batch])
            images.append(image)
            transforms.append(transform)
        if len(images) == 1:
            return {"image": images[0], "transform": transforms[0]}
        import numpy as np

        xp = self._cupy if self._cupy is not None else np
        return {"image": xp.concatenate(images), "transform": np.concatenate(transforms)}


def create(ctx: KernelContext) -> DaliImageKernel:
    """Kernel factory of ``dali.image`` (``OpDef.kernel``): one DALI pipeline per instance."""
    return DaliImageKernel(ctx.params, ctx.device, ctx.stream, ctx.node)
