"""Padding ragged items into one batch (the recogniser of the OCR pipeline reads these)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagserve.backends._ragged import pad_to_widest


def test_items_sit_in_the_corner_of_a_batch_as_wide_as_the_widest() -> None:
    a = np.ones((3, 48, 100), np.float32)
    b = np.full((3, 48, 160), 2, np.float32)
    batch = pad_to_widest([a, b], value=0.0)
    assert batch.shape == (2, 3, 48, 160) and batch.dtype == np.float32
    assert (batch[0, :, :, :100] == 1).all() and (batch[0, :, :, 100:] == 0).all() and (batch[1] == 2).all()


def test_min_shape_widens_every_batch_and_inputs_stay_untouched() -> None:
    a = np.ones((2, 5), np.int32)
    a.flags.writeable = False
    batch = pad_to_widest([a], value=-1, min_shape=[None, 8])
    assert batch.shape == (1, 2, 8) and (batch[0, :, 5:] == -1).all()
    assert not np.shares_memory(batch, a)


def test_mismatched_items_are_refused_with_the_culprit_named() -> None:
    with pytest.raises(ValueError, match="item 1 has rank 1"):
        pad_to_widest([np.zeros((2, 2)), np.zeros(2)])
    with pytest.raises(ValueError, match="item 1 is int32"):
        pad_to_widest([np.zeros(2, np.float32), np.zeros(2, np.int32)])
    with pytest.raises(ValueError, match="empty batch"):
        pad_to_widest([])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 5), st.integers(1, 7)), min_size=1, max_size=6))
def test_padding_keeps_every_item_exactly(shapes: list[tuple[int, int]]) -> None:
    rng = np.random.default_rng(0)
    items = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    batch = pad_to_widest(items, value=7.0)
    assert batch.shape == (len(items), max(h for h, _ in shapes), max(w for _, w in shapes))
    for k, item in enumerate(items):
        h, w = item.shape
        np.testing.assert_array_equal(batch[k, :h, :w], item)
        assert (batch[k, h:, :] == 7).all() and (batch[k, :, w:] == 7).all()
