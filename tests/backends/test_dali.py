"""dali.image: parity with the same preprocessing done with OpenCV, errors, and compile-time checks.

Parity tolerance (docs/backends.md): DALI and OpenCV both decode with libjpeg-turbo
/ libpng and both round the resized image to uint8 before normalizing, but their
bilinear weights differ in the last bit (OpenCV uses 11-bit fixed point), so a
pixel may differ by one grey level: ``|dali - cv2| <= 1 level * scale / std``.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest

from dagserve.ops import dali as dali_op
from dagserve.ops.kernels.image import letterbox_geometry
from dagserve.types import CPU

from .conftest import errors

try:
    import nvidia.dali  # noqa: F401

    HAVE_DALI = True
except ImportError:
    HAVE_DALI = False

needs_dali = pytest.mark.skipif(not HAVE_DALI, reason="NVIDIA DALI is not installed "
                                "(extra: pip install 'dagserve[dali]', wheel nvidia-dali-cuda130)")

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def _photos() -> list[np.ndarray]:
    """RGB test images: real photos from scikit-image when present, and odd-sized synthetic ones."""
    rng = np.random.default_rng(11)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(37, 301), (101, 150), (640, 479)]]
    try:
        from skimage import data

        images += [data.chelsea(), data.coffee(), data.astronaut()]
    except ImportError:
        pass
    return images


PHOTOS = _photos()


def encode(rgb: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def batch(items: list[bytes]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def cv2_decode(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def cv2_normalize(img: np.ndarray, scale: float, mean: list[float], std: list[float]) -> np.ndarray:
    return ((img.astype(np.float32) * scale - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)


def cv2_letterbox(img: np.ndarray, size: tuple[int, int], fill: int) -> tuple[np.ndarray, list[float]]:
    """The reference letterbox: image.letterbox's geometry, OpenCV's bilinear resize."""
    out_h, out_w = size
    h, w = img.shape[:2]
    nh, nw, top, left = letterbox_geometry(h, w, out_h, out_w, scale_up=True, center=True)
    canvas = np.full((out_h, out_w, 3), fill, np.uint8)
    canvas[top:top + nh, left:left + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas, [nw / w, nh / h, left, top, w, h]


def make_kernel(**params: Any) -> Any:
    from dagserve.backends.dali_backend import DaliImageKernel

    return DaliImageKernel({"size": [64, 64], **params}, CPU)


# -- parity -----------------------------------------------------------------------------------


@needs_dali
@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_resize_matches_opencv(ext: str) -> None:
    kernel = make_kernel(size=[96, 128], scale="1/255", mean=MEAN, std=STD)
    encoded = [encode(p, ext) for p in PHOTOS]
    out = kernel({"data": batch(encoded)})
    assert out["image"].shape == (len(PHOTOS), 3, 96, 128) and out["image"].dtype == np.float32
    tolerance = 1.01 / 255 / min(STD)
    for k, data in enumerate(encoded):
        src = cv2_decode(data)
        want = cv2_normalize(cv2.resize(src, (128, 96), interpolation=cv2.INTER_LINEAR), 1 / 255, MEAN, STD)
        np.testing.assert_allclose(out["image"][k], want, rtol=0, atol=tolerance)
        h, w = src.shape[:2]
        np.testing.assert_allclose(out["transform"][k], [128 / w, 96 / h, 0, 0, w, h], rtol=1e-6)


@needs_dali
def test_letterbox_matches_opencv_including_the_transform() -> None:
    kernel = make_kernel(mode="letterbox", fill=114, scale="1/255")
    encoded = [encode(p) for p in PHOTOS]
    out = kernel({"data": batch(encoded)})
    assert out["image"].shape == (len(PHOTOS), 3, 64, 64)
    for k, photo in enumerate(PHOTOS):
        canvas, transform = cv2_letterbox(photo, (64, 64), 114)
        np.testing.assert_allclose(out["image"][k], cv2_normalize(canvas, 1 / 255, [0.0], [1.0]),
                                   rtol=0, atol=1.01 / 255)
        np.testing.assert_allclose(out["transform"][k], transform, rtol=1e-6)


@needs_dali
@pytest.mark.parametrize("scale_up, center", [(True, True), (False, True), (True, False)])
def test_letterbox_geometry_is_image_letterbox_geometry(scale_up: bool, center: bool) -> None:
    """Sizes where h * r is exactly x.5 (rounded half to even) or odd paddings, among others."""
    sizes = [(85, 128), (128, 85), (43, 128), (127, 128), (1, 500), (500, 1), (64, 64), (20, 30), (99, 301)]
    kernel = make_kernel(mode="letterbox", scale_up=scale_up, center=center)
    out = kernel({"data": batch([encode(np.zeros((h, w, 3), np.uint8)) for h, w in sizes])})
    for (h, w), transform in zip(sizes, out["transform"]):
        nh, nw, top, left = letterbox_geometry(h, w, 64, 64, scale_up, center)
        np.testing.assert_allclose(transform, [nw / w, nh / h, left, top, w, h], rtol=1e-6)


@needs_dali
def test_letterbox_transform_maps_source_points_onto_the_output() -> None:
    """A white square in a black image lands where the transform says it does."""
    src = np.zeros((200, 400, 3), np.uint8)
    src[50:150, 100:200] = 255  # x in [100, 200), y in [50, 150)
    out = make_kernel(mode="letterbox", fill=0)({"data": batch([encode(src)])})
    sx, sy, tx, ty, w, h = out["transform"][0]
    assert (w, h) == (400, 200)
    x0, x1, y0, y1 = 100 * sx + tx, 200 * sx + tx, 50 * sy + ty, 150 * sy + ty
    ys, xs = np.nonzero(out["image"][0, 0] > 127)
    assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
    assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1


@needs_dali
def test_letterbox_without_center_pads_right_and_bottom_and_scale_up_can_be_off() -> None:
    small = np.full((16, 32, 3), 200, np.uint8)
    out = make_kernel(mode="letterbox", fill=0, center=False, scale_up=False)({"data": batch([encode(small)])})
    image = out["image"][0, 0]
    np.testing.assert_array_equal(out["transform"][0], [1, 1, 0, 0, 32, 16])
    assert (image[:16, :32] == 200).all() and (image[16:] == 0).all() and (image[:, 32:] == 0).all()


@needs_dali
def test_batched_results_equal_per_item_results() -> None:
    kernel = make_kernel(mode="letterbox", scale="1/255")
    encoded = [encode(p) for p in PHOTOS[:4]]
    together = kernel({"data": batch(encoded)})
    for k, data in enumerate(encoded):
        alone = kernel({"data": batch([data])})
        np.testing.assert_array_equal(together["image"][k], alone["image"][0])
        np.testing.assert_array_equal(together["transform"][k], alone["transform"][0])


@needs_dali
def test_batches_larger_than_max_batch_run_in_chunks() -> None:
    encoded = batch([encode(p) for p in PHOTOS])
    whole = make_kernel(scale="1/255")({"data": encoded})
    chunked = make_kernel(scale="1/255", max_batch=2)({"data": encoded})
    np.testing.assert_array_equal(chunked["image"], whole["image"])
    np.testing.assert_array_equal(chunked["transform"], whole["transform"])


@needs_dali
@pytest.mark.parametrize("params, shape, dtype", [
    ({"color": "gray"}, (1, 64, 64), np.float32),
    ({"layout": "hwc"}, (64, 64, 3), np.float32),
    ({"dtype": "float16"}, (3, 64, 64), np.float16),
    ({"dtype": "uint8"}, (3, 64, 64), np.uint8),
])
def test_color_layout_and_dtype_params_shape_the_output(params: dict[str, Any], shape: tuple[int, ...],
                                                        dtype: type) -> None:
    out = make_kernel(**params)({"data": batch([encode(PHOTOS[0])])})
    assert out["image"].shape == (1, *shape) and out["image"].dtype == dtype


@needs_dali
def test_bgr_swaps_the_channels_of_rgb() -> None:
    encoded = batch([encode(PHOTOS[1])])
    rgb = make_kernel()({"data": encoded})["image"]
    bgr = make_kernel(color="bgr")({"data": encoded})["image"]
    np.testing.assert_array_equal(bgr[0], rgb[0][::-1])


# -- errors -----------------------------------------------------------------------------------


@needs_dali
def test_corrupt_item_fails_the_call_and_the_kernel_recovers() -> None:
    kernel = make_kernel()
    good = batch([encode(PHOTOS[0])])
    before = kernel({"data": good})["image"]
    with pytest.raises(ValueError, match="DALI cannot decode the image"):
        kernel({"data": batch([b"this is not an image"])})
    truncated = encode(PHOTOS[0], ".jpg")[:200]
    with pytest.raises(ValueError, match="DALI cannot decode"):
        kernel({"data": batch([truncated])})
    np.testing.assert_array_equal(kernel({"data": good})["image"], before)


@needs_dali
def test_empty_and_oversized_items_are_refused_before_decoding() -> None:
    kernel = make_kernel(max_pixels=1000)
    with pytest.raises(ValueError, match="item 0: the encoded image is empty"):
        kernel({"data": batch([b""])})
    with pytest.raises(ValueError, match=r"item 1: image of 301x37 = 11137 pixels exceeds max_pixels 1000"):
        kernel({"data": batch([encode(np.zeros((10, 10, 3), np.uint8)), encode(PHOTOS[0])])})


# -- compile time -----------------------------------------------------------------------------

PIPELINE = """
dagserve: 1
name: dali_detect
max_batch_size: 8
inputs:
  image: {dtype: bytes, shape: []}
outputs:
  predictions: detector.output0
  transform: pre.transform
nodes:
  pre:
    op: dali.image
    inputs: {data: inputs.image}
    params: {size: [64, 64], mode: letterbox, scale: 1/255%s}
  detector:
    op: model.onnx
    inputs: {images: pre.image}
    params: {path: models/tiny_detector.onnx}
"""


@needs_dali
def test_dali_image_types_its_outputs_and_feeds_a_model(compile_text: Any) -> None:
    result = compile_text(PIPELINE % "")
    assert errors(result) == []
    pre = result.plan.node("pre")
    assert (pre.outputs["image"].dtype, pre.outputs["image"].shape, pre.outputs["image"].layout) == (
        "float32", (3, 64, 64), "chw")
    assert pre.outputs["transform"].shape == (6,)


@needs_dali
def test_dali_image_layout_mismatch_with_the_model_is_a_compile_error(compile_text: Any) -> None:
    assert [c for c, _ in errors(compile_text(PIPELINE % ", layout: hwc"))] == ["E-SHAPE"]


def test_missing_dali_is_an_extra_error_at_compile_time(compile_text: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dali_op, "dali_missing", lambda: "ModuleNotFoundError: No module named 'nvidia'")
    result = compile_text(PIPELINE % "")
    (code, message), = errors(result)
    assert code == "E-EXTRA"
    assert "node 'pre' (op dali.image) needs NVIDIA DALI" in message
    assert result.diagnostics[0].hint == "pip install 'dagserve[dali]'"


def test_mean_with_the_wrong_channel_count_is_a_param_error(compile_text: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dali_op, "dali_missing", lambda: None)
    (code, message), = errors(compile_text(PIPELINE % ", mean: [0.1, 0.2]"))
    assert (code, message) == ("E-PARAM", "node 'pre' param 'mean' has 2 values but the image has 3 channel(s)")
