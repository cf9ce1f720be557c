"""Reading ONNX signatures at compile time: external data files, exporter dim names."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dagserve.backends.base import SignatureError
from dagserve.backends.onnx_signature import read_onnx_signature, symbol_name
from dagserve.compiler import CompileResult
from dagserve.types import TensorType

from .conftest import MODELS

CompileText = Callable[..., CompileResult]


def save_external(path: Path, location: str = "weights.data") -> Path:
    """y = x @ w with w (4x3 float32 = 48 bytes) stored in an external data file."""
    w = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_operatorsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path, save_as_external_data=True, location=location, size_threshold=0)
    return path


def test_a_model_with_its_external_data_reads_fine(tmp_path: Path) -> None:
    sig = read_onnx_signature(str(save_external(tmp_path / "m.onnx")))
    assert sig.inputs == {"x": TensorType("float32", ("N", 4))}


def test_a_missing_external_data_file_is_e_model_file(tmp_path: Path) -> None:
    path = save_external(tmp_path / "m.onnx")
    (tmp_path / "weights.data").unlink()
    with pytest.raises(SignatureError) as info:
        read_onnx_signature(str(path))
    assert info.value.code == "E-MODEL-FILE"
    assert str(info.value) == (f"model '{path}' keeps tensor 'w' in external data file 'weights.data', which "
                               f"does not exist (looked for {tmp_path / 'weights.data'})")


def test_a_truncated_external_data_file_is_e_model(tmp_path: Path) -> None:
    path = save_external(tmp_path / "m.onnx")
    (tmp_path / "weights.data").write_bytes(b"\0" * 20)
    with pytest.raises(SignatureError, match=r"bytes 0\.\.48, but the file has only 20 bytes") as info:
        read_onnx_signature(str(path))
    assert info.value.code == "E-MODEL"


def test_an_external_data_location_outside_the_model_directory_is_e_model(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = save_external(tmp_path / "sub" / "m.onnx")
    model = onnx.load(str(path), load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../weights.data"
    (tmp_path / "sub" / "weights.data").rename(tmp_path / "weights.data")
    onnx.save(model, str(path))
    with pytest.raises(SignatureError, match="not a file name next to the model") as info:
        read_onnx_signature(str(path))
    assert info.value.code == "E-MODEL"


def test_a_spec_whose_model_lacks_its_external_data_fails_at_compile_time(compile_text: CompileText) -> None:
    result = compile_text("""
        dagserve: 1
        name: p
        max_batch_size: 4
        inputs:
          images: {dtype: float32, shape: [3, 32, 32]}
        outputs:
          logits: net.logits
        nodes:
          net:
            op: model.onnx
            inputs: {images: inputs.images}
            params: {path: models/external_missing.onnx}
        """)
    (d,) = result.diagnostics
    assert d.code == "E-MODEL-FILE" and d.span is not None and d.span.line == 12
    assert "external data file 'external_missing.onnx.data', which does not exist" in d.message


# --- exporter dim names ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "symbol"), [
    ("p2o.DynamicDimension.4", "p2o_DynamicDimension_4"),
    ("batch", "batch"),
    ("unk__3", "unk__3"),
    ("2*s0", "_2_s0"),
    ("batch_size + 1", "batch_size_1"),
    ("floor(h/32)", "floor_h_32"),
    ("...", "dim"),
])
def test_symbol_name_makes_a_spec_symbol(text: str, symbol: str) -> None:
    assert symbol_name(text) == symbol


def test_exporter_dim_names_read_as_symbols_shared_by_inputs_and_outputs() -> None:
    sig = read_onnx_signature(str(MODELS / "exporter_dims.onnx"))
    want = TensorType("float32", ("p2o_DynamicDimension_0", "p2o_DynamicDimension_4"))
    assert sig.inputs == {"x": want} and sig.outputs == {"y": want}


def test_names_that_clean_up_alike_stay_different_symbols(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["d.1", "d_1"]),  # d.1 is met first
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["d.1", "d_1"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["d.1", "d_1"])])
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    sig = read_onnx_signature(str(path))
    dims = sig.inputs["a"].shape
    assert len(set(dims)) == 2 and sig.inputs["b"].shape == dims == sig.outputs["y"].shape
    assert dims[1] == "d_1"  # a name that already is a symbol keeps it


def test_a_mismatch_message_shows_exporter_dims_as_symbols(compile_text: CompileText) -> None:
    result = compile_text("""
        dagserve: 1
        name: p
        max_batch_size: 4
        inputs:
          x: {dtype: int32, shape: [7]}
        outputs:
          y: net.y
        nodes:
          net:
            op: model.onnx
            inputs: {x: inputs.x}
            params: {path: models/exporter_dims.onnx}
        """)
    (d,) = result.diagnostics
    assert d.code == "E-DTYPE"
    assert "expects float32[N,p2o_DynamicDimension_4]" in d.message
