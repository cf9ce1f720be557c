"""The ``detect`` pipeline as the benchmarks use it: its spec, its plan, real JPEGs, Triton's twin.

Inputs are real images: held-out synthetic scenes (``examples/synthetic.py``: real
scikit-image photographs, 240-480 px, with pasted shapes), JPEG quality 90, the
same data the detector's end-to-end test uses. perf_analyzer cycles through them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._perf import bytes_input_json
from benchmarks._servers import REPO, dagserve_site_packages

__all__ = ["DetectSetup", "find_spec", "jpeg_inputs", "load", "triton_repo"]

TRITON_MODELS = ["detect", "detect_decode", "detect_letterbox", "detect_model", "detect_nms"]
EVAL_SEED_START = 1_000_000


def find_spec(override: str | None = None) -> Path | None:
    """``--detect-spec`` if given, else ``pipelines/detect.yaml`` if it exists."""
    if override:
        return Path(override).resolve()
    path = REPO / "pipelines" / "detect.yaml"
    return path if path.exists() else None


def jpeg_inputs(count: int) -> list[bytes]:
    """``count`` held-out synthetic scenes as JPEG bytes (quality 90)."""
    sys.path.insert(0, str(REPO / "examples"))
    try:
        from synthetic import encode_jpeg, make_scene  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    return [encode_jpeg(make_scene(EVAL_SEED_START + i).image, 90) for i in range(count)]


@dataclass
class DetectSetup:
    """What the sections need to know about ``detect``.

    Attributes:
        spec: the spec file.
        plan: its compiled Plan (CPU target).
        nodes: op name -> plan node (``image.decode``, ``image.letterbox``, ``model.onnx``, ``detect.nms``).
        model_path: absolute path of the detector.
        images: JPEG bytes, in perf_analyzer's order.
        input_json: perf_analyzer ``--input-data`` file with those images.
    """

    spec: Path
    plan: Any
    nodes: dict[str, Any]
    model_path: Path
    images: list[bytes]
    input_json: Path

    @property
    def name(self) -> str:
        return str(self.plan.name)

    @property
    def input_name(self) -> str:
        return str(self.plan.inputs[0].name)

    def triton_params(self) -> dict[str, str]:
        """``parameters`` for the Triton detect steps: paths, and the same kernel params as the plan."""
        return {"dagserve_root": str(REPO), "site_packages": dagserve_site_packages(),
                "model_path": str(self.model_path)}

    def triton_step_params(self) -> dict[str, dict[str, str]]:
        """Per Triton step: ``kernel_params`` (JSON) taken from the compiled plan."""
        model = self.nodes["model.onnx"]
        return {
            "detect_decode": {"kernel_params": json.dumps(self.nodes["image.decode"].params)},
            "detect_letterbox": {"kernel_params": json.dumps(self.nodes["image.letterbox"].params)},
            "detect_model": {"kernel_params": json.dumps({k: v for k, v in model.params.items() if k != "path"})},
            "detect_nms": {"kernel_params": json.dumps(self.nodes["detect.nms"].params)},
        }


def triton_repo(setup: DetectSetup, dst: Path, instances: int) -> Path:
    """A Triton repository for ``detect`` with ``instances`` per step, mirroring the plan's settings."""
    from benchmarks._servers import prepare_triton_repo

    if setup.name != "detect" or setup.input_name != "image":
        raise RuntimeError(f"the Triton twin is 'detect' with input 'image'; the spec has '{setup.name}' with "
                           f"'{setup.input_name}': rename them in benchmarks/triton_repo/detect*/config.pbtxt")
    batch = int(setup.plan.max_batch_size)
    model = setup.nodes["model.onnx"].batching
    edits: dict[str, dict[str, int]] = {m: {"max_batch_size": batch} for m in TRITON_MODELS}
    edits["detect_model"] = {"max_batch_size": max(batch, int(model["max_batch_size"])),
                             "max_queue_delay_microseconds": int(model["max_queue_delay_us"])}
    return prepare_triton_repo(dst, TRITON_MODELS, instances, setup.triton_params(), setup.triton_step_params(),
                               edits)


def load(spec: Path, work: Path, count: int = 64) -> DetectSetup:
    """Compile ``spec``, check it is a decode -> letterbox -> model -> NMS pipeline, write the inputs.

    Raises:
        RuntimeError: the spec does not compile or lacks one of the four ops.
    """
    from dagserve.api import load_plan

    plan = load_plan(spec, target="cpu")
    nodes: dict[str, Any] = {}
    for node in plan.nodes:
        if node.op in ("image.decode", "image.letterbox", "model.onnx", "detect.nms"):
            nodes.setdefault(node.op, node)
    missing = {"image.decode", "image.letterbox", "model.onnx", "detect.nms"} - set(nodes)
    if missing:
        raise RuntimeError(f"{spec} has no {', '.join(sorted(missing))} node: not a detect pipeline")
    model = nodes["model.onnx"]
    model_path = Path(plan.root) / model.files.get("path", model.params["path"])
    images = jpeg_inputs(count)
    if len(plan.inputs) != 1:
        raise RuntimeError(f"{spec}: expected one input (the encoded image)")
    work.mkdir(parents=True, exist_ok=True)
    input_json = bytes_input_json(work / "detect_input.json", plan.inputs[0].name, images)
    return DetectSetup(spec, plan, nodes, model_path.resolve(), images, input_json)
