"""Signature readers (ONNX, torch, TensorRT) and the errors they give without their extras."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from dagserve.backends.base import SignatureError
from dagserve.backends.onnx_signature import read_onnx_signature
from dagserve.backends.tensorrt_signature import read_tensorrt_signature
from dagserve.backends.torch_signature import read_torch_signature
from dagserve.errors import UnrecoverableError
from dagserve.types import CPU, TensorType

from . import _models
from .conftest import MODELS, errors

try:
    import tensorrt  # noqa: F401

    HAVE_TENSORRT = True
except ImportError:
    HAVE_TENSORRT = False


def test_onnx_signature_has_names_dtypes_and_symbolic_dims(tmp_path: Path) -> None:
    sig = read_onnx_signature(_models.affine(tmp_path / "affine.onnx"))
    assert sig.format == "onnx"
    assert sig.inputs == {"x": TensorType("float32", ("N", 4))}  # initializers W, B, axes are not inputs
    assert sig.outputs == {"y": TensorType("float32", ("N", 3)), "total": TensorType("float32", ("N",))}


def test_onnx_signature_of_a_fixed_batch_and_a_string_model(tmp_path: Path) -> None:
    assert read_onnx_signature(str(MODELS / "tiny_detector_b1.onnx")).inputs["images"].shape == (1, 3, 64, 64)
    assert read_onnx_signature(_models.strings(tmp_path / "s.onnx")).inputs["s"] == TensorType("bytes", ("N",))


def test_onnx_signature_errors(tmp_path: Path) -> None:
    with pytest.raises(SignatureError) as missing:
        read_onnx_signature(str(tmp_path / "absent.onnx"))
    assert missing.value.code == "E-MODEL-FILE"
    with pytest.raises(SignatureError, match=r"not a readable ONNX model|not an ONNX model") as garbage:
        read_onnx_signature(str(MODELS / "not_a_model.onnx"))
    assert garbage.value.code == "E-MODEL"


def test_torch_reader_without_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    model = tmp_path / "model.pt2"
    model.write_bytes(b"PK")
    monkeypatch.setitem(sys.modules, "torch", None)  # 'import torch' now raises ImportError
    with pytest.raises(SignatureError, match=r"model.torch needs torch: pip install 'dagserve\[torch\]'") as info:
        read_torch_signature(str(model), {})
    assert info.value.code == "E-EXTRA"


def test_torchscript_without_declared_types_fails_before_importing_torch(monkeypatch: pytest.MonkeyPatch,
                                                                         tmp_path: Path) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"PK")
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(SignatureError, match="declare params 'inputs' and 'outputs'") as info:
        read_torch_signature(str(model), {})
    assert info.value.code == "E-PARAM"


def test_tensorrt_reader_without_tensorrt_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"\x00" * 16)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(SignatureError, match=r"model.tensorrt needs tensorrt: pip install 'dagserve\[gpu\]'") as info:
        read_tensorrt_signature(str(engine))
    assert info.value.code == "E-EXTRA"


def test_tensorrt_reader_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SignatureError) as info:
        read_tensorrt_signature(str(tmp_path / "absent.engine"))
    assert info.value.code == "E-MODEL-FILE"


def test_tensorrt_kernel_refuses_the_cpu() -> None:
    from dagserve.backends.tensorrt_backend import TensorRTKernel

    with pytest.raises(UnrecoverableError, match="TensorRT runs on a GPU only"):
        TensorRTKernel("model.engine", {}, CPU, batched=True)


ENGINE_SPEC = """
dagserve: 1
name: trt
max_batch_size: 8
inputs:
  images: {dtype: float32, shape: [3, 64, 64]}
outputs:
  out: model.output0
nodes:
  model:
    op: model.tensorrt
    inputs: {images: inputs.images}
    params: {path: models/detector.engine}
"""


def test_tensorrt_node_on_a_cpu_target_is_a_device_error(compile_text: Any, repo: Path) -> None:
    (repo / "models" / "detector.engine").write_bytes(b"\x00" * 16)
    assert [c for c, _ in errors(compile_text(ENGINE_SPEC, target="cpu"))] == ["E-DEVICE"]


@pytest.mark.skipif(HAVE_TENSORRT, reason="tensorrt is installed, so there is no missing extra to report")
def test_tensorrt_node_on_a_gpu_target_without_tensorrt_is_an_extra_error(compile_text: Any, repo: Path) -> None:
    (repo / "models" / "detector.engine").write_bytes(b"\x00" * 16)
    found = errors(compile_text(ENGINE_SPEC, target="gpu"))
    assert [c for c, _ in found] == ["E-EXTRA"]
    assert "pip install 'dagserve[gpu]'" in found[0][1]
