"""image.decode behind ``dagserve serve``: encoded images as UINT8 tensors, and the per-request pixel budget.

Triton's preprocessing examples send each image as the file's bytes in a UINT8
tensor ([N, L], zero-padded); dagserve decodes them exactly as BYTES items. A
request whose images together declare more than ``max_request_pixels`` is refused
with INVALID_ARGUMENT naming the node and the item, before anything is decoded.
"""

from __future__ import annotations

import io
import struct
import textwrap
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

from ._server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SPEC = """
    dagserve: 1
    name: {name}
    max_batch_size: 8
    inputs:
      IMAGE: {{dtype: {dtype}, shape: {shape}}}
    outputs:
      PIXELS: resize.image
    nodes:
      decode:
        op: image.decode
        inputs: {{data: inputs.IMAGE}}
      resize:
        op: image.resize
        inputs: {{image: decode.image}}
        params: {{size: [16, 16]}}
    """


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("decode_repo")
    for name, dtype, shape in (("decode_bytes", "bytes", "[]"), ("decode_uint8", "uint8", "[L]")):
        (repo / f"{name}.yaml").write_text(
            textwrap.dedent(SPEC.format(name=name, dtype=dtype, shape=shape)).lstrip("\n"), encoding="utf-8")
    proc = ServerProcess([repo], tmp_path_factory.mktemp("decode_server")).start()
    yield proc
    assert proc.stop() == 0, proc.log()


def _files() -> list[bytes]:
    rng = np.random.default_rng(4)
    out = []
    for fmt, (h, w) in (("JPEG", (48, 64)), ("PNG", (30, 20)), ("WEBP", (40, 40))):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, fmt)
        out.append(buf.getvalue())
    return out


def _infer(client: grpcclient.InferenceServerClient, model: str, array: np.ndarray, dtype: str) -> np.ndarray:
    tensor = grpcclient.InferInput("IMAGE", list(array.shape), dtype)
    tensor.set_data_from_numpy(array)
    result = client.infer(model, [tensor])
    return result.as_numpy("PIXELS")


def test_uint8_file_bytes_decode_as_the_bytes_path(server: ServerProcess) -> None:
    files = _files()
    rows = np.zeros((len(files), max(len(f) for f in files)), dtype=np.uint8)
    for row, f in zip(rows, files):
        row[:len(f)] = np.frombuffer(f, np.uint8)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        want = _infer(client, "decode_bytes", np.array(files, dtype=object), "BYTES")
        got = _infer(client, "decode_uint8", rows, "UINT8")
    assert want.shape == (3, 16, 16, 3)
    np.testing.assert_array_equal(got, want)


def _png_claiming(width: int, height: int) -> bytes:
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))


def test_request_over_the_pixel_budget_is_invalid_argument_naming_node_and_item(server: ServerProcess) -> None:
    bombs = np.array([_png_claiming(8000, 8000)] * 8, dtype=object)  # 8 x 64 Mpx in ~300 bytes
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        with pytest.raises(grpcclient.InferenceServerException) as err:
            _infer(client, "decode_bytes", bombs, "BYTES")
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "node 'decode'" in err.value.message() and "item 2" in err.value.message()
        assert "max_request_pixels" in err.value.message()
        ok = _infer(client, "decode_bytes", np.array(_files()[:1], dtype=object), "BYTES")  # still serving
        assert ok.shape == (1, 16, 16, 3)
