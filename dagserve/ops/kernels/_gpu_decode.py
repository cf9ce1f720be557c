"""GPU decoding for ``image.decode``: nvImageCodec, torchvision's nvJPEG, or CPU + upload.

The decoder is chosen once per kernel instance, from what is installed:

1. **nvImageCodec** (``nvidia-nvimgcodec-cu12`` or ``-cu13``, NVIDIA's codec library) decodes
   JPEG on the GPU with nvJPEG (PNG/WebP/BMP through its CPU codecs), applying EXIF
   orientation and the colour conversion itself;
2. **torchvision** (``torchvision.io.decode_jpeg(device='cuda')``) decodes JPEG on
   the GPU; other formats go to 3;
3. otherwise the CPU decoder (:func:`._decode.decode_cpu`) runs and the image is
   uploaded with ``cupy.asarray`` — correct everywhere, only slower.

The header is always read on the host first (:func:`._decode.read_header`), so
the ``max_pixels`` guard and unsupported-format errors are identical on both
devices. When a GPU decoder refuses an image, the CPU decoder runs on it: either it
decodes (and is uploaded) or it raises the precise error.
"""

from __future__ import annotations

import logging
from typing import Any

from dagserve.ops.kernels._array import DeviceArrays
from dagserve.ops.kernels._decode import Header, decode_cpu

__all__ = ["GpuDecoder"]

log = logging.getLogger(__name__)


class GpuDecoder:
    """Decodes on one GPU with the best installed library (see the module docstring)."""

    def __init__(self, arrays: DeviceArrays) -> None:
        self.arrays = arrays
        self.cp = arrays.xp
        self.backend = "cpu+upload"
        self._nvimgcodec: Any = None
        self._decoder: Any = None
        self._torch: Any = None
        try:
            from nvidia import nvimgcodec  # type: ignore[attr-defined]

            self._nvimgcodec = nvimgcodec
            self._decoder = nvimgcodec.Decoder(device_id=arrays.device.index)
            self.backend = "nvimgcodec"
            return
        except ImportError:
            pass
        except Exception as exc:  # installed but unusable (driver mismatch...): say so once
            log.warning("dagserve: nvImageCodec is installed but failed to start (%s); trying torchvision", exc)
        try:
            import torch
            import torchvision.io

            if torch.cuda.is_available():
                self._torch = (torch, torchvision.io)
                self.backend = "torchvision"
        except ImportError:
            pass

    def decode(self, data: bytes | memoryview, header: Header, color: str, exif: bool) -> Any:
        """``uint8[H, W, C]`` CuPy array of one image (header already checked)."""
        image = None
        if self.backend == "nvimgcodec":
            image = self._decode_nvimgcodec(data, color, exif)
        elif self.backend == "torchvision" and header.format == "JPEG":
            image = self._decode_torchvision(data, color, exif)
        if image is None:
            pixels = decode_cpu(data, color, header.width * header.height, exif, header=header)
            return self.cp.asarray(pixels)
        if image.ndim == 2:
            image = image[:, :, None]
        if color == "bgr":
            image = self.cp.ascontiguousarray(image[:, :, ::-1])
        return image

    def _decode_nvimgcodec(self, data: bytes | memoryview, color: str, exif: bool) -> Any:
        codec = self._nvimgcodec
        spec = codec.ColorSpec.GRAY if color == "gray" else codec.ColorSpec.RGB
        params = codec.DecodeParams(apply_exif_orientation=exif, color_spec=spec, allow_any_depth=False)
        stream = self.cp.cuda.get_current_stream()
        try:
            decoded = self._decoder.decode(bytes(data), params=params, cuda_stream=stream.ptr)
        except Exception:
            return None
        if decoded is None:
            return None
        # nvImageCodec images expose __cuda_array_interface__; CuPy keeps the owner alive.
        return self.cp.ascontiguousarray(self.cp.asarray(decoded))

    def _decode_torchvision(self, data: bytes | memoryview, color: str, exif: bool) -> Any:
        torch, tvio = self._torch
        mode = tvio.ImageReadMode.GRAY if color == "gray" else tvio.ImageReadMode.RGB
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        device = f"cuda:{self.arrays.device.index}"
        stream = torch.cuda.ExternalStream(self.cp.cuda.get_current_stream().ptr, device=device)
        try:
            with torch.cuda.stream(stream):
                chw = tvio.decode_jpeg(raw, mode=mode, device=device, apply_exif_orientation=exif)
                hwc = chw.permute(1, 2, 0).contiguous()
        except Exception:
            return None
        return self.cp.from_dlpack(hwc)
