"""Deterministic synthetic detection scenes: real photos with solid shapes pasted on them.

This is the data of the example detector (``examples/train_detector.py`` ->
``pipelines/models/detector.onnx``) and of the end-to-end tests that check it through the
real server. It needs only NumPy, Pillow and scikit-image (whose sample photos ship inside
the wheel), so it works offline and never imports torch.

A scene is a function of its seed alone: ``make_scene(seed)`` returns the same pixels,
boxes and labels on every machine with the same library versions.

Held-out convention
-------------------
* training uses seeds in ``TRAIN_SEEDS`` = ``[0, 100_000)``;
* evaluation uses seeds ``>= EVAL_SEED_START`` = ``1_000_000`` (the reported mAP uses
  ``range(1_000_000, 1_000_200)``), so no evaluation scene is ever seen in training.

Scene content
-------------
* size: height and width drawn independently from ``SIZE_RANGE`` (240..480 px), never
  square, so letterboxing (and its padding) matters;
* background: a random crop of one of scikit-image's bundled real photos, rescaled to the
  scene size, possibly mirrored and with mild brightness/contrast jitter;
* 1..5 objects of the ``CLASS_NAMES`` shapes, each a solid saturated colour (random hue,
  chosen to contrast with the background under it), size 8%..35% of the scene's short
  side, overlapping any other object by at most 10% of the smaller one's box, so every
  object stays clearly visible. Edges are anti-aliased (4x supersampled masks).
* boxes are the tight ``xyxy`` box of each object's visible mask in image pixels, with
  ``x2``/``y2`` the exclusive pixel edge (a box covering columns 10..19 is ``x1=10,
  x2=20``).
"""

from __future__ import annotations

import colorsys
import io
import math
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "BACKGROUNDS",
    "CLASS_NAMES",
    "COLOUR_NAMES",
    "EVAL_SEED_START",
    "SIZE_RANGE",
    "TRAIN_SEEDS",
    "Scene",
    "colour_of",
    "encode_jpeg",
    "eval_seeds",
    "make_scene",
]

CLASS_NAMES: list[str] = ["circle", "square", "triangle", "cross"]
"""Class names; a label ``k`` means ``CLASS_NAMES[k]``."""

TRAIN_SEEDS = range(0, 100_000)
"""Seeds the detector may be trained on."""

EVAL_SEED_START = 1_000_000
"""First held-out seed; every seed ``>=`` this is reserved for evaluation."""

SIZE_RANGE = (240, 480)
"""Inclusive range of a scene's height and width in pixels."""

BACKGROUNDS: tuple[str, ...] = (
    "astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon", "page", "text",
    "hubble_deep_field", "immunohistochemistry", "retina", "brick", "grass", "gravel",
    "cell", "clock", "stereo_motorcycle",
)
"""``skimage.data`` photos used as backgrounds (all shipped inside the scikit-image wheel)."""

MAX_OBJECTS = 5
MIN_REL_SIZE, MAX_REL_SIZE = 0.08, 0.35  # object extent, as a fraction of the short side
MAX_OVERLAP = 0.10  # intersection / smaller box area, between any two objects
SUPERSAMPLE = 4  # mask anti-aliasing factor
MIN_CONTRAST = 90.0  # min Euclidean RGB distance between an object and the mean background


@dataclass(frozen=True)
class Scene:
    """One synthetic scene.

    ``image`` is ``uint8[H, W, 3]`` RGB; ``boxes`` is ``float32[K, 4]`` ``xyxy`` in image
    pixels; ``labels`` is ``int64[K]`` indices into ``CLASS_NAMES``; ``seed`` made it;
    ``hues`` is ``float32[K]``, each object's hue in ``[0, 1)`` (HSV), which
    :func:`colour_of` names.
    """

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    seed: int
    hues: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32))


def eval_seeds(count: int = 200) -> range:
    """The held-out evaluation seeds: ``range(EVAL_SEED_START, EVAL_SEED_START + count)``."""
    return range(EVAL_SEED_START, EVAL_SEED_START + count)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """Encode an ``uint8[H, W, 3]`` RGB image as baseline JPEG bytes with Pillow."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


# -- backgrounds -----------------------------------------------------------------------------


@cache
def _background_source(name: str) -> np.ndarray:
    """The named ``skimage.data`` photo as ``uint8[H, W, 3]`` (grey ones replicated), cached."""
    import skimage.data  # imported lazily: it is slow to import and only needed here

    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo_motorcycle returns (left, right, disparity)
        image = image[0]
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255).astype(np.uint8) if image.dtype.kind == "f" else image.astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def _make_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A random crop (30..100% of the largest fitting area) of a random photo, at ``height x width``."""
    source = _background_source(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))])
    src_h, src_w = source.shape[:2]
    aspect = width / height
    # Largest crop of the target aspect that fits, then shrink it by a random area factor.
    crop_w = min(src_w, src_h * aspect)
    crop_h = crop_w / aspect
    shrink = math.sqrt(rng.uniform(0.3, 1.0))
    crop_w, crop_h = max(8, int(crop_w * shrink)), max(8, int(crop_h * shrink))
    x0 = int(rng.integers(0, src_w - crop_w + 1))
    y0 = int(rng.integers(0, src_h - crop_h + 1))
    crop = Image.fromarray(source[y0:y0 + crop_h, x0:x0 + crop_w])
    image = np.asarray(crop.resize((width, height), Image.Resampling.BILINEAR), dtype=np.float32)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    contrast, brightness = rng.uniform(0.7, 1.2), rng.uniform(-25, 25)
    image = (image - 128.0) * contrast + 128.0 + brightness
    return np.clip(image, 0, 255).astype(np.uint8)


# -- shapes ----------------------------------------------------------------------------------


def _rotate(points: np.ndarray, angle: float) -> np.ndarray:
    """Rotate ``float[P, 2]`` points about the origin by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    return points @ np.array([[c, s], [-s, c]])


def _fit(points: np.ndarray, side: float) -> np.ndarray:
    """Scale and move a polygon so that its bounding box fits ``[0, side]^2``, centred."""
    lo, hi = points.min(axis=0), points.max(axis=0)
    scale = side / float((hi - lo).max())
    points = (points - (lo + hi) / 2) * scale
    return points + side / 2


def _shape_polygon(label: int, side: float, rng: np.random.Generator) -> np.ndarray | None:
    """The polygon of a shape in a ``side``-sized square; ``None`` for the circle (an ellipse)."""
    name = CLASS_NAMES[label]
    if name == "circle":
        return None
    if name == "square":
        points = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64)
        return _fit(_rotate(points, math.radians(rng.uniform(-20, 20))), side)
    if name == "triangle":
        start = rng.uniform(0, 2 * math.pi)
        angles = start + np.arange(3) * (2 * math.pi / 3)
        points = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        return _fit(points, side)
    if name == "cross":
        t = rng.uniform(0.30, 0.42) / 2  # half the arm thickness, relative to the half extent 1
        points = np.array([
            [-t, -1], [t, -1], [t, -t], [1, -t], [1, t], [t, t],
            [t, 1], [-t, 1], [-t, t], [-1, t], [-1, -t], [-t, -t],
        ], dtype=np.float64)
        return _fit(_rotate(points, math.radians(rng.uniform(-20, 20))), side)
    raise ValueError(f"unknown class {label}")


def _shape_alpha(label: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """An anti-aliased ``float32[side, side]`` coverage mask (0..1) of one shape."""
    big = side * SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    polygon = _shape_polygon(label, big - 1, rng)
    if polygon is None:
        draw.ellipse([0, 0, big - 1, big - 1], fill=255)
    else:
        draw.polygon([(float(x), float(y)) for x, y in polygon], fill=255)
    small = mask.resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


COLOUR_NAMES = ("red", "yellow", "green", "cyan", "blue", "magenta")
"""Colour families of the objects, by hue: six 60° sectors centred on these primaries."""


def colour_of(hue: float) -> int:
    """The index in ``COLOUR_NAMES`` of the hue sector ``hue`` (0..1) falls in."""
    return round(hue * 6) % 6


def _pick_colour(rng: np.random.Generator, under: np.ndarray) -> tuple[np.ndarray, float]:
    """A saturated RGB colour that differs clearly from ``under`` (the mean background), and its hue."""
    colour, hue = under, 0.0
    for _ in range(20):
        hue = rng.random()
        sat, val = rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0)
        colour = np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32) * 255.0
        if float(np.linalg.norm(colour - under)) >= MIN_CONTRAST:
            break
    return colour, hue


def _overlap(box: np.ndarray, others: list[np.ndarray]) -> float:
    """Largest ``intersection / smaller area`` between ``box`` and any of ``others``."""
    worst = 0.0
    for other in others:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw <= 0 or ih <= 0:
            continue
        smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
        worst = max(worst, iw * ih / smaller)
    return worst


def _place(rng: np.random.Generator, height: int, width: int, placed: list[np.ndarray]) -> np.ndarray | None:
    """A free ``[x, y, side, side]`` square for a new object, or ``None`` after 30 tries."""
    short = min(height, width)
    for _ in range(30):
        side = round(rng.uniform(MIN_REL_SIZE, MAX_REL_SIZE) * short)
        x = int(rng.integers(0, width - side + 1))
        y = int(rng.integers(0, height - side + 1))
        square = np.array([x, y, x + side, y + side], dtype=np.float64)
        if _overlap(square, placed) <= MAX_OVERLAP:
            return square
    return None


def _scene_size(rng: np.random.Generator) -> tuple[int, int]:
    """``(height, width)`` drawn from ``SIZE_RANGE``, at least 24 px from square."""
    lo, hi = SIZE_RANGE
    height = int(rng.integers(lo, hi + 1))
    while True:
        width = int(rng.integers(lo, hi + 1))
        if abs(width - height) >= 24:
            return height, width


def make_scene(seed: int, size: tuple[int, int] | None = None) -> Scene:
    """The scene of ``seed``: a photo background with 1..5 shapes, and their boxes and labels.

    ``size`` is ``(height, width)``; by default it is drawn from ``SIZE_RANGE`` (never
    square). The result depends only on ``seed`` and ``size``.
    """
    rng = np.random.default_rng(seed)
    drawn_size = _scene_size(rng)
    height, width = size if size is not None else drawn_size
    image = _make_background(rng, height, width).astype(np.float32)
    count = int(rng.integers(1, MAX_OBJECTS + 1))
    squares: list[np.ndarray] = []
    boxes: list[list[float]] = []
    labels: list[int] = []
    hues: list[float] = []
    for _ in range(count):
        square = _place(rng, height, width, squares)
        if square is None:
            continue
        x, y, side = int(square[0]), int(square[1]), int(square[2] - square[0])
        label = int(rng.integers(len(CLASS_NAMES)))
        alpha = _shape_alpha(label, side, rng)
        region = image[y:y + side, x:x + side]
        colour, hue = _pick_colour(rng, region.reshape(-1, 3).mean(axis=0))
        region[...] = region * (1.0 - alpha[:, :, None]) + colour * alpha[:, :, None]
        rows = np.flatnonzero((alpha >= 0.5).any(axis=1))
        cols = np.flatnonzero((alpha >= 0.5).any(axis=0))
        boxes.append([x + cols[0], y + rows[0], x + cols[-1] + 1, y + rows[-1] + 1])
        labels.append(label)
        hues.append(hue)
        squares.append(square)
    return Scene(
        image=np.clip(np.rint(image), 0, 255).astype(np.uint8),
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
        seed=seed,
        hues=np.asarray(hues, dtype=np.float32),
    )
