"""Element-wise ops on two tensors: parity with NumPy, per-item broadcasting, dtype rules, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dagserve.ops.elementwise import ARITHMETIC, COMPARISONS
from dagserve.ops.kernels._common import KernelInputError

from ._util import build_kernel

RNG = np.random.default_rng(7)

REFERENCE: dict[str, Any] = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "min": np.minimum, "max": np.maximum,
    "equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
    "greater": np.greater, "greater_equal": np.greater_equal,
}
ALL = [*ARITHMETIC, *COMPARISONS]
DTYPES = ["int8", "uint8", "int32", "int64", "uint64", "float16", "float32", "float64"]


def sample(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if np.dtype(dtype).kind == "f":
        x = RNG.normal(0, 10, size=shape).astype(dtype)
        x.flat[::5] = np.round(x.flat[::5])  # some exact ties for the comparisons
        return x
    info = np.iinfo(dtype)
    return RNG.integers(max(info.min, -100), min(info.max, 100), size=shape, endpoint=True).astype(dtype)


def reference(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if op == "div":
        return np.floor_divide(a, b) if a.dtype.kind in "iu" else np.true_divide(a, b)
    return REFERENCE[op](a, b)  # type: ignore[no-any-return]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ALL)
def test_result_matches_numpy_for_every_dtype(op: str, dtype: str) -> None:
    a, b = sample((4, 3, 5), dtype), sample((4, 3, 5), dtype)
    if op == "div":
        b[b == 0] = 3
    out = build_kernel(f"tensor.{op}")({"a": a, "b": b})["y"]
    expected = reference(op, a, b)
    assert out.dtype == (np.bool_ if op in COMPARISONS else a.dtype) == expected.dtype
    np.testing.assert_array_equal(out, expected)
    assert out.flags.c_contiguous


@pytest.mark.parametrize(("a_item", "b_item", "y_item"), [
    ((3, 4), (4,), (3, 4)),          # lower rank: aligned from the right
    ((3, 1), (1, 4), (3, 4)),        # both sides broadcast
    ((2, 1, 5), (3, 1), (2, 3, 5)),
    ((), (6,), (6,)),                # a scalar item
    ((4,), (), (4,)),
    ((1,), (1,), (1,)),
])
@pytest.mark.parametrize("op", ["add", "sub", "less"])
def test_broadcasting_is_per_item_and_never_touches_the_batch_axis(
        op: str, a_item: tuple[int, ...], b_item: tuple[int, ...], y_item: tuple[int, ...]) -> None:
    batch = 3
    a, b = sample((batch, *a_item), "float32"), sample((batch, *b_item), "float32")
    k = build_kernel(f"tensor.{op}")
    out = k({"a": a, "b": b})["y"]
    assert out.shape == (batch, *y_item)
    for i in range(batch):
        np.testing.assert_array_equal(out[i], reference(op, a[i], b[i]))
        np.testing.assert_array_equal(k({"a": a[i:i + 1], "b": b[i:i + 1]})["y"], out[i:i + 1])


def test_a_batch_of_one_item_shape_broadcasts_against_items_not_the_batch() -> None:
    # b's item is [3]; NumPy on the whole arrays would align b's batch axis (2) with a's 3 and fail
    a, b = sample((2, 4, 3), "int32"), sample((2, 3), "int32")
    out = build_kernel("tensor.add")({"a": a, "b": b})["y"]
    np.testing.assert_array_equal(out, a + b[:, None, :])


def test_ragged_inputs_run_item_by_item_and_mix_with_uniform_ones() -> None:
    boxes = [sample((2, 4), "float32"), sample((5, 4), "float32")]  # K boxes per item
    scale = sample((2, 4), "float32")  # uniform: one [4] per item
    out = build_kernel("tensor.mul")({"a": boxes, "b": scale})["y"]
    assert isinstance(out, list) and [o.shape for o in out] == [(2, 4), (5, 4)]
    for o, x, s in zip(out, boxes, scale):
        np.testing.assert_array_equal(o, x * s)
    both = build_kernel("tensor.max")({"a": boxes, "b": [x[::-1] for x in boxes]})["y"]
    np.testing.assert_array_equal(both[1], np.maximum(boxes[1], boxes[1][::-1]))


def test_integer_division_floors_like_python() -> None:
    a = np.array([[7, -7, 7, -7, 0]], dtype=np.int32)
    b = np.array([[2, 2, -2, -2, 5]], dtype=np.int32)
    out = build_kernel("tensor.div")({"a": a, "b": b})["y"]
    assert out.tolist() == [[7 // 2, -7 // 2, 7 // -2, -7 // -2, 0]] == [[3, -4, -4, 3, 0]]
    assert out.dtype == np.int32


def test_integer_division_by_zero_fails_the_item_instead_of_giving_zero() -> None:
    a = np.ones((2, 3), dtype=np.int64)
    b = np.array([[1, 1, 1], [1, 0, 1]], dtype=np.int64)
    k = build_kernel("tensor.div")
    with pytest.raises(KernelInputError, match="integer division by zero"):
        k({"a": a, "b": b})
    np.testing.assert_array_equal(k({"a": a[:1], "b": b[:1]})["y"], a[:1])  # the good item alone runs


def test_float_division_follows_ieee_without_warnings() -> None:
    a = np.array([[1.0, -1.0, 0.0]], dtype=np.float32)
    b = np.zeros((1, 3), dtype=np.float32)
    with np.errstate(all="raise"):  # the kernel itself must not let NumPy warn or raise
        out = build_kernel("tensor.div")({"a": a, "b": b})["y"]
    assert out[0, 0] == np.inf and out[0, 1] == -np.inf and np.isnan(out[0, 2])


def test_integer_overflow_wraps_as_numpy() -> None:
    a = np.array([[250, 5]], dtype=np.uint8)
    b = np.array([[10, 10]], dtype=np.uint8)
    assert build_kernel("tensor.add")({"a": a, "b": b})["y"].tolist() == [[4, 15]]
    assert build_kernel("tensor.sub")({"a": b, "b": a})["y"].tolist() == [[16, 5]]


def test_min_max_propagate_nan() -> None:
    a = np.array([[np.nan, 1.0]], dtype=np.float32)
    b = np.array([[0.0, np.nan]], dtype=np.float32)
    assert np.isnan(build_kernel("tensor.min")({"a": a, "b": b})["y"]).all()
    assert np.isnan(build_kernel("tensor.max")({"a": a, "b": b})["y"]).all()


def test_min_max_and_comparisons_take_bool_arithmetic_does_not() -> None:
    a = np.array([[True, False, True]])
    b = np.array([[True, True, False]])
    assert build_kernel("tensor.max")({"a": a, "b": b})["y"].tolist() == [[True, True, True]]
    assert build_kernel("tensor.less")({"a": a, "b": b})["y"].tolist() == [[False, True, False]]
    for op in ("add", "sub", "mul", "div"):
        with pytest.raises(KernelInputError, match="must be numeric, got bool"):
            build_kernel(f"tensor.{op}")({"a": a, "b": b})


@pytest.mark.parametrize("op", ALL)
def test_bad_input_is_refused_with_a_message(op: str) -> None:
    k = build_kernel(f"tensor.{op}")
    with pytest.raises(KernelInputError, match="same dtype, got int32 and float32"):
        k({"a": np.zeros((1, 3), np.int32), "b": np.zeros((1, 3), np.float32)})
    with pytest.raises(KernelInputError, match=r"do not broadcast: items of shape \[3\] and \[4\]"):
        k({"a": np.zeros((1, 3), np.int32), "b": np.zeros((1, 4), np.int32)})
    with pytest.raises(KernelInputError, match="needs input 'b'"):
        k({"a": np.zeros((1, 3), np.int32)})
    with pytest.raises(KernelInputError, match="must be numeric"):
        k({"a": np.array([b"x"], dtype=object), "b": np.array([b"y"], dtype=object)})
    with pytest.raises(KernelInputError, match="2 items on 'a' but 3 on 'b'"):
        k({"a": [np.zeros(3, np.int32)] * 2, "b": np.zeros((3, 3), np.int32)})
