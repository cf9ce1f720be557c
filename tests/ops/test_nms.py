"""detect.nms: parity with cv2.dnn.NMSBoxes / NMSBoxesBatched, layouts, mapping, bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagserve.ops.kernels._common import KernelInputError
from dagserve.ops.kernels._nms import nms_greedy, nms_matrix

from ._util import build_kernel


def _random_boxes(rng: np.random.Generator, n: int, extent: float = 640.0) -> np.ndarray:
    """xyxy boxes clustered enough that many overlap."""
    centres = rng.uniform(0, extent, (max(n // 8, 1), 2))
    xy = centres[rng.integers(0, len(centres), n)] + rng.normal(0, 15, (n, 2))
    wh = rng.uniform(4, 120, (n, 2))
    xy = np.clip(xy, 0, extent)  # non-negative: the domain where NMSBoxesBatched's offset trick is exact
    return np.concatenate([xy, xy + wh], axis=1)


def _cv2_keep(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray | None, score_thr: float,
              iou_thr: float) -> np.ndarray:
    rects = [(float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])) for b in boxes]
    if labels is None:
        keep = cv2.dnn.NMSBoxes(rects, scores.tolist(), score_thr, iou_thr)
    else:
        keep = cv2.dnn.NMSBoxesBatched(rects, scores.tolist(), labels.tolist(), score_thr, iou_thr)
    return np.asarray(keep, dtype=np.int64).reshape(-1)


@pytest.mark.parametrize("algorithm", [nms_greedy, nms_matrix])
@pytest.mark.parametrize("class_aware", [False, True])
def test_kept_indices_identical_to_opencv_on_many_random_inputs(algorithm, class_aware: bool) -> None:
    for seed in range(100):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 300))
        boxes = _random_boxes(rng, n)
        scores = rng.random(n).astype(np.float32)
        labels = rng.integers(0, int(rng.integers(1, 6)), n)
        score_thr = float(rng.uniform(0, 0.6))
        iou_thr = float(rng.uniform(0.1, 0.9))
        ref = _cv2_keep(boxes, scores, labels if class_aware else None, score_thr, iou_thr)
        cand = np.nonzero(scores > np.float32(score_thr))[0]
        extra = {"block": int(rng.integers(1, 64))} if algorithm is nms_matrix else {}
        ours = cand[algorithm(np, boxes[cand], scores[cand], labels[cand], iou_thr, 10**6, class_aware, **extra)]
        assert np.array_equal(ours, ref), (seed, ours[:8], ref[:8])


def _yolov8(rng: np.random.Generator, classes: int, anchors: int, extent: float = 320.0) -> np.ndarray:
    xyxy = _random_boxes(rng, anchors, extent)
    cxcywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    # Like a real head: low scores everywhere, a minority of anchors confident about one class.
    scores = rng.uniform(0, 0.3, (anchors, classes))
    hot = rng.random(anchors) < 0.15
    scores[hot, rng.integers(0, classes, int(hot.sum()))] = rng.uniform(0.2, 1.0, int(hot.sum()))
    return np.concatenate([cxcywh, scores], axis=1).T.astype(np.float32)


def _reference(pred: np.ndarray, fmt: str, score_thr: float, iou_thr: float, class_aware: bool,
               max_det: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decode the layout independently, then let OpenCV choose the boxes."""
    if fmt == "yolov8":
        table = pred.T
        cls = table[:, 4:]
        score = cls.max(axis=1)
    else:
        table = pred
        cls = table[:, 5:]
        score = table[:, 4] * cls.max(axis=1)
    label = cls.argmax(axis=1)
    c = table[:, :4].astype(np.float64)
    xyxy = np.stack([c[:, 0] - c[:, 2] / 2, c[:, 1] - c[:, 3] / 2, c[:, 0] + c[:, 2] / 2, c[:, 1] + c[:, 3] / 2], 1)
    keep = _cv2_keep(xyxy, score, label if class_aware else None, score_thr, iou_thr)[:max_det]
    return xyxy[keep].astype(np.float32), score[keep], label[keep]


@pytest.mark.parametrize("fmt", ["yolov8", "yolov5"])
@pytest.mark.parametrize("class_agnostic", [False, True])
def test_kernel_on_raw_yolo_outputs_matches_opencv(fmt: str, class_agnostic: bool) -> None:
    k = build_kernel("detect.nms", format=fmt, class_agnostic=class_agnostic, max_detections=50,
                     score_threshold=0.25, iou_threshold=0.45)
    for seed in range(25):
        rng = np.random.default_rng(seed)
        pred = _yolov8(rng, classes=int(rng.integers(1, 8)), anchors=2100)
        if fmt == "yolov5":
            table = pred.T
            obj = rng.random((table.shape[0], 1)).astype(np.float32)
            pred = np.concatenate([table[:, :4], obj, table[:, 4:]], axis=1)
        out = k({"predictions": pred})
        boxes, scores, labels = _reference(pred, fmt, 0.25, 0.45, not class_agnostic, 50)
        assert int(out["count"]) == len(scores) and out["count"].dtype == np.int32 and out["count"].shape == ()
        assert np.array_equal(out["boxes"], boxes) and out["boxes"].dtype == np.float32
        assert np.array_equal(out["scores"], scores) and out["scores"].dtype == np.float32
        assert np.array_equal(out["labels"], labels) and out["labels"].dtype == np.int64


def test_boxes_scores_format_and_max_detections_truncates_after_suppression() -> None:
    rng = np.random.default_rng(11)
    boxes = _random_boxes(rng, 500).astype(np.float32)
    scores = rng.random((500, 3)).astype(np.float32)
    out = build_kernel("detect.nms", format="boxes_scores", max_detections=7, score_threshold=0.1)(
        {"boxes": boxes, "scores": scores})
    best, label = scores.max(1), scores.argmax(1)
    keep = _cv2_keep(boxes.astype(np.float64), best, label, 0.1, 0.45)
    assert len(keep) > 7 and np.array_equal(out["boxes"], boxes[keep[:7]])
    assert np.array_equal(out["labels"], label[keep[:7]])


def test_boxes_are_mapped_back_through_the_letterbox_transform_and_clipped() -> None:
    # Source 640x480 letterboxed to 320x320: scale 0.5, 40 px of padding on top.
    transform = np.array([0.5, 0.5, 0.0, 40.0, 640.0, 480.0], np.float32)
    boxes = np.array([[10, 50, 110, 150], [300, 250, 330, 290], [-5, 30, 20, 60]], np.float32)
    scores = np.array([[0.9], [0.8], [0.7]], np.float32)
    k = build_kernel("detect.nms", format="boxes_scores")
    out = k({"boxes": boxes, "scores": scores, "transform": transform})
    expected = np.array([[20, 20, 220, 220], [600, 420, 640, 480], [0, 0, 40, 40]], np.float32)
    np.testing.assert_allclose(out["boxes"], expected)
    unclipped = build_kernel("detect.nms", format="boxes_scores", clip=False)(
        {"boxes": boxes, "scores": scores, "transform": transform})["boxes"]
    np.testing.assert_allclose(unclipped[1:], [[600, 420, 660, 500], [-10, -20, 40, 40]])


def test_pad_fills_to_max_detections_with_zero_boxes_and_minus_one_labels() -> None:
    boxes = np.array([[0, 0, 10, 10], [100, 100, 110, 110]], np.float32)
    scores = np.array([[0.9, 0.1], [0.2, 0.6]], np.float32)
    k = build_kernel("detect.nms", format="boxes_scores", pad=True, max_detections=5)
    out = k({"boxes": boxes, "scores": scores})
    assert out["boxes"].shape == (5, 4) and out["scores"].shape == (5,) and out["labels"].shape == (5,)
    assert int(out["count"]) == 2
    assert out["labels"].tolist() == [0, 1, -1, -1, -1]
    assert (out["boxes"][2:] == 0).all() and (out["scores"][2:] == 0).all()


def test_score_threshold_is_strict_and_iou_threshold_inclusive() -> None:
    # Two boxes with IoU exactly 0.5: the second is kept at iou_threshold 0.5, as OpenCV keeps it.
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 20]], np.float32)  # inter 100, union 200 -> IoU 0.5
    scores = np.array([[0.9], [0.5]], np.float32)
    k = build_kernel("detect.nms", format="boxes_scores", iou_threshold=0.5, score_threshold=0.5)
    assert int(k({"boxes": boxes, "scores": scores})["count"]) == 1  # 0.5 is not > 0.5
    k = build_kernel("detect.nms", format="boxes_scores", iou_threshold=0.5, score_threshold=0.4)
    assert int(k({"boxes": boxes, "scores": scores})["count"]) == 2  # IoU 0.5 <= 0.5: kept
    rects = [(0.0, 0.0, 10.0, 10.0), (0.0, 0.0, 10.0, 20.0)]
    assert len(cv2.dnn.NMSBoxes(rects, [0.9, 0.5], 0.4, 0.5)) == 2
    assert len(cv2.dnn.NMSBoxes(rects, [0.9, 0.5], 0.5, 0.5)) == 1


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), iou=st.floats(0.05, 0.95), agnostic=st.booleans())
def test_kept_boxes_never_overlap_more_than_the_threshold_within_a_class(seed: int, iou: float,
                                                                        agnostic: bool) -> None:
    rng = np.random.default_rng(seed)
    pred = _yolov8(rng, classes=3, anchors=300)
    out = build_kernel("detect.nms", iou_threshold=iou, score_threshold=0.05, max_detections=1000,
                       class_agnostic=agnostic)({"predictions": pred})
    b = out["boxes"].astype(np.float64)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    pair_iou = inter / (area[:, None] + area[None, :] - inter)
    same = np.ones_like(pair_iou, bool) if agnostic else out["labels"][:, None] == out["labels"][None, :]
    np.fill_diagonal(same, False)
    assert (pair_iou[same] <= iou + 1e-6).all()
    assert (np.diff(out["scores"]) <= 0).all()  # by descending score


# -- bad input -------------------------------------------------------------------------------


def test_nan_scores_never_pass_and_nan_boxes_are_dropped() -> None:
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [np.nan, 0, 5, 5], [40, 40, np.inf, 50]], np.float32)
    scores = np.array([[np.nan], [0.9], [0.95], [0.99]], np.float32)
    out = build_kernel("detect.nms", format="boxes_scores")({"boxes": boxes, "scores": scores})
    assert int(out["count"]) == 1 and out["boxes"].tolist() == [[20, 20, 30, 30]]


def test_no_candidate_gives_empty_outputs_of_the_right_types() -> None:
    pred = np.zeros((84, 8400), np.float32)
    out = build_kernel("detect.nms")({"predictions": pred})
    assert out["boxes"].shape == (0, 4) and out["scores"].shape == (0,) and out["labels"].shape == (0,)
    assert int(out["count"]) == 0
    empty = build_kernel("detect.nms")({"predictions": np.zeros((6, 0), np.float32)})
    assert int(empty["count"]) == 0


@pytest.mark.parametrize(("params", "inputs", "match"), [
    ({}, {"predictions": np.zeros((84, 10), np.int32)}, "must be float16|float32|float64"),
    ({}, {"predictions": np.zeros((4, 10), np.float32)}, r"expects predictions \[4\+C,A\] with C >= 1"),
    ({}, {"predictions": np.zeros((1, 84, 10), np.float32)}, r"got \[1,84,10\]"),
    ({"format": "yolov5"}, {"predictions": np.zeros((10, 5), np.float32)}, r"\[A,5\+C\]"),
    ({}, {}, "needs input 'predictions'"),
    ({"format": "boxes_scores"}, {"boxes": np.zeros((3, 4), np.float32)}, "needs inputs 'boxes' and 'scores'"),
    ({"format": "boxes_scores"}, {"boxes": np.zeros((3, 4), np.float32), "scores": np.zeros((2, 1), np.float32)},
     r"expects boxes \[A,4\] and scores \[A,C\]"),
    ({}, {"predictions": np.zeros((6, 3), np.float32), "transform": np.array([0, 1, 0, 0, 10, 10], np.float32)},
     "not a valid image transform"),
    ({}, {"predictions": np.zeros((6, 3), np.float32), "transform": np.zeros(4, np.float32)}, "float32\\[6\\]"),
])
def test_bad_inputs_raise_one_clear_error(params: dict, inputs: dict, match: str) -> None:
    with pytest.raises(KernelInputError, match=match):
        build_kernel("detect.nms", **params)(inputs)
