"""model.onnx at run time: parity with ONNX Runtime called directly, zero-copy I/O binding, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from dagserve.backends import onnxruntime_backend as backend
from dagserve.backends.onnxruntime_backend import OnnxRuntimeKernel, create, session_options
from dagserve.errors import MissingExtraError, UnrecoverableError
from dagserve.types import CPU, Device

from . import _models
from .conftest import MODELS, kernel_context

DETECTOR = str(MODELS / "tiny_detector.onnx")
DETECTOR_B1 = str(MODELS / "tiny_detector_b1.onnx")
TWO_INPUTS = str(MODELS / "two_inputs.onnx")


def reference(path: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """What ONNX Runtime gives when called directly, the way users call it."""
    return ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)


@pytest.fixture(scope="module")
def detector() -> OnnxRuntimeKernel:
    return OnnxRuntimeKernel(DETECTOR, {}, CPU, batched=True)


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(3).random((5, 3, 64, 64), dtype=np.float32)


@pytest.mark.parametrize("batch", [1, 5])
def test_outputs_equal_onnxruntime_called_directly(detector: OnnxRuntimeKernel, images: np.ndarray,
                                                   batch: int) -> None:
    out = detector({"images": images[:batch]})
    (want,) = reference(DETECTOR, {"images": images[:batch]})
    assert list(out) == ["output0"]
    assert out["output0"].shape == (batch, 6, 64)
    np.testing.assert_array_equal(out["output0"], want)


def test_batched_results_equal_per_item_results(detector: OnnxRuntimeKernel, images: np.ndarray) -> None:
    batched = detector({"images": images})["output0"]
    for k in range(len(images)):
        alone = detector({"images": images[k:k + 1]})["output0"]
        np.testing.assert_allclose(batched[k], alone[0], rtol=1e-6, atol=1e-6)


def test_two_input_model_matches_reference() -> None:
    kernel = OnnxRuntimeKernel(TWO_INPUTS, {}, CPU, batched=True)
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.full((3, 4), 0.5, dtype=np.float32)
    np.testing.assert_array_equal(kernel({"a": a, "b": b})["sum"], reference(TWO_INPUTS, {"a": a, "b": b})[0])


def test_multi_output_model_returns_every_output_by_name(tmp_path: Path) -> None:
    path = _models.affine(tmp_path / "affine.onnx")
    kernel = OnnxRuntimeKernel(path, {}, CPU, batched=True)
    x = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    out = kernel({"x": x})
    y, total = reference(path, {"x": x})
    assert list(out) == ["y", "total"]
    np.testing.assert_array_equal(out["y"], y)
    np.testing.assert_array_equal(out["total"], total)


def test_output_array_shares_the_ortvalue_memory(detector: OnnxRuntimeKernel, images: np.ndarray) -> None:
    out = detector({"images": images})["output0"]
    (value,) = detector._binding.get_outputs()  # the OrtValue ONNX Runtime wrote
    assert value.device_name().lower() == "cpu"
    assert out.ctypes.data == value.data_ptr()
    assert not out.flags.owndata


def test_contiguous_input_is_bound_without_a_copy(monkeypatch: pytest.MonkeyPatch, detector: OnnxRuntimeKernel,
                                                  images: np.ndarray) -> None:
    bound: list[int] = []
    original = ort.OrtValue.ortvalue_from_numpy

    def spy(data: np.ndarray, *args: object, **kwargs: object) -> ort.OrtValue:
        value = original(data, *args, **kwargs)
        bound.append(value.data_ptr())
        return value

    monkeypatch.setattr(ort.OrtValue, "ortvalue_from_numpy", staticmethod(spy))
    view = images[1:4]  # a contiguous run of a bigger batch, as the runtime hands it over
    detector({"images": view})
    assert bound == [view.ctypes.data]


def test_non_contiguous_input_is_packed_and_gives_the_same_result(detector: OnnxRuntimeKernel) -> None:
    hwc = np.random.default_rng(1).random((2, 64, 64, 3), dtype=np.float32)
    chw_view = hwc.transpose(0, 3, 1, 2)
    assert not chw_view.flags.c_contiguous
    out = detector({"images": chw_view})["output0"]
    np.testing.assert_array_equal(out, reference(DETECTOR, {"images": np.ascontiguousarray(chw_view)})[0])


def test_earlier_results_are_not_overwritten_by_later_calls(detector: OnnxRuntimeKernel,
                                                            images: np.ndarray) -> None:
    first = detector({"images": images[:2]})["output0"]
    kept = first.copy()
    detector({"images": images[2:4] * 3})
    np.testing.assert_array_equal(first, kept)


def test_unbatched_kernel_is_per_item_and_feeds_the_whole_tensor(images: np.ndarray) -> None:
    kernel = OnnxRuntimeKernel(DETECTOR, {}, CPU, batched=False)
    assert kernel.per_item is True
    out = kernel({"images": images[:3]})["output0"]
    np.testing.assert_array_equal(out, reference(DETECTOR, {"images": images[:3]})[0])


def test_fixed_batch_model_pads_smaller_batches_and_cuts_outputs(tmp_path: Path) -> None:
    path = _models.affine(tmp_path / "affine_b4.onnx", batch=4)
    kernel = OnnxRuntimeKernel(path, {}, CPU, batched=True)
    x = np.random.default_rng(2).normal(size=(3, 4)).astype(np.float32)
    out = kernel({"x": x})
    y, total = reference(path, {"x": np.concatenate([x, np.zeros((1, 4), np.float32)])})
    assert out["y"].shape == (3, 3) and out["total"].shape == (3,)
    np.testing.assert_array_equal(out["y"], y[:3])
    np.testing.assert_array_equal(out["total"], total[:3])


def test_fixed_batch_model_refuses_a_larger_batch(images: np.ndarray) -> None:
    kernel = OnnxRuntimeKernel(DETECTOR_B1, {}, CPU, batched=True)
    assert kernel({"images": images[:1]})["output0"].shape == (1, 6, 64)
    with pytest.raises(ValueError, match=r"model input 'images' .* fixed batch of 1 but received a batch of 2"):
        kernel({"images": images[:2]})


def test_wrong_dtype_names_input_expected_and_received(detector: OnnxRuntimeKernel, images: np.ndarray) -> None:
    with pytest.raises(ValueError) as info:
        detector({"images": images.astype(np.float64)})
    message = str(info.value)
    assert "model input 'images'" in message
    assert "expects float32[N,3,64,64]" in message
    assert "received float64[5,3,64,64]" in message


def test_wrong_shape_names_input_expected_and_received(detector: OnnxRuntimeKernel, images: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"'images' .* expects float32\[N,3,64,64\] but received float32\[5,3,32,64\]"):
        detector({"images": images[:, :, :32]})
    with pytest.raises(ValueError, match=r"received float32\[3,64,64\]"):
        detector({"images": images[0]})


def test_missing_input_is_named() -> None:
    kernel = OnnxRuntimeKernel(TWO_INPUTS, {"warmup": False}, CPU, batched=True)
    with pytest.raises(ValueError, match=r"needs input.*b"):
        kernel({"a": np.zeros((1, 4), np.float32)})


def test_string_tensors_round_trip_as_bytes(tmp_path: Path) -> None:
    kernel = OnnxRuntimeKernel(_models.strings(tmp_path / "s.onnx"), {}, CPU, batched=True)
    data = np.array([b"abc", b"", "h\u00e9llo".encode()], dtype=object)
    out = kernel({"s": data})["out"]
    assert out.dtype == object
    assert list(out) == [b"abc", b"", "h\u00e9llo".encode()]


def test_string_input_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    kernel = OnnxRuntimeKernel(_models.strings(tmp_path / "s.onnx"), {}, CPU, batched=True)
    with pytest.raises(ValueError, match=r"model input 's' .* needs UTF-8 text"):
        kernel({"s": np.array([b"\xff"], dtype=object)})


def _count_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = ort.InferenceSession.run_with_iobinding

    def counting(self: ort.InferenceSession, binding: object, run_options: object = None) -> None:
        calls.append(1)
        original(self, binding, run_options)

    monkeypatch.setattr(ort.InferenceSession, "run_with_iobinding", counting)
    return calls


def test_warmup_runs_once_at_load_with_symbolic_dims_as_one(monkeypatch: pytest.MonkeyPatch,
                                                            tmp_path: Path) -> None:
    path = _models.doubler(tmp_path / "doubler.onnx")
    calls = _count_runs(monkeypatch)
    seen: list[tuple[int, ...]] = []
    original = OnnxRuntimeKernel.__call__

    def recording(self: OnnxRuntimeKernel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(inputs["x"].shape)
        return original(self, inputs)

    monkeypatch.setattr(OnnxRuntimeKernel, "__call__", recording)
    kernel = OnnxRuntimeKernel(path, {"warmup": True}, CPU, batched=True)
    assert calls == [1] and seen == [(1, 1)]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(kernel({"x": x})["y"], 2 * x)


def test_no_warmup_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _count_runs(monkeypatch)
    OnnxRuntimeKernel(DETECTOR, {"warmup": False}, CPU, batched=True)
    assert calls == []


def test_session_options_follow_params() -> None:
    options = session_options({"intra_op_threads": 2, "inter_op_threads": 3, "optimization_level": "basic"})
    assert options.intra_op_num_threads == 2
    assert options.inter_op_num_threads == 3
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_providers_override_accepts_short_names() -> None:
    kernel = OnnxRuntimeKernel(DETECTOR, {"providers": ["cpu"], "warmup": False}, CPU, batched=True)
    assert kernel.session.get_providers() == ["CPUExecutionProvider"]


def test_unknown_provider_is_refused_with_the_available_ones() -> None:
    with pytest.raises(UnrecoverableError, match=r"NopeExecutionProvider .* not available .*CPUExecutionProvider"):
        OnnxRuntimeKernel(DETECTOR, {"providers": ["NopeExecutionProvider"]}, CPU, batched=True)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(),
                    reason="onnxruntime-gpu is installed, so there is no missing extra to report")
def test_gpu_placement_without_onnxruntime_gpu_names_the_extra() -> None:
    with pytest.raises(MissingExtraError, match=r"onnxruntime-gpu.*pip install 'dagserve\[gpu\]'"):
        backend._providers({}, Device("gpu", 0), None)


def test_gpu_kernel_on_a_machine_without_a_usable_gpu_says_what_is_missing() -> None:
    try:
        import cupy

        usable = cupy.cuda.is_available()
    except ImportError:
        usable = False
    if usable:
        pytest.skip("a GPU is usable here; tests/gpu covers this path")
    with pytest.raises((MissingExtraError, UnrecoverableError), match=r"dagserve\[gpu\]|no CUDA device"):
        OnnxRuntimeKernel(DETECTOR, {}, Device("gpu", 0), batched=True)


def test_unreadable_model_is_an_unrecoverable_load_error() -> None:
    with pytest.raises(UnrecoverableError, match="cannot load"):
        OnnxRuntimeKernel(str(MODELS / "not_a_model.onnx"), {}, CPU, batched=True)


def test_factory_reads_the_resolved_path_from_the_context(images: np.ndarray) -> None:
    ctx = kernel_context("model.onnx", {"path": "models/tiny_detector.onnx", "warmup": False},
                         files={"path": DETECTOR}, batched=True)
    kernel = create(ctx)
    assert kernel.per_item is False
    np.testing.assert_array_equal(kernel({"images": images[:2]})["output0"],
                                  reference(DETECTOR, {"images": images[:2]})[0])
