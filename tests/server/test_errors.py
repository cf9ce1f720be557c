"""Every error status, over gRPC and HTTP, and inputs that must not crash the server."""

from __future__ import annotations

import asyncio
import json
import random
import socket
import time
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from ._server import ServerProcess
from .test_http import post

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]  # a server start can take 30 s on a busy machine


def grpc_error(call: Any) -> grpcclient.InferenceServerException:
    with pytest.raises(grpcclient.InferenceServerException) as err:
        call()
    return err.value


def http_error(call: Any) -> httpclient.InferenceServerException:
    with pytest.raises(httpclient.InferenceServerException) as err:
        call()
    return err.value


def g_input(name: str, array: np.ndarray[Any, Any], datatype: str) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def h_input(name: str, array: np.ndarray[Any, Any], datatype: str, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


# -- INVALID_ARGUMENT ---------------------------------------------------------------------------


def test_wrong_dtype_names_input_expected_and_received(grpc_client: grpcclient.InferenceServerClient,
                                                       http_client: httpclient.InferenceServerClient) -> None:
    x = np.zeros((2, 16), dtype=np.int32)
    err = grpc_error(lambda: grpc_client.infer("add_mul", [g_input("INPUT0", x, "INT32")]))
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'INPUT0'" in err.message() and "float32" in err.message() and "int32[2, 16]" in err.message()
    herr = http_error(lambda: http_client.infer("add_mul", [h_input("INPUT0", x, "INT32")]))
    assert herr.status() == "400" and herr.message() == err.message()


def test_wrong_shape_names_input_expected_and_received(grpc_client: grpcclient.InferenceServerClient,
                                                       http_client: httpclient.InferenceServerClient) -> None:
    x = np.zeros((2, 8), dtype=np.float32)
    err = grpc_error(lambda: grpc_client.infer("add_mul", [g_input("INPUT0", x, "FP32")]))
    assert err.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'INPUT0'" in err.message() and "16]" in err.message() and "[2, 8]" in err.message()
    herr = http_error(lambda: http_client.infer("add_mul", [h_input("INPUT0", x, "FP32", binary=False)]))
    assert herr.status() == "400" and "[2, 8]" in herr.message()
    too_big = np.zeros((65, 16), dtype=np.float32)
    err = grpc_error(lambda: grpc_client.infer("add_mul", [g_input("INPUT0", too_big, "FP32")]))
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "max_batch_size" in err.message()


def test_unknown_and_missing_inputs_and_outputs(grpc_client: grpcclient.InferenceServerClient) -> None:
    x = np.zeros((1, 16), dtype=np.float32)
    err = grpc_error(lambda: grpc_client.infer("add_mul", [g_input("INPUT9", x, "FP32")]))
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "INPUT9" in err.message() and "INPUT0" in err.message()
    err = grpc_error(lambda: grpc_client.infer("add_mul", [g_input("INPUT0", x, "FP32")],
                                               outputs=[grpcclient.InferRequestedOutput("NOPE")]))
    assert err.status() == "StatusCode.INVALID_ARGUMENT" and "'NOPE'" in err.message()


def test_garbage_raw_contents_are_invalid_and_harmless(live_server: ServerProcess) -> None:
    with grpc.insecure_channel(live_server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        def infer(model: str, name: str, datatype: str, shape: list[int], raw: list[bytes]) -> grpc.RpcError:
            request = pb.ModelInferRequest(model_name=model, raw_input_contents=raw)
            request.inputs.add(name=name, datatype=datatype, shape=shape)
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            return err.value

        err = infer("add_mul", "INPUT0", "FP32", [1, 16], [b"garbage"])
        assert "needs 64 bytes" in err.details() and "7 were sent" in err.details()
        err = infer("add_mul", "INPUT0", "FP32", [1, 16], [b"x" * 64, b"extra"])
        assert "raw input buffers" in err.details()
        err = infer("bytes_echo", "TEXT", "BYTES", [1], [b"\xff\xff\xff\x7fabc"])
        assert "claims" in err.details()
        err = infer("bytes_echo", "TEXT", "BYTES", [1], [b"\x01\x00\x00\x00ab"])
        assert "unexpected bytes" in err.details()
        err = infer("add_mul", "INPUT0", "FP32", [-1, 16], [b""])
        assert "negative" in err.details()
        err = infer("add_mul", "INPUT0", "WAT", [1, 16], [b"x" * 64])
        assert "WAT" in err.details()
        err = infer("add_mul", "INPUT0", "FP32", [2**40, 2**40], [b"x" * 64])
        assert "impossibly large" in err.details()
        err = infer("bytes_echo", "TEXT", "BYTES", [10**12], [b"\x01\x00\x00\x00a"])
        assert "at least 4000000000000 bytes" in err.details(), "checked before allocating for the claimed shape"
        request = pb.ModelInferRequest(model_name="add_mul")
        request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
        request.inputs[0].contents.fp32_contents.extend([1.0, 2.0])
        with pytest.raises(grpc.RpcError) as rpc:
            stub.ModelInfer(request, timeout=10)
        assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "needs 16 values" in rpc.value.details()
        request = pb.ModelInferRequest(model_name="add_mul")
        request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
        request.parameters["timeout"].string_param = "soon"
        request.raw_input_contents.append(b"\x00" * 64)
        with pytest.raises(grpc.RpcError) as rpc:
            stub.ModelInfer(request, timeout=10)
        assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "timeout" in rpc.value.details()
        request.parameters["timeout"].int64_param = -5
        with pytest.raises(grpc.RpcError) as rpc:
            stub.ModelInfer(request, timeout=10)
        assert rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "must be >= 0" in rpc.value.details()
        ok = pb.ModelInferRequest(model_name="add_mul", raw_input_contents=[b"\x00" * 64])
        ok.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
        assert len(stub.ModelInfer(ok, timeout=10).raw_output_contents[0]) == 64


BAD_BODIES: list[tuple[str, bytes, dict[str, str], str]] = [
    ("malformed JSON", b"{not json", {}, "malformed"),
    ("not an object", b"[1, 2]", {}, "must be an object"),
    ("no inputs", b"{}", {}, "missing field 'inputs'"),
    ("input without shape", json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "data": [1]}]}).encode(),
     {}, "missing field 'shape'"),
    ("input without data", json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16]}]}).encode(),
     {}, "neither 'data' nor"),
    ("too few values", json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                                               "data": [1, 2]}]}).encode(), {}, "needs 16 elements"),
    ("strings for FP32", json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1],
                                                 "data": ["a"]}]}).encode(), {}, "must be numbers"),
    ("floats for INT64", json.dumps({"inputs": [{"name": "X", "datatype": "INT64", "shape": [1, 4],
                                                 "data": [1.5, 2, 3, 4]}]}).encode(), {}, "must be integers"),
    ("ragged data", json.dumps({"inputs": [{"name": "X", "datatype": "INT64", "shape": [2, 2],
                                            "data": [[1, 2], [3]]}]}).encode(), {}, "rectangular"),
    ("binary without header", json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 16],
                                                      "parameters": {"binary_data_size": 64}}]}).encode(),
     {}, "Inference-Header-Content-Length"),
    ("header length past the body", b"{}", {"Inference-Header-Content-Length": "999"}, "has 2 bytes"),
    ("huge claimed shape", json.dumps({"inputs": [{"name": "X", "datatype": "INT64", "shape": [2**40, 2**40],
                                                   "data": [1]}]}).encode(), {}, "impossibly large"),
    ("header length not a number", b"{}", {"Inference-Header-Content-Length": "ten"}, "must be an integer"),
]


@pytest.mark.parametrize(("what", "body", "headers", "needle"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_http_bodies_are_400_with_a_specific_message(live_server: ServerProcess, what: str, body: bytes,
                                                         headers: dict[str, str], needle: str) -> None:
    model = "int_add" if b'"X"' in body else "add_mul"
    status, response_headers, raw = post(live_server, f"/v2/models/{model}/infer", body, headers)
    assert status == 400, raw
    assert response_headers["Content-Type"].startswith("application/json")
    assert needle in json.loads(raw)["error"], raw


def test_binary_sizes_that_do_not_add_up(live_server: ServerProcess) -> None:
    def send(declared: int, sent: int) -> str:
        header = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 16], "datatype": "FP32",
                                         "parameters": {"binary_data_size": declared}}]}).encode()
        status, _, raw = post(live_server, "/v2/models/add_mul/infer", header + b"\x00" * sent,
                              {"Inference-Header-Content-Length": str(len(header))})
        assert status == 400, raw
        return str(json.loads(raw)["error"])

    assert "runs past the end" in send(64, 10)
    assert "no input claims" in send(64, 80)
    assert "needs 64 bytes" in send(10, 10)


def test_bad_base64_is_400(live_server: ServerProcess) -> None:
    body = {"inputs": [{"name": "TEXT", "shape": [1], "datatype": "BYTES", "parameters": {"content_type": "base64"},
                        "data": ["@@not base64@@"]}]}
    status, _, raw = post(live_server, "/v2/models/bytes_echo/infer", json.dumps(body))
    assert status == 400 and "not valid base64" in json.loads(raw)["error"]


def test_random_garbage_never_crashes_the_server(live_server: ServerProcess) -> None:
    rng = random.Random(5)
    for i in range(40):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        headers = {"Inference-Header-Content-Length": str(rng.randrange(-5, 400))} if i % 2 else {}
        status, _, raw = post(live_server, "/v2/models/add_mul/infer", blob, headers)
        assert status == 400, raw
        assert json.loads(raw)["error"]
    with socket.create_connection(("127.0.0.1", live_server.ports["grpc"]), timeout=5) as sock:
        sock.sendall(b"\x00garbage that is not HTTP/2" * 10)
    with socket.create_connection(("127.0.0.1", live_server.ports["http"]), timeout=5) as sock:
        sock.sendall(b"GARBAGE / HTTP/9.9\r\n\r\n\x00\x01")
        sock.recv(1024)
    with grpc.insecure_channel(live_server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(20):
            request = pb.ModelInferRequest(model_name="add_mul")
            request.inputs.add(name="INPUT0", datatype=rng.choice(["FP32", "BYTES", "INT8", "BOOL"]),
                               shape=[rng.randrange(0, 3), rng.randrange(0, 20)])
            request.raw_input_contents.append(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 100))))
            with pytest.raises(grpc.RpcError) as err:
                stub.ModelInfer(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    status, _, _ = post(live_server, "/v2/health/live", b"", method="GET")
    assert status == 200


# -- NOT_FOUND ----------------------------------------------------------------------------------


def test_unknown_model_is_not_found(grpc_client: grpcclient.InferenceServerClient,
                                    http_client: httpclient.InferenceServerClient) -> None:
    x = np.zeros((1, 16), dtype=np.float32)
    err = grpc_error(lambda: grpc_client.infer("nope", [g_input("INPUT0", x, "FP32")]))
    assert err.status() == "StatusCode.NOT_FOUND" and "'nope'" in err.message()
    err = grpc_error(lambda: grpc_client.get_model_metadata("nope"))
    assert err.status() == "StatusCode.NOT_FOUND"
    err = grpc_error(lambda: grpc_client.get_model_config("nope"))
    assert err.status() == "StatusCode.NOT_FOUND"
    err = grpc_error(lambda: grpc_client.infer("add_mul", [g_input("INPUT0", x, "FP32")], model_version="9"))
    assert err.status() == "StatusCode.NOT_FOUND" and "version 9" in err.message()
    for call in (lambda: http_client.infer("nope", [h_input("INPUT0", x, "FP32")]),
                 lambda: http_client.get_model_metadata("nope"),
                 lambda: http_client.get_model_config("nope"),
                 lambda: http_client.get_inference_statistics("nope")):
        herr = http_error(call)
        assert herr.status() == "404" and "'nope'" in herr.message()


# -- RESOURCE_EXHAUSTED -------------------------------------------------------------------------


def test_full_queue_is_resource_exhausted(live_server: ServerProcess) -> None:
    """``slow`` runs one item at a time (0.3 s) with a queue of one: a third request at once is refused."""
    async def main() -> list[Any]:
        async with grpcaio.InferenceServerClient(live_server.grpc_url) as client:
            async def one(i: int) -> Any:
                tensor = grpcaio.InferInput("X", [1, 4], "FP32")
                tensor.set_data_from_numpy(np.full((1, 4), i, dtype=np.float32))
                await asyncio.sleep(0.05 * i)
                try:
                    return (await client.infer("slow", [tensor])).as_numpy("Y")
                except grpcclient.InferenceServerException as exc:
                    return exc
            return list(await asyncio.gather(*(one(i) for i in range(4))))

    results = asyncio.run(asyncio.wait_for(main(), 30))
    errors = [r for r in results if isinstance(r, grpcclient.InferenceServerException)]
    assert not isinstance(results[0], Exception) and not isinstance(results[1], Exception)
    assert len(errors) == 2, results
    for err in errors:
        assert err.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert "queue of node 'nap' is full" in err.message() and "max_queue_size 1" in err.message()
    with httpclient.InferenceServerClient(live_server.http_url, concurrency=3) as client:
        handles = []
        for _ in range(3):
            handles.append(client.async_infer("slow", [h_input("X", np.zeros((1, 4), np.float32), "FP32")]))
            time.sleep(0.05)
        outcomes = []
        for handle in handles:
            try:
                handle.get_result(timeout=20)
                outcomes.append("ok")
            except httpclient.InferenceServerException as exc:
                outcomes.append(exc.status())
        assert outcomes == ["ok", "ok", "429"]


# -- DEADLINE_EXCEEDED --------------------------------------------------------------------------


def test_timeout_parameter_is_deadline_exceeded(grpc_client: grpcclient.InferenceServerClient,
                                                http_client: httpclient.InferenceServerClient) -> None:
    x = np.zeros((1, 4), dtype=np.float32)
    t0 = time.monotonic()
    err = grpc_error(lambda: grpc_client.infer("slow", [g_input("X", x, "FP32")], timeout=50_000))
    assert err.status() == "StatusCode.DEADLINE_EXCEEDED" and "timed out" in err.message()
    assert time.monotonic() - t0 < 0.3, "the server must fail the request at its deadline, not after the node"
    time.sleep(0.35)  # let the slow node finish the expired item
    herr = http_error(lambda: http_client.infer("slow", [h_input("X", x, "FP32")], timeout=50_000))
    assert herr.status() == "504" and "timed out" in herr.message()
    time.sleep(0.35)


def test_client_deadline_is_deadline_exceeded(grpc_client: grpcclient.InferenceServerClient) -> None:
    x = np.zeros((1, 4), dtype=np.float32)
    err = grpc_error(lambda: grpc_client.infer("slow", [g_input("X", x, "FP32")], client_timeout=0.1))
    assert err.status() == "StatusCode.DEADLINE_EXCEEDED"
    time.sleep(0.35)
    (stats,) = grpc_client.get_inference_statistics("slow").model_stats
    assert stats.inference_stats.fail.count >= 1
    np.testing.assert_array_equal(grpc_client.infer("slow", [g_input("X", x + 1, "FP32")]).as_numpy("Y"), x + 1)
