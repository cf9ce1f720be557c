"""The OCR ops, each on its own: synthetic inputs with known answers, and parity with RapidOCR.

RapidOCR (``rapidocr-onnxruntime``, the ``[ocr]`` extra) ships PP-OCR's reference
pre- and post-processing and its models; where it is installed, each op is compared
with the function of RapidOCR it mirrors, on images rendered here with real fonts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image, ImageDraw, ImageFont

from dagserve.ops.kernels.ocr import read_characters, reading_order

from ._util import build_kernel

cv2 = pytest.importorskip("cv2")
pytest.importorskip("pyclipper", reason="the OCR ops need pyclipper: pip install -e '.[ocr]'")

FONTS = sorted(Path("/usr/share/fonts/truetype/dejavu").glob("DejaVu*.ttf"))


def _font(size: int, index: int = 0) -> Any:
    """A real scalable font: DejaVu where the system has it, else the one Pillow bundles."""
    if FONTS:
        return ImageFont.truetype(str(FONTS[index % len(FONTS)]), size)
    return ImageFont.load_default(size)


def render_lines(lines: list[str], size: tuple[int, int] = (640, 400), font_size: int = 28,
                 background: np.ndarray | None = None, upside_down: bool = False) -> np.ndarray:
    """A BGR uint8 image with ``lines`` of dark text, one under the other, from (30, 30)."""
    if background is None:
        image = Image.new("RGB", size, (245, 245, 240))
    else:
        image = Image.fromarray(background).resize(size)
    draw = ImageDraw.Draw(image)
    font = _font(font_size)
    for i, line in enumerate(lines):
        draw.text((30, 30 + int(i * font_size * 1.8)), line, fill=(10, 10, 10), font=font)
    rgb = np.asarray(image)
    if upside_down:
        rgb = rgb[::-1, ::-1]
    return np.ascontiguousarray(rgb[:, :, ::-1])


# -- det_prepare ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(400, 640), (1000, 700), (2500, 1200), (20, 300), (40, 600)])
def test_det_prepare_gives_sides_that_are_multiples_of_32_and_a_transform_back(shape: tuple[int, int]) -> None:
    image = np.full((*shape, 3), 200, dtype=np.uint8)
    out = build_kernel("ocr.det_prepare")({"image": image})
    c, h32, w32 = out["input"].shape
    assert c == 3 and h32 % 32 == 0 and w32 % 32 == 0 and out["input"].dtype == np.float32
    assert min(h32, w32) >= 736 - 16  # the shorter side is scaled up to about limit_side_len
    sx, sy, _tx, ty, src_w, src_h = out["transform"].tolist()
    assert (src_w, src_h) == (shape[1], shape[0])
    work_h, work_w = out["image"].shape[:2]
    assert work_w == pytest.approx(src_w * sx) and work_h == pytest.approx(src_h * sy + 2 * ty)
    np.testing.assert_allclose(out["input"][:, h32 // 2, w32 // 2], (200 / 255 - 0.5) / 0.5, rtol=1e-6)


def test_det_prepare_hands_a_plain_image_through_without_a_copy() -> None:
    image = np.zeros((400, 640, 3), dtype=np.uint8)
    image.flags.writeable = False
    out = build_kernel("ocr.det_prepare")({"image": image})
    assert out["image"] is image
    assert out["transform"].tolist() == [1.0, 1.0, 0.0, 0.0, 640.0, 400.0]


def test_det_prepare_pads_low_wide_images_above_and_below() -> None:
    out = build_kernel("ocr.det_prepare")({"image": np.full((40, 600, 3), 255, dtype=np.uint8)})
    top = out["transform"][3]
    assert top > 0 and out["image"].shape[0] == 40 + 2 * top
    assert (out["image"][0] == 0).all() and (out["image"][int(top)] == 255).all()


# -- db_boxes ---------------------------------------------------------------------------------


def _probability_map(rects: list[tuple[int, int, int, int]], shape: tuple[int, int] = (320, 480)) -> np.ndarray:
    prob = np.zeros((1, *shape), dtype=np.float32)
    for x0, y0, x1, y1 in rects:
        prob[0, y0:y1, x0:x1] = 0.9
    return prob


def _db(prob: np.ndarray, work: tuple[int, int], transform: list[float] | None = None, **params: Any) -> dict[str, Any]:
    image = np.zeros((*work, 3), dtype=np.uint8)
    t = np.array(transform or [1, 1, 0, 0, work[1], work[0]], dtype=np.float32)
    out: dict[str, Any] = build_kernel("ocr.db_boxes", **params)({"probability": prob, "image": image, "transform": t})
    return out


def test_db_boxes_finds_each_text_region_grown_by_the_unclip_in_reading_order() -> None:
    rects = [(300, 40, 440, 70), (40, 40, 200, 70), (40, 150, 400, 190)]
    out = _db(_probability_map(rects), (320, 480))
    quads, scores = out["quads"], out["scores"]
    assert quads.shape == (3, 4, 2) and quads.dtype == np.float32 and scores.shape == (3,)
    assert ((scores > 0.8) & (scores <= 0.9)).all()  # the box takes in the edge the 2x2 dilation added
    # reading order: the two boxes of the first line left to right, then the second line
    assert [int(q[0][0]) for q in quads] == [*sorted(int(q[0][0]) for q in quads[:2]), int(quads[2][0][0])]
    for quad, (x0, y0, x1, y1) in zip(quads, [rects[1], rects[0], rects[2]]):
        tl, tr, br, bl = quad
        assert tl[0] < x0 and tl[1] < y0 and br[0] > x1 - 1 and br[1] > y1 - 1  # grown outwards
        grow = (x1 - x0) * (y1 - y0) * 1.6 / (2 * ((x1 - x0) + (y1 - y0)))
        assert x0 - tl[0] == pytest.approx(grow, abs=3)
        assert tr[0] > tl[0] and bl[1] > tl[1]  # clockwise from the top-left


def test_db_boxes_maps_boxes_back_to_source_pixels() -> None:
    # the working image is the source scaled by 2 and padded by 10 rows on top
    out = _db(_probability_map([(100, 100, 300, 140)]), (320, 480), [2, 2, 0, 10, 240, 150])
    np.testing.assert_allclose(out["boxes"][..., 0], out["quads"][..., 0] / 2)
    np.testing.assert_allclose(out["boxes"][..., 1], np.clip((out["quads"][..., 1] - 10) / 2, 0, 150))


def test_db_boxes_drops_faint_and_tiny_regions_and_returns_empty_arrays_for_none() -> None:
    prob = _probability_map([(40, 40, 200, 70)])
    prob[0, 40:70, 40:200] = 0.4  # above the pixel threshold, below the box threshold
    prob[0, 200:202, 300:302] = 0.99  # a 2x2 speck
    out = _db(prob, (320, 480))
    assert out["quads"].shape == (0, 4, 2) and out["boxes"].shape == (0, 4, 2) and out["scores"].shape == (0,)
    assert len(_db(prob, (320, 480), box_threshold=0.3)["quads"]) == 1


def test_db_boxes_refuses_a_map_of_the_wrong_shape() -> None:
    from dagserve.ops.kernels._common import KernelInputError

    with pytest.raises(KernelInputError, match=r"\[1,H,W\]"):
        _db(np.zeros((2, 32, 32), dtype=np.float32), (32, 32))


def test_reading_order_swaps_boxes_on_one_line_only() -> None:
    def quad(x: float, y: float) -> np.ndarray:
        return np.array([[x, y], [x + 10, y], [x + 10, y + 5], [x, y + 5]], dtype=np.float32)

    quads = [quad(100, 12), quad(10, 15), quad(50, 40), quad(5, 60)]
    assert reading_order(quads) == [1, 0, 2, 3]


# -- warp_quad, rotate, text_resize ------------------------------------------------------------


def test_warp_quad_of_an_axis_aligned_box_is_the_plain_crop(photo: np.ndarray) -> None:
    image = np.ascontiguousarray(photo if photo.shape[2] == 3 else np.repeat(photo, 3, axis=2))
    quad = np.array([[40, 30], [240, 30], [240, 110], [40, 110]], dtype=np.float32)
    crop = build_kernel("image.warp_quad")({"image": image, "quad": quad})["image"]
    np.testing.assert_array_equal(crop, image[30:110, 40:240])


def test_warp_quad_turns_tall_crops_and_straightens_tilted_ones() -> None:
    image = np.zeros((200, 200, 3), dtype=np.uint8)
    tall = np.array([[10, 10], [40, 10], [40, 110], [10, 110]], dtype=np.float32)
    assert build_kernel("image.warp_quad")({"image": image, "quad": tall})["image"].shape == (30, 100, 3)
    assert build_kernel("image.warp_quad", rotate_tall=0)({"image": image, "quad": tall})["image"].shape == (100, 30, 3)
    tilted = np.array([[20, 40], [120, 20], [128, 60], [28, 80]], dtype=np.float32)
    crop = build_kernel("image.warp_quad")({"image": image, "quad": tilted})["image"]
    assert crop.shape[:2] == (int(np.hypot(8, 40)), int(np.hypot(100, 20)))


def test_warp_quad_refuses_a_degenerate_quad() -> None:
    from dagserve.ops.kernels._common import KernelInputError

    with pytest.raises(KernelInputError, match="empty"):
        build_kernel("image.warp_quad")({"image": np.zeros((10, 10, 3), np.uint8),
                                         "quad": np.zeros((4, 2), np.float32)})


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_rotate_matches_opencv(degrees: int) -> None:
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    code = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}[degrees]
    out = build_kernel("image.rotate", degrees=degrees)({"image": image})["image"]
    np.testing.assert_array_equal(out, cv2.rotate(image, code))
    assert out.flags.c_contiguous


def test_text_resize_keeps_the_aspect_and_pads_to_a_fixed_width() -> None:
    line = np.full((30, 100, 3), 255, dtype=np.uint8)
    free = build_kernel("ocr.text_resize")({"image": line})["image"]
    assert free.shape == (3, 48, math.ceil(48 * 100 / 30)) and free.dtype == np.float32
    np.testing.assert_allclose(free, 1.0)
    fixed = build_kernel("ocr.text_resize", width=192)({"image": line})["image"]
    assert fixed.shape == (3, 48, 192)
    assert (fixed[:, :, 160:] == 0).all() and (fixed[:, :, :160] == 1).all()
    long = build_kernel("ocr.text_resize", width=192)({"image": np.zeros((20, 400, 3), np.uint8)})["image"]
    assert long.shape == (3, 48, 192) and (long == -1).all()  # squeezed into the width, not cut


# -- ctc_decode --------------------------------------------------------------------------------


def _chars_model(tmp_path: Path, characters: list[str] | None) -> str:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y]))
    if characters is not None:
        helper.set_model_props(model, {"character": "\n".join(characters)})
    path = tmp_path / "rec.onnx"
    onnx.save(model, str(path))
    return str(path)


def test_ctc_decode_merges_repeats_drops_blanks_and_reads_the_list_from_model_metadata(tmp_path: Path) -> None:
    path = _chars_model(tmp_path, ["a", "b", "é"])
    assert read_characters(path) == ["", "a", "b", "é", " "]
    kernel = build_kernel("ocr.ctc_decode", characters=path, metadata_key="character", files={"characters": path})
    steps = [1, 1, 0, 1, 2, 2, 0, 0, 3, 4]  # a a _ a b b _ _ é ' '
    probs = np.full((len(steps), 5), 0.01, dtype=np.float32)
    for t, k in enumerate(steps):
        probs[t, k] = 0.5 + 0.05 * t
    out = kernel({"probabilities": probs})
    assert out["text"][()] == "aabé ".encode()
    kept = [0, 3, 4, 8, 9]
    assert float(out["score"]) == pytest.approx(np.mean([0.5 + 0.05 * t for t in kept]), rel=1e-6)
    blank = np.zeros((4, 5), dtype=np.float32)
    blank[:, 0] = 1
    empty = kernel({"probabilities": blank})
    assert empty["text"][()] == b"" and float(empty["score"]) == 0.0


def test_ctc_decode_reads_a_character_file_and_refuses_a_model_without_the_list(tmp_path: Path) -> None:
    chars = tmp_path / "keys.txt"
    chars.write_text("x\ny\n", encoding="utf-8")
    assert read_characters(str(chars)) == ["", "x", "y", " "]
    with pytest.raises(ValueError, match="no metadata 'character'"):
        read_characters(_chars_model(tmp_path, None))
    kernel = build_kernel("ocr.ctc_decode", characters=str(chars), metadata_key="character")
    from dagserve.ops.kernels._common import KernelInputError

    with pytest.raises(KernelInputError, match=r"must be \[T,4\]"):
        kernel({"probabilities": np.zeros((3, 7), np.float32)})


# -- parity with RapidOCR -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rapidocr() -> Any:
    module = pytest.importorskip("rapidocr_onnxruntime", reason="parity needs RapidOCR: pip install -e '.[ocr]'")
    return module


def _rapid_models(rapidocr: Any) -> Path:
    from rapidocr_onnxruntime.main import root_dir

    return Path(root_dir) / "models"


PARITY_IMAGES = [
    (["Hello world 2026", "dagserve OCR test", "The quick brown fox"], False, None),
    (["Upside down text", "second line 42"], True, None),
    (["Coffee shop menu", "espresso 2.50"], False, "coffee"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(PARITY_IMAGES)))
def test_det_prepare_and_db_boxes_find_the_boxes_rapidocr_finds(rapidocr: Any, case: int) -> None:
    import onnxruntime as ort
    import skimage.data
    from rapidocr_onnxruntime import RapidOCR

    lines, upside_down, background = PARITY_IMAGES[case]
    bgr = render_lines(lines, background=getattr(skimage.data, background)() if background else None,
                       upside_down=upside_down)
    result, _ = RapidOCR()(bgr, use_cls=False, use_rec=False)
    expected = np.array(result, dtype=np.float32)

    det = ort.InferenceSession(str(_rapid_models(rapidocr) / "ch_PP-OCRv4_det_infer.onnx"))
    prepared = build_kernel("ocr.det_prepare")({"image": bgr})
    probability = det.run(None, {"x": prepared["input"][None]})[0][0]
    out = build_kernel("ocr.db_boxes")({"probability": probability, "image": prepared["image"],
                                        "transform": prepared["transform"]})
    assert len(out["boxes"]) >= len(lines)
    np.testing.assert_allclose(out["boxes"], expected, atol=1e-3)


@pytest.mark.slow
def test_crops_and_recogniser_inputs_match_rapidocr(rapidocr: Any) -> None:
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    bgr = render_lines(["Hello world 2026", "tilted lines too"])
    quad = np.array([[28, 25], [300, 40], [298, 80], [26, 66]], dtype=np.float32)
    (expected_crop,) = engine.get_crop_img_list(bgr, [quad.copy()])
    crop = build_kernel("image.warp_quad")({"image": bgr, "quad": quad})["image"]
    np.testing.assert_array_equal(crop, expected_crop)
    cls_in = build_kernel("ocr.text_resize", width=192)({"image": crop})["image"]
    np.testing.assert_allclose(cls_in, engine.text_cls.resize_norm_img(crop), atol=1e-6)
    rec_in = build_kernel("ocr.text_resize")({"image": crop})["image"]
    expected_rec = engine.text_rec.resize_norm_img(crop, max(320 / 48, crop.shape[1] / crop.shape[0]))
    np.testing.assert_allclose(rec_in, expected_rec[:, :, :rec_in.shape[2]], atol=1e-6)
