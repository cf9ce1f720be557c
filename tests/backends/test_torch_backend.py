"""model.torch: signatures of .pt2 and TorchScript files, and the runtime kernel (skipped without torch)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dagserve.backends.base import SignatureError
from dagserve.backends.torch_signature import read_torch_signature
from dagserve.errors import UnrecoverableError
from dagserve.types import CPU, TensorType

from .conftest import errors

torch = pytest.importorskip("torch", reason="torch is not installed (extra: pip install 'dagserve[torch]')")

from dagserve.backends.torch_backend import TorchKernel  # noqa: E402  (needs torch)


class Affine(torch.nn.Module):
    """y = x @ W + b (plus a per-row sum of the other input), and the argmax of x."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(4, 3, generator=gen))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x @ self.weight + y.sum(dim=1, keepdim=True), x.argmax(dim=1)


class Named(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"double": x * 2, "total": x.sum(dim=1)}


class Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


TS_TYPES = {
    "inputs": {"x": {"dtype": "float32", "shape": ["N", 4]}, "y": {"dtype": "float32", "shape": ["N", 2]}},
    "outputs": {"scores": {"dtype": "float32", "shape": ["N", 3]}, "best": {"dtype": "int64", "shape": ["N"]}},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The test models saved once: .pt2 programs with a dynamic batch, and TorchScript files."""
    root = tmp_path_factory.mktemp("torch_models")
    batch = torch.export.Dim("batch", min=1, max=64)
    out = {}
    program = torch.export.export(Affine().eval(), (torch.randn(2, 4), torch.randn(2, 2)),
                                  dynamic_shapes={"x": {0: batch}, "y": {0: batch}})
    torch.export.save(program, root / "affine.pt2")
    out["affine.pt2"] = str(root / "affine.pt2")
    program = torch.export.export(Named(), (torch.randn(2, 5),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, root / "named.pt2")
    out["named.pt2"] = str(root / "named.pt2")
    program = torch.export.export(Identity(), (torch.randn(2, 3),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, root / "identity.pt2")
    out["identity.pt2"] = str(root / "identity.pt2")
    with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; users still have such files
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Affine().eval()).save(str(root / "affine.pt"))
    out["affine.pt"] = str(root / "affine.pt")
    (root / "garbage.pt2").write_bytes(b"not a zip archive")
    out["garbage.pt2"] = str(root / "garbage.pt2")
    (root / "garbage.pt").write_bytes(b"not a zip archive")
    out["garbage.pt"] = str(root / "garbage.pt")
    return out


# -- signatures -------------------------------------------------------------------------------


def test_pt2_signature_names_inputs_after_forward_and_keeps_the_batch_symbol(files: dict[str, str]) -> None:
    sig = read_torch_signature(files["affine.pt2"], {})
    assert sig.format == "torch.export"
    assert list(sig.inputs) == ["x", "y"]
    assert list(sig.outputs) == ["output0", "output1"]
    x, y = sig.inputs["x"], sig.inputs["y"]
    assert (x.dtype, x.shape[1:], y.shape[1:]) == ("float32", (4,), (2,))
    symbol = x.shape[0]
    assert isinstance(symbol, str) and symbol == y.shape[0]  # one batch symbol, shared
    assert sig.outputs["output0"] == TensorType("float32", (symbol, 3))
    assert sig.outputs["output1"] == TensorType("int64", (symbol,))


def test_pt2_dict_outputs_are_named_by_their_keys(files: dict[str, str]) -> None:
    assert list(read_torch_signature(files["named.pt2"], {}).outputs) == ["double", "total"]


def test_pt2_outputs_can_be_renamed_in_order(files: dict[str, str]) -> None:
    params = {"outputs": {"scores": {"dtype": "float32", "shape": ["N", 3]},
                          "best": {"dtype": "int64", "shape": ["N"]}}}
    assert list(read_torch_signature(files["affine.pt2"], params).outputs) == ["scores", "best"]
    with pytest.raises(SignatureError, match=r"names 1 outputs but .* returns 2") as info:
        read_torch_signature(files["affine.pt2"], {"outputs": {"only": {"dtype": "float32", "shape": [1]}}})
    assert info.value.code == "E-PARAM"


def test_torchscript_needs_declared_types(files: dict[str, str]) -> None:
    with pytest.raises(SignatureError, match="TorchScript, which records no tensor types: declare params") as info:
        read_torch_signature(files["affine.pt"], {})
    assert info.value.code == "E-PARAM"
    assert info.value.hint and "inputs" in info.value.hint


def test_torchscript_signature_is_the_declared_one(files: dict[str, str]) -> None:
    sig = read_torch_signature(files["affine.pt"], TS_TYPES)
    assert sig.format == "torchscript"
    assert sig.inputs["x"] == TensorType("float32", ("N", 4))
    assert list(sig.outputs) == ["scores", "best"]


def test_torchscript_declared_inputs_must_match_forward_arguments(files: dict[str, str]) -> None:
    params = {**TS_TYPES, "inputs": {"image": {"dtype": "float32", "shape": ["N", 4]}}}
    with pytest.raises(SignatureError, match=r"declares \['image'\] but forward\(\) .* takes \['x', 'y'\]") as info:
        read_torch_signature(files["affine.pt"], params)
    assert info.value.code == "E-PARAM"


@pytest.mark.parametrize("declared, why", [
    ({"x": {"dtype": "float33", "shape": [1]}}, "unknown dtype 'float33'"),
    ({"x": {"dtype": "float32", "shape": [-1]}}, "shape must be a list of sizes"),
    ({"x": {"shape": [1]}}, "must be {dtype: ..., shape: \\[...\\]}"),
])
def test_malformed_declarations_are_param_errors(files: dict[str, str], declared: dict[str, Any], why: str) -> None:
    with pytest.raises(SignatureError, match=why) as info:
        read_torch_signature(files["affine.pt"], {**TS_TYPES, "inputs": declared})
    assert info.value.code == "E-PARAM"


@pytest.mark.parametrize("name, fragment", [
    ("garbage.pt2", "not a readable torch.export program"),
    ("garbage.pt", "not a readable TorchScript model"),
])
def test_unreadable_files_are_model_errors(files: dict[str, str], name: str, fragment: str) -> None:
    with pytest.raises(SignatureError, match=fragment) as info:
        read_torch_signature(files[name], TS_TYPES)
    assert info.value.code == "E-MODEL"


def test_missing_file_is_a_model_file_error(tmp_path: Path) -> None:
    with pytest.raises(SignatureError) as info:
        read_torch_signature(str(tmp_path / "absent.pt2"), {})
    assert info.value.code == "E-MODEL-FILE"


def test_without_torch_the_reader_names_the_extra(monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes 'import torch' raise ImportError
    with pytest.raises(SignatureError, match=r"model.torch needs torch: pip install 'dagserve\[torch\]'") as info:
        read_torch_signature(files["affine.pt2"], {})
    assert info.value.code == "E-EXTRA"


# -- runtime ----------------------------------------------------------------------------------


@pytest.fixture
def xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(6, 2)).astype(np.float32)


def _direct(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        a, b = Affine().eval()(torch.from_numpy(x), torch.from_numpy(y))
    return a.numpy(), b.numpy()


@pytest.mark.parametrize("name, params", [("affine.pt2", {}), ("affine.pt", TS_TYPES)])
def test_outputs_equal_the_module_called_directly(files: dict[str, str], xy: tuple[np.ndarray, np.ndarray],
                                                  name: str, params: dict[str, Any]) -> None:
    kernel = TorchKernel(files[name], params, CPU, batched=True)
    out = kernel({"x": xy[0], "y": xy[1]})
    first, second = list(out.values())
    want_a, want_b = _direct(*xy)
    assert isinstance(first, np.ndarray) and isinstance(second, np.ndarray)
    np.testing.assert_allclose(first, want_a, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(second, want_b)


def test_batched_results_equal_per_item_results(files: dict[str, str], xy: tuple[np.ndarray, np.ndarray]) -> None:
    kernel = TorchKernel(files["affine.pt2"], {}, CPU, batched=True)
    batched = kernel({"x": xy[0], "y": xy[1]})
    for k in range(len(xy[0])):
        alone = kernel({"x": xy[0][k:k + 1], "y": xy[1][k:k + 1]})
        np.testing.assert_allclose(batched["output0"][k], alone["output0"][0], rtol=1e-5, atol=1e-6)
        assert batched["output1"][k] == alone["output1"][0]


def test_inputs_and_outputs_pass_without_copies_on_the_cpu(files: dict[str, str]) -> None:
    kernel = TorchKernel(files["identity.pt2"], {}, CPU, batched=True)
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    out = kernel({"x": x})["output0"]
    assert isinstance(out, np.ndarray)
    assert out.ctypes.data == x.ctypes.data  # numpy -> torch (DLPack) -> numpy (.numpy()): one buffer


def test_wrong_input_dtype_names_input_expected_and_received(files: dict[str, str],
                                                             xy: tuple[np.ndarray, np.ndarray]) -> None:
    kernel = TorchKernel(files["affine.pt2"], {}, CPU, batched=True)
    with pytest.raises(ValueError, match=r"model input 'x' .* expects float32\[s\w*,4\] but received float64\[6,4\]"):
        kernel({"x": xy[0].astype(np.float64), "y": xy[1]})


def test_wrongly_declared_torchscript_outputs_fail_at_load(files: dict[str, str]) -> None:
    params = {**TS_TYPES, "outputs": {"scores": {"dtype": "float32", "shape": ["N", 3]},
                                      "best": {"dtype": "float32", "shape": ["N"]}}}
    with pytest.raises(UnrecoverableError, match=r"output 'best' .* is int64 of rank 1 but the signature says float32"):
        TorchKernel(files["affine.pt"], params, CPU, batched=True)


def test_model_torch_compiles_with_the_pt2_signature(files: dict[str, str], compile_text: Any, repo: Path) -> None:
    (repo / "models" / "affine.pt2").write_bytes(Path(files["affine.pt2"]).read_bytes())
    result = compile_text("""
        dagserve: 1
        name: torch_affine
        max_batch_size: 8
        inputs:
          x: {dtype: float32, shape: [4]}
          y: {dtype: float32, shape: [2]}
        outputs:
          scores: model.output0
        nodes:
          model:
            op: model.torch
            inputs: {x: inputs.x, y: inputs.y}
            params: {path: models/affine.pt2}
    """)
    assert errors(result) == []
    assert result.plan is not None
    assert result.plan.node("model").outputs["output0"].shape == (3,)


def test_model_torch_dtype_mismatch_is_a_compile_error(files: dict[str, str], compile_text: Any, repo: Path) -> None:
    (repo / "models" / "affine.pt2").write_bytes(Path(files["affine.pt2"]).read_bytes())
    result = compile_text("""
        dagserve: 1
        name: torch_affine
        max_batch_size: 8
        inputs:
          x: {dtype: float64, shape: [4]}
          y: {dtype: float32, shape: [2]}
        outputs:
          scores: model.output0
        nodes:
          model:
            op: model.torch
            inputs: {x: inputs.x, y: inputs.y}
            params: {path: models/affine.pt2}
    """)
    assert [code for code, _ in errors(result)] == ["E-DTYPE"]
