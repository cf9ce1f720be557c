"""One PP-OCR model (detector, angle classifier or recogniser) as a Triton python-backend model.

This Triton build has no onnxruntime backend, so each model is a python model that
runs onnxruntime itself with the session options dagserve's ``model.onnx`` uses
(one intra-op thread per instance). ``parameters.model_file`` names the file inside
the installed ``rapidocr_onnxruntime`` package, found through ``parameters.site_packages``
(dagserve's virtual environment, appended to ``sys.path`` as the detect steps do).

Requests of one dynamic batch whose inputs share a shape run as one onnxruntime call
(concatenated); requests with another shape (a recogniser batch padded to another
width) run in calls of their own, which is what a Triton user's model does.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def rapidocr_models(params: dict[str, str]) -> Path:
    """The ``models`` folder of the installed RapidOCR package."""
    site = params.get("site_packages")
    if site and site not in sys.path:
        sys.path.append(site)
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        raise RuntimeError("rapidocr_onnxruntime is not installed (pip install -e '.[ocr]' in dagserve's venv)")
    return Path(spec.origin).parent / "models"


class TritonPythonModel:
    """``x`` (FP32 [3,H,W]) -> ``y`` (the model's only output)."""

    def initialize(self, args: dict[str, str]) -> None:
        import onnxruntime as ort

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        path = rapidocr_models(params) / params["model_file"]
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def execute(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(r, "x").as_numpy() for r in requests]
        outputs: list[Any] = [None] * len(arrays)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, a in enumerate(arrays):
            by_shape.setdefault(a.shape[1:], []).append(i)
        for members in by_shape.values():
            batch = np.concatenate([arrays[i] for i in members]) if len(members) > 1 else arrays[members[0]]
            (out,) = self.session.run(None, {self.input: np.ascontiguousarray(batch)})
            start = 0
            for i in members:
                n = len(arrays[i])
                outputs[i] = out[start:start + n]
                start += n
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("y", o)]) for o in outputs]
