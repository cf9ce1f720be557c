"""Detect objects in an image through the served ``detect`` pipeline and save a picture of them.

    dagserve serve pipelines/ &
    python examples/draw_detections.py scene.jpg -o /tmp/detections.png
    python examples/draw_detections.py --synthetic 1000001 -o /tmp/detections.png   # a held-out scene

Boxes come back in the source image's pixels (the pipeline maps them back through
the letterbox transform), so they are drawn on the original image as is. Each label
is written on a tab filled with its box's colour, in black or white, whichever
contrasts more with that colour (so it reads on any photo and in any class colour).
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parent))

COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Label:
    """Where one detection's label went: its tab (x0, y0, x1, y1), the tab's fill and the text's colour."""

    text: str
    tab: tuple[int, int, int, int]
    fill: Colour
    ink: Colour


def relative_luminance(colour: Colour) -> float:
    """WCAG 2 relative luminance of an sRGB colour (0 black .. 1 white)."""
    def channel(c: int) -> float:
        v = c / 255.0
        return v / 12.92 if v <= 0.04045 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in colour)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: Colour, b: Colour) -> float:
    """WCAG 2 contrast ratio of two colours (1 .. 21; 4.5 is the minimum for body text)."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def ink_for(fill: Colour) -> Colour:
    """Black or white, whichever reads better on ``fill`` (one of them always reaches 4.5:1)."""
    black, white = (0, 0, 0), (255, 255, 255)
    return black if contrast(black, fill) >= contrast(white, fill) else white


def detect(url: str, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=object))
    result = client.infer("detect", [tensor])
    return result.as_numpy("boxes")[0], result.as_numpy("scores")[0], result.as_numpy("labels")[0]


def draw_detections(picture: Image.Image, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    class_names: list[str]) -> list[Label]:
    """Draw each box in its class colour, with ``name score`` on a filled tab at its top-left corner."""
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(12, picture.height // 40))
    placed = []
    for box, score, label in zip(boxes, scores, labels):
        colour = COLOURS[int(label) % len(COLOURS)]
        name = class_names[int(label)] if 0 <= int(label) < len(class_names) else str(int(label))
        text = f"{name} {score:.2f}"
        x0, y0 = float(box[0]), float(box[1])
        draw.rectangle([float(v) for v in box], outline=colour, width=3)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        width, height = int(right - left) + 6, int(bottom - top) + 4
        ty = y0 - height if y0 - height >= 0 else y0  # above the box, or inside it at the top edge
        tab = (int(x0), int(ty), int(x0) + width, int(ty) + height)
        ink = ink_for(colour)
        draw.rectangle(tab, fill=colour)
        draw.text((tab[0] + 3 - left, tab[1] + 2 - top), text, fill=ink, font=font)
        placed.append(Label(text, tab, colour, ink))
    return placed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", help="an encoded image file")
    parser.add_argument("--synthetic", type=int, help="use the synthetic scene with this seed instead")
    parser.add_argument("-o", "--output", default="detections.png")
    parser.add_argument("--url", default="127.0.0.1:8001")
    args = parser.parse_args()
    from synthetic import CLASS_NAMES, encode_jpeg, make_scene

    if args.synthetic is not None:
        data = encode_jpeg(make_scene(args.synthetic).image)
    elif args.image:
        data = Path(args.image).read_bytes()
    else:
        parser.error("give an image file or --synthetic SEED")
    boxes, scores, labels = detect(args.url, data)
    picture = Image.open(io.BytesIO(data)).convert("RGB")
    for box, label in zip(boxes, draw_detections(picture, boxes, scores, labels, list(CLASS_NAMES))):
        print(f"{label.text:16} [{', '.join(f'{v:.1f}' for v in box)}]")
    picture.save(args.output)
    print(f"wrote {args.output} ({len(boxes)} detections)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
