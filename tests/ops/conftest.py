"""Fixtures of the op-kernel tests."""

from __future__ import annotations

import numpy as np
import pytest

from ._util import photos

_PHOTOS = photos()


@pytest.fixture(params=sorted(_PHOTOS))
def photo(request: pytest.FixtureRequest) -> np.ndarray:
    """Each real photo from scikit-image (HWC uint8)."""
    return _PHOTOS[request.param]


@pytest.fixture(scope="session")
def all_photos() -> dict[str, np.ndarray]:
    return _PHOTOS
