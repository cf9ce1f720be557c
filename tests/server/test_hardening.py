"""Hardening from outside tests (issue 12): client mistakes are the client's, limits hold, logs say what happened.

Each test sends what an outside tester sent (raw HTTP or raw gRPC where tritonclient
cannot send it) to a real ``dagserve serve`` and checks the status, the message and
the server's log.
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import textwrap
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from ._server import ServerProcess
from .conftest import SPECS, write_repo
from .test_http import post

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

PICKY_PY = '''
"""Fails, as a kernel does on bad data, for an item whose first value is negative."""
import numpy as np


class Picky:
    inputs = {"x": {"dtype": "float32", "shape": [4]}}
    outputs = {"y": {"dtype": "float32", "shape": [4]}}

    def __call__(self, inputs):
        x = np.asarray(inputs["x"], dtype=np.float32)
        if (x[..., 0] < 0).any():
            raise ValueError("a negative first value")
        return {"y": x}
'''

PICKY_YAML = """
    dagserve: 1
    name: picky
    description: Y = X, but an item with a negative first value fails in node 'check'
    max_batch_size: 8
    inputs:
      X: {dtype: float32, shape: [4]}
    outputs:
      Y: check.y
    nodes:
      check:
        op: python
        inputs: {x: inputs.X}
        params: {path: picky.py, class: Picky}
    """


def _fp32(data: list[Any], shape: list[int]) -> bytes:
    return json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": shape, "data": data}]}).encode()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the default model control (none), the access log, a 1 s body timeout, a 2 s idle timeout
    and room for 2 gRPC calls."""
    tmp = tmp_path_factory.mktemp("guarded")
    repo = write_repo(tmp / "repo", {**SPECS, "picky.yaml": PICKY_YAML})
    (repo / "picky.py").write_text(textwrap.dedent(PICKY_PY), encoding="utf-8")
    proc = ServerProcess([repo], tmp, "--access-log", "--http-read-timeout", "1", "--http-idle-timeout", "2",
                         "--grpc-max-concurrent-rpcs", "2").start()
    yield proc
    code = proc.stop()
    assert code == 0, proc.log()


def _grpc_error(stub_call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        stub_call(request, timeout=10)
    return err.value


def _wait_for_log(server: ServerProcess, needle: str, timeout: float = 10.0) -> str:
    """The server's log once it contains ``needle`` (polled with a deadline; log lines are written async)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = server.log()
        if needle in text:
            return text
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in the log:\n{server.log()[-4000:]}")


# -- client mistakes are 400 / INVALID_ARGUMENT, never 500 / INTERNAL ---------------------------


@pytest.mark.parametrize("shape", [[0, 2**63 - 1], [2**62, 2**62, 0]])
def test_impossible_shapes_with_empty_data_are_invalid(live_server: ServerProcess, shape: list[int]) -> None:
    status, _, raw = post(live_server, "/v2/models/add_mul/infer", _fp32([], shape))
    assert status == 400 and "impossibly large" in json.loads(raw)["error"], raw
    with grpc.insecure_channel(live_server.grpc_url) as channel:
        request = pb.ModelInferRequest(model_name="add_mul", raw_input_contents=[b""])
        request.inputs.add(name="INPUT0", datatype="FP32", shape=shape)
        err = _grpc_error(pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "impossibly large" in err.details()


def test_json_nested_100000_deep_is_400(live_server: ServerProcess) -> None:
    status, _, raw = post(live_server, "/v2/models/add_mul/infer", b"[" * 100_000 + b"]" * 100_000)
    assert status == 400 and "nested too deeply" in json.loads(raw)["error"], raw


def test_nan_and_infinity_are_not_json(live_server: ServerProcess) -> None:
    body = _fp32([1.0] * 16, [1, 16]).replace(b'"inputs"', b'"parameters": {"timeout": Infinity}, "inputs"')
    status, _, raw = post(live_server, "/v2/models/add_mul/infer", body)
    assert status == 400 and "Infinity is not JSON" in json.loads(raw)["error"], raw


def test_boolean_timeout_is_refused_not_one_microsecond(live_server: ServerProcess) -> None:
    body = json.loads(_fp32([1.0] * 16, [1, 16]))
    body["parameters"] = {"timeout": True}
    status, _, raw = post(live_server, "/v2/models/add_mul/infer", json.dumps(body))
    assert status == 400 and "'timeout'" in json.loads(raw)["error"] and "integer" in json.loads(raw)["error"], raw
    with grpc.insecure_channel(live_server.grpc_url) as channel:
        request = pb.ModelInferRequest(model_name="add_mul", raw_input_contents=[b"\x00" * 64])
        request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
        request.parameters["timeout"].bool_param = True
        err = _grpc_error(pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "'timeout'" in err.details()


@pytest.mark.parametrize("data", [{}, None, 2**70, [{"a": 1}]])
def test_json_data_of_the_wrong_kind_is_400(live_server: ServerProcess, data: Any) -> None:
    body = json.dumps({"inputs": [{"name": "X", "datatype": "INT64", "shape": [], "data": data}]})
    status, _, raw = post(live_server, "/v2/models/int_add/infer", body)
    assert status == 400 and "'data' must be integers" in json.loads(raw)["error"], raw


def test_fp32_overflow_in_json_is_refused(live_server: ServerProcess) -> None:
    status, _, raw = post(live_server, "/v2/models/add_mul/infer", _fp32([1e39] * 16, [1, 16]))
    assert status == 400, raw
    assert "1e+39 is out of range for FP32" in json.loads(raw)["error"], raw


def test_json_response_never_holds_bare_infinity(live_server: ServerProcess) -> None:
    # add_mul computes (x + 1) * 2: 3e38 is a valid FP32, the result is inf.
    body = json.loads(_fp32([3e38] * 16, [1, 16]))
    body["outputs"] = [{"name": "OUTPUT0", "parameters": {"binary_data": False}}]
    status, headers, raw = post(live_server, "/v2/models/add_mul/infer", json.dumps(body))
    assert status == 400, raw
    message = json.loads(raw)["error"]  # strict: a body with a bare Infinity would not parse here
    assert "NaN or infinity" in message and "binary_data" in message
    body["outputs"] = [{"name": "OUTPUT0", "parameters": {"binary_data": True}}]
    status, headers, raw = post(live_server, "/v2/models/add_mul/infer", json.dumps(body))
    assert status == 200, raw
    n = int(headers["Inference-Header-Content-Length"])
    assert np.isinf(np.frombuffer(raw[n:], dtype="<f4")).all(), "binary outputs carry infinity as it is"


def test_corrupt_gzip_is_400_and_unknown_encoding_415(live_server: ServerProcess) -> None:
    log_before = len(live_server.log())
    status, _, raw = post(live_server, "/v2/models/add_mul/infer", b"not gzip at all",
                                {"Content-Encoding": "gzip"})
    assert status == 400 and "not valid gzip data" in json.loads(raw)["error"], raw
    for encoding in ("br", "zstd-but-made-up"):
        status, _, raw = post(live_server, "/v2/models/add_mul/infer", gzip.compress(_fp32([1.0] * 16, [1, 16])),
                              {"Content-Encoding": encoding})
        assert status == 415 and f"'{encoding}' is not supported" in json.loads(raw)["error"], raw
    status, _, raw = post(live_server, "/v2/models/add_mul/infer", gzip.compress(_fp32([1.0] * 16, [1, 16])),
                          {"Content-Encoding": "gzip"})
    assert status == 200, raw
    _wait_for_log(live_server, "status=INVALID_ARGUMENT")
    assert "Traceback" not in live_server.log()[log_before:], live_server.log()[log_before:]


def test_contents_mixed_with_raw_contents_is_named(live_server: ServerProcess) -> None:
    request = pb.ModelInferRequest(model_name="add_mul", raw_input_contents=[b"\x00" * 64])
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
    request.inputs[0].contents.fp32_contents.extend([1.0] * 16)
    with grpc.insecure_channel(live_server.grpc_url) as channel:
        err = _grpc_error(pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == ("contents field must not be specified when using raw_input_contents for 'INPUT0' "
                             "for model 'add_mul'")


def test_typed_contents_out_of_range_for_the_datatype_are_invalid(live_server: ServerProcess) -> None:
    request = pb.ModelInferRequest(model_name="identity")
    request.inputs.add(name="INPUT0", datatype="INT8", shape=[1, 2])
    request.inputs[0].contents.int_contents.extend([1, 300])
    with grpc.insecure_channel(live_server.grpc_url) as channel:
        err = _grpc_error(pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer, request)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not fit INT8" in err.details(), err.details()


def test_sequence_parameters_are_refused(grpc_client: grpcclient.InferenceServerClient,
                                         http_client: httpclient.InferenceServerClient) -> None:
    x = np.zeros((1, 16), dtype=np.float32)
    g = grpcclient.InferInput("INPUT0", [1, 16], "FP32")
    g.set_data_from_numpy(x)
    with pytest.raises(grpcclient.InferenceServerException) as err:
        grpc_client.infer("add_mul", [g], sequence_id=7, sequence_start=True)
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "sequence batching" in err.value.message()
    assert "sequence_id" in err.value.message()
    h = httpclient.InferInput("INPUT0", [1, 16], "FP32")
    h.set_data_from_numpy(x)
    with pytest.raises(httpclient.InferenceServerException) as herr:
        http_client.infer("add_mul", [h], sequence_id=7, sequence_end=True)
    assert herr.value.status() == "400" and "sequence batching" in herr.value.message()
    assert grpc_client.infer("add_mul", [g], sequence_id=0).as_numpy("OUTPUT0") is not None, "no sequence: fine"


def test_unparsable_protobuf_is_invalid_argument_without_traceback(guarded: ServerProcess) -> None:
    with grpc.insecure_channel(guarded.grpc_url) as channel:
        raw = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        for blob in (b"\xff\xff\xff\xff", b"\x0a\xff\x01", b"\x2a\x05\x0a"):
            with pytest.raises(grpc.RpcError) as err:
                raw(blob, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
            assert "not a valid inference.ModelInferRequest message" in err.value.details()
        good = pb.ModelInferRequest(model_name="add_mul", id="after-garbage", raw_input_contents=[b"\x00" * 64])
        good.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
        stream = channel.stream_stream("/inference.GRPCInferenceService/ModelStreamInfer")
        replies = [pb.ModelStreamInferResponse.FromString(r)
                   for r in stream(iter([b"\xff\xff", good.SerializeToString()]), timeout=10)]
    errors = sorted(r.error_message for r in replies)
    assert errors[0] == "" and "not a valid inference.ModelInferRequest" in errors[1], "the stream goes on"
    log = _wait_for_log(guarded, "not a valid inference.ModelInferRequest")
    assert "Traceback" not in log and "Exception deserializing" not in log


# -- model control -------------------------------------------------------------------------------


def test_model_control_is_refused_unless_explicit(guarded: ServerProcess) -> None:
    refused = "explicit model load / unload is not allowed if polling is enabled"
    client = grpcclient.InferenceServerClient(guarded.grpc_url)
    try:
        for call in (lambda: client.unload_model("add_mul"), lambda: client.load_model("add_mul")):
            with pytest.raises(grpcclient.InferenceServerException) as err:
                call()
            assert err.value.status() == "StatusCode.UNAVAILABLE" and refused in err.value.message()
            assert "--model-control-mode=explicit" in err.value.message()
        assert client.is_model_ready("add_mul"), "nothing was unloaded"
        assert {m.name for m in client.get_model_repository_index().models} >= {"add_mul"}, "the index is allowed"
    finally:
        client.close()
    hclient = httpclient.InferenceServerClient(guarded.http_url)
    try:
        with pytest.raises(httpclient.InferenceServerException) as herr:
            hclient.unload_model("add_mul")
        assert herr.value.status() == "503" and refused in herr.value.message()
        assert hclient.is_model_ready("add_mul")
    finally:
        hclient.close()


SPEC_JSON: dict[str, Any] = {
    "dagserve": 1, "name": "int_add", "description": "Y = X + 50, loaded from the config parameter",
    "max_batch_size": 8, "inputs": {"X": {"dtype": "int64", "shape": [4]}}, "outputs": {"Y": "plus.y"},
    "nodes": {"plus": {"op": "math.add", "inputs": {"x": "inputs.X"}, "params": {"value": 50}}},
}


def _int_add(client: grpcclient.InferenceServerClient) -> int:
    x = grpcclient.InferInput("X", [1, 4], "INT64")
    x.set_data_from_numpy(np.zeros((1, 4), dtype=np.int64))
    return int(client.infer("int_add", [x]).as_numpy("Y")[0, 0])


def test_grpc_load_with_config_uses_it_once(grpc_client: grpcclient.InferenceServerClient) -> None:
    assert _int_add(grpc_client) == 3
    try:
        grpc_client.load_model("int_add", config=json.dumps(SPEC_JSON))
        assert _int_add(grpc_client) == 50, "the config parameter replaced the spec on disk"
    finally:
        grpc_client.load_model("int_add")
    assert _int_add(grpc_client) == 3, "a plain load reads the spec on disk again"
    with pytest.raises(grpcclient.InferenceServerException) as err:
        grpc_client.load_model("int_add", config=json.dumps({**SPEC_JSON, "name": "other"}))
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "'other'" in err.value.message()
    with pytest.raises(grpcclient.InferenceServerException) as err:
        grpc_client.load_model("int_add", config="{not json")
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "not valid JSON" in err.value.message()
    assert _int_add(grpc_client) == 3, "failed loads leave the pipeline serving"


PLUS_PY = '''
import numpy as np


class Plus:
    inputs = {"x": {"dtype": "float32", "shape": [4]}}
    outputs = {"y": {"dtype": "float32", "shape": [4]}}

    def setup(self, params):
        self.value = float(params["value"])

    def __call__(self, inputs):
        return {"y": np.asarray(inputs["x"], dtype=np.float32) + self.value}
'''

NEW_SPEC: dict[str, Any] = {
    "dagserve": 1, "name": "uploaded", "description": "a pipeline that came over the wire with its code",
    "max_batch_size": 4, "inputs": {"X": {"dtype": "float32", "shape": [4]}}, "outputs": {"Y": "plus.y"},
    "nodes": {"plus": {"op": "python", "inputs": {"x": "inputs.X"},
                       "params": {"path": "code/plus.py", "class": "Plus", "params": {"value": 7}}}},
}


def test_load_with_config_and_files_is_the_same_on_grpc_and_http(grpc_client: grpcclient.InferenceServerClient,
                                                                 live_server: ServerProcess) -> None:
    x = grpcclient.InferInput("X", [1, 4], "FP32")
    x.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
    try:
        grpc_client.load_model("uploaded", config=json.dumps(NEW_SPEC), files={"file:code/plus.py": PLUS_PY.encode()})
        assert grpc_client.infer("uploaded", [x]).as_numpy("Y")[0, 0] == 8.0
        # tritonclient.http cannot send files (it puts bytes into json.dumps), so raw HTTP, as Triton's docs show.
        spec = json.loads(json.dumps(NEW_SPEC))
        spec["nodes"]["plus"]["params"]["params"]["value"] = 70
        body = {"parameters": {"config": json.dumps(spec),
                               "file:code/plus.py": base64.b64encode(PLUS_PY.encode()).decode()}}
        status, _, raw = post(live_server, "/v2/repository/models/uploaded/load", json.dumps(body))
        assert status == 200, raw
        assert grpc_client.infer("uploaded", [x]).as_numpy("Y")[0, 0] == 71.0
        grpc_client.load_model("uploaded")  # no spec on disk: a plain reload reads the last override
        assert grpc_client.infer("uploaded", [x]).as_numpy("Y")[0, 0] == 71.0
    finally:
        grpc_client.unload_model("uploaded")
    status, _, raw = post(live_server, "/v2/repository/models/uploaded/load",
                          json.dumps({"parameters": {"file:code/plus.py": "AAAA"}}))
    assert status == 400 and "need the 'config' parameter" in json.loads(raw)["error"], raw
    status, _, raw = post(live_server, "/v2/repository/models/uploaded/load",
                          json.dumps({"parameters": {"config": json.dumps(NEW_SPEC), "file:../evil.py": "AAAA"}}))
    assert status == 400 and "relative path inside" in json.loads(raw)["error"], raw
    with pytest.raises(grpcclient.InferenceServerException) as err:
        grpc_client.load_model("uploaded", files={"file:code/plus.py": b"x"})
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and "need the 'config'" in err.value.message()


# -- limits ---------------------------------------------------------------------------------------


def test_a_body_that_never_finishes_gets_408_and_the_connection_closes(guarded: ServerProcess) -> None:
    host, port = guarded.http_url.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v2/models/add_mul/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"inp")
        received = b""
        while chunk := sock.recv(4096):  # until the server closes (the socket's 30 s timeout would raise)
            received += chunk
    assert received.startswith(b"HTTP/1.1 408"), received
    assert b"did not arrive within 1 s" in received
    _wait_for_log(guarded, "status=DEADLINE_EXCEEDED")


def test_a_connection_that_never_sends_a_request_is_closed(guarded: ServerProcess) -> None:
    host, port = guarded.http_url.split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        assert sock.recv(4096) == b"", "the server closed the idle connection (a 30 s timeout would raise)"


def test_grpc_calls_beyond_the_cap_are_resource_exhausted(guarded: ServerProcess) -> None:
    """Two streams held open use the cap of 2 calls; a third call is refused, not queued without bound."""
    with grpc.insecure_channel(guarded.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        streams = []
        for _ in range(2):
            request = pb.ModelInferRequest(model_name="add_mul", raw_input_contents=[b"\x00" * 64])
            request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 16])
            queue: list[Any] = [request]

            def requests(q: list[Any] = queue) -> Iterator[Any]:
                yield q[0]
                while q:  # held open until the test empties the list
                    time.sleep(0.01)

            stream = stub.ModelStreamInfer(requests(), timeout=60)
            assert not next(stream).error_message  # the call is running on the server
            streams.append((stream, queue))
        try:
            with pytest.raises(grpc.RpcError) as err:
                stub.ServerLive(pb.ServerLiveRequest(), timeout=10)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err.value.details()
        finally:
            for stream, queue in streams:
                queue.clear()
                list(stream)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live


def _get_live(sock: socket.socket) -> bytes:
    """One keep-alive ``GET /v2/health/live`` on ``sock``: the response's head and body."""
    sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_http_connections_beyond_the_cap_are_refused(tmp_path: Path) -> None:
    server = ServerProcess([write_repo(tmp_path / "repo", {})], tmp_path, "--http-max-connections", "2").start()
    host, port = server.http_url.split(":")
    try:
        held = [socket.create_connection((host, int(port)), timeout=30) for _ in range(2)]
        for sock in held:
            assert _get_live(sock).startswith(b"HTTP/1.1 200"), "both connections are open and served"
        with socket.create_connection((host, int(port)), timeout=30) as third:
            answer = _get_live(third)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"--http-max-connections" in answer
        held.pop().close()
        deadline = time.monotonic() + 20
        while True:  # the server notices the closed connection soon; then there is room again
            with socket.create_connection((host, int(port)), timeout=30) as again:
                if _get_live(again).startswith(b"HTTP/1.1 200"):
                    break
            assert time.monotonic() < deadline, "a connection was closed but no new one is accepted"
            time.sleep(0.05)
        for sock in held:
            sock.close()
    finally:
        assert server.stop() == 0, server.log()


def test_a_grpc_call_whose_message_never_comes_is_ended_by_the_connection_age(tmp_path: Path) -> None:
    server = ServerProcess([write_repo(tmp_path / "repo", {})], tmp_path, "--grpc-max-connection-age", "1").start()
    try:
        release = threading.Event()

        def nothing() -> Iterator[pb.ModelInferRequest]:
            release.wait(30)  # a client that opens the call and never sends its message
            return
            yield

        with grpc.insecure_channel(server.grpc_url) as channel:
            stream = pb_grpc.GRPCInferenceServiceStub(channel).ModelStreamInfer(nothing(), timeout=20)
            with pytest.raises(grpc.RpcError) as err:
                next(stream)
            release.set()
        assert err.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED, "the server ended it, not the client's deadline"
    finally:
        assert server.stop() == 0, server.log()


# -- logs ----------------------------------------------------------------------------------------


def test_failed_requests_are_logged_with_pipeline_node_status_id_and_latency(guarded: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(guarded.grpc_url)
    try:
        x = np.ones((3, 4), dtype=np.float32)
        x[1, 0] = -1.0
        tensor = grpcclient.InferInput("X", [3, 4], "FP32")
        tensor.set_data_from_numpy(x)
        with pytest.raises(grpcclient.InferenceServerException) as err:
            client.infer("picky", [tensor], request_id="req-17")
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "node 'check'" in err.value.message() and "batch item 1" in err.value.message()
        ok = grpcclient.InferInput("X", [1, 4], "FP32")
        ok.set_data_from_numpy(np.ones((1, 4), dtype=np.float32))
        client.infer("picky", [ok], request_id="req-18")
    finally:
        client.close()
    log = _wait_for_log(guarded, "id=req-18")
    failed = [line for line in log.splitlines() if "id=req-17" in line]
    assert len(failed) == 1, log
    line = failed[0]
    assert "request failed: grpc ModelInfer pipeline=picky node=check status=INVALID_ARGUMENT" in line
    assert "latency_ms=" in line and "batch item 1" in line
    (ok_line,) = [line for line in log.splitlines() if "id=req-18" in line]
    assert "dagserve.access" in ok_line and "status=OK" in ok_line, "the access log has the successes"
    status, _, raw = post(guarded, "/v2/models/picky/infer", json.dumps(
        {"id": "req-19", "inputs": [{"name": "X", "datatype": "FP32", "shape": [1, 4], "data": [1, 2]}]}))
    assert status == 400, raw
    line = next(ln for ln in _wait_for_log(guarded, "id=req-19").splitlines() if "id=req-19" in ln)
    assert "http POST /v2/models/picky/infer pipeline=picky" in line and "http=400" in line


def _slow_busy(server: ServerProcess) -> bool:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        text = response.read().decode()
    return 'dagserve_node_instances_busy{node="nap",pipeline="slow"} 1' in text.replace(
        'pipeline="slow",node="nap"', 'node="nap",pipeline="slow"')


def test_a_client_that_leaves_is_logged_as_cancelled_without_traceback(guarded: ServerProcess) -> None:
    """A gRPC call and a stream cancelled by their client while the server runs them."""
    with grpc.insecure_channel(guarded.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for kind in ("unary", "stream"):
            request = pb.ModelInferRequest(model_name="slow", id=f"leaver-{kind}", raw_input_contents=[b"\x00" * 16])
            request.inputs.add(name="X", datatype="FP32", shape=[1, 4])
            call = stub.ModelInfer.future(request, timeout=30) if kind == "unary" else \
                stub.ModelStreamInfer(iter([request]), timeout=30)
            deadline = time.monotonic() + 20
            while not _slow_busy(guarded):  # the server is running it now
                assert time.monotonic() < deadline, "the request never ran"
                time.sleep(0.01)
            call.cancel()
            _wait_for_log(guarded, f"id=leaver-{kind}")
    log = guarded.log()
    lines = [line for line in log.splitlines() if "id=leaver-" in line]
    assert len(lines) == 2 and all("status=CANCELLED" in line for line in lines), lines
    assert "Traceback" not in log, log[-4000:]


def test_every_serve_flag_is_documented() -> None:
    import argparse

    from dagserve.cli import build_parser

    docs = (Path(__file__).resolve().parents[2] / "docs" / "server.md").read_text(encoding="utf-8")
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {o for action in sub.choices["serve"]._actions for o in action.option_strings if o.startswith("--")}
    missing = sorted(f for f in flags - {"--help"} if f"| `{f}` |" not in docs)
    assert not missing, f"docs/server.md's flag table lacks {missing}"
