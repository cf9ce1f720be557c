"""HTTP/REST v2 against the real server: tritonclient.http (sync, aio), JSON and binary tensors."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import struct
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio

from ._server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]  # a server start can take 30 s on a busy machine


def post(server: ServerProcess, path: str, body: bytes | str, headers: dict[str, str] | None = None,
         method: str = "POST") -> tuple[int, dict[str, str], bytes]:
    """A raw HTTP request (for bodies tritonclient would never send)."""
    conn = http.client.HTTPConnection(server.http_url, timeout=20)
    try:
        conn.request(method, path, body=body.encode() if isinstance(body, str) else body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def fp32_input(array: np.ndarray[Any, Any], binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("INPUT0", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array.astype(np.float32), binary_data=binary)
    return tensor


def test_health_and_metadata(http_client: httpclient.InferenceServerClient, live_server: ServerProcess) -> None:
    assert http_client.is_server_live() and http_client.is_server_ready()
    assert http_client.is_model_ready("identity") and http_client.is_model_ready("identity", "1")
    assert not http_client.is_model_ready("no_such_pipeline")
    assert not http_client.is_model_ready("identity", "2")
    meta = http_client.get_server_metadata()
    assert meta["name"] == "dagserve" and "binary_tensor_data" in meta["extensions"]
    model = http_client.get_model_metadata("add_mul")
    assert model == {"name": "add_mul", "versions": ["1"], "platform": "dagserve",
                     "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 16]}],
                     "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1, 16]}]}
    assert http_client.get_model_metadata("add_mul", "1")["name"] == "add_mul"
    status, _, body = post(live_server, "/v2/health/ready", b"", method="GET")
    assert status == 200 and body == b""


def test_config_is_triton_json(http_client: httpclient.InferenceServerClient) -> None:
    config = http_client.get_model_config("add_mul")
    assert config["name"] == "add_mul" and config["max_batch_size"] == 64
    assert config["input"][0]["name"] == "INPUT0" and config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["input"][0]["dims"] == [16], "int64 fields must be JSON numbers, as Triton sends them"
    assert config["output"][0]["dims"] == [16]
    assert http_client.get_model_config("bytes_echo")["input"][0]["data_type"] == "TYPE_STRING"


def test_infer_binary_fp32_batch(http_client: httpclient.InferenceServerClient) -> None:
    x = np.arange(4 * 16, dtype=np.float32).reshape(4, 16)
    result = http_client.infer("add_mul", [fp32_input(x)], request_id="h-1")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), (x + 1) * 2)
    response = result.get_response()
    assert response["id"] == "h-1"
    assert response["outputs"][0]["parameters"]["binary_data_size"] == x.nbytes


def test_infer_json_tensors(http_client: httpclient.InferenceServerClient) -> None:
    x = np.arange(2 * 16, dtype=np.float32).reshape(2, 16) / 4
    result = http_client.infer("add_mul", [fp32_input(x, binary=False)],
                               outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=False)])
    out = result.get_response()["outputs"][0]
    assert out["shape"] == [2, 16] and out["datatype"] == "FP32" and "parameters" not in out
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), (x + 1) * 2)


def test_infer_mixed_json_input_binary_output(http_client: httpclient.InferenceServerClient) -> None:
    x = np.ones((1, 5), dtype=np.float32)
    result = http_client.infer("identity", [fp32_input(x, binary=False)],
                               outputs=[httpclient.InferRequestedOutput("OUTPUT0", binary_data=True)])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), x)


def test_infer_int64_json_and_binary(http_client: httpclient.InferenceServerClient) -> None:
    x = np.array([[1, 2, 3, 4], [2**50, -1, 0, 5]], dtype=np.int64)
    for binary in (True, False):
        tensor = httpclient.InferInput("X", [2, 4], "INT64")
        tensor.set_data_from_numpy(x, binary_data=binary)
        result = http_client.infer("int_add", [tensor],
                                   outputs=[httpclient.InferRequestedOutput("Y", binary_data=binary)])
        out = result.as_numpy("Y")
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, x + 3)


def test_infer_bytes_json_and_binary(http_client: httpclient.InferenceServerClient) -> None:
    text = np.array([b"hello", b"", "ünïcode".encode()], dtype=np.object_)
    for binary in (True, False):
        tensor = httpclient.InferInput("TEXT", [3], "BYTES")
        tensor.set_data_from_numpy(text, binary_data=binary)
        result = http_client.infer("bytes_echo", [tensor],
                                   outputs=[httpclient.InferRequestedOutput("ECHO", binary_data=binary)])
        got = [x if isinstance(x, bytes) else str(x).encode() for x in result.as_numpy("ECHO").tolist()]
        assert got == text.tolist()
    raw = np.array([b"\x00\xff\xfe"], dtype=np.object_)
    tensor = httpclient.InferInput("TEXT", [1], "BYTES")
    tensor.set_data_from_numpy(raw)
    assert http_client.infer("bytes_echo", [tensor]).as_numpy("ECHO").tolist() == [b"\x00\xff\xfe"]


def test_bytes_base64_in_json(live_server: ServerProcess) -> None:
    """Non-UTF-8 BYTES in pure JSON: base64 with content_type, both ways."""
    body = {"inputs": [{"name": "TEXT", "shape": [2], "datatype": "BYTES", "parameters": {"content_type": "base64"},
                        "data": [base64.b64encode(b"\xff\x00").decode(), base64.b64encode(b"ok").decode()]}]}
    status, _, raw = post(live_server, "/v2/models/bytes_echo/infer", json.dumps(body))
    assert status == 200, raw
    out = json.loads(raw)["outputs"][0]
    assert out["parameters"] == {"content_type": "base64"}
    assert [base64.b64decode(x) for x in out["data"]] == [b"\xff\x00", b"ok"]


def test_nested_json_data_and_no_batch_outputs_list(live_server: ServerProcess) -> None:
    body = {"inputs": [{"name": "X", "shape": [2, 4], "datatype": "INT64", "data": [[1, 2, 3, 4], [5, 6, 7, 8]]}]}
    status, headers, raw = post(live_server, "/v2/models/int_add/versions/1/infer", json.dumps(body))
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    response = json.loads(raw)
    assert response["model_name"] == "int_add" and response["model_version"] == "1"
    assert response["outputs"] == [{"name": "Y", "datatype": "INT64", "shape": [2, 4],
                                    "data": [4, 5, 6, 7, 8, 9, 10, 11]}]


def test_binary_wire_format_by_hand(live_server: ServerProcess) -> None:
    """The binary extension byte for byte: header length, input sizes, output sizes."""
    x = np.arange(16, dtype="<f4").reshape(1, 16)
    header = json.dumps({"id": "b", "inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                                "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]}).encode()
    status, headers, raw = post(live_server, "/v2/models/add_mul/infer", header + x.tobytes(),
                                {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200, raw
    n = int(headers["Inference-Header-Content-Length"])
    meta = json.loads(raw[:n])
    assert meta["id"] == "b"
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 64 == len(raw) - n
    np.testing.assert_array_equal(np.frombuffer(raw[n:], dtype="<f4"), (x.ravel() + 1) * 2)

    text = [b"ab", b"\xffc"]
    data = b"".join(struct.pack("<I", len(t)) + t for t in text)
    header = json.dumps({"inputs": [{"name": "TEXT", "shape": [2], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(data)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    status, headers, raw = post(live_server, "/v2/models/bytes_echo/infer", header + data,
                                {"Inference-Header-Content-Length": str(len(header))})
    assert status == 200, raw
    assert raw[int(headers["Inference-Header-Content-Length"]):] == data


def test_gzip_request_body(live_server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(live_server.http_url)
    try:
        x = np.ones((2, 16), dtype=np.float32)
        for algorithm in ("gzip", "deflate"):
            result = client.infer("add_mul", [fp32_input(x)], request_compression_algorithm=algorithm)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((2, 16), 4, dtype=np.float32))
    finally:
        client.close()


def test_async_infer_of_sync_client(http_client: httpclient.InferenceServerClient) -> None:
    handles = [http_client.async_infer("add_mul", [fp32_input(np.full((1, 16), i))]) for i in range(8)]
    for i, handle in enumerate(handles):
        np.testing.assert_array_equal(handle.get_result(timeout=20).as_numpy("OUTPUT0"),
                                      np.full((1, 16), (i + 1) * 2, dtype=np.float32))


def test_aio_client(live_server: ServerProcess) -> None:
    async def main() -> None:
        async with httpaio.InferenceServerClient(live_server.http_url) as client:
            assert await client.is_server_live() and await client.is_model_ready("add_mul")
            assert (await client.get_model_config("add_mul"))["max_batch_size"] == 64

            async def one(i: int) -> None:
                tensor = httpaio.InferInput("INPUT0", [3, 16], "FP32")
                tensor.set_data_from_numpy(np.full((3, 16), i, dtype=np.float32))
                result = await client.infer("add_mul", [tensor])
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((3, 16), (i + 1) * 2))

            await asyncio.gather(*(one(i) for i in range(24)))
            stats = await client.get_inference_statistics("add_mul")
            assert stats["model_stats"][0]["inference_stats"]["success"]["count"] >= 24

    asyncio.run(asyncio.wait_for(main(), 30))


def test_statistics_match_grpc(http_client: httpclient.InferenceServerClient, live_server: ServerProcess) -> None:
    import tritonclient.grpc as grpcclient

    before = http_client.get_inference_statistics("identity")["model_stats"][0]
    for _ in range(4):
        http_client.infer("identity", [fp32_input(np.zeros((2, 3)))])
    after = http_client.get_inference_statistics("identity")["model_stats"][0]
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 4
    assert after["inference_count"] - before["inference_count"] == 8
    assert isinstance(after["inference_stats"]["success"]["ns"], int)
    g = grpcclient.InferenceServerClient(live_server.grpc_url)
    try:
        (gs,) = g.get_inference_statistics("identity").model_stats
    finally:
        g.close()
    assert gs.inference_stats.success.count == after["inference_stats"]["success"]["count"]
    assert gs.inference_count == after["inference_count"]
    every = http_client.get_inference_statistics()["model_stats"]
    assert {"add_mul", "identity"} <= {s["name"] for s in every}


def test_repository_over_http(http_client: httpclient.InferenceServerClient) -> None:
    index = {m["name"]: m for m in http_client.get_model_repository_index()}
    assert index["int_add"]["state"] == "READY" and index["int_add"]["version"] == "1"
    http_client.unload_model("int_add")
    try:
        assert not http_client.is_model_ready("int_add")
        assert {m["name"]: m for m in http_client.get_model_repository_index()}["int_add"]["state"] == "UNAVAILABLE"
    finally:
        http_client.load_model("int_add")
    assert http_client.is_model_ready("int_add")
    with pytest.raises(httpclient.InferenceServerException) as err:
        http_client.load_model("int_add", config=json.dumps({"max_batch_size": 2}))
    assert err.value.status() == "400" and "from the 'config' parameter" in err.value.message()
    assert http_client.is_model_ready("int_add"), "a config that does not compile leaves the old pipeline serving"
    with pytest.raises(httpclient.InferenceServerException) as err:
        http_client.load_model("no_such_pipeline")
    assert err.value.status() == "404" and "no_such_pipeline" in err.value.message()
