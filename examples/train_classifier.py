"""Train the example digit classifier and export it to ONNX (``pipelines/models/classifier.onnx``).

A small CNN trained on scikit-learn's bundled handwritten digits (8x8, 16 ink levels)
rendered as RGB images by ``examples/digits.py``; about a minute on two CPU cores. The
defaults of the command line reproduce the committed model and labels file::

    python examples/train_classifier.py

Model contract (what the dagserve ``classify`` pipeline relies on):

* input ``images``: ``float32[N, 3, 32, 32]``, NCHW, RGB: the image resized to 32x32
  (bilinear), times 1/255, minus ``digits.MEAN``, divided by ``digits.STD`` per channel
  (``MEAN = 0.695``, ``STD = 0.323`` on every channel);
* output ``logits``: ``float32[N, 10]`` raw scores (softmax not applied) of the labels
  ``"0".."9"`` in ``pipelines/models/digits_labels.txt`` (one per line, index = position);
* the batch dimension is dynamic (``N``); ONNX opset 17.

Training uses only the 1347 training digits of ``digits.train_indices()``; each epoch
re-renders them with random augmentation (render size 16..64 px, small rotation, scale,
shear and shift, then back to 32x32 with Pillow's or OpenCV-style bilinear resizing, so
the model is indifferent to the serving resizer). Accuracy is reported on the 450
held-out digits of ``digits.split()``, rendered with ``digits.render_digit`` and run
through onnxruntime.
"""

from __future__ import annotations

import argparse
import logging
import math
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

try:  # run as a script (examples/ on sys.path) or imported as examples.train_classifier
    from digits import LABELS, MEAN, SIZE, STD, load, preprocess, render_digit, split, train_indices
    from train_detector import resize_linear_cv
except ImportError:  # pragma: no cover - depends on how it is imported
    from examples.digits import LABELS, MEAN, SIZE, STD, load, preprocess, render_digit, split, train_indices
    from examples.train_detector import resize_linear_cv

REPO = Path(__file__).resolve().parent.parent

log = logging.getLogger("train_classifier")


# -- data ------------------------------------------------------------------------------------


def augment(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random rendering of an 8x8 digit as ``uint8[SIZE, SIZE, 3]``.

    Rendered at a random size, moved by a random affine map (rotation +-12 deg, scale
    0.9..1.1, shear +-0.15, shift +-6% of the side; white fill), then resized to
    ``SIZE`` with Pillow's or OpenCV-style bilinear interpolation.
    """
    side = int(rng.integers(16, 65))
    image = Image.fromarray(render_digit(pixels, side))
    angle = math.radians(rng.uniform(-12, 12))
    scale = rng.uniform(0.9, 1.1)
    shear = rng.uniform(-0.15, 0.15)
    shift = rng.uniform(-0.06, 0.06, size=2) * side
    # Inverse map (output -> input) about the centre, as Image.transform expects.
    c, s = math.cos(angle), math.sin(angle)
    forward = np.array([[c, -s + shear], [s, c]]) * scale
    inverse = np.linalg.inv(forward)
    centre = np.array([side / 2, side / 2])
    offset = centre - inverse @ (centre + shift)
    coeffs = (inverse[0, 0], inverse[0, 1], offset[0], inverse[1, 0], inverse[1, 1], offset[1])
    image = image.transform((side, side), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR,
                            fillcolor=(255, 255, 255))
    array = np.asarray(image)
    if side == SIZE:
        return array
    if rng.random() < 0.5:
        return np.asarray(Image.fromarray(array).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    return resize_linear_cv(array, SIZE, SIZE)


def epoch_batch(images8: np.ndarray, rng: np.random.Generator) -> Tensor:
    """A fresh augmented rendering of every training digit, preprocessed: ``float32[N, 3, S, S]``."""
    rendered = np.stack([augment(p, rng) for p in images8])
    return torch.from_numpy(preprocess(rendered))


# -- model -----------------------------------------------------------------------------------


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv (no bias) + BatchNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DigitNet(nn.Module):
    """Five 3x3 conv layers (32x32 -> 16 -> 8), global average pooling, one linear layer."""

    def __init__(self, num_classes: int = len(LABELS)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 32), conv_bn(32, 32), nn.MaxPool2d(2),
            conv_bn(32, 64), conv_bn(64, 64), nn.MaxPool2d(2),
            conv_bn(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, images: Tensor) -> Tensor:
        return self.fc(self.dropout(self.features(images)))


# -- training and evaluation -----------------------------------------------------------------


def train(args: argparse.Namespace) -> DigitNet:
    """Train on the training split with fresh augmentations each epoch; returns the model (eval)."""
    images8, labels = load()
    train_idx = train_indices()
    x8, y = images8[train_idx], torch.from_numpy(labels[train_idx])
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    model = DigitNet()
    log.info("model: %d parameters; %d training digits", sum(p.numel() for p in model.parameters()), len(train_idx))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(train_idx) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps_per_epoch * args.epochs,
                                                pct_start=0.15)
    held_x, held_y = held_out_inputs()
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        model.train()
        x = epoch_batch(x8, rng)
        order = torch.from_numpy(rng.permutation(len(train_idx)))
        total, correct = 0.0, 0
        for k in range(steps_per_epoch):
            index = order[k * args.batch : (k + 1) * args.batch]
            logits = model(x[index])
            loss = F.cross_entropy(logits, y[index], label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(index)
            correct += int((logits.argmax(1) == y[index]).sum())
        model.eval()
        with torch.no_grad():
            held = float((model(torch.from_numpy(held_x)).argmax(1).numpy() == held_y).mean())
        log.info("epoch %2d/%d  loss %.4f  train acc (augmented) %.4f  held-out acc %.4f  %.1f s", epoch + 1,
                 args.epochs, total / len(train_idx), correct / len(train_idx), held, time.perf_counter() - t0)
    return model.eval()


def held_out_inputs(size: int = SIZE, method: str = "pillow") -> tuple[np.ndarray, np.ndarray]:
    """The held-out digits rendered at ``size`` px, resized to ``SIZE`` with ``method``, preprocessed."""
    images8, labels = load()
    idx = split()
    rendered = [render_digit(images8[i], size) for i in idx]
    if size != SIZE and method == "cv":
        rendered = [resize_linear_cv(r, SIZE, SIZE) for r in rendered]
    return preprocess(np.stack(rendered)), labels[idx]


def export(model: DigitNet, out: Path) -> None:
    """Export to ONNX (opset 17, dynamic batch ``N``, constants folded) and check the graph."""
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model, (torch.zeros(1, 3, SIZE, SIZE),), str(out), dynamo=False,
        input_names=["images"], output_names=["logits"], opset_version=17, do_constant_folding=True,
        dynamic_axes={"images": {0: "N"}, "logits": {0: "N"}},
    )
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    proto.doc_string = (f"dagserve example digit classifier; input: resize {SIZE}x{SIZE} bilinear, /255, "
                        f"mean {list(MEAN)}, std {list(STD)}; output: logits of labels 0..9")
    onnx.save(proto, str(out))


def evaluate_onnx(model: DigitNet, path: Path) -> dict[str, float]:
    """Held-out accuracy through onnxruntime for several renderings, and the ORT/torch checks."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    results: dict[str, float] = {}
    for size, method in ((SIZE, "pillow"), (64, "pillow"), (64, "cv"), (24, "pillow")):
        x, y = held_out_inputs(size, method)
        logits = session.run(["logits"], {"images": x})[0]
        results[f"acc_{size}px_{method}"] = float((logits.argmax(1) == y).mean())
    x, _ = held_out_inputs()
    with torch.no_grad():
        reference = model(torch.from_numpy(x)).numpy()
    batched = session.run(["logits"], {"images": x})[0]
    single = np.concatenate([session.run(["logits"], {"images": x[i : i + 1]})[0] for i in range(8)])
    results["max_abs_ort_torch"] = float(np.abs(batched - reference).max())
    results["max_abs_batch1_vs_batched"] = float(np.abs(batched[:8] - single).max())
    return results


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line; the defaults reproduce the committed model."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "pipelines/models/classifier.onnx")
    p.add_argument("--labels", type=Path, default=REPO / "pipelines/models/digits_labels.txt")
    p.add_argument("--log", type=Path, default=REPO / "examples/logs/train_classifier.log")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=1e-3)
    p.add_argument("--label-smoothing", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def setup_logging(path: Path) -> None:
    """Log to stdout and to ``path`` (overwritten)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S")
    for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(path, mode="w")):
        handler.setFormatter(fmt)
        log.addHandler(handler)
    log.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Train, export, verify; write the labels file; non-zero exit below 97% held-out accuracy."""
    import onnx
    import onnxruntime

    args = parse_args(argv)
    setup_logging(args.log)
    torch.set_num_threads(args.threads)
    log.info("train_classifier: %s", " ".join(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()))
    log.info("versions: python %s, torch %s, onnx %s, onnxruntime %s, numpy %s", platform.python_version(),
             torch.__version__, onnx.__version__, onnxruntime.__version__, np.__version__)
    log.info("preprocessing: resize to %dx%d (bilinear), x/255, mean %s, std %s, NCHW RGB float32", SIZE, SIZE,
             list(MEAN), list(STD))
    start = time.perf_counter()
    model = train(args)
    log.info("training wall time: %.1f s", time.perf_counter() - start)
    export(model, args.out)
    args.labels.write_text("".join(f"{label}\n" for label in LABELS))
    results = evaluate_onnx(model, args.out)
    log.info("export: %s (%.1f KiB), labels: %s", args.out, args.out.stat().st_size / 1024, args.labels)
    for key, value in results.items():
        log.info("%s: %s", key, f"{value:.4f}" if key.startswith("acc") else f"{value:.2e}")
    log.info("held-out accuracy (%d digits, rendered at %d px, onnxruntime): %.4f", len(split()), SIZE,
             results[f"acc_{SIZE}px_pillow"])
    log.info("total wall time: %.1f s", time.perf_counter() - start)
    ok = results[f"acc_{SIZE}px_pillow"] >= 0.97 and results["max_abs_ort_torch"] < 1e-3
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
