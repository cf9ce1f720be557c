"""Read-only host arrays into every node kind: straight from a request, and from a model's output.

Request tensors reach the first nodes as read-only views of the message
(``np.frombuffer``), and ONNX Runtime's outputs are read-only views of its
buffers, so no node may assume it can write into (or DLPack-export as writable)
what it is fed. Triton's ``simple`` model (``model.onnx``, INPUT0/INPUT1 int32
[-1,16], Add and Sub) fed straight from the pipeline's inputs is the case a
migration hits first; the parametrised cases run every other node kind the same
way, once fed from the request and once fed from an ONNX identity model.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from dagserve.backends.onnxruntime_backend import OnnxRuntimeKernel
from dagserve.compiler import compile_file
from dagserve.compiler.context import CompileOptions
from dagserve.runtime.pipeline import Pipeline
from dagserve.types import CPU

from . import _models

_ONNX_TYPES = {"int32": TensorProto.INT32, "float32": TensorProto.FLOAT, "uint8": TensorProto.UINT8}


def read_only(a: np.ndarray) -> np.ndarray:
    """``a`` as a request delivers it: a read-only ``np.frombuffer`` view of the message bytes."""
    view = np.frombuffer(a.tobytes(), dtype=a.dtype).reshape(a.shape)
    assert not view.flags.writeable
    return view


def identity_model(path: Path, dtype: str, item_shape: list[int]) -> str:
    """x dtype[N, *item_shape] -> y (ONNX Identity): a model whose outputs feed the node under test."""
    dims: list[int | str] = ["N", *item_shape]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "identity",
        [helper.make_tensor_value_info("x", _ONNX_TYPES[dtype], dims)],
        [helper.make_tensor_value_info("y", _ONNX_TYPES[dtype], dims)],
    )
    return _models.save(graph, path)


def compile_spec(repo: Path, text: str, name: str) -> Any:
    path = repo / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    result = compile_file(str(path), CompileOptions(target="cpu"), root=str(repo))
    assert result.plan is not None, "\n".join(d.one_line() for d in result.diagnostics)
    return result.plan


@pytest.fixture
def simple_repo(tmp_path: Path) -> Path:
    _models.simple(tmp_path / "simple.onnx")
    return tmp_path


def simple_inputs(batch: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {"INPUT0": rng.integers(-100, 100, (batch, 16), dtype=np.int32),
            "INPUT1": rng.integers(-100, 100, (batch, 16), dtype=np.int32)}


# -- the simple model, in-process ---------------------------------------------------------------


def test_simple_model_accepts_read_only_inputs_without_a_copy(monkeypatch: pytest.MonkeyPatch,
                                                              simple_repo: Path) -> None:
    kernel = OnnxRuntimeKernel(str(simple_repo / "simple.onnx"), {}, CPU, batched=True)
    bound: list[int] = []
    original = ort.OrtValue.ortvalue_from_numpy

    def spy(array: np.ndarray, *args: Any, **kwargs: Any) -> ort.OrtValue:
        value = original(array, *args, **kwargs)
        bound.append(value.data_ptr())
        return value

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy", staticmethod(spy))
    fresh = simple_inputs(3)
    frozen = {k: v.copy() for k, v in fresh.items()}
    for v in frozen.values():
        v.flags.writeable = False
    viewed = {k: read_only(v) for k, v in fresh.items()}
    for feeds in (frozen, viewed):
        bound.clear()
        out = kernel(feeds)
        np.testing.assert_array_equal(out["OUTPUT0"], fresh["INPUT0"] + fresh["INPUT1"])
        np.testing.assert_array_equal(out["OUTPUT1"], fresh["INPUT0"] - fresh["INPUT1"])
        assert bound == [feeds["INPUT0"].ctypes.data, feeds["INPUT1"].ctypes.data]  # borrowed, not copied


def test_model_output_feeds_the_next_model_without_a_copy(simple_repo: Path) -> None:
    first = OnnxRuntimeKernel(str(simple_repo / "simple.onnx"), {}, CPU, batched=True)
    second = OnnxRuntimeKernel(str(simple_repo / "simple.onnx"), {}, CPU, batched=True)
    x = simple_inputs(2)
    mid = first(x)
    assert not mid["OUTPUT0"].flags.writeable  # ONNX Runtime's own buffers, handed on as they are
    assert second._ortvalue(mid["OUTPUT0"]).data_ptr() == mid["OUTPUT0"].ctypes.data
    out = second({"INPUT0": mid["OUTPUT0"], "INPUT1": mid["OUTPUT1"]})
    np.testing.assert_array_equal(out["OUTPUT0"], 2 * x["INPUT0"])
    np.testing.assert_array_equal(out["OUTPUT1"], 2 * x["INPUT1"])


SIMPLE_SPEC = _models.SIMPLE_SPEC
CHAIN_SPEC = _models.chain_spec("chain")


@pytest.mark.parametrize("batch", [1, 4])
def test_simple_pipeline_fed_from_the_request_and_as_a_chain(simple_repo: Path, batch: int) -> None:
    x = simple_inputs(batch)
    feeds = {k: read_only(v) for k, v in x.items()}
    with Pipeline(compile_spec(simple_repo, SIMPLE_SPEC, "simple.yaml")) as pipeline:
        out = pipeline.infer(feeds)
    np.testing.assert_array_equal(out["OUTPUT0"], x["INPUT0"] + x["INPUT1"])
    np.testing.assert_array_equal(out["OUTPUT1"], x["INPUT0"] - x["INPUT1"])
    with Pipeline(compile_spec(simple_repo, CHAIN_SPEC, "chain.yaml")) as pipeline:
        out = pipeline.infer(feeds)
    np.testing.assert_array_equal(out["OUTPUT0"], 2 * x["INPUT0"])
    np.testing.assert_array_equal(out["OUTPUT1"], 2 * x["INPUT1"])


# -- every node kind, fed read-only arrays ------------------------------------------------------

# (case, input dtype, item shape, node YAML with {src} for the port reference, outputs)
CASES: list[tuple[str, str, list[int], str, list[str]]] = [
    ("tensor.identity", "int32", [16], "op: tensor.identity\ninputs: {x: {src}}", ["y"]),
    ("math.add", "int32", [16], "op: math.add\ninputs: {x: {src}}\nparams: {value: 1}", ["y"]),
    ("math.mul", "float32", [16], "op: math.mul\ninputs: {x: {src}}\nparams: {value: 2}", ["y"]),
    ("tensor.cast", "int32", [16], "op: tensor.cast\ninputs: {x: {src}}\nparams: {dtype: float32}", ["y"]),
    ("tensor.transpose", "float32", [4, 4], "op: tensor.transpose\ninputs: {x: {src}}\nparams: {perm: [1, 0]}",
     ["y"]),
    ("tensor.slice", "int32", [16], "op: tensor.slice\ninputs: {x: {src}}\nparams: {start: 2, stop: 10}", ["y"]),
    ("tensor.concat", "int32", [16], "op: tensor.concat\ninputs: {x: [{src}, {src}]}", ["y"]),
    ("tensor.split", "int32", [16], "op: tensor.split\ninputs: {x: {src}}\nparams: {sizes: [8, 8]}",
     ["y0", "y1"]),
    ("classify.topk", "float32", [10], "op: classify.topk\ninputs: {logits: {src}}\nparams: {k: 3}",
     ["scores", "indices"]),
    ("image.normalize", "uint8", [8, 8, 3], "op: image.normalize\ninputs: {image: {src}}", ["image"]),
    ("image.resize", "uint8", [8, 8, 3], "op: image.resize\ninputs: {image: {src}}\nparams: {size: [4, 4]}",
     ["image"]),
    ("image.letterbox", "uint8", [8, 6, 3],
     "op: image.letterbox\ninputs: {image: {src}}\nparams: {size: [4, 4]}", ["image", "transform"]),
    ("image.crop", "uint8", [8, 8, 3], "op: image.crop\ninputs: {image: {src}}\nparams: {box: [1, 1, 5, 5]}",
     ["image"]),
    ("detect.nms", "float32", [6, 64],
     "op: detect.nms\ninputs: {predictions: {src}}\nparams: {format: yolov8, score_threshold: 0.5}",
     ["boxes", "scores", "labels"]),
    ("python", "float32", [3],
     "op: python\ninputs: {x: {src}}\nparams: {path: handlers/handlers.py, class: Scale, params: {factor: 2}}",
     ["y"]),
    ("model.onnx", "float32", [4], "op: model.onnx\ninputs: {x: {src}}\nparams: {path: models/affine.onnx}",
     ["y", "total"]),
    ("model.torch", "float32", [3], "op: model.torch\ninputs: {x: {src}}\nparams: {path: models/double.pt2}",
     ["output0"]),
]


def _sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(11)
    if dtype == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if dtype == "int32":
        return rng.integers(-50, 50, shape, dtype=np.int32)
    return rng.random(shape, dtype=np.float32)


def _spec(case: str, dtype: str, item_shape: list[int], node: str, outputs: list[str], via_model: bool) -> str:
    src = "source.y" if via_model else "inputs.x"
    body = textwrap.indent(node.replace("{src}", src), " " * 4)
    lines = ["dagserve: 1", "name: ro", "max_batch_size: 4", "inputs:",
             f"  x: {{dtype: {dtype}, shape: {item_shape}}}", "outputs:",
             *[f"  {port}: node.{port}" for port in outputs], "nodes:"]
    if via_model:
        lines += ["  source:", "    op: model.onnx", "    inputs: {x: inputs.x}",
                  "    params: {path: models/source.onnx}"]
    lines += ["  node:", body]
    return "\n".join(lines) + "\n"


def _same(a: Any, b: Any) -> None:
    if isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
        return
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def torch_double(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path | None]:
    """models/double.pt2 (y = 2x, dynamic batch) when torch is installed."""
    try:
        import torch
    except ImportError:
        yield None
        return

    class Double(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    root = tmp_path_factory.mktemp("torch_double")
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(Double(), (torch.randn(2, 3),), dynamic_shapes={"x": {0: batch}})
    torch.export.save(program, root / "double.pt2")
    yield root / "double.pt2"


@pytest.mark.parametrize("via_model", [False, True], ids=["from_request", "from_model"])
@pytest.mark.parametrize(("case", "dtype", "item_shape", "node", "outputs"), CASES, ids=[c[0] for c in CASES])
def test_every_node_kind_takes_read_only_arrays(repo: Path, torch_double: Path | None, case: str, dtype: str,
                                                item_shape: list[int], node: str, outputs: list[str],
                                                via_model: bool) -> None:
    if case == "model.torch":
        if torch_double is None:
            pytest.skip("torch is not installed (extra: pip install 'dagserve[torch]')")
        (repo / "models" / "double.pt2").write_bytes(torch_double.read_bytes())
    _models.affine(repo / "models" / "affine.onnx")
    identity_model(repo / "models" / "source.onnx", dtype, item_shape)
    plan = compile_spec(repo, _spec(case, dtype, item_shape, node, outputs, via_model), "ro.yaml")
    x = _sample(dtype, (3, *item_shape))
    with Pipeline(plan) as pipeline:
        want = pipeline.infer({"x": x.copy()})
        got = pipeline.infer({"x": read_only(x)})
    assert set(got) == set(outputs)
    for port in outputs:
        _same(got[port], want[port])
