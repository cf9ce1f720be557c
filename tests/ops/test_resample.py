"""The device-generic resampler (the GPU algorithm), run with NumPy against OpenCV and Pillow."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from dagserve.ops.kernels._resample import resample, tap_table

CV2_FLAG = {"nearest": cv2.INTER_NEAREST_EXACT, "bilinear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA}


def _sizes(h: int, w: int) -> list[tuple[int, int]]:
    """Downscale, upscale, odd sizes, and mixed (one axis grows, the other shrinks)."""
    return [(h // 2, w // 2), (h // 3 + 1, w // 3 + 2), (2 * h + 1, 3 * w - 1), (101, 77),
            (h // 3, w + 5), (h + 7, w // 2), (7, 5), (1, 1), (h, w)]


def _cv2(image: np.ndarray, size: tuple[int, int], interpolation: str) -> np.ndarray:
    out = cv2.resize(image, (size[1], size[0]), interpolation=CV2_FLAG[interpolation])
    return out.reshape(size[0], size[1], image.shape[2])


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "area"])
def test_twin_agrees_with_cv2_resize_within_one_on_photos(photo: np.ndarray, interpolation: str) -> None:
    h, w = photo.shape[:2]
    for size in _sizes(h, w):
        ours = resample(np, photo, size, interpolation)
        ref = _cv2(photo, size, interpolation)
        assert ours.shape == ref.shape and ours.dtype == np.uint8
        diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
        assert diff.max() <= 1, (size, interpolation, int(diff.max()), int((diff > 1).sum()))


@pytest.mark.parametrize("seed", range(12))
def test_twin_agrees_with_cv2_on_random_images_and_sizes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(1, 90, 2))
    c = int(rng.choice([1, 3, 4]))
    image = rng.integers(0, 256, (h, w, c), dtype=np.uint8)
    for _ in range(4):
        size = (int(rng.integers(1, 120)), int(rng.integers(1, 120)))
        for interpolation in CV2_FLAG:
            ours = resample(np, image, size, interpolation)
            ref = _cv2(image, size, interpolation)
            diff = np.abs(ours.astype(np.int16) - ref.astype(np.int16))
            assert diff.max() <= 1, ((h, w, c), size, interpolation, int(diff.max()))


def test_nearest_is_bit_exact_with_cv2_nearest_exact_and_pillow() -> None:
    rng = np.random.default_rng(7)
    for _ in range(60):
        h, w = (int(v) for v in rng.integers(1, 300, 2))
        size = (int(rng.integers(1, 300)), int(rng.integers(1, 300)))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ours = resample(np, image, size, "nearest")
        assert np.array_equal(ours, _cv2(image, size, "nearest")), ((h, w), size)
        pil = np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.NEAREST))
        assert np.array_equal(ours, pil), ((h, w), size)


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
@pytest.mark.parametrize("interpolation", ["bilinear", "area"])
def test_twin_agrees_with_cv2_for_uint16_and_float32(dtype: type, interpolation: str) -> None:
    rng = np.random.default_rng(3)
    if dtype is np.uint16:
        image = rng.integers(0, 65536, (45, 61, 3), dtype=np.uint16)
        tolerance = 1.0
    else:
        image = rng.random((45, 61, 3), dtype=np.float32)
        tolerance = 1e-5
    for size in [(20, 30), (90, 100), (13, 150)]:
        ours = resample(np, image, size, interpolation)
        ref = _cv2(image, size, interpolation)
        assert ours.dtype == dtype
        assert np.abs(ours.astype(np.float64) - ref).max() <= tolerance, size


def test_antialias_matches_pillow_bilinear_within_one(photo: np.ndarray) -> None:
    h, w = photo.shape[:2]
    pil_in = Image.fromarray(photo[:, :, 0] if photo.shape[2] == 1 else photo)
    for size in [(h // 4, w // 3), (h // 2 + 3, w // 5), (h // 3, w + 9)]:
        ours = resample(np, photo, size, "bilinear", antialias=True)
        ref = np.asarray(pil_in.resize((size[1], size[0]), Image.Resampling.BILINEAR)).reshape(ours.shape)
        assert np.abs(ours.astype(np.int16) - ref).max() <= 1, size


def test_antialias_removes_aliasing_that_plain_bilinear_keeps() -> None:
    # A one-pixel checkerboard is mid-gray to the eye; bilinear at 1/3 lands on pixel centres
    # and keeps a full-contrast (aliased) pattern, the triangle filter averages it.
    board = (np.indices((255, 255)).sum(axis=0) % 2 * 255).astype(np.uint8)[:, :, None]
    smooth = resample(np, board, (85, 85), "bilinear", antialias=True)
    sharp = resample(np, board, (85, 85), "bilinear", antialias=False)
    assert np.abs(smooth.astype(int) - 127.5).max() <= 3
    assert np.abs(sharp.astype(int) - 127.5).max() > 100


@pytest.mark.parametrize("kind", ["nearest", "linear", "area", "area_linear", "triangle"])
def test_every_tap_table_row_sums_to_one_and_stays_in_bounds(kind: str) -> None:
    for n_in, n_out in [(1, 1), (1, 9), (9, 1), (17, 5), (5, 17), (640, 320), (333, 1000), (1000, 333)]:
        if kind == "area" and n_out > n_in:
            continue  # OpenCV uses area_linear when the image grows
        idx, w = tap_table(n_in, n_out, kind)
        assert idx.shape == w.shape and idx.shape[0] == n_out
        assert idx.min() >= 0 and idx.max() < n_in
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)


def test_same_size_is_a_copy_not_a_view() -> None:
    image = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    out = resample(np, image, (2, 4), "bilinear")
    assert np.array_equal(out, image) and not np.shares_memory(out, image)
