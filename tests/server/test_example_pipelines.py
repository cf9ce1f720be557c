"""The example pipelines, served for real and judged on held-out data.

``detect`` must find the known boxes of held-out synthetic scenes (real photos
with pasted shapes, seeds the detector never trained on) with mAP@0.5 >= 0.9, in
the source image's pixels; ``classify`` must label held-out handwritten digits
(scikit-learn's bundled set, the split the classifier was trained without) with
accuracy >= 95%. Both go through ``dagserve serve pipelines/`` over gRPC with
``tritonclient``, batch by batch, exactly as a user calls them.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

from ._server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess([ROOT / "pipelines"], tmp_path_factory.mktemp("examples")).start(timeout=120)
    yield proc
    assert proc.stop() == 0, proc.log()


def _infer_images(client: grpcclient.InferenceServerClient, model: str, images: list[bytes],
                  outputs: list[str]) -> dict[str, np.ndarray]:
    tensor = grpcclient.InferInput("image", [len(images)], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object))
    result = client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput(n) for n in outputs])
    return {n: result.as_numpy(n) for n in outputs}


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def mean_average_precision(detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                           truths: list[tuple[np.ndarray, np.ndarray]], classes: int,
                           iou_threshold: float = 0.5) -> float:
    """VOC all-point-interpolated AP at ``iou_threshold``, averaged over classes present."""
    aps = []
    for c in range(classes):
        scored: list[tuple[float, bool]] = []
        positives = 0
        for (boxes, scores, labels), (true_boxes, true_labels) in zip(detections, truths):
            gt = true_boxes[true_labels == c]
            positives += len(gt)
            taken = np.zeros(len(gt), dtype=bool)
            mine = labels == c
            for k in np.argsort(-scores[mine], kind="stable"):
                box, score = boxes[mine][k], float(scores[mine][k])
                hit = False
                if len(gt):
                    ious = _iou(box, gt)
                    best = int(np.argmax(ious))
                    if ious[best] >= iou_threshold and not taken[best]:
                        taken[best] = hit = True
                scored.append((score, hit))
        if positives == 0:
            continue
        scored.sort(key=lambda t: -t[0])
        hits = np.array([h for _, h in scored], dtype=float)
        tp, fp = np.cumsum(hits), np.cumsum(1 - hits)
        recall = tp / positives
        precision = tp / np.maximum(tp + fp, 1e-9)
        r = np.concatenate([[0.0], recall, [1.0]])
        p = np.concatenate([[0.0], precision, [0.0]])
        p = np.maximum.accumulate(p[::-1])[::-1]
        aps.append(float(np.sum((r[1:] - r[:-1]) * p[1:])))
    return float(np.mean(aps))


def test_map_counts_a_perfect_detector_as_one_and_a_wrong_class_as_zero() -> None:
    truth = [(np.array([[10, 10, 50, 50]], dtype=np.float32), np.array([1]))]
    perfect = [(truth[0][0], np.array([0.9], dtype=np.float32), np.array([1]))]
    wrong = [(truth[0][0], np.array([0.9], dtype=np.float32), np.array([0]))]
    assert mean_average_precision(perfect, truth, 4) == pytest.approx(1.0)
    assert mean_average_precision(wrong, truth, 4) == pytest.approx(0.0)


@pytest.mark.skipif(not (ROOT / "pipelines" / "detect.yaml").exists(),
                    reason="pipelines/detect.yaml lands with its trained detector (examples/train_detector.py)")
def test_detect_finds_held_out_objects_in_source_pixels(server: ServerProcess) -> None:
    from synthetic import CLASS_NAMES, encode_jpeg, eval_seeds, make_scene

    client = grpcclient.InferenceServerClient(server.grpc_url)
    scenes = [make_scene(seed) for seed in eval_seeds(120)]
    detections, truths = [], []
    for scene in scenes:  # one item per request: items differ in their number of boxes
        out = _infer_images(client, "detect", [encode_jpeg(scene.image)], ["boxes", "scores", "labels"])
        detections.append((out["boxes"][0], out["scores"][0], out["labels"][0]))
        truths.append((scene.boxes, scene.labels))
    score = mean_average_precision(detections, truths, len(CLASS_NAMES))
    assert score >= 0.9, f"mAP@0.5 on 120 held-out scenes is {score:.3f}"
    # Boxes are in the source image's pixels, inside it, not in the 320x320 letterbox.
    for (boxes, _, _), scene in zip(detections, scenes):
        h, w = scene.image.shape[:2]
        assert (boxes[:, [0, 2]] <= w + 0.5).all() and (boxes[:, [1, 3]] <= h + 0.5).all()
    wide = max(scenes, key=lambda s: s.image.shape[1])
    assert wide.image.shape[1] > 320


def test_classify_labels_held_out_digits(server: ServerProcess) -> None:
    from digits import load, render_digit, split

    client = grpcclient.InferenceServerClient(server.grpc_url)
    pixels, targets = load()
    held_out = split()
    images, labels = pixels[held_out], targets[held_out]
    correct = 0
    for start in range(0, len(images), 8):
        batch = []
        for pixels in images[start:start + 8]:
            buf = io.BytesIO()
            Image.fromarray(render_digit(pixels)).save(buf, format="PNG")
            batch.append(buf.getvalue())
        out = _infer_images(client, "classify", batch, ["labels", "indices"])
        top1 = out["indices"][:, 0]
        assert [lab[0].decode() for lab in out["labels"]] == [str(int(i)) for i in top1]
        correct += int((top1 == labels[start:start + 8]).sum())
    accuracy = correct / len(images)
    assert accuracy >= 0.95, f"held-out accuracy is {accuracy:.3f} on {len(images)} digits"


def test_simple_answers_like_tritons_simple_model(server: ServerProcess) -> None:
    """What Triton's simple_grpc_infer_client.py does: config, then INPUT0 +/- INPUT1 over gRPC."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    config = client.get_model_config("simple", as_json=True)["config"]
    assert int(config["max_batch_size"]) == 8
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("INPUT0", "TYPE_INT32", ["16"]), ("INPUT1", "TYPE_INT32", ["16"])]
    assert [(t["name"], t["data_type"]) for t in config["output"]] == [("OUTPUT0", "TYPE_INT32"),
                                                                       ("OUTPUT1", "TYPE_INT32")]
    x0 = np.arange(16, dtype=np.int32).reshape(1, 16)
    x1 = np.ones((1, 16), dtype=np.int32)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(x0)
    inputs[1].set_data_from_numpy(x1)
    result = client.infer("simple", inputs, outputs=[grpcclient.InferRequestedOutput("OUTPUT0"),
                                                     grpcclient.InferRequestedOutput("OUTPUT1")])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x0 + x1)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), x0 - x1)
