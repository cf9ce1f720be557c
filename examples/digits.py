"""Handwritten digits (scikit-learn's bundled 8x8 set) rendered as small RGB images.

The data of the example classifier (``examples/train_classifier.py`` ->
``pipelines/models/classifier.onnx``) and of the end-to-end tests, which write held-out
digits as PNG files and send them through the real server. NumPy, Pillow and
scikit-learn only (no torch); the data set ships inside scikit-learn, nothing is
downloaded.

Rendering (:func:`render_digit`): the 8x8 grid of ink levels 0..16 becomes grey levels
``255 - level * 255 / 16`` (dark ink on white paper), upscaled to ``size x size`` with
Pillow's bilinear filter and replicated to three RGB channels.

Model preprocessing (what a serving pipeline must do before ``classifier.onnx``):
resize to ``SIZE x SIZE`` (bilinear), multiply by ``1/255``, subtract ``MEAN`` and divide by
``STD`` per channel, lay out as ``float32[N, 3, SIZE, SIZE]`` (NCHW, RGB).

Split (:func:`split`): ``train_test_split(range(1797), test_size=0.25, random_state=0,
stratify=target)``; the 450 held-out digits are never used in training.

As a script it writes one held-out digit as a PNG, to send through ``classify``::

    python examples/digits.py -o /tmp/digit.png            # the first held-out digit
    python examples/digits.py --index 7 --size 64 -o /tmp/digit7.png
"""

from __future__ import annotations

import argparse
import sys
from functools import lru_cache

import numpy as np
from PIL import Image

__all__ = ["LABELS", "MEAN", "SIZE", "STD", "load", "preprocess", "render_digit", "split", "train_indices"]

SIZE = 32
"""Side of the classifier's input, in pixels."""

MEAN: tuple[float, float, float] = (0.695, 0.695, 0.695)
"""Per-channel mean subtracted after scaling to [0, 1] (the mean of the rendered training digits)."""

STD: tuple[float, float, float] = (0.323, 0.323, 0.323)
"""Per-channel divisor after subtracting ``MEAN`` (their standard deviation)."""

LABELS: list[str] = [str(d) for d in range(10)]
"""Class names, index = logit position ("0".."9")."""

TEST_SIZE = 0.25
RANDOM_STATE = 0


@lru_cache(maxsize=1)
def load() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits: ``float64[1797, 8, 8]`` ink levels 0..16 and ``int64[1797]`` labels."""
    from sklearn.datasets import load_digits  # lazy: scikit-learn is slow to import

    data = load_digits()
    return np.asarray(data.images), np.asarray(data.target, dtype=np.int64)


@lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    _, labels = load()
    train, test = train_test_split(np.arange(len(labels)), test_size=TEST_SIZE, random_state=RANDOM_STATE,
                                   stratify=labels)
    return np.sort(train), np.sort(test)


def split() -> np.ndarray:
    """Indices (sorted, into :func:`load`'s arrays) of the 450 held-out digits."""
    return _split()[1].copy()


def train_indices() -> np.ndarray:
    """Indices (sorted) of the 1347 training digits: the complement of :func:`split`."""
    return _split()[0].copy()


def render_digit(pixels: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Render an 8x8 digit (ink levels 0..16) as an ``uint8[size, size, 3]`` RGB image.

    Dark ink on a white background, upscaled with Pillow's bilinear filter.
    """
    grid = np.asarray(pixels, dtype=np.float64).reshape(8, 8)
    grey = np.clip(np.rint(255.0 - grid * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    image = Image.fromarray(grey, "L").resize((size, size), Image.Resampling.BILINEAR)
    return np.repeat(np.asarray(image)[:, :, None], 3, axis=2)


def preprocess(images: np.ndarray) -> np.ndarray:
    """``uint8[N, H, W, 3]`` RGB images -> the model input ``float32[N, 3, SIZE, SIZE]``.

    Bilinear resize to ``SIZE x SIZE`` (Pillow) when needed, ``x / 255``, then
    ``(x - MEAN) / STD`` per channel: the reference of the serving pipeline's preprocessing.
    """
    batch = []
    for image in images:
        if image.shape[:2] != (SIZE, SIZE):
            image = np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
        batch.append(image)
    scaled = np.stack(batch).astype(np.float32) / np.float32(255.0)
    normalized = (scaled - np.asarray(MEAN, dtype=np.float32)) / np.asarray(STD, dtype=np.float32)
    return np.ascontiguousarray(normalized.transpose(0, 3, 1, 2), dtype=np.float32)


def main(argv: list[str] | None = None) -> int:
    """Write held-out digit ``--index`` (0..449) as a PNG to ``-o`` (which is required: no file lands in the clone)."""
    parser = argparse.ArgumentParser(description="Write one held-out handwritten digit as a PNG image.")
    parser.add_argument("-o", "--output", required=True, help="the PNG to write, e.g. /tmp/digit.png")
    parser.add_argument("--index", type=int, default=0, help="which of the 450 held-out digits (default 0)")
    parser.add_argument("--size", type=int, default=SIZE, help=f"side in pixels (default {SIZE})")
    args = parser.parse_args(argv)
    held_out = split()
    if not 0 <= args.index < len(held_out):
        parser.error(f"--index must be in 0..{len(held_out) - 1}")
    images, labels = load()
    which = held_out[args.index]
    Image.fromarray(render_digit(images[which], args.size)).save(args.output, format="PNG")
    print(f"wrote {args.output}: a {labels[which]} ({args.size}x{args.size})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
