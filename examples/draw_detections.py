"""Detect objects in an image through the served ``detect`` pipeline and save a picture of them.

    dagserve serve pipelines/ &
    python examples/draw_detections.py scene.jpg -o detections.png
    python examples/draw_detections.py --synthetic 1000001 -o detections.png   # a held-out scene

Boxes come back in the source image's pixels (the pipeline maps them back through
the letterbox transform), so they are drawn on the original image as is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))

COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240)]


def detect(url: str, data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=object))
    result = client.infer("detect", [tensor])
    return result.as_numpy("boxes")[0], result.as_numpy("scores")[0], result.as_numpy("labels")[0]


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
    import io

    picture = Image.open(io.BytesIO(data)).convert("RGB")
    draw = ImageDraw.Draw(picture)
    for box, score, label in zip(boxes, scores, labels):
        colour = COLOURS[int(label) % len(COLOURS)]
        name = CLASS_NAMES[int(label)] if int(label) < len(CLASS_NAMES) else str(int(label))
        draw.rectangle([float(v) for v in box], outline=colour, width=3)
        draw.text((float(box[0]) + 3, float(box[1]) + 2), f"{name} {score:.2f}", fill=colour)
        print(f"{name:10} {score:.3f}  [{', '.join(f'{v:.1f}' for v in box)}]")
    picture.save(args.output)
    print(f"wrote {args.output} ({len(boxes)} detections)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
