"""Model backends on a GPU: data stays on the device, results match the CPU.

Run on a GPU machine with ``tests/gpu/run_all.sh``. Every test here is marked
``gpu`` and skips, with the reason, when CuPy has no usable CUDA device or the
backend's package (onnxruntime-gpu, torch with CUDA, tensorrt, DALI) is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from dagserve.backends.onnxruntime_backend import OnnxRuntimeKernel
from dagserve.types import CPU, Device

pytestmark = pytest.mark.gpu

MODELS = Path(__file__).resolve().parents[1] / "specs" / "models"
DETECTOR = str(MODELS / "tiny_detector.onnx")
GPU0 = Device("gpu", 0)


def _cupy() -> Any:
    try:
        import cupy
    except ImportError:
        pytest.skip("cupy is not installed (pip install 'dagserve[gpu]')")
    try:
        usable = cupy.cuda.is_available()
    except Exception:
        usable = False
    if not usable:
        pytest.skip("no usable CUDA device (cupy.cuda.is_available() is False)")
    return cupy


@pytest.fixture(scope="module")
def cp() -> Any:
    return _cupy()


@pytest.fixture
def stream(cp: Any) -> Any:
    return cp.cuda.Stream(non_blocking=True)


def is_device_pointer(cp: Any, ptr: int) -> bool:
    """True when ``ptr`` is device memory (not host, not managed/pinned host memory)."""
    attributes = cp.cuda.runtime.pointerGetAttributes(ptr)
    return int(attributes.type) == 2  # cudaMemoryTypeDevice


def cpu_reference(path: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)


def _needs_ort_cuda() -> None:
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed (no CUDAExecutionProvider)")


# -- ONNX Runtime -----------------------------------------------------------------------------


def test_ort_cuda_keeps_inputs_and_outputs_on_the_device(cp: Any, stream: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _needs_ort_cuda()
    kernel = OnnxRuntimeKernel(DETECTOR, {}, GPU0, batched=True, stream=stream)
    assert kernel.session.get_providers()[0] == "CUDAExecutionProvider"
    options = kernel.session.get_provider_options()["CUDAExecutionProvider"]
    assert options["user_compute_stream"] == str(stream.ptr)

    bound: list[Any] = []
    original = ort.OrtValue.from_dlpack

    def spy(data: Any) -> Any:
        value = original(data)
        bound.append(value)
        return value

    monkeypatch.setattr(ort.OrtValue, "from_dlpack", staticmethod(spy))
    host = np.random.default_rng(0).random((4, 3, 64, 64), dtype=np.float32)
    with stream:
        x = cp.asarray(host)
        out = kernel({"images": x})["output0"]
    stream.synchronize()
    # input: bound in place (same device pointer), no host round trip
    assert len(bound) == 1 and bound[0].device_name().lower() == "cuda"
    assert bound[0].data_ptr() == x.data.ptr
    # output: a CuPy array over ONNX Runtime's own device buffer
    assert isinstance(out, cp.ndarray)
    (value,) = kernel._binding.get_outputs()
    assert value.device_name().lower() == "cuda"
    assert out.data.ptr == value.data_ptr()
    assert is_device_pointer(cp, out.data.ptr)
    np.testing.assert_allclose(cp.asnumpy(out), cpu_reference(DETECTOR, {"images": host})[0], rtol=1e-4, atol=1e-4)


def test_ort_cuda_batched_equals_per_item(cp: Any, stream: Any) -> None:
    _needs_ort_cuda()
    kernel = OnnxRuntimeKernel(DETECTOR, {}, GPU0, batched=True, stream=stream)
    with stream:
        x = cp.random.random((5, 3, 64, 64), dtype=cp.float32)
        batched = kernel({"images": x})["output0"]
        alone = [kernel({"images": x[k:k + 1]})["output0"][0] for k in range(5)]
    stream.synchronize()
    for k in range(5):
        cp.testing.assert_allclose(batched[k], alone[k], rtol=1e-5, atol=1e-5)


def test_ort_cuda_packs_a_strided_device_input(cp: Any, stream: Any) -> None:
    _needs_ort_cuda()
    kernel = OnnxRuntimeKernel(DETECTOR, {}, GPU0, batched=True, stream=stream)
    host = np.random.default_rng(1).random((2, 64, 64, 3), dtype=np.float32)
    with stream:
        out = kernel({"images": cp.asarray(host).transpose(0, 3, 1, 2)})["output0"]
    stream.synchronize()
    want = cpu_reference(DETECTOR, {"images": np.ascontiguousarray(host.transpose(0, 3, 1, 2))})[0]
    np.testing.assert_allclose(cp.asnumpy(out), want, rtol=1e-4, atol=1e-4)


def test_ort_tensorrt_provider_when_asked(cp: Any, stream: Any) -> None:
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no TensorrtExecutionProvider")
    kernel = OnnxRuntimeKernel(DETECTOR, {"providers": ["tensorrt", "cuda", "cpu"]}, GPU0, batched=True,
                               stream=stream)
    assert kernel.session.get_providers()[0] == "TensorrtExecutionProvider"
    host = np.random.default_rng(2).random((2, 3, 64, 64), dtype=np.float32)
    with stream:
        out = kernel({"images": cp.asarray(host)})["output0"]
    stream.synchronize()
    np.testing.assert_allclose(cp.asnumpy(out), cpu_reference(DETECTOR, {"images": host})[0], rtol=1e-2, atol=1e-2)


# -- torch ------------------------------------------------------------------------------------


def _torch_cuda() -> Any:
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'dagserve[torch]')")
    if not torch.cuda.is_available():
        pytest.skip(f"torch {torch.__version__} has no CUDA support here")
    return torch


def test_torch_cuda_passes_device_memory_without_copies(cp: Any, stream: Any, tmp_path: Path) -> None:
    torch = _torch_cuda()
    from dagserve.backends.torch_backend import TorchKernel

    class Identity(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return x

    class Scale(torch.nn.Module):
        def forward(self, x: Any) -> Any:
            return x * 3 + 1

    batch = torch.export.Dim("batch", min=1, max=64)
    for name, module in (("identity", Identity()), ("scale", Scale())):
        torch.export.save(torch.export.export(module, (torch.randn(2, 5),), dynamic_shapes={"x": {0: batch}}),
                          tmp_path / f"{name}.pt2")
    identity = TorchKernel(str(tmp_path / "identity.pt2"), {}, GPU0, batched=True, stream=stream)
    scale = TorchKernel(str(tmp_path / "scale.pt2"), {}, GPU0, batched=True, stream=stream)
    with stream:
        x = cp.arange(15, dtype=cp.float32).reshape(3, 5)
        same = identity({"x": x})["output0"]
        y = scale({"x": x})["output0"]
    stream.synchronize()
    assert isinstance(same, cp.ndarray) and same.data.ptr == x.data.ptr  # CuPy -> torch -> CuPy, one buffer
    assert isinstance(y, cp.ndarray) and is_device_pointer(cp, y.data.ptr)
    cp.testing.assert_array_equal(y, x * 3 + 1)


# -- TensorRT ---------------------------------------------------------------------------------


def _build_engine(path: Path) -> None:
    """Build a TensorRT engine of tiny_detector.onnx with a dynamic batch of 1..8 (FP32, no TF32)."""
    trt = pytest.importorskip("tensorrt", reason="tensorrt is not installed (pip install 'dagserve[gpu]')")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(Path(DETECTOR).read_bytes()), [parser.get_error(i) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    profile.set_shape("images", (1, 3, 64, 64), (4, 3, 64, 64), (8, 3, 64, 64))
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    assert engine is not None, "TensorRT could not build the engine"
    path.write_bytes(bytes(engine))


def test_tensorrt_engine_signature_and_run(cp: Any, stream: Any, tmp_path: Path) -> None:
    engine_path = tmp_path / "detector.engine"
    _build_engine(engine_path)
    from dagserve.backends.tensorrt_backend import TensorRTKernel
    from dagserve.backends.tensorrt_signature import read_tensorrt_signature

    sig = read_tensorrt_signature(str(engine_path))
    assert sig.inputs["images"].dtype == "float32" and sig.inputs["images"].shape == ("N", 3, 64, 64)
    assert sig.outputs["output0"].shape == ("N", 6, 64)
    kernel = TensorRTKernel(str(engine_path), {}, GPU0, batched=True, stream=stream)
    host = np.random.default_rng(3).random((3, 3, 64, 64), dtype=np.float32)
    with stream:
        out = kernel({"images": cp.asarray(host)})["output0"]
    stream.synchronize()
    assert isinstance(out, cp.ndarray) and out.shape == (3, 6, 64) and is_device_pointer(cp, out.data.ptr)
    np.testing.assert_allclose(cp.asnumpy(out), cpu_reference(DETECTOR, {"images": host})[0], rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="profile accepts shapes"), stream:
        kernel({"images": cp.zeros((9, 3, 64, 64), cp.float32)})


# -- DALI -------------------------------------------------------------------------------------


def test_dali_mixed_decoding_matches_the_cpu_pipeline(cp: Any, stream: Any) -> None:
    pytest.importorskip("nvidia.dali", reason="DALI is not installed (pip install 'dagserve[dali]')")
    import cv2

    from dagserve.backends.dali_backend import DaliImageKernel

    rng = np.random.default_rng(4)
    pngs = [cv2.imencode(".png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))[1].tobytes()
            for h, w in [(120, 90), (300, 400), (64, 64)]]
    data = np.empty(len(pngs), dtype=object)
    data[:] = pngs
    params = {"size": [64, 64], "mode": "letterbox", "scale": "1/255"}
    cpu = DaliImageKernel(params, CPU)({"data": data})
    gpu = DaliImageKernel(params, GPU0, stream)({"data": data})
    stream.synchronize()
    assert isinstance(gpu["image"], cp.ndarray) and is_device_pointer(cp, gpu["image"].data.ptr)
    np.testing.assert_allclose(cp.asnumpy(gpu["image"]), cpu["image"], rtol=0, atol=2.01 / 255)
    np.testing.assert_allclose(cp.asnumpy(gpu["transform"]), cpu["transform"], rtol=1e-6)
