"""gRPC (KServe v2 / Triton) against the real server, with tritonclient: sync, aio and streaming."""

from __future__ import annotations

import asyncio
import queue
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from ._server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]  # a server start can take 30 s on a busy machine


def fp32_input(array: np.ndarray[Any, Any], name: str = "INPUT0") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array.astype(np.float32))
    return tensor


def test_server_and_model_metadata(grpc_client: grpcclient.InferenceServerClient) -> None:
    assert grpc_client.is_server_live()
    assert grpc_client.is_server_ready()
    assert grpc_client.is_model_ready("add_mul")
    assert not grpc_client.is_model_ready("no_such_pipeline")
    meta = grpc_client.get_server_metadata(as_json=True)
    assert meta["name"] == "dagserve"
    assert "binary_tensor_data" in meta["extensions"] and "statistics" in meta["extensions"]
    model = grpc_client.get_model_metadata("add_mul", as_json=True)
    assert model["name"] == "add_mul" and model["versions"] == ["1"]
    assert model["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": ["-1", "16"]}]
    assert model["outputs"] == [{"name": "OUTPUT0", "datatype": "FP32", "shape": ["-1", "16"]}]
    assert grpc_client.get_model_metadata("add_mul", model_version="1").name == "add_mul"


def test_model_config_is_what_perf_analyzer_reads(grpc_client: grpcclient.InferenceServerClient) -> None:
    config = grpc_client.get_model_config("add_mul").config
    assert config.name == "add_mul"
    assert config.max_batch_size == 64
    assert [(i.name, list(i.dims)) for i in config.input] == [("INPUT0", [16])]
    assert config.input[0].data_type == grpcclient.model_config_pb2.TYPE_FP32
    assert [(o.name, list(o.dims)) for o in config.output] == [("OUTPUT0", [16])]
    assert config.platform != "ensemble", "perf_analyzer would ask for every step's config"
    assert config.parameters["nodes"].string_value == "add_one,double"
    bytes_config = grpc_client.get_model_config("bytes_echo").config
    assert bytes_config.input[0].data_type == grpcclient.model_config_pb2.TYPE_STRING


def test_infer_fp32_batch(grpc_client: grpcclient.InferenceServerClient) -> None:
    x = np.arange(3 * 16, dtype=np.float32).reshape(3, 16)
    result = grpc_client.infer("add_mul", [fp32_input(x)], request_id="req-7")
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), (x + 1) * 2)
    response = result.get_response()
    assert response.id == "req-7" and response.model_name == "add_mul" and response.model_version == "1"


def test_infer_identity_variable_length(grpc_client: grpcclient.InferenceServerClient) -> None:
    for n in (1, 7, 1000):
        x = np.random.default_rng(n).random((2, n), dtype=np.float32)
        out = grpc_client.infer("identity", [fp32_input(x)]).as_numpy("OUTPUT0")
        np.testing.assert_array_equal(out, x)


def test_infer_int64(grpc_client: grpcclient.InferenceServerClient) -> None:
    x = np.array([[1, 2, 3, 4], [-5, 2**40, 0, 7]], dtype=np.int64)
    tensor = grpcclient.InferInput("X", list(x.shape), "INT64")
    tensor.set_data_from_numpy(x)
    out = grpc_client.infer("int_add", [tensor], outputs=[grpcclient.InferRequestedOutput("Y")]).as_numpy("Y")
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, x + 3)


def test_infer_bytes(grpc_client: grpcclient.InferenceServerClient) -> None:
    x = np.array([b"hello", b"", b"\x00\xff binary", "ünïcode".encode()], dtype=np.object_)
    tensor = grpcclient.InferInput("TEXT", [4], "BYTES")
    tensor.set_data_from_numpy(x)
    out = grpc_client.infer("bytes_echo", [tensor]).as_numpy("ECHO")
    assert out.tolist() == x.tolist()


def test_typed_contents_are_accepted(live_server: ServerProcess) -> None:
    """Inputs in the typed ``contents`` fields (not raw) work too, as Triton allows."""
    with grpc.insecure_channel(live_server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelInferRequest(model_name="int_add")
        tensor = request.inputs.add(name="X", datatype="INT64", shape=[1, 4])
        tensor.contents.int64_contents.extend([10, 20, 30, 40])
        response = stub.ModelInfer(request, timeout=10)
        out = np.frombuffer(response.raw_output_contents[0], dtype="<i8").reshape(list(response.outputs[0].shape))
        np.testing.assert_array_equal(out, [[13, 23, 33, 43]])

        request = pb.ModelInferRequest(model_name="bytes_echo")
        tensor = request.inputs.add(name="TEXT", datatype="BYTES", shape=[2])
        tensor.contents.bytes_contents.extend([b"a", b"bc"])
        response = stub.ModelInfer(request, timeout=10)
        assert response.raw_output_contents[0] == b"\x01\x00\x00\x00a\x02\x00\x00\x00bc"


def test_streaming_many_requests(grpc_client: grpcclient.InferenceServerClient) -> None:
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    grpc_client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        for i in range(20):
            grpc_client.async_stream_infer("add_mul", [fp32_input(np.full((1, 16), i))], request_id=str(i))
        got = {}
        for _ in range(20):
            result, error = results.get(timeout=20)
            assert error is None, error
            got[result.get_response().id] = result.as_numpy("OUTPUT0")
    finally:
        grpc_client.stop_stream()
    assert sorted(got, key=int) == [str(i) for i in range(20)]
    for i in range(20):
        np.testing.assert_array_equal(got[str(i)], np.full((1, 16), (i + 1) * 2, dtype=np.float32))


def test_streaming_reports_errors_per_request(grpc_client: grpcclient.InferenceServerClient) -> None:
    """A bad request on a stream fails alone; the stream goes on."""
    results: queue.Queue[tuple[Any, Any]] = queue.Queue()
    grpc_client.start_stream(callback=lambda result, error: results.put((result, error)))
    try:
        grpc_client.async_stream_infer("no_such_pipeline", [fp32_input(np.zeros((1, 16)))])
        _, error = results.get(timeout=20)
        assert error is not None and "unknown model" in error.message()
        grpc_client.async_stream_infer("add_mul", [fp32_input(np.zeros((1, 16)))])
        result, error = results.get(timeout=20)
        assert error is None
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), 2, dtype=np.float32))
    finally:
        grpc_client.stop_stream()


def test_aio_client_concurrent_requests(live_server: ServerProcess) -> None:
    async def main() -> None:
        async with grpcaio.InferenceServerClient(live_server.grpc_url) as client:
            assert await client.is_server_ready()
            config = await client.get_model_config("add_mul")
            assert config.config.max_batch_size == 64

            async def one(i: int) -> None:
                tensor = grpcaio.InferInput("INPUT0", [2, 16], "FP32")
                tensor.set_data_from_numpy(np.full((2, 16), i, dtype=np.float32))
                result = await client.infer("add_mul", [tensor])
                np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((2, 16), (i + 1) * 2))

            await asyncio.gather(*(one(i) for i in range(32)))

    asyncio.run(asyncio.wait_for(main(), 30))


def test_aio_streaming(live_server: ServerProcess) -> None:
    async def main() -> list[str]:
        async with grpcaio.InferenceServerClient(live_server.grpc_url) as client:
            async def requests() -> Any:
                for i in range(10):
                    tensor = grpcaio.InferInput("X", [1, 4], "INT64")
                    tensor.set_data_from_numpy(np.full((1, 4), i, dtype=np.int64))
                    yield {"model_name": "int_add", "inputs": [tensor], "request_id": str(i)}

            ids = []
            async for result, error in client.stream_infer(requests()):
                assert error is None, error
                i = int(result.get_response().id)
                np.testing.assert_array_equal(result.as_numpy("Y"), np.full((1, 4), i + 3))
                ids.append(str(i))
                if len(ids) == 10:
                    break
            return ids

    assert sorted(asyncio.run(asyncio.wait_for(main(), 30)), key=int) == [str(i) for i in range(10)]


def test_statistics_count_requests(grpc_client: grpcclient.InferenceServerClient) -> None:
    def stats() -> Any:
        (s,) = grpc_client.get_inference_statistics("int_add").model_stats
        return s

    before = stats()
    x = np.zeros((3, 4), dtype=np.int64)
    tensor = grpcclient.InferInput("X", [3, 4], "INT64")
    tensor.set_data_from_numpy(x)
    for _ in range(5):
        grpc_client.infer("int_add", [tensor])
    after = stats()
    assert after.name == "int_add" and after.version == "1"
    assert after.inference_stats.success.count - before.inference_stats.success.count == 5
    assert after.inference_count - before.inference_count == 15
    assert after.inference_stats.success.ns > before.inference_stats.success.ns
    assert after.inference_stats.compute_infer.ns > before.inference_stats.compute_infer.ns
    assert after.last_inference >= before.last_inference and after.last_inference > 0
    assert any(b.batch_size == 3 for b in after.batch_stats)
    every = grpc_client.get_inference_statistics().model_stats
    assert {"add_mul", "identity", "int_add", "bytes_echo"} <= {s.name for s in every}


def test_repository_index_unload_load(grpc_client: grpcclient.InferenceServerClient,
                                      live_server: ServerProcess) -> None:
    index = {m.name: m for m in grpc_client.get_model_repository_index().models}
    assert {"add_mul", "identity", "int_add", "bytes_echo", "slow", "reload_me"} <= set(index)
    assert index["add_mul"].state == "READY" and index["add_mul"].version == "1"

    grpc_client.unload_model("bytes_echo")
    try:
        assert not grpc_client.is_model_ready("bytes_echo")
        index = {m.name: m for m in grpc_client.get_model_repository_index().models}
        assert index["bytes_echo"].state == "UNAVAILABLE" and index["bytes_echo"].reason == "unloaded"
        with grpc.insecure_channel(live_server.grpc_url) as channel:
            ready = pb_grpc.GRPCInferenceServiceStub(channel).RepositoryIndex(
                pb.RepositoryIndexRequest(ready=True), timeout=10)
        assert "bytes_echo" not in {m.name for m in ready.models} and "add_mul" in {m.name for m in ready.models}
        tensor = grpcclient.InferInput("TEXT", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b"x"], dtype=np.object_))
        with pytest.raises(grpcclient.InferenceServerException) as err:
            grpc_client.infer("bytes_echo", [tensor])
        assert err.value.status() == "StatusCode.UNAVAILABLE"
        assert "not ready" in err.value.message()
        assert grpc_client.is_server_ready(), "an unloaded pipeline does not make the server unready"
    finally:
        grpc_client.load_model("bytes_echo")
    assert grpc_client.is_model_ready("bytes_echo")
    assert grpc_client.infer("bytes_echo", [tensor]).as_numpy("ECHO").tolist() == [b"x"]


def test_health_service(live_server: ServerProcess) -> None:
    with grpc.insecure_channel(live_server.grpc_url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "inference.GRPCInferenceService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as err:
            stub.Check(health_pb2.HealthCheckRequest(service="no.Such"), timeout=10)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(live_server: ServerProcess) -> None:
    with grpc.insecure_channel(live_server.grpc_url) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
        names = {s.name for s in reply.list_services_response.service}
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health",
                "grpc.reflection.v1alpha.ServerReflection"} <= names
        request = reflection_pb2.ServerReflectionRequest(file_containing_symbol="inference.GRPCInferenceService")
        (reply,) = list(stub.ServerReflectionInfo(iter([request]), timeout=10))
        assert reply.file_descriptor_response.file_descriptor_proto, "reflection must describe the service"
