"""Separable image resampling that follows OpenCV's conventions, on NumPy or CuPy.

This is the GPU algorithm of ``image.resize``/``image.letterbox``/``image.crop`` and
its NumPy twin. The CPU kernels call ``cv2.resize`` (the fast, well-kept
implementation); the GPU kernels call :func:`resample` with CuPy; the tests run
:func:`resample` with NumPy against ``cv2.resize``, so the GPU arithmetic is checked
on machines without a GPU.

A resize is two 1-D passes. Each pass is described by a *tap table*: for output
index ``d``, source indices ``idx[d, t]`` and weights ``w[d, t]`` (``t < T``), and
computes ``out[d] = sum_t w[d, t] * src[idx[d, t]]`` in float32. Tables are built
on the host in float64 (they are tiny) and cached; both devices apply the same
float32 tables in the same tap order.

Conventions (``s = in / out`` along an axis; pixel ``i`` covers ``[i, i+1)``, so its
centre is ``i + 0.5`` — OpenCV's half-pixel convention):

* ``nearest`` — source ``floor((d + 0.5) * s)``, clamped; the coordinate is
  accumulated in double precision exactly as Pillow's ``NEAREST`` and OpenCV's
  ``INTER_NEAREST_EXACT`` do, so ties at pixel boundaries fall the same way (not
  OpenCV's legacy ``INTER_NEAREST``, which samples ``floor(d * s)``, off by half a
  pixel).
* ``bilinear`` — OpenCV ``INTER_LINEAR``: ``x = (d + 0.5) * s - 0.5``, taps
  ``floor(x)`` and ``floor(x) + 1`` clamped to the image (border replicate).
* ``area`` — OpenCV ``INTER_AREA``: when neither axis grows, each output pixel is
  the mean of the source area it covers (fractional coverage at the cell edges);
  when either axis grows, OpenCV's "area-linear" coefficients on both axes.
* ``bilinear`` + ``antialias`` — Pillow's ``BILINEAR``: a triangle filter whose
  support grows with the downscale factor (``s`` source pixels each side), with
  weights renormalised at the borders. For an axis that grows it equals plain
  bilinear.
"""

from __future__ import annotations

import math
from functools import cache, lru_cache
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["INTERPOLATIONS", "axis_kinds", "resample", "tap_table"]

INTERPOLATIONS = ("nearest", "bilinear", "area")


# -- tap tables (host, float64 -> float32) ---------------------------------------------------


def _pack(rows: list[list[tuple[int, float]]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-output lists of (index, weight) -> dense ``[n_out, T]`` int32/float32 tables."""
    taps = max(len(r) for r in rows)
    idx = np.zeros((len(rows), taps), np.int32)
    w = np.zeros((len(rows), taps), np.float32)
    for d, row in enumerate(rows):
        for t, (i, wt) in enumerate(row):
            idx[d, t] = i
            w[d, t] = wt
        if row:  # pad with the last index (weight 0) so every gather stays in bounds
            idx[d, len(row):] = row[-1][0]
    return idx, w


def _nearest(n_in: int, n_out: int) -> list[list[tuple[int, float]]]:
    s = n_in / n_out
    # Sequential double-precision accumulation, as Pillow's ImagingScaleAffine does:
    # np.cumsum adds left to right, so the rounding matches a C loop `xo += s`.
    xo = np.cumsum(np.concatenate([[s * 0.5], np.full(n_out - 1, s)]))
    src = np.minimum(xo.astype(np.int64), n_in - 1)
    return [[(int(i), 1.0)] for i in src]


def _cv_scale(n_in: int, n_out: int) -> float:
    """``in / out`` computed the way ``cv2.resize`` does (``1 / (out / in)``), so that
    products such as ``d * s`` round the same way at exact pixel boundaries."""
    return 1.0 / (n_out / n_in)


def _linear(n_in: int, n_out: int) -> list[list[tuple[int, float]]]:
    s = _cv_scale(n_in, n_out)
    rows = []
    for d in range(n_out):
        x = float(np.float32((d + 0.5) * s - 0.5))  # OpenCV rounds the coordinate to float first
        x0 = math.floor(x)
        f = float(np.float32(x - x0))
        if x0 < 0:
            x0, f = 0, 0.0
        if x0 >= n_in - 1:
            x0, f = n_in - 1, 0.0
        rows.append([(x0, 1.0 - f), (min(x0 + 1, n_in - 1), f)])
    return rows


def _area(n_in: int, n_out: int) -> list[list[tuple[int, float]]]:
    """OpenCV's ``computeResizeAreaTab`` (downscaling): fractional box coverage."""
    s = _cv_scale(n_in, n_out)
    rows = []
    for d in range(n_out):
        fsx1 = d * s
        fsx2 = fsx1 + s
        cell = min(s, n_in - fsx1)
        sx1 = math.ceil(fsx1)
        sx2 = min(math.floor(fsx2), n_in - 1)
        sx1 = min(sx1, sx2)
        row: list[tuple[int, float]] = []
        if sx1 - fsx1 > 1e-3:
            row.append((sx1 - 1, (sx1 - fsx1) / cell))
        row.extend((sx, 1.0 / cell) for sx in range(sx1, sx2))
        if fsx2 - sx2 > 1e-3:
            row.append((sx2, min(fsx2 - sx2, 1.0, cell) / cell))
        rows.append(row)
    return rows


def _area_linear(n_in: int, n_out: int) -> list[list[tuple[int, float]]]:
    """OpenCV's ``INTER_AREA`` coefficients when the image grows along some axis."""
    inv = n_out / n_in
    s = 1.0 / inv
    rows = []
    for d in range(n_out):
        sx = math.floor(d * s)
        f = float(np.float32((d + 1) - (sx + 1) * inv))  # as OpenCV: rounded to float, then wrapped
        f = 0.0 if f <= 0 else float(np.float32(f - math.floor(f)))
        if sx >= n_in - 1:
            sx, f = n_in - 1, 0.0
        rows.append([(sx, 1.0 - f), (min(sx + 1, n_in - 1), f)])
    return rows


def _triangle(n_in: int, n_out: int) -> list[list[tuple[int, float]]]:
    """Pillow's ``precompute_coeffs`` for the BILINEAR (triangle) filter."""
    s = n_in / n_out
    filterscale = max(s, 1.0)
    support = filterscale
    rows = []
    for d in range(n_out):
        center = (d + 0.5) * s
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        row = []
        for x in range(xmin, xmax):
            w = 1.0 - abs((x - center + 0.5) / filterscale)
            if w > 0:
                row.append((x, w))
        total = sum(w for _, w in row)
        if not row or total <= 0:  # cannot happen for n_in >= 1; keep the table well formed
            row, total = [(min(int(center), n_in - 1), 1.0)], 1.0
        rows.append([(x, w / total) for x, w in row])
    return rows


_BUILDERS = {
    "nearest": _nearest,
    "linear": _linear,
    "area": _area,
    "area_linear": _area_linear,
    "triangle": _triangle,
}


@lru_cache(maxsize=1024)
def tap_table(n_in: int, n_out: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``(idx int32[n_out, T], w float32[n_out, T])`` table of one axis.

    ``kind`` is one of ``nearest``, ``linear``, ``area``, ``area_linear``,
    ``triangle`` (see the module docstring). The arrays are shared: never write them.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"cannot resample an axis of {n_in} pixels to {n_out}")
    idx, w = _pack(_BUILDERS[kind](n_in, n_out))
    idx.flags.writeable = False
    w.flags.writeable = False
    return idx, w


def axis_kinds(src_hw: tuple[int, int], dst_hw: tuple[int, int], interpolation: str,
               antialias: bool) -> tuple[str, str]:
    """The tap-table kind of the (height, width) axes for one resize.

    The choice for ``area`` depends on both axes, as in OpenCV: a true area
    average only when neither axis grows.
    """
    if interpolation == "nearest":
        return "nearest", "nearest"
    if interpolation == "bilinear":
        return ("triangle", "triangle") if antialias else ("linear", "linear")
    if interpolation == "area":
        if dst_hw[0] <= src_hw[0] and dst_hw[1] <= src_hw[1]:
            return "area", "area"
        return "area_linear", "area_linear"
    raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {', '.join(INTERPOLATIONS)}")


# -- applying tables -------------------------------------------------------------------------


def _apply_numpy(src: np.ndarray, idx: np.ndarray, w: np.ndarray, axis: int) -> np.ndarray:
    """NumPy twin of the CuPy kernel: ``sum_t w[:, t] * src.take(idx[:, t], axis)`` in float32."""
    shape = [1] * src.ndim
    shape[axis] = -1
    acc: np.ndarray | None = None
    for t in range(idx.shape[1]):
        term = np.take(src, idx[:, t], axis=axis) * w[:, t].reshape(shape)
        acc = term.astype(np.float32, copy=False) if acc is None else np.add(acc, term, out=acc)
    assert acc is not None
    return acc


_CUDA_RESAMPLE = r"""
const long long block = (long long)n_out * inner;
const long long o = i / block;
const long long r = i - o * block;
const int d = (int)(r / inner);
const long long c = r - (long long)d * inner;
const long long base = o * (long long)n_in * inner + c;
float acc = 0.f;
for (int t = 0; t < taps; ++t) {
    acc += w[d * taps + t] * (float)src[base + (long long)idx[d * taps + t] * inner];
}
out = acc;
"""

_CUDA_ROUND = "y = (T)fminf(fmaxf(rintf(x), lo), hi)"


@cache
def _cupy_kernels(cp: ModuleType) -> tuple[Any, Any]:
    resample_axis = cp.ElementwiseKernel(
        "raw S src, raw int32 idx, raw float32 w, int32 taps, int32 n_in, int32 n_out, int64 inner",
        "float32 out",
        _CUDA_RESAMPLE,
        "dagserve_resample_axis",
    )
    round_cast = cp.ElementwiseKernel("float32 x, float32 lo, float32 hi", "T y", _CUDA_ROUND,
                                      "dagserve_round_cast")
    return resample_axis, round_cast


@lru_cache(maxsize=1024)
def _device_table(n_in: int, n_out: int, kind: str, device_id: int) -> tuple[Any, Any]:
    import cupy as cp

    idx, w = tap_table(n_in, n_out, kind)
    pair = cp.asarray(idx), cp.asarray(w)
    # The tables are shared by every instance (each on its own stream): make sure the
    # upload has landed before another stream can read them.
    cp.cuda.get_current_stream().synchronize()
    return pair


def _apply_cupy(cp: ModuleType, src: Any, n_out: int, kind: str, axis: int) -> Any:
    n_in = src.shape[axis]
    idx, w = _device_table(n_in, n_out, kind, cp.cuda.Device().id)
    src = cp.ascontiguousarray(src)
    inner = math.prod(src.shape[axis + 1:])
    out_shape = (*src.shape[:axis], n_out, *src.shape[axis + 1:])
    out = cp.empty(out_shape, dtype=cp.float32)
    if out.size:
        resample_axis, _ = _cupy_kernels(cp)
        resample_axis(src, idx, w, np.int32(idx.shape[1]), np.int32(n_in), np.int32(n_out),
                      np.int64(inner), out)
    return out


def _round_cast(xp: ModuleType, acc: Any, dtype: np.dtype) -> Any:
    """float32 accumulator -> ``dtype``: round half to even and saturate for integers."""
    if dtype.kind == "f":
        return acc.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    if xp is np:
        np.rint(acc, out=acc)
        np.clip(acc, info.min, info.max, out=acc)
        return acc.astype(dtype)
    _, round_cast = _cupy_kernels(xp)
    out = xp.empty(acc.shape, dtype=dtype)
    round_cast(acc, np.float32(info.min), np.float32(info.max), out)
    return out


def resample(xp: ModuleType, image: Any, size: tuple[int, int], interpolation: str,
             antialias: bool = False) -> Any:
    """Resize an ``[H, W, C]`` image to ``size = (height, width)`` with ``xp`` (numpy or cupy).

    Returns an array of the input dtype (integers rounded half to even and
    saturated). ``nearest`` gathers pixels and never goes through floats.
    """
    h, w = int(image.shape[0]), int(image.shape[1])
    out_h, out_w = int(size[0]), int(size[1])
    kind_h, kind_w = axis_kinds((h, w), (out_h, out_w), interpolation, antialias)
    if (h, w) == (out_h, out_w):  # every kind is the identity at scale 1
        return image.copy()
    if interpolation == "nearest":
        rows = tap_table(h, out_h, "nearest")[0][:, 0]
        cols = tap_table(w, out_w, "nearest")[0][:, 0]
        if xp is not np:
            rows, cols = xp.asarray(rows), xp.asarray(cols)
        return xp.take(xp.take(image, rows, axis=0), cols, axis=1)
    dtype = np.dtype(image.dtype)
    # Run first the pass that leaves less work for the second (same maths either way).
    cost_rows_first = out_h * w * tap_table(h, out_h, kind_h)[0].shape[1]
    cost_cols_first = h * out_w * tap_table(w, out_w, kind_w)[0].shape[1]
    rows_first = cost_rows_first <= cost_cols_first
    order = ((0, out_h, kind_h), (1, out_w, kind_w)) if rows_first else ((1, out_w, kind_w), (0, out_h, kind_h))
    acc = image
    for axis, n_out, kind in order:
        if xp is np:
            idx, wt = tap_table(acc.shape[axis], n_out, kind)
            acc = _apply_numpy(acc, idx, wt, axis)
        else:
            acc = _apply_cupy(xp, acc, n_out, kind, axis)
    return _round_cast(xp, acc, dtype)
