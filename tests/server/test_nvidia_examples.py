"""NVIDIA's Python client examples, call for call, against ``dagserve serve`` serving Triton's models.

tritonclient's ``src/python/examples`` (repository triton-inference-server/client) drive
Triton's example models ``simple`` (OUTPUT0 = INPUT0 + INPUT1, OUTPUT1 = INPUT0 - INPUT1,
INT32 ``[-1, 16]``), ``simple_string`` (the same over decimal strings) and ``simple_identity``
(BYTES in, the same out). Here ``simple`` and ``simple_string`` are ONNX models built with
``onnx.helper`` and served as ``model.onnx`` nodes, ``simple_identity`` is a ``tensor.identity``
node, and each test makes one example's client calls with its inputs and its checks, in our
own code (one test per example file, named after it). Deliberate differences, each noted
where it occurs: ServerMetadata names ``dagserve``, not ``triton``; a load may not override the
config (edit the spec). Shared-memory calls are another issue's; sequence, decoupled and
image-model examples need models dagserve does not serve here.
"""

from __future__ import annotations

import asyncio
import queue
import textwrap
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from onnx import TensorProto, helper
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

from dagserve.server.triton import SERVER_NAME

from ._server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SIMPLE_SPEC = """
    dagserve: 1
    name: simple
    description: "Triton's example model simple, as an ONNX model"
    max_batch_size: 8
    inputs:
      INPUT0: {dtype: int32, shape: [16]}
      INPUT1: {dtype: int32, shape: [16]}
    outputs:
      OUTPUT0: model.OUTPUT0
      OUTPUT1: model.OUTPUT1
    nodes:
      model:
        op: model.onnx
        inputs: {INPUT0: inputs.INPUT0, INPUT1: inputs.INPUT1}
        params: {path: simple.onnx}
        batching: {max_batch_size: 8}
    """

STRING_SPEC = """
    dagserve: 1
    name: simple_string
    description: "Triton's simple_string: sums and differences of decimal strings, as an ONNX model"
    max_batch_size: 8
    inputs:
      INPUT0: {dtype: bytes, shape: [16]}
      INPUT1: {dtype: bytes, shape: [16]}
    outputs:
      OUTPUT0: model.OUTPUT0
      OUTPUT1: model.OUTPUT1
    nodes:
      model:
        op: model.onnx
        inputs: {INPUT0: inputs.INPUT0, INPUT1: inputs.INPUT1}
        params: {path: simple_string.onnx, warmup: false}  # its warm-up batch (empty strings) is no number
        batching: {max_batch_size: 8}
    """

IDENTITY_SPEC = """
    dagserve: 1
    name: simple_identity
    description: "Triton's simple_identity: BYTES in, the same BYTES out"
    max_batch_size: 8
    inputs:
      INPUT0: {dtype: bytes, shape: [16]}
    outputs:
      OUTPUT0: same.y
    nodes:
      same: {op: tensor.identity, inputs: {x: inputs.INPUT0}}
    """


def simple_onnx(path: Path, strings: bool = False, kind: int = TensorProto.INT32) -> None:
    """``simple`` (INT32), ``simple_int8`` or ``simple_string`` (decimal strings, through INT32) as ONNX."""
    kind = TensorProto.STRING if strings else kind
    io = {n: helper.make_tensor_value_info(n, kind, ["batch", 16]) for n in ("INPUT0", "INPUT1", "OUTPUT0", "OUTPUT1")}
    nodes = []
    a, b = "INPUT0", "INPUT1"
    if strings:
        nodes += [helper.make_node("Cast", ["INPUT0"], ["a"], to=TensorProto.INT32),
                  helper.make_node("Cast", ["INPUT1"], ["b"], to=TensorProto.INT32)]
        a, b = "a", "b"
    sum_name, diff_name = ("sum", "diff") if strings else ("OUTPUT0", "OUTPUT1")
    nodes += [helper.make_node("Add", [a, b], [sum_name]), helper.make_node("Sub", [a, b], [diff_name])]
    if strings:
        nodes += [helper.make_node("Cast", ["sum"], ["OUTPUT0"], to=TensorProto.STRING),
                  helper.make_node("Cast", ["diff"], ["OUTPUT1"], to=TensorProto.STRING)]
    graph = helper.make_graph(nodes, "simple", [io["INPUT0"], io["INPUT1"]], [io["OUTPUT0"], io["OUTPUT1"]])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_models(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    simple_onnx(directory / "simple.onnx")
    simple_onnx(directory / "simple_string.onnx", strings=True)
    simple_onnx(directory / "simple_int8.onnx", kind=TensorProto.INT8)
    int8_spec = (SIMPLE_SPEC.replace("int32", "int8").replace("simple.onnx", "simple_int8.onnx")
                 .replace("name: simple", "name: simple_int8").replace("model simple,", "model simple_int8,"))
    for name, text in (("simple.yaml", SIMPLE_SPEC), ("simple_string.yaml", STRING_SPEC),
                       ("simple_identity.yaml", IDENTITY_SPEC), ("simple_int8.yaml", int8_spec)):
        (directory / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models(tmp_path_factory.mktemp("triton_models"))


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess([models], tmp_path_factory.mktemp("nvidia_server")).start()
    yield proc
    code = proc.stop()
    assert code == 0, f"dagserve serve exited with {code} on SIGTERM:\n{proc.log()}"


@pytest.fixture
def live(server: ServerProcess) -> Iterator[ServerProcess]:
    yield server
    assert server.alive, f"the server died during the test:\n{server.log()}"


# -- the examples' data and checks ------------------------------------------------------------

INPUT0 = np.arange(16, dtype=np.int32)[None]
INPUT1 = np.ones((1, 16), dtype=np.int32)


def check_sum_and_difference(input0: np.ndarray, input1: np.ndarray, output0: Any, output1: Any) -> None:
    """The examples' loop: element by element, OUTPUT0 is the sum and OUTPUT1 the difference."""
    assert output0 is not None and output1 is not None
    for i in range(16):
        assert input0[0][i] + input1[0][i] == output0[0][i], f"incorrect sum at {i}"
        assert input0[0][i] - input1[0][i] == output1[0][i], f"incorrect difference at {i}"


def grpc_inputs(module: Any = grpcclient, input0: np.ndarray = INPUT0,
                input1: np.ndarray = INPUT1) -> tuple[list[Any], list[Any]]:
    inputs = [module.InferInput("INPUT0", [1, 16], "INT32"), module.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(input0)
    inputs[1].set_data_from_numpy(input1)
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    return inputs, outputs


# -- simple_grpc_infer_client.py, simple_grpc_custom_args_client.py, simple_grpc_keepalive_client.py

@pytest.mark.parametrize("compression", [None, "gzip"])
def test_simple_grpc_infer_client(live: ServerProcess, compression: str | None) -> None:
    client = grpcclient.InferenceServerClient(url=live.grpc_url)
    inputs, outputs = grpc_inputs()
    results = client.infer(model_name="simple", inputs=inputs, outputs=outputs, client_timeout=None,
                           headers={"test": "1"}, compression_algorithm=compression)
    statistics = client.get_inference_statistics(model_name="simple")
    assert len(statistics.model_stats) == 1
    check_sum_and_difference(INPUT0, INPUT1, results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))
    results = client.infer(model_name="simple", inputs=inputs, outputs=None, compression_algorithm=compression)
    check_sum_and_difference(INPUT0, INPUT1, results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))
    client.close()


def test_simple_grpc_custom_args_client(live: ServerProcess) -> None:
    channel_args = [
        ("grpc.max_send_message_length", 1024 * 1024),
        ("grpc.max_receive_message_length", 1024 * 1024),
        ("grpc.keepalive_time_ms", 2**31 - 1),
        ("grpc.keepalive_timeout_ms", 20000),
        ("grpc.keepalive_permit_without_calls", False),
        ("grpc.http2.max_pings_without_data", 2),
        ("grpc.dns_enable_srv_queries", 1),
    ]
    client = grpcclient.InferenceServerClient(url=live.grpc_url, channel_args=channel_args)
    inputs, outputs = grpc_inputs()
    results = client.infer(model_name="simple", inputs=inputs, outputs=outputs, headers={"test": "1"})
    check_sum_and_difference(INPUT0, INPUT1, results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))
    client.close()


def test_simple_grpc_keepalive_client(live: ServerProcess) -> None:
    options = grpcclient.KeepAliveOptions(keepalive_time_ms=2**31 - 1, keepalive_timeout_ms=20000,
                                          keepalive_permit_without_calls=False, http2_max_pings_without_data=2)
    client = grpcclient.InferenceServerClient(url=live.grpc_url, keepalive_options=options)
    inputs, outputs = grpc_inputs()
    results = client.infer(model_name="simple", inputs=inputs, outputs=outputs, headers={"test": "1"})
    check_sum_and_difference(INPUT0, INPUT1, results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))
    client.close()


# -- simple_grpc_async_infer_client.py, simple_grpc_aio_infer_client.py ------------------------

def test_simple_grpc_async_infer_client(live: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(url=live.grpc_url)
    inputs, outputs = grpc_inputs()
    results: queue.Queue[Any] = queue.Queue()

    def callback(user_data: queue.Queue[Any], result: Any, error: Any) -> None:
        user_data.put(error if error else result)

    client.async_infer(model_name="simple", inputs=inputs, callback=partial(callback, results), outputs=outputs,
                       client_timeout=None)
    result = results.get(timeout=10)  # the example waits up to 10 s for its callback
    assert not isinstance(result, InferenceServerException), result
    check_sum_and_difference(INPUT0, INPUT1, result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1"))
    client.close()


def test_simple_grpc_aio_infer_client(live: ServerProcess) -> None:
    async def main() -> None:
        client = grpcaio.InferenceServerClient(url=live.grpc_url)
        inputs, outputs = grpc_inputs(grpcaio)
        results = await client.infer(model_name="simple", inputs=inputs, outputs=outputs, client_timeout=None,
                                     headers={"test": "1"}, compression_algorithm=None)
        statistics = await client.get_inference_statistics(model_name="simple")
        assert len(statistics.model_stats) == 1
        check_sum_and_difference(INPUT0, INPUT1, results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))
        first, second = await asyncio.gather(
            client.infer(model_name="simple", inputs=inputs, outputs=None, compression_algorithm=None),
            client.infer(model_name="simple", inputs=inputs, outputs=None, compression_algorithm=None))
        for result in (first, second):
            check_sum_and_difference(INPUT0, INPUT1, result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1"))
        await client.close()

    asyncio.run(asyncio.wait_for(main(), 60))


# -- simple_http_infer_client.py, simple_http_async_infer_client.py, simple_http_aio_infer_client.py

def test_simple_http_infer_client(live: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(url=live.http_url)
    input1 = np.full((1, 16), -1, dtype=np.int32)

    def infer(with_outputs: bool) -> Any:
        inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(INPUT0, binary_data=False)
        inputs[1].set_data_from_numpy(input1, binary_data=True)
        outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
                   httpclient.InferRequestedOutput("OUTPUT1", binary_data=False)] if with_outputs else None
        return client.infer("simple", inputs, outputs=outputs, query_params={"test_1": 1, "test_2": 2},
                            headers=None, request_compression_algorithm=None, response_compression_algorithm=None)

    results = infer(True)
    statistics = client.get_inference_statistics(model_name="simple", headers=None)
    assert len(statistics["model_stats"]) == 1
    check_sum_and_difference(INPUT0, input1, results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))
    results = infer(False)
    check_sum_and_difference(INPUT0, input1, results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))
    client.close()


def test_simple_http_async_infer_client(live: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(url=live.http_url, concurrency=2)
    inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(INPUT0, binary_data=True)
    inputs[1].set_data_from_numpy(INPUT1, binary_data=True)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
               httpclient.InferRequestedOutput("OUTPUT1", binary_data=True)]
    pending = [client.async_infer(model_name="simple", inputs=inputs, outputs=outputs) for _ in range(2)]
    for request in pending:
        result = request.get_result()
        check_sum_and_difference(INPUT0, INPUT1, result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1"))
    client.close()


def test_simple_http_aio_infer_client(live: ServerProcess) -> None:
    import tritonclient.http.aio as httpaio

    async def main() -> None:
        client = httpaio.InferenceServerClient(url=live.http_url)
        inputs = [httpaio.InferInput("INPUT0", [1, 16], "INT32"), httpaio.InferInput("INPUT1", [1, 16], "INT32")]
        inputs[0].set_data_from_numpy(INPUT0, binary_data=False)
        inputs[1].set_data_from_numpy(INPUT1, binary_data=True)
        outputs = [httpaio.InferRequestedOutput("OUTPUT0", binary_data=True),
                   httpaio.InferRequestedOutput("OUTPUT1", binary_data=False)]
        results = await client.infer("simple", inputs, outputs=outputs, query_params={"test_1": 1, "test_2": 2})
        statistics = await client.get_inference_statistics(model_name="simple")
        assert len(statistics["model_stats"]) == 1
        check_sum_and_difference(INPUT0, INPUT1, results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))
        first, second = await asyncio.gather(client.infer("simple", inputs), client.infer("simple", inputs))
        for result in (first, second):
            check_sum_and_difference(INPUT0, INPUT1, result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1"))
        await client.close()

    asyncio.run(asyncio.wait_for(main(), 60))


# -- reuse_infer_objects_client.py (its calls without shared memory) ----------------------------

@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_reuse_infer_objects_client(live: ServerProcess, protocol: str) -> None:
    module: Any = grpcclient if protocol == "grpc" else httpclient
    client = module.InferenceServerClient(url=live.grpc_url if protocol == "grpc" else live.http_url)
    inputs, outputs = grpc_inputs(module)
    for seed in range(3):  # the same InferInput/InferRequestedOutput objects, new data each time
        input0 = np.arange(seed, seed + 16, dtype=np.int32)[None]
        input1 = np.full((1, 16), seed - 1, dtype=np.int32)
        inputs[0].set_data_from_numpy(input0)
        inputs[1].set_data_from_numpy(input1)
        results = client.infer(model_name="simple", inputs=inputs, outputs=outputs)
        check_sum_and_difference(input0, input1, results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1"))
    client.close()


# -- simple_grpc_health_metadata.py, simple_http_health_metadata.py ----------------------------

def test_simple_grpc_health_metadata(live: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(url=live.grpc_url)
    assert client.is_server_live(headers={"test": "1", "dummy": "2"})
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    # The example checks for 'triton'; dagserve names itself (SERVER_NAME), deliberately.
    assert client.get_server_metadata().name == SERVER_NAME
    assert client.get_model_metadata("simple", headers={"test": "1", "dummy": "2"}).name == "simple"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("wrong_model_name")
    assert "Request for unknown model" in caught.value.message()
    assert client.get_model_config("simple").config.name == "simple"
    client.close()


def test_simple_http_health_metadata(live: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(url=live.http_url)
    assert client.is_server_live(query_params={"test_1": 1, "test_2": 2})
    assert client.is_server_ready()
    assert client.is_model_ready("simple")
    assert client.get_server_metadata()["name"] == SERVER_NAME  # 'triton' in the example, as above
    assert client.get_model_metadata("simple", query_params={"test_1": 1, "test_2": 2})["name"] == "simple"
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("wrong_model_name")
    assert "Request for unknown model" in caught.value.message()
    client.close()


# -- grpc_client.py and grpc_explicit_*_content_client.py: the raw gRPC stubs --------------------

@pytest.fixture
def stub(live: ServerProcess) -> Iterator[service_pb2_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(live.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def test_grpc_client(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    """grpc_client.py's calls (it targets densenet_onnx; here ``simple``), raw_input_contents included."""
    assert stub.ServerLive(service_pb2.ServerLiveRequest()).live
    assert stub.ServerReady(service_pb2.ServerReadyRequest()).ready
    assert stub.ModelReady(service_pb2.ModelReadyRequest(name="simple", version="")).ready
    assert stub.ServerMetadata(service_pb2.ServerMetadataRequest()).name == SERVER_NAME
    metadata = stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="simple", version=""))
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("INPUT0", "INT32", [-1, 16]), ("INPUT1", "INT32", [-1, 16])]
    config = stub.ModelConfig(service_pb2.ModelConfigRequest(name="simple", version="")).config
    assert config.name == "simple" and config.max_batch_size == 8
    request = service_pb2.ModelInferRequest(model_name="simple", model_version="", id="my request id")
    for name in ("INPUT0", "INPUT1"):
        tensor = service_pb2.ModelInferRequest().InferInputTensor(name=name, datatype="INT32", shape=[1, 16])
        request.inputs.extend([tensor])
    for name in ("OUTPUT0", "OUTPUT1"):
        request.outputs.extend([service_pb2.ModelInferRequest().InferRequestedOutputTensor(name=name)])
    request.raw_input_contents.extend([INPUT0.tobytes(), INPUT1.tobytes()])
    response = stub.ModelInfer(request)
    assert response.model_name == "simple" and response.id == "my request id"
    out = {o.name: np.frombuffer(raw, dtype=np.int32).reshape(list(o.shape))
           for o, raw in zip(response.outputs, response.raw_output_contents)}
    check_sum_and_difference(INPUT0, INPUT1, out["OUTPUT0"], out["OUTPUT1"])


def test_grpc_explicit_int_content_client(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    input0, input1 = list(range(16)), [1] * 16
    request = service_pb2.ModelInferRequest(model_name="simple", model_version="")
    for name, data in (("INPUT0", input0), ("INPUT1", input1)):
        tensor = service_pb2.ModelInferRequest().InferInputTensor(name=name, datatype="INT32", shape=[1, 16])
        tensor.contents.int_contents[:] = data
        request.inputs.extend([tensor])
    for name in ("OUTPUT0", "OUTPUT1"):
        request.outputs.extend([service_pb2.ModelInferRequest().InferRequestedOutputTensor(name=name)])
    response = stub.ModelInfer(request)
    results = [np.resize(np.frombuffer(raw, dtype=np.int32), list(o.shape))
               for o, raw in zip(response.outputs, response.raw_output_contents)]
    assert len(results) == 2
    check_sum_and_difference(np.array([input0]), np.array([input1]), results[0], results[1])
    # contents and raw_input_contents together are refused, naming the input and the model
    request.raw_input_contents.extend([np.array(input0[0:8], dtype=np.int32).tobytes()])
    request.inputs[0].contents.int_contents[:] = input0[8:]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    # in Triton's own words, which the example checks
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == ("contents field must not be specified when using raw_input_contents "
                                      "for 'INPUT0' for model 'simple'")


def test_grpc_explicit_int8_content_client(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    input0, input1 = list(range(16)), [1] * 16
    request = service_pb2.ModelInferRequest(model_name="simple_int8", model_version="")
    for name, data in (("INPUT0", input0), ("INPUT1", input1)):
        tensor = service_pb2.ModelInferRequest().InferInputTensor(name=name, datatype="INT8", shape=[1, 16])
        tensor.contents.int_contents[:] = data
        request.inputs.extend([tensor])
    for name in ("OUTPUT0", "OUTPUT1"):
        request.outputs.extend([service_pb2.ModelInferRequest().InferRequestedOutputTensor(name=name)])
    response = stub.ModelInfer(request)
    results = [np.resize(np.frombuffer(raw, dtype=np.int8), list(o.shape))
               for o, raw in zip(response.outputs, response.raw_output_contents)]
    assert len(results) == 2
    check_sum_and_difference(np.array([input0]), np.array([input1]), results[0], results[1])
    # a version that is no number is refused (Triton: "failed to get model version from specified
    # version string 'wrong_specification'"); dagserve's words differ, its refusal names the version
    request.model_version = "wrong_specification"
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert "wrong_specification" in caught.value.details()


def test_grpc_explicit_byte_content_client(stub: service_pb2_grpc.GRPCInferenceServiceStub) -> None:
    request = service_pb2.ModelInferRequest(model_name="simple_string", model_version="")
    for name, values in (("INPUT0", [str(i) for i in range(16)]), ("INPUT1", ["1"] * 16)):
        tensor = service_pb2.ModelInferRequest().InferInputTensor(name=name, datatype="BYTES", shape=[1, 16])
        for value in values:
            tensor.contents.bytes_contents.append(value.encode("utf-8"))
        request.inputs.extend([tensor])
    for name in ("OUTPUT0", "OUTPUT1"):
        request.outputs.extend([service_pb2.ModelInferRequest().InferRequestedOutputTensor(name=name)])
    response = stub.ModelInfer(request)
    results = [np.resize(deserialize_bytes_tensor(raw), list(o.shape))
               for o, raw in zip(response.outputs, response.raw_output_contents)]
    assert len(results) == 2
    for i in range(16):
        assert i + 1 == int(results[0][0][i]) and i - 1 == int(results[1][0][i])


# -- simple_grpc_string_infer_client.py, simple_http_string_infer_client.py ---------------------

def _strings(values: np.ndarray) -> np.ndarray:
    return np.array([str(x).encode("utf-8") for x in values.reshape(values.size)], dtype=np.object_).reshape(
        values.shape)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_simple_string_infer_client(live: ServerProcess, protocol: str) -> None:
    module: Any = grpcclient if protocol == "grpc" else httpclient
    client = module.InferenceServerClient(url=live.grpc_url if protocol == "grpc" else live.http_url)
    inputs = [module.InferInput("INPUT0", [1, 16], "BYTES"), module.InferInput("INPUT1", [1, 16], "BYTES")]
    inputs[0].set_data_from_numpy(_strings(INPUT0))
    inputs[1].set_data_from_numpy(_strings(INPUT1))
    outputs = [module.InferRequestedOutput("OUTPUT0"), module.InferRequestedOutput("OUTPUT1")]
    results = client.infer(model_name="simple_string", inputs=inputs, outputs=outputs)
    output0, output1 = results.as_numpy("OUTPUT0"), results.as_numpy("OUTPUT1")
    for i in range(16):
        assert INPUT0[0][i] + INPUT1[0][i] == int(output0[0][i])
        assert INPUT0[0][i] - INPUT1[0][i] == int(output1[0][i])

    def identity(array: np.ndarray) -> None:
        tensor = module.InferInput("INPUT0", list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        result = client.infer(model_name="simple_identity", inputs=[tensor],
                              outputs=[module.InferRequestedOutput("OUTPUT0")]).as_numpy("OUTPUT0")
        if array.dtype == np.object_:
            assert np.array_equal(array, result)
        else:
            assert np.array_equal(array, np.char.encode(result.astype(str)))

    identity(np.array([b"he\x00llo"] * 16, dtype=np.object_).reshape([1, 16]))
    identity(np.array([b"\x00\x01\x02\x03"] * 16, dtype=np.bytes_).reshape([1, 16]))
    client.close()


# -- simple_grpc_model_control.py, simple_http_model_control.py ---------------------------------

@pytest.fixture(scope="module")
def explicit_server(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server started as the model-control examples expect Triton to be: ``--model-control-mode explicit``."""
    proc = ServerProcess([models], tmp_path_factory.mktemp("explicit"), "--model-control-mode", "explicit").start()
    yield proc
    assert proc.stop() == 0, proc.log()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_simple_model_control(explicit_server: ServerProcess, protocol: str) -> None:
    module: Any = grpcclient if protocol == "grpc" else httpclient
    client = module.InferenceServerClient(
        url=explicit_server.grpc_url if protocol == "grpc" else explicit_server.http_url)
    index = client.get_model_repository_index()
    names = {m.name for m in index.models} if protocol == "grpc" else {m["name"] for m in index}
    assert names == {"simple", "simple_int8", "simple_string", "simple_identity"}  # Triton's repository has 8
    client.load_model("simple")
    assert client.is_model_ready("simple")
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("simple", config='"parameters": {"config": {{"max_batch_size": "16"}}}')
    assert "failed to load" in caught.value.message()
    # The example then overrides max_batch_size through `config`: dagserve refuses any override
    # (the spec is the one source of a pipeline's config), so the config stays as the spec says.
    with pytest.raises(InferenceServerException):
        client.load_model("simple", config='{"max_batch_size":"16"}')
    config = client.get_model_config("simple")
    assert (config.config.max_batch_size if protocol == "grpc" else config["max_batch_size"]) == 8
    client.unload_model("simple")
    assert not client.is_model_ready("simple")
    with pytest.raises(InferenceServerException):
        client.load_model("simple", config="{}", files={"file:" + "A" * 256: b"a"})
    assert client.is_server_live()
    with pytest.raises(InferenceServerException) as caught:
        client.load_model("wrong_model_name")
    assert "failed to load" in caught.value.message()
    client.close()
