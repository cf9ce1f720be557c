"""Kernels of image.resize, image.letterbox, image.normalize, image.crop (CPU), and the GPU twin."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dagserve.ops.kernels._common import KernelInputError
from dagserve.ops.kernels._resample import resample
from dagserve.ops.kernels.image import finish, letterbox_geometry
from dagserve.types import TensorType

from ._util import build_kernel

CV2_FLAG = {"nearest": cv2.INTER_NEAREST_EXACT, "bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, (a.shape, b.shape)
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


# -- image.resize ---------------------------------------------------------------------------


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "area"])
@pytest.mark.parametrize("size", [(320, 320), (97, 213), (1023, 701)])
def test_resize_kernel_matches_cv2_and_reports_its_transform(photo: np.ndarray, interpolation: str,
                                                             size: tuple[int, int]) -> None:
    out = build_kernel("image.resize", size=list(size), interpolation=interpolation)({"image": photo})
    ref = cv2.resize(photo, (size[1], size[0]), interpolation=CV2_FLAG[interpolation]).reshape(*size, photo.shape[2])
    assert out["image"].dtype == np.uint8 and _max_diff(out["image"], ref) <= 1
    h, w = photo.shape[:2]
    np.testing.assert_allclose(out["transform"], [size[1] / w, size[0] / h, 0, 0, w, h], rtol=1e-6)
    assert out["transform"].dtype == np.float32


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "area"])
def test_cpu_kernel_and_gpu_twin_agree(photo: np.ndarray, interpolation: str) -> None:
    """The GPU algorithm (run here with NumPy) gives what the CPU kernel gives."""
    for size in [(211, 333), (640, 640), (64, 48)]:
        cpu = build_kernel("image.resize", size=list(size), interpolation=interpolation)({"image": photo})["image"]
        assert _max_diff(cpu, resample(np, photo, size, interpolation)) <= 1


def test_resize_antialias_follows_pillow_bilinear(photo: np.ndarray) -> None:
    out = build_kernel("image.resize", size=[100, 150], antialias=True)({"image": photo})["image"]
    pil = Image.fromarray(photo[:, :, 0] if photo.shape[2] == 1 else photo)
    ref = np.asarray(pil.resize((150, 100), Image.Resampling.BILINEAR)).reshape(out.shape)
    assert _max_diff(out, ref) <= 1


@pytest.mark.parametrize("dtype", [np.uint16, np.float16, np.float32])
def test_resize_keeps_non_uint8_dtypes(dtype: type) -> None:
    rng = np.random.default_rng(0)
    image = (rng.random((50, 70, 3)) * 1000).astype(dtype)
    out = build_kernel("image.resize", size=[25, 35])({"image": image})["image"]
    ref = cv2.resize(image.astype(np.float32), (35, 25), interpolation=cv2.INTER_LINEAR)
    assert out.dtype == dtype and out.shape == (25, 35, 3)
    np.testing.assert_allclose(out.astype(np.float32), ref, rtol=2e-3, atol=1.0)


# -- image.letterbox ------------------------------------------------------------------------


def _reference_letterbox(image: np.ndarray, size: tuple[int, int], fill: int, center: bool = True,
                         scale_up: bool = True) -> tuple[np.ndarray, list[float]]:
    """Letterbox written out with plain OpenCV calls, following the documented rule."""
    h, w = image.shape[:2]
    r = min(size[0] / h, size[1] / w)
    if not scale_up:
        r = min(r, 1.0)
    nw, nh = round(w * r), round(h * r)
    left, top = ((size[1] - nw) // 2, (size[0] - nh) // 2) if center else (0, 0)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR).reshape(nh, nw, image.shape[2])
    canvas = cv2.copyMakeBorder(resized, top, size[0] - nh - top, left, size[1] - nw - left,
                                cv2.BORDER_CONSTANT, value=[fill] * 4).reshape(*size, image.shape[2])
    return canvas, [nw / w, nh / h, left, top, w, h]


@pytest.mark.parametrize("size", [(320, 320), (640, 480), (333, 517)])
def test_letterbox_matches_opencv_reference(photo: np.ndarray, size: tuple[int, int]) -> None:
    out = build_kernel("image.letterbox", size=list(size), fill=114)({"image": photo})
    ref, transform = _reference_letterbox(photo, size, 114)
    assert out["image"].dtype == np.uint8 and _max_diff(out["image"], ref) <= 1
    np.testing.assert_allclose(out["transform"], transform, rtol=1e-6)


def test_letterbox_cast_scale_and_chw_in_one_pass(photo: np.ndarray) -> None:
    out = build_kernel("image.letterbox", size=[320, 320], dtype="float32", scale="1/255",
                       layout="chw")({"image": photo})["image"]
    ref, _ = _reference_letterbox(photo, (320, 320), 114)
    expected = ref.transpose(2, 0, 1).astype(np.float32) * np.float32(1 / 255)
    assert out.dtype == np.float32 and out.shape == expected.shape and out.flags.c_contiguous
    np.testing.assert_allclose(out, expected, atol=1 / 255 + 1e-6)


def test_letterbox_without_center_pads_right_and_bottom_only() -> None:
    image = np.full((100, 200, 3), 7, np.uint8)
    out = build_kernel("image.letterbox", size=[64, 64], fill=0, center=False)({"image": image})
    assert (out["image"][:32] == 7).all() and (out["image"][32:] == 0).all()
    np.testing.assert_allclose(out["transform"], [0.32, 0.32, 0, 0, 200, 100], rtol=1e-6)


def test_letterbox_never_enlarges_without_scale_up() -> None:
    image = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    out = build_kernel("image.letterbox", size=[64, 64], fill=114, scale_up=False)({"image": image})
    top, left = (64 - 20) // 2, (64 - 30) // 2
    assert np.array_equal(out["image"][top:top + 20, left:left + 30], image)
    assert (out["image"][:top] == 114).all() and (out["image"][:, :left] == 114).all()
    np.testing.assert_allclose(out["transform"], [1, 1, left, top, 30, 20])


def test_letterbox_gpu_twin_matches_cpu_kernel(photo: np.ndarray) -> None:
    """The GPU path is geometry + resample + finish; run them with NumPy."""
    params = {"size": [320, 256], "dtype": "float32", "scale": "1/255", "layout": "chw", "fill": 114}
    cpu = build_kernel("image.letterbox", **params)({"image": photo})["image"]
    h, w, c = photo.shape
    nh, nw, top, left = letterbox_geometry(h, w, 320, 256, True, True)
    canvas = np.full((320, 256, c), 114, np.uint8)
    canvas[top:top + nh, left:left + nw] = resample(np, photo, (nh, nw), "bilinear")
    twin = finish(np, canvas, "float32", 1 / 255, "chw")
    np.testing.assert_allclose(cpu, twin, atol=1 / 255 + 1e-6)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 3000), w=st.integers(1, 3000), out_h=st.integers(1, 1024), out_w=st.integers(1, 1024),
       scale_up=st.booleans(), center=st.booleans(),
       box=st.tuples(*[st.floats(0, 1) for _ in range(4)]))
def test_letterbox_transform_maps_boxes_forward_and_back(h: int, w: int, out_h: int, out_w: int, scale_up: bool,
                                                          center: bool, box: tuple[float, ...]) -> None:
    nh, nw, top, left = letterbox_geometry(h, w, out_h, out_w, scale_up, center)
    assert 1 <= nh <= out_h and 1 <= nw <= out_w and top + nh <= out_h and left + nw <= out_w
    if not scale_up:
        assert nh <= h and nw <= w
    t = np.array([nw / w, nh / h, left, top, w, h], dtype=np.float32)  # what the kernel emits
    x0, x1 = sorted((box[0] * w, box[2] * w))
    y0, y1 = sorted((box[1] * h, box[3] * h))
    src = np.array([x0, y0, x1, y1])
    fwd = src * t[[0, 1, 0, 1]] + t[[2, 3, 2, 3]]
    # the whole source image lands inside the canvas region it was resized into
    assert fwd[0] >= left - 1e-3 and fwd[2] <= left + nw + 1e-3 and fwd[1] >= top - 1e-3 and fwd[3] <= top + nh + 1e-3
    back = (fwd - t[[2, 3, 2, 3]]) / t[[0, 1, 0, 1]]  # what detect.nms does
    np.testing.assert_allclose(back, src, atol=1e-3 * max(h, w, 1))


def test_letterbox_kernel_transform_round_trips_a_box(photo: np.ndarray) -> None:
    out = build_kernel("image.letterbox", size=[320, 320])({"image": photo})
    sx, sy, tx, ty, w, h = out["transform"]
    assert (w, h) == (photo.shape[1], photo.shape[0])
    box = np.array([10.0, 20.0, w - 5.0, h / 2])
    fwd = box * [sx, sy, sx, sy] + [tx, ty, tx, ty]
    assert 0 <= fwd.min() and fwd.max() <= 320
    np.testing.assert_allclose((fwd - [tx, ty, tx, ty]) / [sx, sy, sx, sy], box, rtol=1e-5)


# -- image.normalize ------------------------------------------------------------------------

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _manual(x: np.ndarray, scale: float, mean: list[float], std: list[float]) -> np.ndarray:
    return (x.astype(np.float64) * scale - np.asarray(mean)) / np.asarray(std)


def test_normalize_matches_the_formula_and_changes_layout(all_photos: dict[str, np.ndarray]) -> None:
    batch = np.stack([cv2.resize(p, (64, 48)) for p in (all_photos["astronaut"], all_photos["coffee"])])
    out = build_kernel("image.normalize", scale="1/255", mean=MEAN, std=STD, layout="chw")({"image": batch})["image"]
    assert out.shape == (2, 3, 48, 64) and out.dtype == np.float32 and out.flags.c_contiguous
    expected = _manual(batch, 1 / 255, MEAN, STD).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_normalize_batched_equals_per_item_and_ragged_lists() -> None:
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (5, 16, 20, 3), dtype=np.uint8)
    k = build_kernel("image.normalize", scale=0.5, mean=[1, 2, 3], std=[2, 4, 8], dtype="float16")
    whole = k({"image": batch})["image"]
    assert whole.dtype == np.float16
    for i in range(5):
        assert np.array_equal(whole[i:i + 1], k({"image": batch[i:i + 1]})["image"])
    ragged = [rng.integers(0, 256, (h, 9, 3), dtype=np.uint8) for h in (3, 11)]
    outs = k({"image": ragged})["image"]
    assert isinstance(outs, list) and [o.shape for o in outs] == [(3, 9, 3), (11, 9, 3)]
    for o, x in zip(outs, ragged):
        np.testing.assert_allclose(o.astype(np.float32), _manual(x, 0.5, [1, 2, 3], [2, 4, 8]), rtol=2e-3)


def test_normalize_reads_chw_input_and_writes_hwc() -> None:
    x = np.random.default_rng(2).random((2, 3, 5, 7), dtype=np.float32)
    k = build_kernel("image.normalize", mean=[0.5], std=[0.25], layout="hwc",
                     input_types={"image": TensorType("float32", (3, 5, 7), layout="chw")})
    out = k({"image": x})["image"]
    np.testing.assert_allclose(out, ((x - 0.5) / 0.25).transpose(0, 2, 3, 1), rtol=1e-6, atol=1e-6)


def test_normalize_float64_output_is_exact() -> None:
    x = np.random.default_rng(3).integers(0, 256, (1, 4, 4, 3), dtype=np.uint8)
    out = build_kernel("image.normalize", scale="1/255", mean=MEAN, std=STD, dtype="float64")({"image": x})["image"]
    np.testing.assert_allclose(out, _manual(x, 1 / 255, MEAN, STD), rtol=1e-12)


# -- image.crop -----------------------------------------------------------------------------


def test_crop_param_box_covers_every_touched_pixel(photo: np.ndarray) -> None:
    out = build_kernel("image.crop", box=[10.5, 20, 100, 50.2])({"image": photo})["image"]
    assert np.array_equal(out, photo[20:51, 10:100]) and out.flags.c_contiguous


def test_crop_box_port_overrides_param_and_is_clipped_to_the_image(photo: np.ndarray) -> None:
    w = photo.shape[1]
    box = np.array([-50, -10, w + 100, 30], dtype=np.float32)
    out = build_kernel("image.crop", box=[0, 0, 1, 1])({"image": photo, "box": box})["image"]
    assert np.array_equal(out, photo[0:30, 0:w])


def test_crop_with_size_resizes_the_crop(photo: np.ndarray) -> None:
    out = build_kernel("image.crop", box=[30, 40, 130, 90], size=[64, 64])({"image": photo})["image"]
    ref = cv2.resize(photo[40:90, 30:130], (64, 64), interpolation=cv2.INTER_LINEAR).reshape(64, 64, -1)
    assert _max_diff(out, ref) <= 1


# -- bad input ------------------------------------------------------------------------------

IMAGE_OPS = [
    ("image.resize", {"size": [32, 32]}),
    ("image.letterbox", {"size": [32, 32]}),
    ("image.crop", {"box": [0, 0, 4, 4]}),
]


@pytest.mark.parametrize(("op", "params"), IMAGE_OPS)
@pytest.mark.parametrize(("bad", "match"), [
    (np.zeros((0, 5, 3), np.uint8), "empty"),
    (np.zeros((5, 0, 3), np.uint8), "empty"),
    (np.zeros((5, 5, 3), np.int64), "must be uint8"),
    (np.zeros((5, 5, 3), bool), "must be uint8"),
    (np.zeros((5, 5), np.uint8), r"must be an image \[H,W,C\]"),
    (np.zeros((1, 5, 5, 3), np.uint8), r"must be an image \[H,W,C\]"),
])
def test_image_ops_refuse_bad_images_with_one_clear_error(op: str, params: dict, bad: np.ndarray, match: str) -> None:
    with pytest.raises(KernelInputError, match=match):
        build_kernel(op, **params)({"image": bad})


@pytest.mark.parametrize(("box", "match"), [
    ([500, 500, 600, 600], "does not overlap"),
    ([-20, -20, -1, -1], "does not overlap"),
    ([10, 10, 5, 20], "x1 < x0"),
    ([0, 0, float("nan"), 4], "not finite"),
])
def test_crop_refuses_boxes_outside_or_malformed(box: list[float], match: str) -> None:
    image = np.zeros((50, 60, 3), np.uint8)
    with pytest.raises(KernelInputError, match=match):
        build_kernel("image.crop")({"image": image, "box": np.asarray(box, np.float32)})


def test_crop_without_any_box_says_how_to_give_one() -> None:
    with pytest.raises(KernelInputError, match="feed input 'box' or set param 'box'"):
        build_kernel("image.crop")({"image": np.zeros((4, 4, 3), np.uint8)})


def test_normalize_refuses_channel_mismatch_rank_and_dtype() -> None:
    k = build_kernel("image.normalize", mean=MEAN, std=STD)
    with pytest.raises(KernelInputError, match="3 mean/std values but the image has 4 channels"):
        k({"image": np.zeros((1, 4, 4, 4), np.uint8)})
    with pytest.raises(KernelInputError, match="rank 3"):
        k({"image": np.zeros((4, 4), np.uint8)})
    with pytest.raises(KernelInputError, match="must be"):
        k({"image": np.zeros((1, 4, 4, 3), bool)})


def test_finish_rounds_and_saturates_integer_outputs() -> None:
    x = np.array([[[0, 100, 255]]], np.uint8)
    assert finish(np, x, "uint8", 2.0, "hwc").tolist() == [[[0, 200, 255]]]
    assert finish(np, x, "uint8", 0.5, "hwc").tolist() == [[[0, 50, 128]]]  # 127.5 -> 128 (half to even)
    assert finish(np, x, None, 1.0, "hwc") is x
