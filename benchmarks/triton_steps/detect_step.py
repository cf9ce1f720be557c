"""One step of the ``detect`` ensemble, running dagserve's own kernels inside Triton.

The same file serves the four steps; ``parameters.step`` in config.pbtxt picks it:

* ``decode``    ``image`` (BYTES [1])          -> ``decoded`` (UINT8 [H,W,3])
* ``letterbox`` ``decoded``                    -> ``images`` (FP32 [3,320,320]), ``transform`` (FP32 [6])
* ``model``     ``images``                     -> ``output0`` (FP32 [4+C,A]), one onnxruntime run per
                                                  dynamic batch (requests concatenated)
* ``nms``       ``output0``, ``transform``     -> ``boxes`` [K,4], ``scores`` [K], ``labels`` [K]

Decode, letterbox and NMS are dagserve's kernels (``dagserve.ops.kernels``), built
by hand from the same params as ``pipelines/detect.yaml`` (``parameters.kernel_params``,
JSON), so both servers run the same code; the model step runs onnxruntime with the
same session options as dagserve's backend. Where the repository is:
``parameters.dagserve_root`` (default: four directories up from this file). The
peers' Python has no Pillow/OpenCV, so ``parameters.site_packages`` (dagserve's
virtual environment) is appended to ``sys.path``: NumPy still comes from the peers'
own environment (numpy<2), and dagserve's OpenCV and Pillow wheels load against it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils


def _setup_paths(params: dict[str, str]) -> None:
    root = params.get("dagserve_root") or str(Path(__file__).absolute().parents[4])
    if root not in sys.path:
        sys.path.insert(0, root)
    site = params.get("site_packages")
    if site and site not in sys.path:
        sys.path.append(site)


def _kernel(op: str, params: dict[str, Any]) -> Any:
    from dagserve.ops.base import KernelContext
    from dagserve.ops.kernels import detect, image
    from dagserve.types import parse_device

    ctx = KernelContext(node=op, op=op, params=params, device=parse_device("cpu"), batched=True,
                        input_types={}, output_types={})
    factory = {"image.decode": image.decode, "image.letterbox": image.letterbox, "detect.nms": detect.nms}[op]
    return factory(ctx)


class TritonPythonModel:
    """One detect step (see the module docstring)."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        _setup_paths(params)
        self.step = params["step"]
        kernel_params = json.loads(params.get("kernel_params", "{}"))
        if self.step == "decode":
            self.kernel = _kernel("image.decode", kernel_params)
        elif self.step == "letterbox":
            self.kernel = _kernel("image.letterbox", kernel_params)
        elif self.step == "nms":
            self.kernel = _kernel("detect.nms", kernel_params)
        elif self.step == "model":
            import onnxruntime as ort

            try:
                from dagserve.backends.onnxruntime_backend import session_options

                options = session_options(kernel_params)
            except ImportError:  # same settings, spelled out
                options = ort.SessionOptions()
                options.intra_op_num_threads = int(kernel_params.get("intra_op_threads", 1))
                options.inter_op_num_threads = int(kernel_params.get("inter_op_threads", 1))
            root = params.get("dagserve_root") or str(Path(__file__).absolute().parents[4])
            path = Path(params["model_path"])
            self.session = ort.InferenceSession(str(path if path.is_absolute() else Path(root) / path), options,
                                                providers=["CPUExecutionProvider"])
        else:
            raise ValueError(f"unknown step {self.step!r}")

    def execute(self, requests: list[Any]) -> list[Any]:
        if self.step == "model":
            return self._model(requests)
        responses = []
        for request in requests:
            try:
                responses.append(pb_utils.InferenceResponse(output_tensors=self._one(request)))
            except Exception as exc:  # a bad item fails its own request only
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{self.step}: {exc}")))
        return responses

    def _one(self, request: Any) -> list[Any]:
        get = pb_utils.get_input_tensor_by_name
        if self.step == "decode":
            data = get(request, "image").as_numpy().reshape(-1)
            images = [self.kernel({"data": item})["image"] for item in data]
            return [pb_utils.Tensor("decoded", np.stack(images))]
        if self.step == "letterbox":
            decoded = get(request, "decoded").as_numpy()
            outs = [self.kernel({"image": item}) for item in decoded]
            return [pb_utils.Tensor("images", np.stack([o["image"] for o in outs])),
                    pb_utils.Tensor("transform", np.stack([o["transform"] for o in outs]))]
        predictions = get(request, "output0").as_numpy()
        transform = get(request, "transform").as_numpy()
        outs = [self.kernel({"predictions": p, "transform": t}) for p, t in zip(predictions, transform)]
        if len(outs) != 1:  # ragged across items: perf_analyzer and the examples send one image per request
            raise ValueError("send one image per request")
        o = outs[0]
        return [pb_utils.Tensor("boxes", o["boxes"][None]), pb_utils.Tensor("scores", o["scores"][None]),
                pb_utils.Tensor("labels", o["labels"][None])]

    def _model(self, requests: list[Any]) -> list[Any]:
        arrays = [pb_utils.get_input_tensor_by_name(r, "images").as_numpy() for r in requests]
        sizes = [len(a) for a in arrays]
        batch = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        (out,) = self.session.run(["output0"], {"images": np.ascontiguousarray(batch)})
        responses, start = [], 0
        for n in sizes:
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor("output0", out[start:start + n])]))
            start += n
        return responses
