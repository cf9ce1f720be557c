"""image.decode on the CPU: parity with Pillow, EXIF orientation, and every kind of bad input."""

from __future__ import annotations

import io
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from dagserve.compiler import compile_file
from dagserve.compiler.context import CompileOptions
from dagserve.errors import InvalidInputError, ItemError
from dagserve.ops.kernels import image as kernels_image
from dagserve.ops.kernels._common import KernelInputError
from dagserve.ops.kernels._decode import apply_orientation, declared_size
from dagserve.runtime.pipeline import Pipeline

from ._util import build_kernel, encode


def _decode(data: object, **params: object) -> np.ndarray:
    out = build_kernel("image.decode", **params)({"data": data})["image"]
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.flags.c_contiguous
    return out


def _pillow(data: bytes, mode: str = "RGB") -> np.ndarray:
    array = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert(mode))
    return array[:, :, None] if array.ndim == 2 else array


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_decode_matches_pillow(photo: np.ndarray, fmt: str) -> None:
    data = encode(photo, fmt)
    out = _decode(data)
    assert out.shape == (*photo.shape[:2], 3)
    assert np.array_equal(out, _pillow(data))
    if fmt in ("PNG", "BMP") and photo.shape[2] == 3:
        assert np.array_equal(out, photo)  # lossless: the original pixels


def test_bgr_is_rgb_reversed_and_input_forms_are_accepted(all_photos: dict[str, np.ndarray]) -> None:
    data = encode(all_photos["chelsea"], "JPEG", quality=92)
    rgb = _decode(data, color="rgb")
    assert np.array_equal(_decode(data, color="bgr"), rgb[:, :, ::-1])
    element = np.empty((), dtype=object)
    element[()] = data  # one element of a BYTES tensor
    for form in (bytearray(data), memoryview(data), np.bytes_(data), element, np.frombuffer(data, np.uint8)):
        assert np.array_equal(_decode(form), rgb)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_gray_output_matches_pillow_convert_l(all_photos: dict[str, np.ndarray], fmt: str) -> None:
    data = encode(all_photos["coffee"], fmt)
    gray = _decode(data, color="gray")
    assert gray.shape == (400, 600, 1)
    # JPEG/PNG go through OpenCV's RGB->gray (ITU-R 601 in fixed point): at most 1 level from Pillow's.
    assert np.abs(gray.astype(int) - _pillow(data, "L")).max() <= (1 if fmt in ("JPEG", "PNG") else 0)
    gray_jpeg = encode(all_photos["camera"], "JPEG")  # a gray JPEG decodes its only channel
    assert np.array_equal(_decode(gray_jpeg, color="gray"), _pillow(gray_jpeg, "L"))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "P-transparent", "1", "I;16"])
def test_png_modes_decode_like_pillow(all_photos: dict[str, np.ndarray], mode: str) -> None:
    image = Image.fromarray(all_photos["chelsea"])
    if mode == "P-transparent":
        image = image.convert("P")
        image.info["transparency"] = 0
    elif mode == "I;16":
        image = Image.fromarray(np.asarray(image.convert("L")).astype(np.uint16) * 257)
    else:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    data = buf.getvalue()
    out = _decode(data)
    if mode == "I;16":  # 16-bit gray: v * 257 scaled back to 8 bits is v again
        assert np.array_equal(out[:, :, 0], np.asarray(Image.fromarray(all_photos["chelsea"]).convert("L")))
    else:
        assert np.array_equal(out, _pillow(data))


def test_gray_source_decoded_as_rgb_repeats_the_channel(all_photos: dict[str, np.ndarray]) -> None:
    data = encode(all_photos["camera"], "PNG")
    out = _decode(data)
    assert out.shape == (512, 512, 3) and np.array_equal(out[:, :, 0], all_photos["camera"][:, :, 0])
    assert np.array_equal(out[:, :, 0], out[:, :, 2])


def test_sixteen_bit_png_is_scaled_to_eight_bits_with_rounding() -> None:
    values = np.array([[0, 128, 129, 0x1234, 200 * 257, 0xFFFF]], dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(values).save(buf, "PNG")
    out = _decode(buf.getvalue(), color="gray")
    assert out[0, :, 0].tolist() == [0, 0, 1, 18, 200, 255]  # round(v / 257)


def _with_orientation(image: np.ndarray, value: int, fmt: str) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = value
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("value", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(fmt: str, value: int) -> None:
    # Strongly asymmetric content: any wrong rotation or flip changes many pixels.
    image = np.zeros((48, 80, 3), np.uint8)
    image[:16, :40] = (255, 0, 0)
    image[30:, 60:] = (0, 0, 255)
    image[:, :, 1] = np.linspace(0, 255, 80, dtype=np.uint8)[None, :]
    data = _with_orientation(image, value, fmt)
    out = _decode(data)
    expected = _pillow(data)
    assert out.shape == expected.shape
    assert (out.shape[:2] == (80, 48)) == (value >= 5)
    assert np.abs(out.astype(int) - expected).max() <= (0 if fmt == "PNG" else 2)
    stored = _decode(data, exif_transpose=False)
    assert stored.shape[:2] == (48, 80)


def test_apply_orientation_mapping_equals_pillow_exif_transpose() -> None:
    base = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    for value in range(1, 9):
        image = Image.fromarray(base)
        exif = image.getexif()
        exif[0x0112] = value
        image.info["exif"] = exif.tobytes()
        expected = np.asarray(ImageOps.exif_transpose(image))
        assert np.array_equal(apply_orientation(np, base, value), expected), value


# -- bad input -------------------------------------------------------------------------------


def _bomb_png(width: int, height: int) -> bytes:
    """A real 1-bit PNG of width x height zeros: ~20 kB on disk, billions of pixels decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width + 7) // 8)
    z = zlib.compressobj(9)
    rows_per_piece = 1000
    parts = [z.compress(row * rows_per_piece) for _ in range(height // rows_per_piece)]
    parts.append(z.compress(row * (height % rows_per_piece)))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _bomb_png(20000, 20000)


def test_decompression_bomb_is_refused_from_the_header_before_decoding(bomb: bytes) -> None:
    assert len(bomb) < 200_000
    start = time.perf_counter()
    with pytest.raises(KernelInputError, match=r"20000x20000 = 400,000,000 pixels exceeds max_pixels 64,000,000"):
        _decode(bomb)
    assert time.perf_counter() - start < 1.0  # header only: decoding would take seconds and 400 MB


def test_pillow_guard_still_applies_when_max_pixels_is_raised(bomb: bytes) -> None:
    with pytest.raises(KernelInputError, match=r"cannot decode image: .*decompression bomb"):
        _decode(bomb, max_pixels=10**10)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_header_size_parser_agrees_with_pillow(all_photos: dict[str, np.ndarray], fmt: str) -> None:
    rng = np.random.default_rng(0)
    for h, w in [(1, 1), (37, 513), (300, 451), (17, 5000)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        variants = [encode(image, fmt)]
        if fmt == "WEBP":
            variants.append(encode(image, fmt, lossless=True))
            variants.append(_with_orientation(image, 6, fmt))  # extended (VP8X) container
        if fmt == "JPEG":
            variants.append(_with_orientation(image, 6, fmt))  # APP1 before the frame header
            variants.append(encode(image, fmt, progressive=True))
        for data in variants:
            assert declared_size(fmt, data) == Image.open(io.BytesIO(data)).size


def test_max_pixels_is_inclusive(all_photos: dict[str, np.ndarray]) -> None:
    data = encode(all_photos["astronaut"], "PNG")
    assert _decode(data, max_pixels=512 * 512).shape == (512, 512, 3)
    with pytest.raises(KernelInputError, match="exceeds max_pixels 262,143"):
        _decode(data, max_pixels=512 * 512 - 1)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP"])
def test_truncated_data_is_reported_as_truncated(all_photos: dict[str, np.ndarray], fmt: str) -> None:
    data = encode(all_photos["chelsea"], fmt)
    name = fmt.replace("WEBP", "WebP")
    for cut in (len(data) // 2, len(data) - 100):
        with pytest.raises(KernelInputError, match=f"cannot decode image: truncated {name} data"):
            _decode(data[:cut])


@pytest.mark.parametrize(("data", "match"), [
    (b"", r"empty input \(0 bytes\)"),
    (b"GIF89a" + b"\x00" * 40, "unsupported format GIF"),
    (b"II*\x00" + b"\x00" * 40, "unsupported format TIFF"),
    (b"\x00\x00\x00\x18ftypheic" + b"\x00" * 20, "unsupported format HEIC"),
    (b"hello, this is not an image", "not a JPEG, PNG, WebP or BMP image"),
    (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "cannot decode image: (corrupt|truncated) JPEG"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "cannot decode image: (corrupt|truncated) PNG"),
])
def test_corrupt_empty_and_unsupported_bytes(data: bytes, match: str) -> None:
    with pytest.raises(KernelInputError, match=match):
        _decode(data)


def test_corrupt_png_pixel_data_is_an_error_not_garbage(all_photos: dict[str, np.ndarray]) -> None:
    data = bytearray(encode(all_photos["chelsea"], "PNG"))
    middle = len(data) // 2
    data[middle:middle + 300] = b"\x00" * 300  # breaks the zlib stream (and a CRC)
    with pytest.raises(KernelInputError, match="cannot decode image: corrupt PNG data"):
        _decode(bytes(data))


@pytest.mark.parametrize("item", ["a string", 3.5, np.zeros((4, 4), np.float32), np.zeros(3, np.int32)])
def test_non_bytes_items_are_refused(item: object) -> None:
    with pytest.raises(KernelInputError, match="expected encoded bytes"):
        _decode(item)


# -- the per-request pixel budget, and encoded images sent as UINT8 tensors ------------------------


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width x height`` (the pixel data is a stub: never decoded)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def _pipeline(tmp_path: Path, data_type: str, params: str = "{}") -> Pipeline:
    spec = tmp_path / "decode.yaml"
    spec.write_text(
        "dagserve: 1\nname: dec\nmax_batch_size: 8\n"
        f"inputs:\n  data: {data_type}\n"
        "outputs:\n  image: decode.image\n"
        f"nodes:\n  decode:\n    op: image.decode\n    inputs: {{data: inputs.data}}\n    params: {params}\n",
        encoding="utf-8")
    result = compile_file(str(spec), CompileOptions(target="cpu"), root=str(tmp_path))
    assert result.plan is not None, "\n".join(d.one_line() for d in result.diagnostics)
    return Pipeline(result.plan)


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = kernels_image.decode_cpu

    def counting(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(kernels_image, "decode_cpu", counting)
    return calls


def test_request_over_the_default_pixel_budget_is_refused_before_any_decode(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _count_decodes(monkeypatch)
    bomb = _png_claiming(8000, 8000)  # 64 MP each: within max_pixels, 8 of them are 512 MP
    with _pipeline(tmp_path, "{dtype: bytes, shape: []}") as pipeline:
        with pytest.raises(InvalidInputError, match=r"node 'decode' \(image.decode\): item 2: the request's 8 "
                                                    r"image\(s\) declare 512,000,000 pixels together") as info:
            pipeline.infer({"data": np.array([bomb] * 8, dtype=object)})
        assert info.value.status == "INVALID_ARGUMENT"
        assert "max_request_pixels 128,000,000" in str(info.value)
    assert calls == [], "a pixel buffer was decoded for a refused request"


def test_pixel_budget_counts_the_whole_request_and_passes_what_fits(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path,
                                                                    all_photos: dict[str, np.ndarray]) -> None:
    data = encode(all_photos["chelsea"][:40, :40], "PNG")  # 1,600 pixels
    calls = _count_decodes(monkeypatch)
    with _pipeline(tmp_path, "{dtype: bytes, shape: []}", "{max_request_pixels: 3200}") as pipeline:
        out = pipeline.infer({"data": np.array([data, data], dtype=object)})
        assert [img.shape for img in out["image"]] == [(40, 40, 3)] * 2
        with pytest.raises(InvalidInputError, match="item 2: the request's 3 image"):
            pipeline.infer({"data": np.array([data] * 3, dtype=object)})
    assert len(calls) == 2


def test_pixel_budget_leaves_unreadable_items_to_decode_and_its_own_message(tmp_path: Path) -> None:
    with _pipeline(tmp_path, "{dtype: bytes, shape: []}") as pipeline:
        with pytest.raises(ItemError, match=r"node 'decode'.*empty input") as info:
            pipeline.infer({"data": np.array([b""], dtype=object)})
        assert info.value.status == "INVALID_ARGUMENT"


def test_max_request_pixels_is_a_checked_param(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("dagserve: 1\nname: bad\nmax_batch_size: 8\ninputs:\n  data: {dtype: bytes, shape: []}\n"
                    "outputs:\n  image: decode.image\nnodes:\n  decode:\n    op: image.decode\n"
                    "    inputs: {data: inputs.data}\n    params: {max_request_pixels: 0}\n", encoding="utf-8")
    result = compile_file(str(spec), CompileOptions(target="cpu"), root=str(tmp_path))
    assert result.plan is None
    assert [d.code for d in result.diagnostics if d.severity == "error"] == ["E-PARAM"]


def _padded_rows(files: list[bytes]) -> np.ndarray:
    """Files as one uint8[N, L] tensor, zero-padded to the longest (how Triton's examples send them)."""
    rows = np.zeros((len(files), max(len(f) for f in files)), dtype=np.uint8)
    for row, f in zip(rows, files):
        row[:len(f)] = np.frombuffer(f, np.uint8)
    return np.frombuffer(rows.tobytes(), np.uint8).reshape(rows.shape)  # read-only, as from a request


def test_uint8_tensors_of_file_bytes_decode_like_the_bytes_path(tmp_path: Path,
                                                                all_photos: dict[str, np.ndarray]) -> None:
    files = [encode(all_photos["chelsea"], "JPEG", quality=90), encode(all_photos["coffee"][:50, :70], "PNG"),
             encode(all_photos["astronaut"][:64, :48], "WEBP")]
    with _pipeline(tmp_path, "{dtype: bytes, shape: []}") as pipeline:
        want = pipeline.infer({"data": np.array(files, dtype=object)})["image"]
    (tmp_path / "u8").mkdir()
    with _pipeline(tmp_path / "u8", "{dtype: uint8, shape: [L]}") as pipeline:
        got = pipeline.infer({"data": _padded_rows(files)})["image"]
    (tmp_path / "ragged").mkdir()
    with _pipeline(tmp_path / "ragged", "{dtype: uint8, shape: [L], ragged: true}") as pipeline:
        ragged = pipeline.infer({"data": [np.frombuffer(f, np.uint8) for f in files]})["image"]
    for w, g, r in zip(want, got, ragged):
        assert np.array_equal(w, g) and np.array_equal(w, r)


def test_uint8_input_of_the_wrong_rank_is_refused_at_compile_time(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("dagserve: 1\nname: bad\nmax_batch_size: 8\ninputs:\n  data: {dtype: uint8, shape: [H, W]}\n"
                    "outputs:\n  image: decode.image\nnodes:\n  decode:\n    op: image.decode\n"
                    "    inputs: {data: inputs.data}\n", encoding="utf-8")
    result = compile_file(str(spec), CompileOptions(target="cpu"), root=str(tmp_path))
    assert result.plan is None
    errors = [d for d in result.diagnostics if d.severity == "error"]
    assert errors and "bytes[] or uint8[L]" in errors[0].message
