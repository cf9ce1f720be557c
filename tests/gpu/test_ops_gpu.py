"""Built-in op kernels on a GPU (CuPy): the same parity checks as tests/ops, on the device.

Run on a GPU machine with ``tests/gpu/run_all.sh``. Every test is marked ``gpu`` and
skips, with the reason, where CuPy is missing or has no usable CUDA device. Kernels are
built exactly as the runtime builds them (the OpDef's ``module:factory`` string) with
``Device("gpu", 0)``; inputs are CuPy arrays, outputs must be CuPy arrays.
"""

from __future__ import annotations

import importlib
import io
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from dagserve.ops.base import KernelContext
from dagserve.ops.kernels._common import KernelInputError
from dagserve.ops.registry import default_registry
from dagserve.types import Device


def _cupy_or_reason() -> tuple[Any, str]:
    try:
        import cupy
    except ImportError:
        return None, "no CUDA GPU (cupy is not installed: pip install 'dagserve[gpu]')"
    try:
        usable = bool(cupy.cuda.is_available())
    except Exception:
        usable = False
    return (cupy, "") if usable else (None, "no CUDA GPU (cupy.cuda.is_available() is False)")


cp, _REASON = _cupy_or_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cp is None, reason=_REASON or "no CUDA GPU")]

GPU0 = Device("gpu", 0)
CPU = Device("cpu")
CV2_FLAG = {"nearest": cv2.INTER_NEAREST_EXACT, "bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


def build(op: str, device: Device = GPU0, **params: Any) -> Any:
    opdef = default_registry().get(op)
    assert opdef is not None and opdef.kernel
    module_name, factory = opdef.kernel.split(":")
    ctx = KernelContext(node="n", op=op, params=params, device=device, batched=True,
                        input_types={}, output_types={})
    return getattr(importlib.import_module(module_name), factory)(ctx)


def host(x: Any) -> Any:
    if isinstance(x, list):
        return [host(v) for v in x]
    assert isinstance(x, cp.ndarray), f"expected a CuPy array, got {type(x).__name__}"
    return cp.asnumpy(x)


def photos() -> dict[str, np.ndarray]:
    import skimage.data as data

    return {"astronaut": data.astronaut(), "chelsea": data.chelsea(), "coffee": data.coffee(),
            "camera": data.camera()[:, :, None]}


PHOTOS = photos() if cp is not None else {}


def _encode(array: np.ndarray, fmt: str, **save: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array).save(buf, fmt, **save)
    return buf.getvalue()


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


# -- image ops ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "coffee", "camera"])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "area"])
def test_resize_on_gpu_matches_cv2(name: str, interpolation: str) -> None:
    image = PHOTOS[name]
    h, w = image.shape[:2]
    k = None
    for size in [(h // 2, w // 2), (2 * h + 1, 3 * w - 1), (101, 77), (h // 3, w + 5), (320, 320)]:
        k = build("image.resize", size=list(size), interpolation=interpolation)
        out = k({"image": cp.asarray(image)})
        ref = cv2.resize(image, (size[1], size[0]), interpolation=CV2_FLAG[interpolation]).reshape(
            *size, image.shape[2])
        assert _max_diff(host(out["image"]), ref) <= 1, (name, size, interpolation)
        np.testing.assert_allclose(host(out["transform"]), [size[1] / w, size[0] / h, 0, 0, w, h], rtol=1e-6)


def test_resize_antialias_on_gpu_matches_pillow() -> None:
    image = PHOTOS["coffee"]
    out = host(build("image.resize", size=[100, 150], antialias=True)({"image": cp.asarray(image)})["image"])
    ref = np.asarray(Image.fromarray(image).resize((150, 100), Image.Resampling.BILINEAR))
    assert _max_diff(out, ref) <= 1


@pytest.mark.parametrize("dtype", [np.uint16, np.float16, np.float32])
def test_resize_on_gpu_keeps_dtypes(dtype: type) -> None:
    image = (np.random.default_rng(0).random((50, 70, 3)) * 1000).astype(dtype)
    out = host(build("image.resize", size=[25, 35])({"image": cp.asarray(image)})["image"])
    ref = cv2.resize(image.astype(np.float32), (35, 25), interpolation=cv2.INTER_LINEAR)
    assert out.dtype == dtype
    np.testing.assert_allclose(out.astype(np.float32), ref, rtol=2e-3, atol=1.0)


@pytest.mark.parametrize("name", ["astronaut", "chelsea", "camera"])
def test_letterbox_on_gpu_matches_the_cpu_kernel(name: str) -> None:
    params = {"size": [320, 256], "dtype": "float32", "scale": "1/255", "layout": "chw", "fill": 114}
    image = PHOTOS[name]
    gpu = build("image.letterbox", **params)({"image": cp.asarray(image)})
    cpu = build("image.letterbox", CPU, **params)({"image": image})
    np.testing.assert_allclose(host(gpu["image"]), cpu["image"], atol=1 / 255 + 1e-6)
    assert host(gpu["image"]).flags.c_contiguous
    np.testing.assert_array_equal(host(gpu["transform"]), cpu["transform"])


def test_normalize_and_crop_on_gpu_match_the_cpu_kernels() -> None:
    batch = np.stack([cv2.resize(PHOTOS[n], (64, 48)) for n in ("astronaut", "coffee")])
    params = {"scale": "1/255", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "layout": "chw"}
    gpu = host(build("image.normalize", **params)({"image": cp.asarray(batch)})["image"])
    cpu = build("image.normalize", CPU, **params)({"image": batch})["image"]
    np.testing.assert_allclose(gpu, cpu, rtol=1e-6, atol=1e-6)
    ragged = build("image.normalize", **params)({"image": [cp.asarray(batch[0]), cp.asarray(batch[1, :5])]})
    assert [a.shape for a in host(ragged["image"])] == [(3, 48, 64), (3, 5, 64)]
    image = PHOTOS["chelsea"]
    box = cp.asarray(np.array([30.5, 40, 130, 90], np.float32))
    out = host(build("image.crop", size=[64, 64])({"image": cp.asarray(image), "box": box})["image"])
    ref = build("image.crop", CPU, size=[64, 64])({"image": image, "box": cp.asnumpy(box)})["image"]
    assert _max_diff(out, ref) <= 1


def test_image_ops_on_gpu_refuse_bad_images() -> None:
    with pytest.raises(KernelInputError, match="empty"):
        build("image.resize", size=[8, 8])({"image": cp.zeros((0, 4, 3), cp.uint8)})
    with pytest.raises(KernelInputError, match="must be uint8"):
        build("image.letterbox", size=[8, 8])({"image": cp.zeros((4, 4, 3), cp.int64)})


# -- decode ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_decode_on_gpu_matches_cpu_decode(fmt: str) -> None:
    image = PHOTOS["coffee"]
    data = _encode(image, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    gpu = host(build("image.decode")({"data": data})["image"])
    cpu = build("image.decode", CPU)({"data": data})["image"]
    assert gpu.shape == cpu.shape and gpu.dtype == np.uint8
    if fmt == "JPEG":  # nvJPEG and libjpeg-turbo differ in IDCT and chroma upsampling
        mse = np.mean((gpu.astype(np.float64) - cpu) ** 2)
        assert 10 * np.log10(255**2 / max(mse, 1e-9)) > 35
    else:
        assert np.array_equal(gpu, cpu)
    bgr = host(build("image.decode", color="bgr")({"data": data})["image"])
    assert np.array_equal(bgr, gpu[:, :, ::-1])
    gray = host(build("image.decode", color="gray")({"data": data})["image"])
    assert gray.shape == (*cpu.shape[:2], 1)


@pytest.mark.parametrize("value", [3, 6, 8])
def test_decode_on_gpu_applies_exif_orientation(value: int) -> None:
    image = np.zeros((48, 80, 3), np.uint8)
    image[:16, :40] = (255, 0, 0)
    image[30:, 60:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = value
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    data = buf.getvalue()
    out = host(build("image.decode")({"data": data})["image"])
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert out.shape == expected.shape
    assert np.abs(out.astype(int) - expected).mean() < 3


def test_decode_on_gpu_refuses_bad_bytes_like_the_cpu() -> None:
    k = build("image.decode", max_pixels=1000)
    with pytest.raises(KernelInputError, match="exceeds max_pixels 1,000"):
        k({"data": _encode(PHOTOS["chelsea"], "PNG")})
    with pytest.raises(KernelInputError, match="empty input"):
        k({"data": b""})
    data = _encode(PHOTOS["chelsea"], "JPEG")
    with pytest.raises(KernelInputError, match="truncated JPEG"):
        build("image.decode")({"data": data[: len(data) // 2]})


# -- detect.nms / classify.topk -------------------------------------------------------------


def _yolov8(rng: np.random.Generator, classes: int, anchors: int) -> np.ndarray:
    centres = rng.uniform(0, 320, (anchors // 8, 2))
    xy = np.clip(centres[rng.integers(0, len(centres), anchors)] + rng.normal(0, 15, (anchors, 2)), 0, 320)
    wh = rng.uniform(4, 120, (anchors, 2))
    scores = rng.uniform(0, 0.3, (anchors, classes))
    hot = rng.random(anchors) < 0.15
    scores[hot, rng.integers(0, classes, int(hot.sum()))] = rng.uniform(0.2, 1.0, int(hot.sum()))
    return np.concatenate([xy + wh / 2, wh, scores], axis=1).T.astype(np.float32)


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_nms_on_gpu_matches_opencv(class_agnostic: bool) -> None:
    k = build("detect.nms", class_agnostic=class_agnostic, max_detections=100)
    for seed in range(30):
        rng = np.random.default_rng(seed)
        pred = _yolov8(rng, int(rng.integers(1, 6)), 2100)
        out = {key: host(v) for key, v in k({"predictions": cp.asarray(pred)}).items()}
        table = pred.T
        score, label = table[:, 4:].max(1), table[:, 4:].argmax(1)
        c = table[:, :4].astype(np.float64)
        rects = [(x - w / 2, y - h / 2, w, h) for x, y, w, h in c]
        keep = (cv2.dnn.NMSBoxes(rects, score.tolist(), 0.25, 0.45) if class_agnostic else
                cv2.dnn.NMSBoxesBatched(rects, score.tolist(), label.tolist(), 0.25, 0.45))
        keep = np.asarray(keep, np.int64).reshape(-1)[:100]
        assert int(out["count"]) == len(keep)
        assert np.array_equal(out["labels"], label[keep]) and np.array_equal(out["scores"], score[keep])
        xyxy = np.stack([c[:, 0] - c[:, 2] / 2, c[:, 1] - c[:, 3] / 2, c[:, 0] + c[:, 2] / 2, c[:, 1] + c[:, 3] / 2], 1)
        np.testing.assert_array_equal(out["boxes"], xyxy[keep].astype(np.float32))


def test_nms_on_gpu_maps_through_the_transform_and_pads() -> None:
    pred = _yolov8(np.random.default_rng(5), 3, 2100)
    transform = np.array([0.5, 0.5, 0.0, 40.0, 640.0, 480.0], np.float32)
    params = {"pad": True, "max_detections": 300}
    gpu = build("detect.nms", **params)({"predictions": cp.asarray(pred), "transform": cp.asarray(transform)})
    cpu = build("detect.nms", CPU, **params)({"predictions": pred, "transform": transform})
    for key in ("boxes", "scores", "labels", "count"):
        np.testing.assert_array_equal(host(gpu[key]), cpu[key])


def test_topk_on_gpu_matches_cpu() -> None:
    logits = np.random.default_rng(0).normal(0, 3, (8, 1000)).astype(np.float32)
    gpu = build("classify.topk", k=5)({"logits": cp.asarray(logits)})
    cpu = build("classify.topk", CPU, k=5)({"logits": logits})
    np.testing.assert_array_equal(host(gpu["indices"]), cpu["indices"])
    np.testing.assert_allclose(host(gpu["scores"]), cpu["scores"], rtol=1e-5)
    with pytest.raises(KernelInputError, match="NaN"):
        build("classify.topk", k=1)({"logits": cp.asarray(np.array([[np.nan, 1.0]], np.float32))})


# -- tensor ops -----------------------------------------------------------------------------


@pytest.mark.parametrize(("op", "params"), [
    ("tensor.cast", {"dtype": "float16"}),
    ("tensor.transpose", {"perm": [2, 0, 1]}),
    ("tensor.slice", {"axis": 1, "start": 1, "stop": 5, "step": 2}),
    ("math.add", {"value": 1.5}),
    ("math.mul", {"value": -2}),
])
def test_tensor_ops_on_gpu_match_cpu(op: str, params: dict) -> None:
    x = np.random.default_rng(0).normal(size=(4, 3, 5, 6)).astype(np.float32)
    gpu = host(build(op, **params)({"x": cp.asarray(x)})["y"])
    cpu = build(op, CPU, **params)({"x": x})["y"]
    np.testing.assert_array_equal(gpu, cpu)


def test_identity_on_gpu_is_zero_copy_and_split_concat_round_trip() -> None:
    x = cp.arange(24, dtype=cp.float32).reshape(2, 3, 4)
    assert build("tensor.identity")({"x": x})["y"] is x
    parts = build("tensor.split", axis=1, sizes=[1, 3])({"x": x})
    joined = build("tensor.concat", axis=1)({"x": [parts["y0"], parts["y1"]]})["y"]
    np.testing.assert_array_equal(host(joined), host(x))


# -- element-wise ops on two tensors ----------------------------------------------------------------

ELEMENTWISE = ["add", "sub", "mul", "div", "min", "max", "equal", "not_equal", "less", "less_equal", "greater",
               "greater_equal"]


@pytest.mark.parametrize("dtype", ["int32", "uint8", "float16", "float32", "float64"])
@pytest.mark.parametrize("op", ELEMENTWISE)
def test_elementwise_ops_on_gpu_match_cpu_with_broadcasting(op: str, dtype: str) -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(1, 50, size=(4, 3, 5)).astype(dtype)
    b = rng.integers(1, 50, size=(4, 5)).astype(dtype)  # item [5] broadcast against item [3,5]
    gpu = build(f"tensor.{op}")({"a": cp.asarray(a), "b": cp.asarray(b)})["y"]
    assert gpu.flags.c_contiguous
    cpu = build(f"tensor.{op}", CPU)({"a": a, "b": b})["y"]
    np.testing.assert_array_equal(host(gpu), cpu)
    ragged = build(f"tensor.{op}")({"a": [cp.asarray(a[0]), cp.asarray(a[1, :2])], "b": cp.asarray(b[:2])})["y"]
    np.testing.assert_array_equal(host(ragged)[1], build(f"tensor.{op}", CPU)({"a": [a[1, :2]], "b": b[1:2]})["y"][0])


def test_integer_division_by_zero_on_gpu_fails_like_the_cpu() -> None:
    a = cp.ones((1, 3), dtype=cp.int32)
    with pytest.raises(KernelInputError, match="integer division by zero"):
        build("tensor.div")({"a": a, "b": cp.zeros((1, 3), dtype=cp.int32)})
