"""Crops of the synthetic scenes for the colour classifier, without torch (training is in train_colour.py).

The crop is the pipeline's ``image.crop`` with ``size: [32, 32]``, so the held-out
evaluation here sees the pixels the served ``detect_classify`` pipeline sees.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

try:  # run as a script (examples/ on sys.path) or imported as examples.colour_crops
    from synthetic import colour_of, eval_seeds, make_scene
except ImportError:  # pragma: no cover - depends on how it is imported
    from examples.synthetic import colour_of, eval_seeds, make_scene

__all__ = ["SIZE", "crop", "held_out", "preprocess"]

SIZE = 32


def crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``box`` (xyxy, pixels) cut from ``image`` and resized to ``SIZE`` x ``SIZE`` bilinear.

    The same pixels as the pipeline's ``image.crop`` (``size: [32, 32]``): the box is
    rounded outwards to whole pixels and clipped to the image.
    """
    h, w = image.shape[:2]
    x0, y0 = max(math.floor(box[0]), 0), max(math.floor(box[1]), 0)
    x1, y1 = min(math.ceil(box[2]), w), min(math.ceil(box[3]), h)
    patch = image[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    return cv2.resize(np.ascontiguousarray(patch), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)


def preprocess(crops: np.ndarray) -> np.ndarray:
    """``uint8[N, S, S, 3]`` -> ``float32[N, 3, S, S]`` times 1/255."""
    return np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255)


def held_out(count: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """Exact-box crops of the held-out scenes and their labels."""
    crops, labels = [], []
    for seed in eval_seeds(count):
        scene = make_scene(seed)
        for box, hue in zip(scene.boxes, scene.hues):
            crops.append(crop(scene.image, box))
            labels.append(colour_of(float(hue)))
    return preprocess(np.stack(crops)), np.asarray(labels, dtype=np.int64)
