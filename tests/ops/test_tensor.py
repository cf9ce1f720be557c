"""The small tensor ops: results, batch axis handling, batched == per item, zero copy, bad input."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dagserve.ops.kernels._common import KernelInputError

from ._util import build_kernel

RNG = np.random.default_rng(0)
BATCH = RNG.normal(size=(4, 3, 5, 6)).astype(np.float32)

# (op, params, per-item NumPy reference)
CASES: list[tuple[str, dict[str, Any], Any]] = [
    ("tensor.cast", {"dtype": "float16"}, lambda x: x.astype(np.float16)),
    ("tensor.cast", {"dtype": "int32"}, lambda x: x.astype(np.int32)),
    ("tensor.transpose", {"perm": [2, 0, 1]}, lambda x: x.transpose(2, 0, 1)),
    ("tensor.slice", {"axis": 1, "start": 1, "stop": 5, "step": 2}, lambda x: x[:, 1:5:2]),
    ("tensor.slice", {"axis": -1, "start": -2}, lambda x: x[..., -2:]),
    ("math.add", {"value": 1.5}, lambda x: x + np.float32(1.5)),
    ("math.mul", {"value": -2}, lambda x: x * np.float32(-2)),
]


@pytest.mark.parametrize(("op", "params", "reference"), CASES)
def test_result_matches_numpy_and_batched_equals_per_item(op: str, params: dict, reference: Any) -> None:
    k = build_kernel(op, **params)
    whole = k({"x": BATCH})["y"]
    expected = np.stack([reference(item) for item in BATCH])
    assert whole.dtype == expected.dtype and np.array_equal(whole, expected)
    assert whole.flags.c_contiguous
    for i in range(len(BATCH)):
        assert np.array_equal(k({"x": BATCH[i:i + 1]})["y"], whole[i:i + 1])
    ragged = k({"x": [BATCH[0], BATCH[1, :, :2]]})["y"]  # ragged inputs come as lists
    assert isinstance(ragged, list) and np.array_equal(ragged[0], reference(BATCH[0]))


def test_identity_returns_the_same_object_and_runs_inline() -> None:
    k = build_kernel("tensor.identity")
    assert k({"x": BATCH})["y"] is BATCH
    items = [BATCH[0], BATCH[1]]
    assert k({"x": items})["y"] is items
    assert k.inline is True and k.per_item is False


def test_cast_to_the_same_dtype_is_zero_copy() -> None:
    assert build_kernel("tensor.cast", dtype="float32")({"x": BATCH})["y"] is BATCH


def test_concat_joins_along_an_item_axis_and_handles_ragged_parts() -> None:
    a, b = BATCH, BATCH[:, :2] * 2
    k = build_kernel("tensor.concat", axis=0)
    out = k({"x": [a, b]})["y"]
    assert out.shape == (4, 5, 5, 6) and np.array_equal(out, np.concatenate([a, b], axis=1))
    for i in range(4):
        assert np.array_equal(k({"x": [a[i:i + 1], b[i:i + 1]]})["y"], out[i:i + 1])
    ragged = k({"x": [[a[0], a[1][:1]], b[:2]]})["y"]
    assert [r.shape for r in ragged] == [(5, 5, 6), (3, 5, 6)]
    assert np.array_equal(ragged[1], np.concatenate([a[1][:1], b[1]]))


def test_split_gives_contiguous_parts_in_order() -> None:
    k = build_kernel("tensor.split", axis=-1, sizes=[1, 2, 3])
    out = k({"x": BATCH})
    assert sorted(out) == ["y0", "y1", "y2"]
    assert np.array_equal(np.concatenate([out["y0"], out["y1"], out["y2"]], axis=-1), BATCH)
    assert all(part.flags.c_contiguous for part in out.values())
    per_item = k({"x": [BATCH[2]]})
    assert np.array_equal(per_item["y1"][0], BATCH[2][..., 1:3])


def test_integer_arithmetic_keeps_the_dtype_and_wraps() -> None:
    x = np.array([[250, 3]], np.uint8)
    assert build_kernel("math.add", value=10)({"x": x})["y"].tolist() == [[4, 13]]
    assert build_kernel("math.mul", value=2)({"x": x})["y"].dtype == np.uint8


@pytest.mark.parametrize(("op", "params", "x", "match"), [
    ("tensor.transpose", {"perm": [1, 0]}, BATCH, r"needs items of rank 2, got \[3,5,6\]"),
    ("tensor.slice", {"axis": 0, "start": 7}, BATCH, "is empty"),
    ("tensor.slice", {"axis": 5}, BATCH, "axis 5 is out of range for items of rank 3"),
    ("tensor.split", {"sizes": [1, 1]}, BATCH, "add up to 2 but axis 0 has 3"),
    ("math.add", {"value": 300}, np.zeros((1, 2), np.uint8), "does not fit the input dtype uint8"),
    ("math.mul", {"value": 0.5}, np.zeros((1, 2), np.int32), "non-integer"),
    ("math.add", {"value": 1}, np.zeros((1, 2), bool), "needs a numeric tensor"),
    ("tensor.cast", {"dtype": "int8"}, np.array([b"x"], dtype=object), "cannot cast bytes"),
])
def test_bad_inputs_raise_one_clear_error(op: str, params: dict, x: np.ndarray, match: str) -> None:
    with pytest.raises(KernelInputError, match=match):
        build_kernel(op, **params)({"x": x})


def test_concat_of_mismatched_parts_names_both() -> None:
    with pytest.raises(KernelInputError, match=r"part 1 is float32\[4,3,5,7\] but part 0 is float32\[4,3,5,6\]"):
        build_kernel("tensor.concat", axis=0)({"x": [BATCH, np.zeros((4, 3, 5, 7), np.float32)]})
