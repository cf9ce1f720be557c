"""decode -> letterbox -> (detector) -> nms: the transform carries boxes back to the source pixels."""

from __future__ import annotations

import numpy as np

from ._util import build_kernel, encode


def test_a_box_drawn_in_the_source_comes_back_through_letterbox_and_nms() -> None:
    source = np.full((480, 640, 3), 40, np.uint8)
    box = np.array([100.0, 50.0, 300.0, 200.0])  # x0, y0, x1, y1 in source pixels
    source[50:200, 100:300] = (250, 20, 20)
    image = build_kernel("image.decode")({"data": encode(source, "PNG")})["image"]
    lb = build_kernel("image.letterbox", size=[320, 320], layout="chw", dtype="float32", scale="1/255")(
        {"image": image})
    sx, sy, tx, ty, w, h = lb["transform"].tolist()
    assert (w, h) == (640, 480)
    # Where the transform says the box is, the letterboxed image is red; around it, it is not.
    x0, y0, x1, y1 = box * [sx, sy, sx, sy] + [tx, ty, tx, ty]
    red = lb["image"][0]
    assert red[int(y0) + 2:int(y1) - 2, int(x0) + 2:int(x1) - 2].min() > 0.9
    assert red[int(y1) + 2:int(y1) + 10, int(x0):int(x1)].max() < 0.2
    # A detector that found it (plus two weaker duplicates and background) in letterbox coordinates.
    rng = np.random.default_rng(0)
    anchors = 2100
    pred = np.zeros((4 + 2, anchors), np.float32)
    pred[:4] = rng.uniform(10, 300, (4, anchors))
    pred[4:] = rng.uniform(0, 0.1, (2, anchors))
    centre_w = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
    for k, (jitter, score) in enumerate([(0.0, 0.9), (1.5, 0.8), (-2.0, 0.7)]):
        pred[:4, k] = np.asarray(centre_w) + jitter
        pred[4:, k] = (0.0, score)
    out = build_kernel("detect.nms")({"predictions": pred, "transform": lb["transform"]})
    assert int(out["count"]) == 1 and out["labels"].tolist() == [1]
    np.testing.assert_allclose(out["boxes"][0], box, atol=1e-3)
