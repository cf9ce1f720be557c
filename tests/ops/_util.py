"""Helpers of the op-kernel tests: build a kernel the way the runtime does, encode images."""

from __future__ import annotations

import importlib
import io
from typing import Any

import numpy as np
from PIL import Image

from dagserve.ops.base import KernelContext
from dagserve.ops.registry import default_registry
from dagserve.types import Device, TensorType

CPU = Device("cpu")


def build_kernel(op: str, *, device: Device = CPU, files: dict[str, str] | None = None,
                 input_types: dict[str, TensorType] | None = None, **params: Any) -> Any:
    """The kernel of built-in ``op``, imported from its OpDef's ``module:factory`` string."""
    opdef = default_registry().get(op)
    assert opdef is not None and opdef.kernel, op
    module_name, factory_name = opdef.kernel.split(":")
    factory = getattr(importlib.import_module(module_name), factory_name)
    ctx = KernelContext(node="n", op=op, params=params, device=device, batched=True,
                        input_types=input_types or {}, output_types={}, files=files or {})
    return factory(ctx)


def encode(array: np.ndarray, fmt: str, **save: Any) -> bytes:
    """Encode an HWC uint8 array with Pillow."""
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    buf = io.BytesIO()
    image.save(buf, fmt, **save)
    return buf.getvalue()


def photos() -> dict[str, np.ndarray]:
    """Real photos shipped with scikit-image (HWC uint8)."""
    import skimage.data as data

    return {
        "astronaut": data.astronaut(),  # 512x512 RGB
        "chelsea": data.chelsea(),  # 300x451 RGB
        "coffee": data.coffee(),  # 400x600 RGB
        "camera": data.camera()[:, :, None],  # 512x512 gray
    }
