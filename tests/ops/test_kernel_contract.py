"""Every built-in op's kernel: resolvable from its OpDef, its calling convention, device handling."""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dagserve.errors import InvalidInputError, MissingExtraError, UnrecoverableError
from dagserve.ops.kernels import _array
from dagserve.ops.kernels._array import DeviceArrays, array_namespace
from dagserve.ops.kernels._common import KernelInputError
from dagserve.ops.registry import default_registry
from dagserve.types import Device

from ._util import build_kernel

BUILTIN_KERNEL_OPS = [
    op.name for op in default_registry() if op.kernel and op.kernel.startswith("dagserve.ops.kernels")
]

PER_ITEM = {"image.decode", "image.resize", "image.letterbox", "image.crop", "detect.nms", "image.warp_quad",
            "image.rotate", "ocr.det_prepare", "ocr.db_boxes", "ocr.text_resize", "ocr.ctc_decode"}

MINIMAL_PARAMS: dict[str, dict[str, Any]] = {
    "image.resize": {"size": [8, 8]},
    "image.letterbox": {"size": [8, 8]},
    "tensor.cast": {"dtype": "float32"},
    "tensor.transpose": {"perm": [1, 0]},
    "tensor.split": {"sizes": [1, 1]},
    "math.add": {"value": 1},
    "math.mul": {"value": 1},
    "image.rotate": {"degrees": 180},
    "ocr.ctc_decode": {"characters": str(Path(__file__).parent / "fixtures" / "characters.txt")},
}


def test_every_builtin_op_with_a_runtime_kernel_is_covered() -> None:
    assert set(BUILTIN_KERNEL_OPS) >= PER_ITEM | {"image.normalize", "classify.topk", "tensor.identity",
                                                  "tensor.concat", "tensor.slice"}


@pytest.mark.parametrize("op", BUILTIN_KERNEL_OPS)
def test_kernel_string_resolves_to_a_factory_and_the_convention_is_declared(op: str) -> None:
    opdef = default_registry().get(op)
    assert opdef is not None and opdef.kernel is not None
    module_name, factory = opdef.kernel.split(":")
    assert callable(getattr(importlib.import_module(module_name), factory))
    kernel = build_kernel(op, **MINIMAL_PARAMS.get(op, {}))
    assert kernel.per_item is (op in PER_ITEM)


def test_input_errors_fail_one_request_as_invalid_argument() -> None:
    with pytest.raises(KernelInputError) as info:
        build_kernel("image.decode")({"data": b""})
    assert isinstance(info.value, InvalidInputError) and isinstance(info.value, ValueError)
    assert info.value.status == "INVALID_ARGUMENT"


def test_cpu_kernels_take_dlpack_producers_without_copying() -> None:
    base = np.arange(12, dtype=np.float32).reshape(1, 12)

    class Producer:
        def __dlpack__(self, **kwargs: Any) -> Any:
            return base.__dlpack__(**kwargs)

        def __dlpack_device__(self) -> tuple[int, int]:
            return base.__dlpack_device__()

    out = build_kernel("tensor.identity")({"x": base})["y"]
    assert out is base
    arrays = DeviceArrays(Device("cpu"), "test")
    wrapped = arrays.asarray(Producer(), "x")
    assert isinstance(wrapped, np.ndarray) and np.shares_memory(wrapped, base)


def test_cpu_kernels_refuse_gpu_arrays_instead_of_copying_silently() -> None:
    class CudaProducer:
        def __dlpack__(self, **kwargs: Any) -> Any:
            raise AssertionError("must not be consumed")

        def __dlpack_device__(self) -> tuple[int, int]:
            return (2, 0)  # kDLCUDA

    with pytest.raises(TypeError, match="GPU array but the kernel runs on the CPU"):
        DeviceArrays(Device("cpu"), "test").asarray(CudaProducer(), "x")


def test_array_namespace() -> None:
    assert array_namespace(np.zeros(2)) is np
    with pytest.raises(TypeError, match="expected a NumPy or CuPy array"):
        array_namespace([1, 2])


@pytest.fixture
def fresh_cupy_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_array, "_cupy_state", {})


def _fake_cupy(available: bool) -> types.ModuleType:
    """A stand-in for CuPy on a machine without a GPU: it imports, and is_available() says no."""
    module = types.ModuleType("cupy")
    module.cuda = types.SimpleNamespace(is_available=lambda: available)  # type: ignore[attr-defined]
    return module


def test_gpu_kernel_without_cupy_names_the_extra(monkeypatch: pytest.MonkeyPatch, fresh_cupy_state: None) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'dagserve\[gpu\]'"):
        build_kernel("image.resize", device=Device("gpu", 0), size=[8, 8])


def test_gpu_kernel_when_cupy_imports_but_no_gpu_is_refused_at_build_time(
        monkeypatch: pytest.MonkeyPatch, fresh_cupy_state: None) -> None:
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(available=False))
    assert _array.cupy_or_none() is None
    with pytest.raises(UnrecoverableError, match=r"cupy.cuda.is_available\(\) is False"):
        build_kernel("detect.nms", device=Device("gpu", 0))


ELEMENTWISE_OPS = [op.name for op in default_registry()
                   if (op.kernel or "").startswith("dagserve.ops.kernels.elementwise:")]


def test_the_elementwise_ops_are_registered() -> None:
    assert {f"tensor.{s}" for s in ("add", "sub", "mul", "div", "min", "max", "equal", "not_equal", "less",
                                     "less_equal", "greater", "greater_equal")} == set(ELEMENTWISE_OPS)


@pytest.mark.parametrize("op", ELEMENTWISE_OPS)
def test_elementwise_kernels_read_their_inputs_only_and_return_fresh_arrays(op: str) -> None:
    a = np.arange(1, 13, dtype=np.int32).reshape(2, 6)
    b = np.full((2, 6), 3, dtype=np.int32)
    for x in (a, b):
        x.flags.writeable = False  # a write would raise
    kernel = build_kernel(op)
    first = kernel({"a": a, "b": b})["y"]
    second = kernel({"a": a, "b": b})["y"]
    assert not np.shares_memory(first, a) and not np.shares_memory(first, b)
    assert not np.shares_memory(first, second)  # no buffer reused across calls
    assert first.flags.writeable and first.flags.c_contiguous
    assert np.array_equal(first, second)
    assert a.tolist() == np.arange(1, 13).reshape(2, 6).tolist() and (b == 3).all()
