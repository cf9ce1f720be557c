"""The OCR pipeline as Triton users must write it: one python model that calls the others (BLS).

Triton ensembles cannot fan out (one text box -> one crop -> classifier -> recogniser),
so the pipeline is a python-backend model whose ``execute`` loops over each request's
text lines and calls ``ocr_det``, ``ocr_cls`` and ``ocr_rec`` with
``pb_utils.InferenceRequest(...).exec()``, batching the lines of one image as RapidOCR
does (sorted by aspect ratio, 6 per call, the recogniser's batch padded to its widest
line). Lines of different requests never share a model call: that is what BLS loses.

The steps around the models are dagserve's own kernels (``dagserve.ops.kernels.ocr``)
with RapidOCR's settings, so both servers run the same code; the interface is that of
``pipelines/ocr.yaml``: ``image`` (BYTES [1]) in; ``text`` (BYTES [1,K]), ``score``
(FP32 [1,K]) and ``box`` (FP32 [1,K,4,2]) out.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

BATCH = 6
CLS_THRESHOLD = 0.9
TEXT_SCORE = 0.5


def _setup_paths(params: dict[str, str]) -> None:
    root = params.get("dagserve_root") or str(Path(__file__).absolute().parents[4])
    if root not in sys.path:
        sys.path.insert(0, root)
    site = params.get("site_packages")
    if site and site not in sys.path:
        sys.path.append(site)


def _kernels(models: Path) -> dict[str, Any]:
    from dagserve.ops.base import KernelContext
    from dagserve.ops.kernels import image, ocr
    from dagserve.types import parse_device

    def make(factory: Any, op: str, files: dict[str, str] | None = None, **params: Any) -> Any:
        return factory(KernelContext(node=op, op=op, params=params, device=parse_device("cpu"), batched=True,
                                     input_types={}, output_types={}, files=files or {}))

    rec = str(models / "ch_PP-OCRv4_rec_infer.onnx")
    return {
        "decode": make(image.decode, "image.decode", color="bgr"),
        "prepare": make(ocr.det_prepare, "ocr.det_prepare"),
        "boxes": make(ocr.db_boxes, "ocr.db_boxes"),
        "warp": make(ocr.warp_quad, "image.warp_quad"),
        "cls_resize": make(ocr.text_resize, "ocr.text_resize", width=192),
        "rec_resize": make(ocr.text_resize, "ocr.text_resize"),
        "rotate": make(ocr.rotate, "image.rotate", degrees=180),
        "ctc": make(ocr.ctc_decode, "ocr.ctc_decode", {"characters": rec}, characters=rec),
    }


def _call(model: str, x: np.ndarray) -> np.ndarray:
    request = pb_utils.InferenceRequest(model_name=model, requested_output_names=["y"],
                                        inputs=[pb_utils.Tensor("x", np.ascontiguousarray(x, dtype=np.float32))])
    response = request.exec()
    if response.has_error():
        raise RuntimeError(f"{model}: {response.error().message()}")
    return pb_utils.get_output_tensor_by_name(response, "y").as_numpy()


class TritonPythonModel:
    """The whole OCR pipeline for each request (see the module docstring)."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        _setup_paths(params)
        from benchmarks.triton_steps.ocr_model import rapidocr_models

        self.k = _kernels(rapidocr_models(params))

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                data = pb_utils.get_input_tensor_by_name(request, "image").as_numpy().reshape(-1)
                if len(data) != 1:
                    raise ValueError("send one image per request")
                responses.append(pb_utils.InferenceResponse(output_tensors=self._ocr(data[0])))
            except Exception as exc:  # a bad image fails its own request only
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"ocr: {exc}")))
        return responses

    def _ocr(self, data: Any) -> list[Any]:
        k = self.k
        image = k["decode"]({"data": data})["image"]
        prepared = k["prepare"]({"image": image})
        probability = _call("ocr_det", prepared["input"][None])[0]
        found = k["boxes"]({"probability": probability, "image": prepared["image"], "transform": prepared["transform"]})
        crops = [k["warp"]({"image": prepared["image"], "quad": q})["image"] for q in found["quads"]]
        order = np.argsort([c.shape[1] / c.shape[0] for c in crops], kind="stable")
        for start in range(0, len(crops), BATCH):
            chunk = order[start:start + BATCH]
            probs = _call("ocr_cls", np.stack([k["cls_resize"]({"image": crops[i]})["image"] for i in chunk]))
            for i, p in zip(chunk, probs):
                if p.argmax() == 1 and p[1] > CLS_THRESHOLD:
                    crops[i] = k["rotate"]({"image": crops[i]})["image"]
        texts: list[bytes] = [b""] * len(crops)
        scores = np.zeros(len(crops), dtype=np.float32)
        for start in range(0, len(crops), BATCH):
            chunk = order[start:start + BATCH]
            lines = [k["rec_resize"]({"image": crops[i]})["image"] for i in chunk]
            width = max(320, *(line.shape[2] for line in lines))
            batch = np.zeros((len(lines), 3, 48, width), dtype=np.float32)
            for j, line in enumerate(lines):
                batch[j, :, :, :line.shape[2]] = line
            for i, p in zip(chunk, _call("ocr_rec", batch)):
                out = k["ctc"]({"probabilities": p})
                texts[i], scores[i] = out["text"][()], out["score"]
        keep = [i for i in range(len(crops)) if scores[i] >= TEXT_SCORE]
        text = np.array([texts[i] for i in keep], dtype=object).reshape(1, -1)
        return [pb_utils.Tensor("text", text),
                pb_utils.Tensor("score", scores[keep].reshape(1, -1)),
                pb_utils.Tensor("box", found["boxes"][keep].reshape(1, -1, 4, 2))]
