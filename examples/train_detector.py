"""Train the example shape detector and export it to ONNX (``pipelines/models/detector.onnx``).

A small anchor-free, YOLOv8-style CNN trained from scratch on ``examples/synthetic.py``
scenes (real scikit-image photos with pasted shapes), on the CPU: about 28 minutes on two quiet
cores (5 epochs of ~5.5 min, ~1 min of scene rendering), much longer when they are shared.
The defaults of the command line reproduce the committed model::

    python examples/train_detector.py            # -> pipelines/models/detector.onnx
    python examples/train_detector.py --out /tmp/d.onnx --scenes 500 --epochs 1   # smoke run

Model contract (what the dagserve ``detect`` pipeline relies on):

* input ``images``: ``float32[N, 3, 320, 320]``, NCHW, RGB, values in ``[0, 1]``: the image
  letterboxed to 320x320 (see :func:`letterbox`), divided by 255;
* output ``output0``: ``float32[N, 4 + C, A]``, laid out like a raw YOLOv8 export: rows
  0..3 are the box centre x, centre y, width, height in input (letterboxed) pixels, rows
  ``4..4+C`` the per-class scores, already passed through a sigmoid (no objectness);
  ``A = 1600`` anchor points (a 40x40 grid of stride 8, row-major, point ``(i, j)`` at
  ``((j + 0.5) * 8, (i + 0.5) * 8)``);
* no NMS inside; the batch dimension is dynamic (``N``); ONNX opset 17.

Letterbox convention (shared with dagserve's ``image.letterbox`` with ``center: true``):
``r = min(320 / h, 320 / w)``, ``new_w = round(w * r)``, ``new_h = round(h * r)`` (Python's
round), bilinear resize to ``new_w x new_h``, pasted at ``left = (320 - new_w) // 2``,
``top = (320 - new_h) // 2`` on a canvas filled with 114. A box maps back to the source
image as ``x_src = (x - left) / (new_w / w)``, ``y_src = (y - top) / (new_h / h)``.

Training: centre-sampling assignment on a single stride-8 head fed by a small FPN
(every anchor point inside a box and within 2 strides of its centre is positive; a point
claimed by several boxes goes to the smallest), Quality Focal Loss for the classes (the
target of a positive is the IoU of its predicted box, so scores rank boxes by quality),
GIoU loss for the boxes, AdamW with warm-up and cosine decay, and an exponential moving
average of the weights, which is what gets exported. Images are JPEG-compressed and
resized either with Pillow's or with OpenCV-style bilinear interpolation during
training, so the model does not depend on which one the serving pipeline uses.

Evaluation: 200 held-out scenes (seeds ``>= 1_000_000``), JPEG quality 90, decoded,
letterboxed, run through onnxruntime, decoded like dagserve's ``detect.nms`` (best class
per anchor, ``score > 0.25``, class-aware greedy NMS at IoU 0.45, boxes mapped back to the
source image and clipped), then VOC all-point AP at IoU 0.5 per class, averaged (mAP@0.5).
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import platform
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

try:  # run as a script (examples/ on sys.path) or imported as examples.train_detector
    from synthetic import CLASS_NAMES, TRAIN_SEEDS, encode_jpeg, eval_seeds, make_scene
except ImportError:  # pragma: no cover - depends on how it is imported
    from examples.synthetic import CLASS_NAMES, TRAIN_SEEDS, encode_jpeg, eval_seeds, make_scene

INPUT_SIZE = 320
FILL = 114
STRIDE = 8
GRID = INPUT_SIZE // STRIDE
NUM_CLASSES = len(CLASS_NAMES)
VAL_SEED_START = 500_000  # per-epoch monitoring scenes: outside both training and evaluation seeds
REPO = Path(__file__).resolve().parent.parent

log = logging.getLogger("train_detector")


# -- letterbox -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Letterbox:
    """Where the source image went on the canvas: ``x_canvas = x_src * scale_x + left``."""

    scale_x: float
    scale_y: float
    left: int
    top: int
    width: int
    height: int

    def to_source(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``xyxy`` canvas boxes back to source pixels, clipped to the source image."""
        out = boxes.astype(np.float64).copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.left) / self.scale_x
        out[:, [1, 3]] = (out[:, [1, 3]] - self.top) / self.scale_y
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, self.width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, self.height)
        return out

    def to_canvas(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``xyxy`` source boxes onto the letterboxed canvas."""
        out = boxes.astype(np.float32).copy()
        out[:, [0, 2]] = out[:, [0, 2]] * self.scale_x + self.left
        out[:, [1, 3]] = out[:, [1, 3]] * self.scale_y + self.top
        return out


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV ``INTER_LINEAR`` taps along one axis: ``(i0, i1, weight of i1)``."""
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0, None)
    i0 = np.floor(x).astype(np.int64)
    frac = (x - i0).astype(np.float32)
    i0 = np.minimum(i0, n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, frac


def resize_linear_cv(image: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """Bilinear resize with OpenCV's ``INTER_LINEAR`` convention (half-pixel, no antialias).

    This is what dagserve's CPU ``image.letterbox`` kernel does (``cv2.resize``); the
    detector trains on it as well as on Pillow's (antialiased) bilinear, so either works.
    """
    y0, y1, fy = _linear_taps(image.shape[0], new_h)
    x0, x1, fx = _linear_taps(image.shape[1], new_w)
    src = image.astype(np.float32)
    rows = src[y0] * (1 - fy)[:, None, None] + src[y1] * fy[:, None, None]
    out = rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def letterbox(image: np.ndarray, size: int = INPUT_SIZE, fill: int = FILL,
              method: str = "pillow") -> tuple[np.ndarray, Letterbox]:
    """Letterbox an ``uint8[H, W, 3]`` image onto a ``size x size`` canvas (see module doc).

    ``method`` is ``"pillow"`` (``Image.resize(..., BILINEAR)``, the reference) or
    ``"cv"`` (:func:`resize_linear_cv`). Returns the ``uint8[size, size, 3]`` canvas and
    the geometry needed to map boxes back.
    """
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = min(max(round(w * r), 1), size), min(max(round(h * r), 1), size)
    left, top = (size - new_w) // 2, (size - new_h) // 2
    if (new_h, new_w) == (h, w):
        resized = image
    elif method == "pillow":
        resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))
    elif method == "cv":
        resized = resize_linear_cv(image, new_h, new_w)
    else:
        raise ValueError(f"unknown resize method {method!r}")
    canvas = np.full((size, size, 3), fill, dtype=np.uint8)
    canvas[top:top + new_h, left:left + new_w] = resized
    return canvas, Letterbox(new_w / w, new_h / h, left, top, w, h)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode as JPEG and decode again (Pillow), as a served image would be."""
    return np.asarray(Image.open(io.BytesIO(encode_jpeg(image, quality))).convert("RGB"))


# -- data ------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """Letterboxed training images ``uint8[N, S, S, 3]`` and per-image ``float32[K, 5]`` targets
    (``label, x1, y1, x2, y2`` in canvas pixels)."""

    images: np.ndarray
    targets: list[np.ndarray]


def training_sample(seed: int, aug_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scene ``seed``, JPEG-compressed (80%: quality 50..95), letterboxed with a random resizer."""
    rng = np.random.default_rng([aug_seed, seed])
    scene = make_scene(seed)
    image = scene.image
    if rng.random() < 0.8:
        image = jpeg_roundtrip(image, int(rng.integers(50, 96)))
    canvas, geom = letterbox(image, method="pillow" if rng.random() < 0.5 else "cv")
    boxes = geom.to_canvas(scene.boxes)
    target = np.concatenate([scene.labels[:, None].astype(np.float32), boxes], axis=1)
    return canvas, target


def build_dataset(count: int, aug_seed: int) -> Dataset:
    """The first ``count`` training scenes (seeds ``0..count-1``), pre-rendered in memory."""
    if count > len(TRAIN_SEEDS):
        raise ValueError(f"at most {len(TRAIN_SEEDS)} training scenes")
    images = np.empty((count, INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
    targets = []
    for i in range(count):
        images[i], target = training_sample(TRAIN_SEEDS[i], aug_seed)
        targets.append(target)
    return Dataset(images, targets)


def collate(data: Dataset, index: np.ndarray, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
    """A training batch: ``float32[B, 3, S, S]`` images in ``[0, 1]`` (channels-last memory) and
    ``float32[B, M, 6]`` padded targets (``valid, label, x1, y1, x2, y2``), with random
    horizontal/vertical flips, channel permutations and brightness/contrast jitter."""
    images = torch.from_numpy(data.images[index]).permute(0, 3, 1, 2).float().div_(255.0)
    most = max(1, max(len(data.targets[i]) for i in index))
    targets = torch.zeros(len(index), most, 6)
    for b, i in enumerate(index):
        t = torch.from_numpy(data.targets[i].copy())
        if rng.random() < 0.5:
            images[b] = images[b].flip(-1)
            t[:, [1, 3]] = INPUT_SIZE - t[:, [3, 1]]
        if rng.random() < 0.5:
            images[b] = images[b].flip(-2)
            t[:, [2, 4]] = INPUT_SIZE - t[:, [4, 2]]
        images[b] = images[b][torch.from_numpy(rng.permutation(3))]
        contrast, brightness = rng.uniform(0.75, 1.25), rng.uniform(-0.1, 0.1)
        images[b] = ((images[b] - 0.5) * contrast + 0.5 + brightness).clamp_(0, 1)
        targets[b, : len(t), 0] = 1
        targets[b, : len(t), 1:] = t
    return images.contiguous(memory_format=torch.channels_last), targets


# -- model -----------------------------------------------------------------------------------


class ConvBNAct(nn.Sequential):
    """Conv (no bias) + BatchNorm + SiLU, 'same' padding: the YOLOv8 ``Conv`` block."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1) -> None:
        super().__init__(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.SiLU(inplace=True))


class Bottleneck(nn.Module):
    """Two 3x3 convs with a residual connection."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = ConvBNAct(c, c), ConvBNAct(c, c)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.b(self.a(x))


class C2f(nn.Module):
    """YOLOv8's C2f: split, a chain of bottlenecks on one half, concatenate every stage, fuse."""

    def __init__(self, c_in: int, c_out: int, n: int = 1) -> None:
        super().__init__()
        self.half = c_out // 2
        self.cv1 = ConvBNAct(c_in, 2 * self.half, 1)
        self.blocks = nn.ModuleList(Bottleneck(self.half) for _ in range(n))
        self.cv2 = ConvBNAct((2 + n) * self.half, c_out, 1)

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.cv1(x).chunk(2, 1))
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.cv2(torch.cat(parts, 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): widens the receptive field of the deepest stage."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.cv1 = ConvBNAct(c, c // 2, 1)
        self.cv2 = ConvBNAct(c * 2, c, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cv1(x)
        a = self.pool(x)
        b = self.pool(a)
        return self.cv2(torch.cat([x, a, b, self.pool(b)], 1))


class ShapeDetector(nn.Module):
    """Backbone to stride 32, top-down FPN back to stride 8, one decoupled stride-8 head.

    ``forward`` returns the raw training outputs: ``ltrb`` distances ``float32[N, 4, A]``
    (pixels from the anchor point to the box's left/top/right/bottom edges) and class
    logits ``float32[N, C, A]``. :class:`ExportedDetector` turns them into YOLOv8's layout.
    """

    def __init__(self, widths: Sequence[int] = (16, 24, 48, 64, 96), num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.stem = nn.Sequential(ConvBNAct(3, w1, 3, 2), ConvBNAct(w1, w2, 3, 2), C2f(w2, w2, 1))
        self.stage3 = nn.Sequential(ConvBNAct(w2, w3, 3, 2), C2f(w3, w3, 2))
        self.stage4 = nn.Sequential(ConvBNAct(w3, w4, 3, 2), C2f(w4, w4, 2))
        self.stage5 = nn.Sequential(ConvBNAct(w4, w5, 3, 2), C2f(w5, w5, 1), SPPF(w5))
        self.fuse4 = C2f(w5 + w4, w4, 1)
        self.fuse3 = C2f(w4 + w3, w3, 1)
        self.box_head = nn.Sequential(ConvBNAct(w3, w3), nn.Conv2d(w3, 4, 1))
        self.cls_head = nn.Sequential(ConvBNAct(w3, w3), nn.Conv2d(w3, num_classes, 1))
        prior = 0.01  # start with every score near 1% (RetinaNet's prior) for a stable start
        nn.init.constant_(self.cls_head[-1].bias, -math.log((1 - prior) / prior))
        nn.init.constant_(self.box_head[-1].bias, 1.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        p3 = self.stage3(self.stem(x))
        p4 = self.stage4(p3)
        p5 = self.stage5(p4)
        f4 = self.fuse4(torch.cat([F.interpolate(p5, scale_factor=2.0, mode="nearest"), p4], 1))
        f3 = self.fuse3(torch.cat([F.interpolate(f4, scale_factor=2.0, mode="nearest"), p3], 1))
        ltrb = F.softplus(self.box_head(f3)) * STRIDE
        logits = self.cls_head(f3)
        # An explicit reshape (not flatten(2), whose -1 breaks onnxruntime at batch 0).
        n = x.shape[0]
        return ltrb.reshape(n, 4, GRID * GRID), logits.reshape(n, logits.shape[1], GRID * GRID)


def anchor_points(grid: int = GRID, stride: int = STRIDE) -> Tensor:
    """``float32[2, A]`` anchor centres (x row, y row), row-major over the grid."""
    coords = (torch.arange(grid, dtype=torch.float32) + 0.5) * stride
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()])


def ltrb_to_xyxy(ltrb: Tensor, anchors: Tensor) -> Tensor:
    """``[N, 4, A]`` distances + ``[2, A]`` points -> ``[N, 4, A]`` xyxy boxes."""
    return torch.cat([anchors - ltrb[:, :2], anchors + ltrb[:, 2:]], 1)


class ExportedDetector(nn.Module):
    """The served form: ``images -> output0 = [cx, cy, w, h, sigmoid(class logits)...] x A``."""

    def __init__(self, model: ShapeDetector) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("anchors", anchor_points())

    def forward(self, images: Tensor) -> Tensor:
        ltrb, logits = self.model(images)
        lt, rb = ltrb[:, :2], ltrb[:, 2:]
        centre = self.anchors + (rb - lt) * 0.5
        size = lt + rb
        return torch.cat([centre, size, logits.sigmoid()], 1)


# -- loss ------------------------------------------------------------------------------------


def box_iou_giou(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Element-wise IoU and GIoU of ``[..., 4]`` xyxy boxes."""
    iw = (torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    ih = (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0)
    inter = iw * ih
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter + 1e-7
    iou = inter / union
    cw = torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0])
    ch = torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])
    hull = cw * ch + 1e-7
    return iou, iou - (hull - union) / hull


def assign(targets: Tensor, anchors: Tensor, radius: float = 2.0) -> tuple[Tensor, Tensor]:
    """Centre-sampling assignment: ``(positive mask [B, A], matched target index [B, A])``.

    A point is a candidate of a box when it lies inside the box and within
    ``radius * STRIDE`` of its centre (in x and y); the grid cell holding the centre is
    always a candidate, so tiny boxes get one. A point claimed by several boxes goes to
    the smallest one.
    """
    valid = targets[..., 0] > 0  # [B, M]
    boxes = targets[..., 2:6]  # [B, M, 4]
    ax, ay = anchors[0].view(1, 1, -1), anchors[1].view(1, 1, -1)
    x1, y1, x2, y2 = (boxes[..., k : k + 1] for k in range(4))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    inside = (ax > x1) & (ax < x2) & (ay > y1) & (ay < y2)
    near = ((ax - cx).abs() < radius * STRIDE) & ((ay - cy).abs() < radius * STRIDE)
    cand = inside & near
    centre_cell = ((cy / STRIDE).floor().clamp(0, GRID - 1) * GRID + (cx / STRIDE).floor().clamp(0, GRID - 1)).long()
    cand.scatter_(2, centre_cell, True)
    cand &= valid[..., None]
    area = ((x2 - x1) * (y2 - y1)).expand_as(cand)
    cost = torch.where(cand, area, torch.full_like(area, float("inf")))
    best, index = cost.min(dim=1)
    return torch.isfinite(best), index


def detection_loss(ltrb: Tensor, logits: Tensor, targets: Tensor, anchors: Tensor) -> tuple[Tensor, dict[str, float]]:
    """Quality focal loss (classes) + 2 x GIoU loss (boxes), both per positive point."""
    positive, index = assign(targets, anchors)
    num_pos = max(int(positive.sum()), 1)
    pred_boxes = ltrb_to_xyxy(ltrb, anchors).transpose(1, 2)  # [B, A, 4]
    matched = torch.gather(targets, 1, index[..., None].expand(-1, -1, 6))  # [B, A, 6]
    iou, giou = box_iou_giou(pred_boxes[positive], matched[positive][:, 2:6])
    box_loss = (1.0 - giou).sum() / num_pos
    quality = torch.zeros_like(logits)  # [B, C, A]
    labels = matched[..., 1].long()
    b_idx, a_idx = positive.nonzero(as_tuple=True)
    quality[b_idx, labels[positive], a_idx] = iou.detach().clamp(min=0.0)
    prob = logits.sigmoid()
    bce = F.binary_cross_entropy_with_logits(logits, quality, reduction="none")
    cls_loss = (bce * (prob - quality).abs().pow(2)).sum() / num_pos
    total = cls_loss + 2.0 * box_loss
    parts = {"cls": float(cls_loss.detach()), "box": float(box_loss.detach()),
             "iou": float(iou.detach().mean()) if iou.numel() else 0.0}
    return total, parts


# -- training --------------------------------------------------------------------------------


class EMA:
    """Exponential moving average of a model's weights (and buffers), ramped up early."""

    def __init__(self, model: nn.Module, decay: float, ramp: float = 200.0) -> None:
        import copy

        self.model = copy.deepcopy(model).eval()
        self.decay, self.ramp, self.updates = decay, ramp, 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.ramp))
        source = model.state_dict()
        for name, value in self.model.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[name].detach(), alpha=1 - d)
            else:
                value.copy_(source[name])


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv weights only (not on BatchNorm or biases)."""
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 5% of ``base``."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))


def train(args: argparse.Namespace) -> nn.Module:
    """Build the data, train, and return the EMA model (eval mode)."""
    t0 = time.perf_counter()
    data = build_dataset(args.scenes, args.seed)
    log.info("data: %d scenes rendered in %.1f s (%d objects)", args.scenes, time.perf_counter() - t0,
             sum(len(t) for t in data.targets))
    torch.manual_seed(args.seed)
    model = ShapeDetector(args.widths).to(memory_format=torch.channels_last)
    log.info("model: %d parameters", sum(p.numel() for p in model.parameters()))
    ema = EMA(model, args.ema)
    opt = torch.optim.AdamW(param_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.99))
    anchors = anchor_points()
    rng = np.random.default_rng(args.seed)
    steps_per_epoch = args.scenes // args.batch
    total = steps_per_epoch * args.epochs
    step = 0
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(args.scenes)
        sums = {"loss": 0.0, "cls": 0.0, "box": 0.0, "iou": 0.0}
        te = time.perf_counter()
        for k in range(steps_per_epoch):
            images, targets = collate(data, order[k * args.batch : (k + 1) * args.batch], rng)
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, args.lr, args.warmup)
            ltrb, logits = model(images)
            loss, parts = detection_loss(ltrb, logits, targets, anchors)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            ema.update(model)
            step += 1
            sums["loss"] += float(loss.detach())
            for key, value in parts.items():
                sums[key] += value
        means = {key: value / steps_per_epoch for key, value in sums.items()}
        val = evaluate_torch(ema.model, range(VAL_SEED_START, VAL_SEED_START + args.val_scenes))
        log.info("epoch %d/%d  loss %.4f  cls %.4f  box(1-GIoU) %.4f  train IoU %.3f  val mAP@0.5 %.4f "
                 "(%d scenes)  %.0f s", epoch + 1, args.epochs, means["loss"], means["cls"], means["box"],
                 means["iou"], val, args.val_scenes, time.perf_counter() - te)
    return ema.model.eval()


# -- inference and evaluation ----------------------------------------------------------------


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS by descending score (stable); drops a box when ``IoU > iou_threshold``."""
    order = np.argsort(-scores, kind="stable")
    areas = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0)
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
        ih = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
        inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return keep


def postprocess(output: np.ndarray, geom: Letterbox, score_threshold: float = 0.25, iou_threshold: float = 0.45,
                max_detections: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's ``[4+C, A]`` output -> (xyxy source boxes, scores, labels), like ``detect.nms``."""
    cls = output[4:]
    best, labels = cls.max(axis=0), cls.argmax(axis=0)
    index = np.flatnonzero(best > np.float32(score_threshold))
    c = output[:4, index].T.astype(np.float64)
    boxes = np.stack([c[:, 0] - c[:, 2] / 2, c[:, 1] - c[:, 3] / 2, c[:, 0] + c[:, 2] / 2, c[:, 1] + c[:, 3] / 2], 1)
    scores, labels = best[index], labels[index]
    keep: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep.extend(members[nms(boxes[members], scores[members], iou_threshold)].tolist())
    keep_arr = np.array(sorted(keep, key=lambda i: -scores[i]), dtype=np.int64)[:max_detections]
    return geom.to_source(boxes[keep_arr].reshape(-1, 4)), scores[keep_arr], labels[keep_arr]


def average_precision(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC all-point interpolated AP (area under the monotone precision envelope)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    step = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[step + 1] - r[step]) * p[step + 1]))


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[P, Q]`` IoU of xyxy boxes."""
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def mean_average_precision(detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                           truths: list[tuple[np.ndarray, np.ndarray]], iou_threshold: float = 0.5,
                           num_classes: int = NUM_CLASSES) -> tuple[float, list[float]]:
    """mAP@``iou_threshold``: per class, detections by descending score matched greedily to the
    best-overlapping unmatched ground truth of that image; VOC all-point AP; classes averaged."""
    per_class = []
    for c in range(num_classes):
        records: list[tuple[float, int, np.ndarray]] = []
        total = 0
        for i, ((boxes, scores, labels), (_gt_boxes, gt_labels)) in enumerate(zip(detections, truths)):
            total += int((gt_labels == c).sum())
            records.extend((float(s), i, b) for b, s in zip(boxes[labels == c], scores[labels == c]))
        records.sort(key=lambda r: -r[0])
        used = [np.zeros(int((g[1] == c).sum()), dtype=bool) for g in truths]
        tp = np.zeros(len(records))
        for k, (_, i, box) in enumerate(records):
            gts = truths[i][0][truths[i][1] == c]
            if len(gts) == 0:
                continue
            ious = pairwise_iou(box[None], gts)[0]
            j = int(ious.argmax())
            if ious[j] >= iou_threshold and not used[i][j]:
                used[i][j] = True
                tp[k] = 1
        if total == 0:
            continue
        ctp = np.cumsum(tp)
        recall = ctp / total
        precision = ctp / np.arange(1, len(records) + 1)
        per_class.append(average_precision(recall, precision))
    return float(np.mean(per_class)), per_class


def eval_inputs(seeds: Iterable[int], method: str = "pillow", quality: int = 90
                ) -> tuple[np.ndarray, list[Letterbox], list[tuple[np.ndarray, np.ndarray]]]:
    """Held-out scenes as served: JPEG (``quality``) -> decode -> letterbox -> ``[N,3,S,S]`` in [0, 1]."""
    batch, geoms, truths = [], [], []
    for seed in seeds:
        scene = make_scene(seed)
        canvas, geom = letterbox(jpeg_roundtrip(scene.image, quality), method=method)
        batch.append(canvas.transpose(2, 0, 1))
        geoms.append(geom)
        truths.append((scene.boxes.astype(np.float64), scene.labels))
    return np.stack(batch).astype(np.float32) / 255.0, geoms, truths


@torch.no_grad()
def evaluate_torch(model: ShapeDetector, seeds: Iterable[int]) -> float:
    """mAP@0.5 of a (training) torch model on ``seeds``, for monitoring."""
    images, geoms, truths = eval_inputs(seeds)
    exported = ExportedDetector(model).eval()
    outputs = torch.cat([exported(torch.from_numpy(images[i : i + 16])) for i in range(0, len(images), 16)]).numpy()
    return mean_average_precision([postprocess(o, g) for o, g in zip(outputs, geoms)], truths)[0]


def evaluate_onnx(path: Path, seeds: Sequence[int], method: str) -> tuple[float, list[float], float]:
    """mAP@0.5 (and per-class AP) of the exported model through onnxruntime, and ms per image at batch 1."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images, geoms, truths = eval_inputs(seeds, method=method)
    outputs = np.concatenate([session.run(["output0"], {"images": images[i : i + 8]})[0]
                              for i in range(0, len(images), 8)])
    mean, per_class = mean_average_precision([postprocess(o, g) for o, g in zip(outputs, geoms)], truths)
    for _ in range(5):
        session.run(["output0"], {"images": images[:1]})
    t = time.perf_counter()
    for i in range(50):
        session.run(["output0"], {"images": images[i % len(images)][None]})
    return mean, per_class, (time.perf_counter() - t) / 50 * 1000


# -- export ----------------------------------------------------------------------------------


def export(model: ShapeDetector, out: Path) -> None:
    """Export to ONNX (opset 17, dynamic batch ``N``, constants folded) and check the graph."""
    import onnx

    exported = ExportedDetector(model.to(memory_format=torch.contiguous_format)).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        exported, (torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),), str(out), dynamo=False,
        input_names=["images"], output_names=["output0"], opset_version=17, do_constant_folding=True,
        dynamic_axes={"images": {0: "N"}, "output0": {0: "N"}},
    )
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    proto.doc_string = "dagserve example shape detector: " + ", ".join(CLASS_NAMES)
    onnx.save(proto, str(out))


def verify(model: ShapeDetector, path: Path) -> tuple[float, float]:
    """Max |onnxruntime - torch| on 4 held-out images, and max |batch 1 - batch 4| in onnxruntime."""
    import onnxruntime as ort

    images, _, _ = eval_inputs(eval_seeds(4))
    with torch.no_grad():
        reference = ExportedDetector(model).eval()(torch.from_numpy(images)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch4 = session.run(["output0"], {"images": images})[0]
    batch1 = np.concatenate([session.run(["output0"], {"images": images[i : i + 1]})[0] for i in range(4)])
    return float(np.abs(batch4 - reference).max()), float(np.abs(batch4 - batch1).max())


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line; the defaults reproduce the committed model."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "pipelines/models/detector.onnx")
    p.add_argument("--log", type=Path, default=REPO / "examples/logs/train_detector.log")
    p.add_argument("--widths", type=lambda v: tuple(int(c) for c in v.split(",")), default=(16, 24, 48, 64, 96),
                   help="channels of the five backbone stages")
    p.add_argument("--scenes", type=int, default=4000, help="training scenes (seeds 0..scenes-1)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=100, help="warm-up steps")
    p.add_argument("--ema", type=float, default=0.998, help="EMA decay of the exported weights")
    p.add_argument("--seed", type=int, default=0, help="seed of init, shuffling and augmentation")
    p.add_argument("--val-scenes", type=int, default=50, help="monitoring scenes per epoch")
    p.add_argument("--eval-scenes", type=int, default=200, help="held-out scenes of the final mAP")
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
    """Train, export, verify and evaluate; non-zero exit when the mAP target is missed."""
    import onnx
    import onnxruntime

    args = parse_args(argv)
    setup_logging(args.log)
    torch.set_num_threads(args.threads)
    np.random.seed(args.seed)
    log.info("train_detector: %s", " ".join(f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()))
    log.info("versions: python %s, torch %s, onnx %s, onnxruntime %s, numpy %s", platform.python_version(),
             torch.__version__, onnx.__version__, onnxruntime.__version__, np.__version__)
    start = time.perf_counter()
    model = train(args)
    train_s = time.perf_counter() - start
    log.info("training wall time: %.1f s", train_s)
    export(model, args.out)
    max_diff, batch_diff = verify(model, args.out)
    log.info("export: %s (%.1f KiB); max |ort - torch| = %.2e; max |batch1 - batch4| = %.2e",
             args.out, args.out.stat().st_size / 1024, max_diff, batch_diff)
    seeds = list(eval_seeds(args.eval_scenes))
    results = {}
    for method in ("pillow", "cv"):
        mean, per_class, ms = evaluate_onnx(args.out, seeds, method)
        results[method] = mean
        log.info("held-out mAP@0.5 (%d scenes, seeds %d..%d, JPEG q90, %s letterbox, onnxruntime): %.4f  [%s]"
                 "  (%.2f ms/image at batch 1)", len(seeds), seeds[0], seeds[-1], method, mean,
                 ", ".join(f"{n} {ap:.4f}" for n, ap in zip(CLASS_NAMES, per_class)), ms)
    log.info("total wall time: %.1f s", time.perf_counter() - start)
    return 0 if min(results.values()) >= 0.93 and max_diff < 1e-3 and batch_diff < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
