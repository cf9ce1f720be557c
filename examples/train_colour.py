"""Train the example colour classifier of detected shapes and export it to ONNX.

The second model of the ``detect_classify`` pipeline: the detector finds shapes in a
scene (``examples/synthetic.py``), each box is cropped and resized to 32x32, and this
small CNN names the shape's colour family (``synthetic.COLOUR_NAMES``: six 60° hue
sectors). About a minute on two CPU cores; the defaults reproduce the committed model::

    python examples/train_colour.py

Model contract:

* input ``crops``: ``float32[N, 3, 32, 32]``, NCHW, RGB: the box cropped from the
  scene, resized to 32x32 (bilinear), times 1/255;
* output ``logits``: ``float32[N, 6]`` raw scores of the labels in
  ``pipelines/models/colour_labels.txt`` (one per line, index = position);
* dynamic batch ``N``; ONNX opset 17.

Training crops come from scenes with seeds in ``synthetic.TRAIN_SEEDS``, each box
jittered (±12% of its size per edge, as a detector's boxes are off by a little) and
sometimes mirrored; accuracy is reported on the boxes of 200 held-out scenes
(``synthetic.eval_seeds()``), cropped exactly as the pipeline crops them.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:  # run as a script (examples/ on sys.path) or imported as examples.train_colour
    from colour_crops import SIZE, crop, held_out, preprocess
    from synthetic import COLOUR_NAMES, colour_of, make_scene
except ImportError:  # pragma: no cover - depends on how it is imported
    from examples.colour_crops import SIZE, crop, held_out, preprocess
    from examples.synthetic import COLOUR_NAMES, colour_of, make_scene

REPO = Path(__file__).resolve().parent.parent

log = logging.getLogger("train_colour")


def training_crops(seeds: range, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Jittered crops of every object of the scenes of ``seeds``, and their colour labels."""
    crops, labels = [], []
    for seed in seeds:
        scene = make_scene(seed)
        for box, hue in zip(scene.boxes, scene.hues):
            bw, bh = box[2] - box[0], box[3] - box[1]
            jitter = rng.uniform(-0.12, 0.12, size=4) * np.array([bw, bh, bw, bh])
            patch = crop(scene.image, box + jitter)
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            crops.append(patch)
            labels.append(colour_of(float(hue)))
    return np.stack(crops), np.asarray(labels, dtype=np.int64)


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv (no bias) + BatchNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ColourNet(nn.Module):
    """Four 3x3 conv layers (32x32 -> 16 -> 8), global average pooling, one linear layer."""

    def __init__(self, num_classes: int = len(COLOUR_NAMES)) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 16), nn.MaxPool2d(2), conv_bn(16, 32), nn.MaxPool2d(2),
            conv_bn(32, 64), conv_bn(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc = nn.Linear(64, num_classes)

    def forward(self, crops: Tensor) -> Tensor:
        return self.fc(self.features(crops))


def train(args: argparse.Namespace) -> ColourNet:
    """Train on jittered crops of the training scenes; returns the model in eval mode."""
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    x8, y_np = training_crops(range(args.scenes), rng)
    x, y = torch.from_numpy(preprocess(x8)), torch.from_numpy(y_np)
    held_x, held_y = held_out()
    log.info("%d training crops from %d scenes; %d held-out crops", len(y), args.scenes, len(held_y))
    model = ColourNet()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-3)
    steps = math.ceil(len(y) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps * args.epochs, pct_start=0.2)
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        model.train()
        order = torch.from_numpy(rng.permutation(len(y)))
        total = 0.0
        for k in range(steps):
            index = order[k * args.batch:(k + 1) * args.batch]
            loss = F.cross_entropy(model(x[index]), y[index], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(index)
        model.eval()
        with torch.no_grad():
            acc = float((model(torch.from_numpy(held_x)).argmax(1).numpy() == held_y).mean())
        log.info("epoch %d/%d  loss %.4f  held-out acc %.4f  %.1f s", epoch + 1, args.epochs, total / len(y), acc,
                 time.perf_counter() - t0)
    return model.eval()


def export(model: ColourNet, out: Path) -> None:
    """Export to ONNX (opset 17, dynamic batch) and check the graph."""
    import onnx

    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.zeros(1, 3, SIZE, SIZE),), str(out), dynamo=False, input_names=["crops"],
                      output_names=["logits"], opset_version=17, do_constant_folding=True,
                      dynamic_axes={"crops": {0: "N"}, "logits": {0: "N"}})
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    proto.doc_string = (f"dagserve example colour classifier; input: box crop resized {SIZE}x{SIZE} bilinear, "
                        f"RGB /255; output: logits of {', '.join(COLOUR_NAMES)}")
    onnx.save(proto, str(out))


def main(argv: Sequence[str] | None = None) -> int:
    """Train, export, check through onnxruntime; non-zero exit below 95% held-out accuracy."""
    import onnxruntime as ort

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "pipelines/models/colour.onnx")
    p.add_argument("--labels", type=Path, default=REPO / "pipelines/models/colour_labels.txt")
    p.add_argument("--scenes", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    model = train(args)
    export(model, args.out)
    args.labels.write_text("".join(f"{name}\n" for name in COLOUR_NAMES))
    held_x, held_y = held_out()
    session = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    acc = float((session.run(["logits"], {"crops": held_x})[0].argmax(1) == held_y).mean())
    log.info("exported %s (%.1f KiB); held-out accuracy through onnxruntime: %.4f", args.out,
             args.out.stat().st_size / 1024, acc)
    return 0 if acc >= 0.95 else 1


if __name__ == "__main__":
    sys.exit(main())
