"""Kernels of the image ops: decode, resize, letterbox, normalize, crop.

Calling conventions (see :mod:`dagserve.ops.base`):

* ``decode``, ``resize``, ``letterbox`` and ``crop`` are **per item**: their inputs
  are ragged (every image has its own size), so the runtime calls them once per
  image and isolates a failing item.
* ``normalize`` is **batched**: it gets ``[N, ...]`` arrays when images are uniform
  (after a resize) and a list of per-item arrays when they are ragged.

On the CPU the resampling is ``cv2.resize`` (and Pillow for antialiased bilinear
downscaling of 8-bit images); on a GPU it is :func:`._resample.resample` with CuPy,
whose NumPy twin the tests compare with ``cv2.resize``. Conventions are in
``docs/ops.md`` and in :mod:`._resample`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from dagserve.ops._params import parse_scale
from dagserve.ops.base import KernelContext
from dagserve.ops.kernels._array import DeviceArrays, to_host
from dagserve.ops.kernels._common import KernelInputError, check_dtype, op_params, readable
from dagserve.ops.kernels._decode import check_request_pixels, decode_cpu, read_header, to_bytes
from dagserve.ops.kernels._gpu_decode import GpuDecoder
from dagserve.ops.kernels._resample import resample

__all__ = ["crop", "decode", "finish", "letterbox", "letterbox_geometry", "normalize", "resize"]

IMAGE_DTYPES = ("uint8", "uint16", "float16", "float32")
_NORMALIZE_DTYPES = ("uint8", "uint16", "int8", "int16", "int32", "float16", "float32", "float64")


def _check_image(x: Any, what: str) -> None:
    """Refuse anything but a non-empty ``[H, W, C]`` image of a supported dtype."""
    if getattr(x, "ndim", None) != 3:
        shape = readable(getattr(x, "shape", ()))
        raise KernelInputError(f"{what} must be an image [H,W,C], got shape {shape}")
    check_dtype(x, IMAGE_DTYPES, what)
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise KernelInputError(f"{what} is empty: shape {readable(x.shape)}")


def _cv2_resize(image: np.ndarray, size: tuple[int, int], interpolation: str, antialias: bool,
                dst: np.ndarray | None = None) -> np.ndarray:
    """Resize on the CPU with OpenCV (Pillow for antialiased 8-bit bilinear downscaling).

    Writes into ``dst`` (a view of a larger canvas) when given, without a copy.
    """
    import cv2

    h, w, c = image.shape
    out_h, out_w = size
    shrinks = out_h < h or out_w < w
    if antialias and interpolation == "bilinear" and shrinks:
        if image.dtype == np.uint8 and c in (1, 3, 4):
            from PIL import Image

            pil = Image.fromarray(image[:, :, 0] if c == 1 else image)
            pixels = np.asarray(pil.resize((out_w, out_h), Image.Resampling.BILINEAR)).reshape(out_h, out_w, c)
        else:
            pixels = resample(np, image, size, interpolation, antialias=True)
        if dst is None:
            return pixels
        dst[...] = pixels
        return dst
    flag = {"nearest": cv2.INTER_NEAREST_EXACT, "bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}[interpolation]
    work = image.astype(np.float32) if image.dtype == np.float16 else image
    try:
        if dst is not None and work.dtype == dst.dtype:
            # OpenCV writes straight into a view of the canvas (no intermediate copy).
            target = dst if c > 1 else dst[:, :, 0]
            written = cv2.resize(work, (out_w, out_h), dst=target, interpolation=flag)
            if not np.may_share_memory(written, dst):
                dst[...] = written.reshape(out_h, out_w, c)
            return dst
        pixels = cv2.resize(work, (out_w, out_h), interpolation=flag)
    except cv2.error:  # e.g. a channel count this OpenCV build does not resize
        pixels = resample(np, image, size, interpolation, antialias=False)
    pixels = pixels.reshape(out_h, out_w, c).astype(image.dtype, copy=False)
    if dst is None:
        return pixels
    dst[...] = pixels
    return dst


def _resize_on(arrays: DeviceArrays, image: Any, size: tuple[int, int], interpolation: str,
               antialias: bool) -> Any:
    if arrays.is_gpu:
        return resample(arrays.xp, image, size, interpolation, antialias)
    return _cv2_resize(image, size, interpolation, antialias)


def finish(xp: Any, image: Any, dtype: str | None, scale: float, layout: str) -> Any:
    """Cast, scale and lay out an ``[H, W, C]`` image in one pass: ``cast(image) * scale``.

    Float results are ``image * scale`` in the target precision; integer results are
    rounded half to even and saturated. Returns ``image`` itself when nothing changes.
    """
    out_dtype = np.dtype(dtype) if dtype else np.dtype(image.dtype)
    view = image.transpose(2, 0, 1) if layout == "chw" else image
    if scale == 1.0 and out_dtype == image.dtype:
        return view if layout == "hwc" else xp.ascontiguousarray(view)
    out = xp.empty(view.shape, dtype=out_dtype)
    if out_dtype.kind == "f":
        if scale == 1.0:
            out[...] = view
        else:
            xp.multiply(view, out_dtype.type(scale), out=out)
        return out
    info = np.iinfo(out_dtype)
    scaled = view * np.float32(scale) if scale != 1.0 else view.astype(np.float32)
    out[...] = xp.clip(xp.rint(scaled), info.min, info.max)
    return out


def letterbox_geometry(h: int, w: int, out_h: int, out_w: int, scale_up: bool,
                       center: bool) -> tuple[int, int, int, int]:
    """``(new_h, new_w, top, left)`` of a letterbox: aspect kept, padded to the output.

    ``r = min(out_h / h, out_w / w)`` (at most 1 when ``scale_up`` is false);
    ``new = round(side * r)`` (Python's round, as Ultralytics does), at least 1 pixel;
    padding split equally (``(out - new) // 2`` before) when ``center``, else all after.
    """
    r = min(out_h / h, out_w / w)
    if not scale_up:
        r = min(r, 1.0)
    new_w = min(max(round(w * r), 1), out_w)
    new_h = min(max(round(h * r), 1), out_h)
    if center:
        return new_h, new_w, (out_h - new_h) // 2, (out_w - new_w) // 2
    return new_h, new_w, 0, 0


class _Base:
    """Shared set-up: params with defaults, the device, the node name for messages."""

    per_item = True

    def __init__(self, ctx: KernelContext) -> None:
        self.ctx = ctx
        self.params = op_params(ctx)
        self.arrays = DeviceArrays(ctx.device, f"node '{ctx.node}' ({ctx.op})")
        self.xp = self.arrays.xp

    def image(self, inputs: dict[str, Any], port: str = "image") -> Any:
        if port not in inputs:
            raise KernelInputError(f"{self.ctx.op} needs input '{port}'")
        x = self.arrays.asarray(inputs[port], port)
        _check_image(x, f"input '{port}'")
        return x

    def transform(self, sx: float, sy: float, tx: float, ty: float, w: int, h: int) -> Any:
        return self.xp.asarray(np.array([sx, sy, tx, ty, w, h], dtype=np.float32))


class DecodeKernel(_Base):
    """``image.decode``: encoded bytes -> ``uint8[H, W, C]`` (per item)."""

    def __init__(self, ctx: KernelContext) -> None:
        super().__init__(ctx)
        self.color: str = self.params["color"]
        self.max_pixels: int = int(self.params["max_pixels"])
        self.max_request_pixels: int = int(self.params["max_request_pixels"])
        self.exif: bool = bool(self.params["exif_transpose"])
        self.gpu = GpuDecoder(self.arrays) if self.arrays.is_gpu else None

    def admit(self, items: dict[str, list[Any]]) -> None:
        """Before a request starts: refuse it when its images together declare more than
        ``max_request_pixels`` (headers only), so no pixel buffer of it is ever allocated."""
        check_request_pixels(items.get("data", []), self.max_request_pixels)

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if "data" not in inputs:
            raise KernelInputError("image.decode needs input 'data'")
        data = to_bytes(inputs["data"])
        if self.gpu is None:
            return {"image": decode_cpu(data, self.color, self.max_pixels, self.exif)}
        header = read_header(data, self.max_pixels)
        with self.arrays.scope():
            return {"image": self.gpu.decode(data, header, self.color, self.exif)}


class ResizeKernel(_Base):
    """``image.resize``: to a fixed ``[height, width]`` (aspect not kept), with its transform."""

    def __init__(self, ctx: KernelContext) -> None:
        super().__init__(ctx)
        self.size = (int(self.params["size"][0]), int(self.params["size"][1]))
        self.interpolation: str = self.params["interpolation"]
        self.antialias = bool(self.params["antialias"])

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        with self.arrays.scope():
            image = self.image(inputs)
            h, w = int(image.shape[0]), int(image.shape[1])
            out_h, out_w = self.size
            out = _resize_on(self.arrays, image, self.size, self.interpolation, self.antialias)
            return {"image": out, "transform": self.transform(out_w / w, out_h / h, 0.0, 0.0, w, h)}


class LetterboxKernel(_Base):
    """``image.letterbox``: keep aspect, pad with ``fill``, then cast/scale/CHW, with its transform."""

    def __init__(self, ctx: KernelContext) -> None:
        super().__init__(ctx)
        p = self.params
        self.size = (int(p["size"][0]), int(p["size"][1]))
        self.fill = int(p["fill"])
        self.interpolation: str = p["interpolation"]
        self.layout: str = p["layout"]
        self.dtype: str | None = p.get("dtype")
        self.scale = parse_scale(p["scale"])
        self.center = bool(p["center"])
        self.scale_up = bool(p["scale_up"])

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        xp = self.xp
        with self.arrays.scope():
            image = self.image(inputs)
            h, w, c = (int(d) for d in image.shape)
            out_h, out_w = self.size
            new_h, new_w, top, left = letterbox_geometry(h, w, out_h, out_w, self.scale_up, self.center)
            canvas = xp.full((out_h, out_w, c), self.fill, dtype=image.dtype)
            region = canvas[top:top + new_h, left:left + new_w]
            if (new_h, new_w) == (h, w):
                region[...] = image
            elif self.arrays.is_gpu:
                region[...] = resample(xp, image, (new_h, new_w), self.interpolation)
            else:
                _cv2_resize(image, (new_h, new_w), self.interpolation, False, dst=region)
            out = finish(xp, canvas, self.dtype, self.scale, self.layout)
            return {"image": out, "transform": self.transform(new_w / w, new_h / h, left, top, w, h)}


class NormalizeKernel(_Base):
    """``image.normalize``: ``(x * scale - mean) / std``, cast, HWC <-> CHW (batched)."""

    per_item = False

    def __init__(self, ctx: KernelContext) -> None:
        super().__init__(ctx)
        p = self.params
        source = ctx.input_types.get("image") if ctx.input_types else None
        self.src_layout: str = (source.layout if source is not None and source.layout else "hwc")
        self.dst_layout: str = p.get("layout") or self.src_layout
        self.dtype = np.dtype(p["dtype"])
        scale = parse_scale(p["scale"])
        mean = np.asarray(p.get("mean") or [0.0], dtype=np.float64)
        std = np.asarray(p.get("std") or [1.0], dtype=np.float64)
        if len(mean) != len(std) and 1 not in (len(mean), len(std)):
            raise ValueError(f"node '{ctx.node}': mean has {len(mean)} values but std has {len(std)}")
        # (x * scale - mean) / std  ==  x * (scale / std) + (-mean / std): one multiply-add.
        self._a = scale / std
        self._b = -mean / std
        self._compute = np.dtype(np.float64) if self.dtype == np.float64 else np.dtype(np.float32)
        self._coef_cache: dict[int, tuple[Any, Any]] = {}

    def _coefficients(self, channels: int) -> tuple[Any, Any]:
        cached = self._coef_cache.get(channels)
        if cached is not None:
            return cached
        a, b = np.broadcast_arrays(self._a, self._b)
        if len(a) not in (1, channels):
            raise KernelInputError(
                f"image.normalize has {len(a)} mean/std values but the image has {channels} channels"
            )
        a = np.broadcast_to(a, (channels,)).astype(self._compute)
        b = np.broadcast_to(b, (channels,)).astype(self._compute)
        if self.dst_layout == "chw":
            a, b = a.reshape(channels, 1, 1), b.reshape(channels, 1, 1)
        pair = (self.xp.asarray(a), self.xp.asarray(b))
        self._coef_cache[channels] = pair
        return pair

    def _one(self, x: Any) -> Any:
        xp = self.xp
        if getattr(x, "ndim", 0) < 3:
            raise KernelInputError(f"image.normalize needs images of rank 3, got shape {readable(x.shape)}")
        check_dtype(x, _NORMALIZE_DTYPES, "input 'image'")
        channel_axis = -1 if self.src_layout == "hwc" else -3
        channels = int(x.shape[channel_axis])
        a, b = self._coefficients(channels)
        if self.src_layout != self.dst_layout:
            x = xp.moveaxis(x, -1, -3) if self.dst_layout == "chw" else xp.moveaxis(x, -3, -1)
        out = xp.empty(x.shape, dtype=self._compute)
        xp.multiply(x, a, out=out)
        xp.add(out, b, out=out)
        return out if self._compute == self.dtype else out.astype(self.dtype)

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        if "image" not in inputs:
            raise KernelInputError("image.normalize needs input 'image'")
        value = inputs["image"]
        with self.arrays.scope():
            if isinstance(value, (list, tuple)):
                return {"image": [self._one(self.arrays.asarray(v, "image")) for v in value]}
            return {"image": self._one(self.arrays.asarray(value, "image"))}


class CropKernel(_Base):
    """``image.crop``: the pixels of a box (input port or param), clipped, optionally resized."""

    def __init__(self, ctx: KernelContext) -> None:
        super().__init__(ctx)
        box = self.params.get("box")
        self.box = None if box is None else [float(v) for v in box]
        size = self.params.get("size")
        self.size = None if not size else (int(size[0]), int(size[1]))
        self.interpolation: str = self.params["interpolation"]

    def _box(self, inputs: dict[str, Any]) -> list[float]:
        if inputs.get("box") is not None:
            values = np.asarray(to_host(inputs["box"]), dtype=np.float64).reshape(-1)
            if values.size != 4:
                raise KernelInputError(f"input 'box' must hold 4 numbers (x0, y0, x1, y1), got {values.size}")
            return [float(v) for v in values]
        if self.box is None:
            raise KernelInputError("image.crop needs a box: feed input 'box' or set param 'box'")
        return self.box

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        with self.arrays.scope():
            image = self.image(inputs)
            h, w = int(image.shape[0]), int(image.shape[1])
            x0, y0, x1, y1 = self._box(inputs)
            if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
                raise KernelInputError(f"crop box {[x0, y0, x1, y1]} is not finite")
            if x1 < x0 or y1 < y0:
                raise KernelInputError(f"crop box {[x0, y0, x1, y1]} has x1 < x0 or y1 < y0 (expected x0, y0, x1, y1)")
            # Every pixel the box touches, clipped to the image.
            ix0, iy0 = max(math.floor(x0), 0), max(math.floor(y0), 0)
            ix1, iy1 = min(math.ceil(x1), w), min(math.ceil(y1), h)
            if ix1 <= ix0 or iy1 <= iy0:
                raise KernelInputError(f"crop box {[x0, y0, x1, y1]} does not overlap the {w}x{h} image")
            region = image[iy0:iy1, ix0:ix1]
            if self.size is None:
                return {"image": self.xp.ascontiguousarray(region)}
            return {"image": _resize_on(self.arrays, self.xp.ascontiguousarray(region), self.size,
                                        self.interpolation, False)}


def decode(ctx: KernelContext) -> DecodeKernel:
    """Factory of ``image.decode`` (per item)."""
    return DecodeKernel(ctx)


def resize(ctx: KernelContext) -> ResizeKernel:
    """Factory of ``image.resize`` (per item)."""
    return ResizeKernel(ctx)


def letterbox(ctx: KernelContext) -> LetterboxKernel:
    """Factory of ``image.letterbox`` (per item)."""
    return LetterboxKernel(ctx)


def normalize(ctx: KernelContext) -> NormalizeKernel:
    """Factory of ``image.normalize`` (batched)."""
    return NormalizeKernel(ctx)


def crop(ctx: KernelContext) -> CropKernel:
    """Factory of ``image.crop`` (per item)."""
    return CropKernel(ctx)
