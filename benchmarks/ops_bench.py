"""Per-item cost of every built-in op kernel on this machine, on realistic inputs.

Each kernel is built exactly as the runtime builds it (the OpDef's ``module:factory``
string, a :class:`KernelContext` on the CPU) and called in a loop; the figure is the
median wall time of one call over many repeats, after a warm-up, in microseconds
(the minimum is reported too: on a shared machine it is the less noisy figure).
Cases are measured in interleaved rounds so that load from other processes does not
land on one case only.
Batched kernels are measured on a batch of 1 (the per-request cost) and, where a
batch changes the picture, on a batch of 8 divided by 8 (the per-item cost when the
dynamic batcher fills batches).

Inputs: a real photo (scikit-image's ``coffee``) resized to 640x480 and encoded as
JPEG (quality 90) and PNG; a YOLOv8 head output ``float32[4+3, 2100]`` (a 320x320
detector) with a handful of objects, each seen by a cluster of anchors, over a floor
of low scores; 1000-class logits.

OpenCV runs with one thread (``cv2.setNumThreads(1)``, change with ``--threads``):
in a server, parallelism comes from node instances, and OpenCV's own thread pool
would compete with them for the same cores.

Usage::

    python benchmarks/ops_bench.py              # table on stdout, benchmarks/out/ops.json
    python benchmarks/ops_bench.py --quick      # fewer repeats
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dagserve.ops.base import KernelContext  # noqa: E402
from dagserve.ops.kernels._decode import decode_cpu  # noqa: E402
from dagserve.ops.kernels._nms import nms_matrix  # noqa: E402
from dagserve.ops.kernels._resample import resample  # noqa: E402
from dagserve.ops.kernels.detect import candidates  # noqa: E402
from dagserve.ops.registry import default_registry  # noqa: E402
from dagserve.types import Device  # noqa: E402

OUT = ROOT / "benchmarks" / "out"


def build(op: str, **params: Any) -> Any:
    opdef = default_registry().get(op)
    assert opdef is not None and opdef.kernel
    module_name, factory = opdef.kernel.split(":")
    ctx = KernelContext(node="bench", op=op, params=params, device=Device("cpu"), batched=True,
                        input_types={}, output_types={})
    return getattr(importlib.import_module(module_name), factory)(ctx)


def sample(fn: Callable[[], Any], seconds: float, times: list[float]) -> None:
    """Append the wall time of ``fn()`` in µs to ``times`` for about ``seconds``."""
    deadline = time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1000)
        if time.perf_counter() >= deadline:
            return


def yolov8_output(rng: np.random.Generator, classes: int = 3, objects: int = 6, size: int = 320) -> np.ndarray:
    """A plausible ``[4+C, A]`` head output of a YOLOv8 on ``size`` x ``size`` (strides 8, 16, 32;
    A = 2100 at 320, 8400 at 640)."""
    cells = []
    for stride in (8, 16, 32):
        n = size // stride
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        cells.append(np.stack([(xs.ravel() + 0.5) * stride, (ys.ravel() + 0.5) * stride,
                               np.full(n * n, stride * 4.0)], axis=1))
    anchors = np.concatenate(cells)  # [2100, 3]: cx, cy, typical size
    a = len(anchors)
    boxes = np.empty((a, 4), np.float32)
    boxes[:, :2] = anchors[:, :2] + rng.normal(0, 2, (a, 2))
    boxes[:, 2:] = anchors[:, 2:3] * rng.uniform(0.5, 1.5, (a, 2))
    scores = rng.uniform(0, 0.08, (a, classes)).astype(np.float32)
    for _ in range(objects):
        centre = rng.uniform(0.1 * size, 0.9 * size, 2)
        extent = rng.uniform(0.1 * size, 0.45 * size, 2)
        label = int(rng.integers(0, classes))
        near = np.nonzero(np.linalg.norm(anchors[:, :2] - centre, axis=1) < extent.min() / 4)[0]
        boxes[near, :2] = centre + rng.normal(0, 3, (len(near), 2))
        boxes[near, 2:] = extent * rng.uniform(0.9, 1.1, (len(near), 2))
        scores[near, label] = rng.uniform(0.3, 0.95, len(near))
    return np.ascontiguousarray(np.concatenate([boxes, scores], axis=1).T, dtype=np.float32)  # as ONNX returns it


def cases(rng: np.random.Generator) -> list[tuple[str, str, Callable[[], Any], int]]:
    """(name, input description, call, items per call)."""
    import skimage.data

    photo = cv2.resize(skimage.data.coffee(), (640, 480), interpolation=cv2.INTER_AREA)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG")
    png = buf.getvalue()
    lb_image = build("image.letterbox", size=[320, 320])({"image": photo})["image"]
    batch8 = np.stack([lb_image] * 8)
    pred = yolov8_output(rng)
    pred640 = yolov8_output(rng, classes=80, objects=10, size=640)
    logits1 = rng.normal(0, 3, (1, 1000)).astype(np.float32)
    logits8 = rng.normal(0, 3, (8, 1000)).astype(np.float32)
    chw = rng.random((1, 3, 320, 320), dtype=np.float32)

    decode = build("image.decode")
    resize = build("image.resize", size=[320, 320])
    letterbox_u8 = build("image.letterbox", size=[320, 320])
    letterbox_f32 = build("image.letterbox", size=[320, 320], layout="chw", dtype="float32", scale="1/255")
    crop = build("image.crop", box=[100, 80, 420, 400], size=[224, 224])
    normalize = build("image.normalize", scale="1/255", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                      layout="chw")
    nms = build("detect.nms", max_detections=100)
    topk = build("classify.topk", k=5)
    cast = build("tensor.cast", dtype="float16")
    transpose = build("tensor.transpose", perm=[1, 2, 0])
    identity = build("tensor.identity")
    jpeg_kb, png_kb = len(jpeg) // 1024, len(png) // 1024

    def pillow_jpeg() -> Any:
        return np.array(Image.open(io.BytesIO(jpeg)).convert("RGB"))

    def nms_gpu_twin() -> Any:
        b, s, lab = candidates(np, "yolov8", {"predictions": pred}, 0.25)
        return nms_matrix(np, b, s, lab, 0.45, 100, True)

    n_candidates = len(candidates(np, "yolov8", {"predictions": pred}, 0.25)[1])
    n640 = len(candidates(np, "yolov8", {"predictions": pred640}, 0.25)[1])
    return [
        ("image.decode", f"640x480 JPEG q90 ({jpeg_kb} KiB), OpenCV path", lambda: decode({"data": jpeg}), 1),
        ("  (reference) Pillow decode", "same JPEG, Image.open().convert('RGB')", pillow_jpeg, 1),
        ("image.decode", f"640x480 PNG ({png_kb} KiB), OpenCV path", lambda: decode({"data": png}), 1),
        ("image.decode gray", "640x480 JPEG -> gray", lambda: decode_cpu(jpeg, "gray", 10**9, True), 1),
        ("image.resize", "640x480x3 u8 -> 320x320 bilinear", lambda: resize({"image": photo}), 1),
        ("  (GPU twin on NumPy)", "same, _resample.resample(np, ...)",
         lambda: resample(np, photo, (320, 320), "bilinear"), 1),
        ("image.letterbox", "640x480x3 u8 -> 320x320 u8 hwc", lambda: letterbox_u8({"image": photo}), 1),
        ("image.letterbox", "640x480x3 u8 -> f32[3,320,320] x 1/255", lambda: letterbox_f32({"image": photo}), 1),
        ("image.crop", "320x320 box of 640x480 -> 224x224", lambda: crop({"image": photo}), 1),
        ("image.normalize", "u8[1,320,320,3] -> f32 chw mean/std", lambda: normalize({"image": batch8[:1]}), 1),
        ("image.normalize", "u8[8,320,320,3] -> f32 chw, per item", lambda: normalize({"image": batch8}), 8),
        ("detect.nms", f"yolov8 f32[7,2100], {n_candidates} candidates > 0.25", lambda: nms({"predictions": pred}), 1),
        ("  (GPU twin on NumPy)", "same, suppression-matrix algorithm", nms_gpu_twin, 1),
        ("detect.nms", f"yolov8 f32[84,8400] (640x640, 80 classes), {n640} candidates",
         lambda: nms({"predictions": pred640}), 1),
        ("classify.topk", "f32[1,1000], softmax, k=5", lambda: topk({"logits": logits1}), 1),
        ("classify.topk", "f32[8,1000], softmax, k=5, per item", lambda: topk({"logits": logits8}), 8),
        ("tensor.cast", "f32[1,3,320,320] -> f16", lambda: cast({"x": chw}), 1),
        ("tensor.transpose", "f32[1,3,320,320] chw -> hwc", lambda: transpose({"x": chw}), 1),
        ("tensor.identity", "any", lambda: identity({"x": chw}), 1),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 0.2 s per case instead of 1 s")
    parser.add_argument("--threads", type=int, default=1, help="cv2.setNumThreads (default 1)")
    parser.add_argument("--out", type=Path, default=OUT / "ops.json")
    args = parser.parse_args(argv)
    cv2.setNumThreads(args.threads)
    seconds = 0.2 if args.quick else 1.0
    rounds = 5
    table = cases(np.random.default_rng(0))
    samples: list[list[float]] = [[] for _ in table]
    for _, _, fn, _ in table:  # warm-up: imports, caches, first allocations
        for _ in range(3):
            fn()
    # Rounds interleave the cases, so a burst of load from other processes spreads over all
    # of them instead of inflating one.
    for _ in range(rounds):
        for (_, _, fn, _), times in zip(table, samples):
            sample(fn, seconds / rounds, times)
    rows = []
    for (name, what, _, items), times in zip(table, samples):
        us = statistics.median(times) / items
        rows.append({"op": name.strip(), "input": what, "median_us_per_item": round(us, 1),
                     "min_us_per_item": round(min(times) / items, 1), "items_per_call": items,
                     "repeats": len(times)})
        print(f"{name:30s} {what:50s} {us:10.1f} µs  (min {min(times) / items:.1f})", flush=True)
    result = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "load_avg_1m": os.getloadavg()[0]},
        "versions": {"numpy": np.__version__, "opencv": cv2.__version__, "pillow": Image.__version__},
        "cv2_threads": args.threads,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
