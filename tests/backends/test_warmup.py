"""Warm-up follows the spec: the backend's own (default), none (``warmup: false``), or sample inputs.

Automatic warm-up feeds zeros and empty strings, which need not be valid inputs of
a valid model: Triton's ``simple_string`` casts its strings to numbers, and ONNX
Runtime's Cast fails on "". Such a model must still load (with a log line saying
what failed); a node can give real samples (``warmup: {inputs: {...}}``), which
must then work, or turn warm-up off.
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

from dagserve.backends.onnxruntime_backend import OnnxRuntimeKernel
from dagserve.compiler import compile_file
from dagserve.compiler.context import CompileOptions
from dagserve.errors import UnrecoverableError
from dagserve.runtime.pipeline import Pipeline

from . import _models

SPEC = """
    dagserve: 1
    name: simple_string
    max_batch_size: 8
    inputs:
      INPUT0: {{dtype: bytes, shape: [16]}}
      INPUT1: {{dtype: bytes, shape: [16]}}
    outputs:
      OUTPUT0: model.OUTPUT0
    nodes:
      model:
        op: model.onnx
        inputs: {{INPUT0: inputs.INPUT0, INPUT1: inputs.INPUT1}}
        params: {{path: simple_string.onnx}}
{warmup}
    """

DIGITS = [str(i) for i in range(16)]


def simple_string(path: Path) -> str:
    """Triton's ``simple_string`` as ONNX: strings cast to int32, added, cast back to strings."""
    graph = helper.make_graph(
        [helper.make_node("Cast", ["INPUT0"], ["a"], to=TensorProto.INT32),
         helper.make_node("Cast", ["INPUT1"], ["b"], to=TensorProto.INT32),
         helper.make_node("Add", ["a", "b"], ["sum"]),
         helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=TensorProto.STRING)], "simple_string",
        [helper.make_tensor_value_info(n, TensorProto.STRING, [-1, 16]) for n in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.STRING, [-1, 16])],
    )
    return _models.save(graph, path)


def pipeline(tmp_path: Path, warmup: str = "") -> Pipeline:
    simple_string(tmp_path / "simple_string.onnx")
    text = textwrap.dedent(SPEC.format(warmup=textwrap.indent(warmup, " " * 8) if warmup else "")).lstrip("\n")
    (tmp_path / "spec.yaml").write_text(text, encoding="utf-8")
    result = compile_file(str(tmp_path / "spec.yaml"), CompileOptions(target="cpu"), root=str(tmp_path))
    assert result.plan is not None, "\n".join(d.one_line() for d in result.diagnostics)
    return Pipeline(result.plan)


def _calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    original = OnnxRuntimeKernel.__call__

    def recording(self: OnnxRuntimeKernel, inputs: dict[str, Any]) -> dict[str, Any]:
        seen.append(inputs)
        return original(self, inputs)

    monkeypatch.setattr(OnnxRuntimeKernel, "__call__", recording)
    return seen


def _request() -> dict[str, np.ndarray]:
    return {"INPUT0": np.array([[d.encode() for d in DIGITS]], dtype=object),
            "INPUT1": np.array([[b"1"] * 16], dtype=object)}


def test_model_whose_automatic_warmup_fails_still_loads_and_says_why(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), pipeline(tmp_path) as p:
        out = p.infer(_request())
    assert [v.decode() for v in out["OUTPUT0"][0]] == [str(i + 1) for i in range(16)]
    (line,) = [r.getMessage() for r in caplog.records if "warm-up" in r.getMessage()]
    assert "simple_string.onnx" in line and "node 'model'" in line and "Cast" in line
    assert "warmup: {inputs:" in line


def test_warmup_false_runs_nothing_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    seen = _calls(monkeypatch)
    with caplog.at_level(logging.WARNING), pipeline(tmp_path, "warmup: false") as p:
        p.infer(_request())
    assert len(seen) == 1  # the request, nothing at load
    assert not [r for r in caplog.records if "warm-up" in r.getMessage()]


def test_warmup_with_sample_inputs_runs_them_once_at_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    seen = _calls(monkeypatch)
    warmup = "warmup:\n  inputs:\n    INPUT0: [" + ", ".join(f'"{d}"' for d in DIGITS) + "]\n    INPUT1: [" \
             + ", ".join(['"2"'] * 16) + "]\n"
    with caplog.at_level(logging.WARNING), pipeline(tmp_path, warmup) as p:
        p.infer(_request())  # starts the pipeline (load + warm-up), then runs the request
    assert len(seen) == 2
    sample = seen[0]
    assert sample["INPUT0"].shape == (1, 16) and sample["INPUT0"][0, 3] == b"3"
    assert sample["INPUT1"][0, 0] == b"2"
    assert not [r for r in caplog.records if "warm-up" in r.getMessage()]


def test_failing_sample_inputs_stop_the_load_naming_node_and_cause(tmp_path: Path) -> None:
    warmup = "warmup:\n  inputs:\n    INPUT0: [" + ", ".join(['"x"'] * 16) + "]\n    INPUT1: [" \
             + ", ".join(['"1"'] * 16) + "]\n"
    p = pipeline(tmp_path, warmup)
    with pytest.raises(UnrecoverableError, match=r"node 'model' \(model.onnx\): warmup failed on the spec's "
                                                 r"sample inputs: .*Cast"):
        p.infer(_request())
    p.shutdown()


def test_sample_inputs_must_name_the_node_ports(tmp_path: Path) -> None:
    p = pipeline(tmp_path, 'warmup: {inputs: {INPUT0: ["1"], INPUTX: ["2"]}}')
    with pytest.raises(UnrecoverableError, match="unknown: INPUTX; missing: INPUT1"):
        p.infer(_request())
    p.shutdown()


def test_warmup_field_is_schema_checked_and_kept_in_the_plan(tmp_path: Path) -> None:
    simple_string(tmp_path / "simple_string.onnx")
    bad = textwrap.dedent(SPEC.format(warmup="        warmup: 3")).lstrip("\n")
    (tmp_path / "bad.yaml").write_text(bad, encoding="utf-8")
    result = compile_file(str(tmp_path / "bad.yaml"), CompileOptions(target="cpu"), root=str(tmp_path))
    assert result.plan is None and any("warmup" in d.message for d in result.diagnostics)
    off = pipeline(tmp_path, "warmup: false").plan
    assert off.node("model").warmup is False and off.to_dict()["nodes"][0]["warmup"] is False
    default = pipeline(tmp_path).plan
    assert "warmup" not in default.to_dict()["nodes"][0]


def test_torch_model_failing_on_zeros_still_loads_and_says_why(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed (extra: pip install 'dagserve[torch]')")
    from dagserve.backends.torch_backend import TorchKernel
    from dagserve.types import CPU

    class Reciprocal(torch.nn.Module):
        """Refuses zeros, as a model that validates its input may."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool((x == 0).any()):
                raise ValueError("x must be non-zero")
            return 1 / x

    import warnings

    with warnings.catch_warnings():  # torch >= 2.10 deprecates TorchScript; users still have such files
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(Reciprocal()).save(str(tmp_path / "reciprocal.pt"))
    types = {"inputs": {"x": {"dtype": "float32", "shape": ["N", 2]}},
             "outputs": {"y": {"dtype": "float32", "shape": ["N", 2]}}}
    with caplog.at_level(logging.WARNING):
        kernel = TorchKernel(str(tmp_path / "reciprocal.pt"), types, CPU, batched=True)
    (line,) = [r.getMessage() for r in caplog.records if "warm-up" in r.getMessage()]
    assert "model.torch" in line and "reciprocal.pt" in line and "x must be non-zero" in line
    np.testing.assert_allclose(kernel({"x": np.full((1, 2), 4, dtype=np.float32)})["y"], 0.25)
