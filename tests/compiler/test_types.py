"""dagserve.types and the type-rule helpers of dagserve.ops.base."""

from __future__ import annotations

import pytest

from dagserve.ops.base import InferContext
from dagserve.types import CPU, DTYPES, Device, TensorType, dims_compatible, parse_device, parse_dtype


@pytest.mark.parametrize(("name", "canonical"), [
    ("float32", "float32"), ("FP32", "float32"), ("TYPE_FP16", "float16"), ("fp64", "float64"),
    ("BYTES", "bytes"), ("uint8", "uint8"), ("BOOL", "bool"),
])
def test_parse_dtype_accepts_spec_and_triton_names(name: str, canonical: str) -> None:
    assert parse_dtype(name) == canonical


@pytest.mark.parametrize("name", ["float", "int", "FP8", "", "string"])
def test_parse_dtype_refuses_unknown_names(name: str) -> None:
    with pytest.raises(ValueError, match="unknown dtype"):
        parse_dtype(name)


def test_every_dtype_has_a_numpy_and_a_triton_name() -> None:
    import numpy as np

    for spec_name, (numpy_name, triton) in DTYPES.items():
        assert np.dtype(numpy_name) is not None
        assert parse_dtype(triton) == spec_name


@pytest.mark.parametrize(("text", "device"), [
    ("cpu", CPU), ("gpu", Device("gpu", 0)), ("gpu:0", Device("gpu", 0)), ("gpu:3", Device("gpu", 3)),
])
def test_parse_device(text: str, device: Device) -> None:
    assert parse_device(text) == device
    assert str(device) in ("cpu", f"gpu:{device.index}")


@pytest.mark.parametrize("text", ["auto", "cpu:1", "gpu:", "tpu", "GPU", "gpu:-1", ""])
def test_parse_device_refuses_what_is_not_a_concrete_device(text: str) -> None:
    with pytest.raises(ValueError, match="invalid device"):
        parse_device(text)


def test_dims_compatible_only_rejects_two_different_fixed_sizes() -> None:
    assert dims_compatible(3, 3) and not dims_compatible(3, 4)
    assert dims_compatible("H", 4) and dims_compatible(4, "?") and dims_compatible("H", "W")


def test_render_shows_the_batch_dimension_and_notes() -> None:
    t = TensorType("uint8", ("H", "W", 3), layout="hwc", ragged=True)
    assert t.render() == "uint8[H,W,3] (hwc, ragged)"
    assert t.render(batched=True) == "uint8[N,H,W,3] (hwc, ragged)"
    assert TensorType("bytes", ()).render(batched=True) == "bytes[N]"
    assert TensorType("float32", ()).render() == "float32[]"


def test_tensor_type_json_round_trip() -> None:
    for t in (TensorType("float32", (3, "H", "?"), "chw", False, Device("gpu", 1)),
              TensorType("bytes", ()), TensorType("uint8", ("H", "W", 3), "hwc", True, CPU)):
        assert TensorType.from_json(t.to_json()) == t


def _ctx(t: TensorType, batched: bool = True) -> InferContext:
    return InferContext("n", "test.op", {}, {"x": t}, {"x": "p.y"}, batched)


@pytest.mark.parametrize(("t", "code"), [
    (TensorType("float32", (3, 64)), "E-RANK"),  # rank is checked first ...
    (TensorType("uint8", (3, 64, 32)), "E-SHAPE"),  # ... then fixed dims ...
    (TensorType("uint8", (3, 64, 64)), "E-DTYPE"),  # ... then dtype ...
    (TensorType("float32", (3, 64, 64), "hwc"), "E-LAYOUT"),  # ... then layout
    (TensorType("float32", (3, "H", 64), "chw", ragged=True), "E-RAGGED"),
])
def test_expect_reports_the_most_basic_mismatch(t: TensorType, code: str) -> None:
    ctx = _ctx(t)
    assert not ctx.expect("x", dtypes=("float32",), shape=(3, 64, 64), layouts=("chw",), uniform=True)
    (problem,) = ctx.problems
    assert problem.code == code and problem.port == "x"
    assert f"but 'p.y' produces {t.render(True)}" in problem.message


def test_expect_accepts_symbolic_and_unknown_dims_and_missing_layouts() -> None:
    ctx = _ctx(TensorType("float32", (3, "H", "?")))
    assert ctx.expect("x", dtypes=("float32",), shape=(3, 64, None), layouts=("chw",), uniform=True)
    assert ctx.problems == []


def test_expect_describes_what_it_wanted() -> None:
    ctx = _ctx(TensorType("int8", (2,)), batched=False)
    ctx.expect("x", dtypes=("float16", "float32"), ranks=(3,), layouts=("hwc",))
    assert ctx.problems[0].message == (
        "input 'x' of node 'n' expects float16|float32 of rank 3 per item (hwc) but 'p.y' produces int8[2]"
    )


def test_expect_on_a_missing_input_is_false_without_a_problem() -> None:
    ctx = InferContext("n", "test.op", {}, {}, {}, True)
    assert not ctx.expect("x", dtypes=("float32",)) and ctx.problems == []


def test_expect_indexes_variadic_ports() -> None:
    ctx = InferContext("n", "t", {}, {"x": [TensorType("float32", (2,)), TensorType("int8", (2,))]},
                       {"x": ["a.y", "b.y"]}, False)
    assert ctx.expect("x", dtypes=("float32",), index=0)
    assert not ctx.expect("x", dtypes=("float32",), index=1)
    assert ctx.problems[0].index == 1 and "'b.y' produces int8[2]" in ctx.problems[0].message
