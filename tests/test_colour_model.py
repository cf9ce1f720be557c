"""The example colour classifier (examples/train_colour.py -> pipelines/models/colour.onnx) keeps its contract."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))

from colour_crops import held_out  # noqa: E402
from synthetic import COLOUR_NAMES, colour_of, make_scene  # noqa: E402


def test_hue_sectors_are_named_around_the_primaries() -> None:
    assert [COLOUR_NAMES[colour_of(h)] for h in (0.0, 0.99, 1 / 6, 0.33, 0.5, 0.66, 0.84)] == [
        "red", "red", "yellow", "green", "cyan", "blue", "magenta"]


def test_scenes_record_one_hue_per_object() -> None:
    scene = make_scene(1_000_007)
    assert scene.hues.shape == scene.labels.shape and ((scene.hues >= 0) & (scene.hues < 1)).all()


def test_the_committed_model_names_held_out_colours_and_batches_like_single_items() -> None:
    session = ort.InferenceSession(str(REPO / "pipelines/models/colour.onnx"), providers=["CPUExecutionProvider"])
    labels = (REPO / "pipelines/models/colour_labels.txt").read_text().split()
    assert labels == list(COLOUR_NAMES)
    x, y = held_out(60)
    logits = session.run(["logits"], {"crops": x})[0]
    assert logits.shape == (len(y), len(COLOUR_NAMES))
    assert float((logits.argmax(1) == y).mean()) >= 0.95
    single = np.concatenate([session.run(["logits"], {"crops": x[i:i + 1]})[0] for i in range(4)])
    np.testing.assert_allclose(single, logits[:4], atol=1e-4)
