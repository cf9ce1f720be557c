"""classify.topk: parity with a stable NumPy argsort, softmax, labels, batching, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dagserve.ops.kernels._common import KernelInputError

from ._util import build_kernel


def _softmax64(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("softmax", [True, False])
def test_topk_matches_stable_argsort(softmax: bool) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (6, 1000)).astype(np.float32)
    out = build_kernel("classify.topk", k=5, softmax=softmax)({"logits": logits})
    expected_idx = np.argsort(-logits, axis=1, kind="stable")[:, :5]
    assert np.array_equal(out["indices"], expected_idx) and out["indices"].dtype == np.int64
    values = _softmax64(logits) if softmax else logits
    np.testing.assert_allclose(out["scores"], np.take_along_axis(values, expected_idx, 1), rtol=1e-5)
    assert out["scores"].dtype == np.float32 and "labels" not in out


def test_ties_keep_ascending_class_order() -> None:
    logits = np.array([[1.0, 3.0, 3.0, 0.0, 3.0]], np.float32)
    out = build_kernel("classify.topk", k=4, softmax=False)({"logits": logits})
    assert out["indices"].tolist() == [[1, 2, 4, 0]]


def test_softmax_is_stable_for_huge_logits() -> None:
    logits = np.array([[1000.0, 999.0, -1000.0]], np.float32)
    out = build_kernel("classify.topk", k=3)({"logits": logits})
    assert np.isfinite(out["scores"]).all()
    np.testing.assert_allclose(out["scores"][0], [1 / (1 + np.exp(-1)), np.exp(-1) / (1 + np.exp(-1)), 0], atol=1e-6)


def test_labels_file_gives_utf8_bytes(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("chat\n\nchien\noiseau é\n", encoding="utf-8")  # blank lines are skipped
    k = build_kernel("classify.topk", k=2, files={"labels": str(path)})
    out = k({"logits": np.array([[0.1, 0.2, 3.0], [5.0, 0.0, 1.0]], np.float32)})
    assert out["labels"].dtype == object
    assert out["labels"].tolist() == [["oiseau é".encode(), b"chien"], [b"chat", "oiseau é".encode()]]


def test_batched_equals_per_item_and_ragged_lists() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(5, 37)).astype(np.float16)
    k = build_kernel("classify.topk", k=3)
    whole = k({"logits": logits})
    for i in range(5):
        one = k({"logits": logits[i:i + 1]})
        assert np.array_equal(whole["indices"][i:i + 1], one["indices"])
        assert np.array_equal(whole["scores"][i:i + 1], one["scores"])
    listed = k({"logits": [logits[0], logits[3]]})
    assert [a.tolist() for a in listed["indices"]] == [whole["indices"][0].tolist(), whole["indices"][3].tolist()]


@pytest.mark.parametrize(("logits", "params", "match"), [
    (np.array([[0.0, np.nan, 1.0], [1.0, 2.0, 3.0]], np.float32), {"k": 1}, r"NaN or infinite values \(items \[0\]\)"),
    (np.array([[0.0, np.inf, 1.0]], np.float32), {"k": 1}, "NaN or infinite"),
    (np.zeros((2, 3), np.int64), {"k": 1}, "must be float16|float32|float64"),
    (np.zeros((2, 3), np.float32), {"k": 4}, "k=4 but the logits have only 3 classes"),
    (np.zeros((2, 0), np.float32), {"k": 1}, "C >= 1"),
])
def test_bad_logits_raise_one_clear_error(logits: np.ndarray, params: dict, match: str) -> None:
    with pytest.raises(KernelInputError, match=match):
        build_kernel("classify.topk", **params)({"logits": logits})


def test_labels_file_with_wrong_count_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(KernelInputError, match="2 labels but the logits have 3 classes"):
        build_kernel("classify.topk", k=1, files={"labels": str(path)})({"logits": np.zeros((1, 3), np.float32)})
