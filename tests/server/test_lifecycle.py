"""Reload without dropping requests, drain on SIGTERM, and message-size limits."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from ._server import ServerProcess
from .conftest import write_repo
from .test_http import post

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]  # a server start can take 30 s on a busy machine


def x4(value: float) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("X", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.full((1, 4), value, dtype=np.float32))
    return tensor


def test_reload_changed_spec_drops_nothing(live_server: ServerProcess, repo: Path) -> None:
    """Edit ``reload_me`` (+1 -> +100) and load it while four clients keep requests in flight."""
    spec = repo / "reload_me.yaml"
    results: list[float] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def client_loop() -> None:
        client = grpcclient.InferenceServerClient(live_server.grpc_url)
        try:
            while not stop.is_set():
                out = client.infer("reload_me", [x4(0.0)]).as_numpy("Y")
                results.append(float(out[0, 0]))
        except BaseException as exc:  # any failure is the test's failure
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.4)
        before = len(results)
        spec.write_text(spec.read_text().replace("value: 1.0", "value: 100.0"))
        control = grpcclient.InferenceServerClient(live_server.grpc_url)
        try:
            control.load_model("reload_me")
            time.sleep(0.4)
        finally:
            control.close()
    finally:
        stop.set()
        for t in threads:
            t.join(20)
    assert not errors, errors
    assert before > 0, "requests were running before the reload"
    assert set(results) == {1.0, 100.0}, set(results)
    first_new = results.index(100.0)
    assert all(r == 100.0 for r in results[first_new + 8:]), "after the switch only the new pipeline answers"
    client = grpcclient.InferenceServerClient(live_server.grpc_url)
    try:
        assert client.infer("reload_me", [x4(1.0)]).as_numpy("Y")[0, 0] == 101.0
        assert client.is_model_ready("reload_me")
    finally:
        client.close()


def test_reload_of_a_broken_spec_keeps_the_old_pipeline(live_server: ServerProcess, repo: Path) -> None:
    spec = repo / "int_add.yaml"
    good = spec.read_text()
    spec.write_text(good.replace("op: math.add", "op: math.nope"))
    client = grpcclient.InferenceServerClient(live_server.grpc_url)
    try:
        with pytest.raises(grpcclient.InferenceServerException) as err:
            client.load_model("int_add")
        assert err.value.status() == "StatusCode.UNAVAILABLE"
        assert "math.nope" in err.value.message() and "int_add.yaml" in err.value.message()
        tensor = grpcclient.InferInput("X", [1, 4], "INT64")
        tensor.set_data_from_numpy(np.zeros((1, 4), dtype=np.int64))
        assert client.infer("int_add", [tensor]).as_numpy("Y").tolist() == [[3, 3, 3, 3]]
    finally:
        spec.write_text(good)
        client.load_model("int_add")
        client.close()


DRAIN_SPECS = {
    "drowsy.yaml": """
        dagserve: 1
        name: drowsy
        max_batch_size: 1
        inputs:
          X: {dtype: float32, shape: [4]}
        outputs:
          Y: nap.y
        nodes:
          nap:
            op: python
            inputs: {x: inputs.X}
            params: {path: sleep.py, class: Sleep, params: {seconds: 0.4}}
            batching: {max_batch_size: 1}
        """,
}


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with ``--max-message-mb 1`` over ``drowsy`` and the examples.

    One process serves both tests below (a start costs seconds on a busy machine):
    the size-limit test first, then the drain test, which ends it with SIGTERM.
    """
    tmp = tmp_path_factory.mktemp("small")
    server = ServerProcess([write_repo(tmp / "repo", DRAIN_SPECS)], tmp, "--max-message-mb", "1").start()
    yield server
    try:
        if server.alive:
            assert server.stop() == 0, server.log()
    finally:
        server.kill()


def test_message_size_limit(small_server: ServerProcess) -> None:
    """``--max-message-mb 1``: a 2 MB request is RESOURCE_EXHAUSTED (gRPC) / 413 (HTTP); the server goes on."""
    server = small_server
    big = np.zeros((1, 512 * 1024), dtype=np.float32)  # 2 MiB
    small = np.ones((1, 1024), dtype=np.float32)
    g = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("INPUT0", list(big.shape), "FP32")
    tensor.set_data_from_numpy(big)
    with pytest.raises(grpcclient.InferenceServerException) as err:
        g.infer("identity", [tensor])
    assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "larger than max" in err.value.message() and "1048576" in err.value.message()
    tensor.set_shape(list(small.shape))
    tensor.set_data_from_numpy(small)
    np.testing.assert_array_equal(g.infer("identity", [tensor]).as_numpy("OUTPUT0"), small)
    g.close()

    h = httpclient.InferenceServerClient(server.http_url)
    h_tensor = httpclient.InferInput("INPUT0", list(big.shape), "FP32")
    h_tensor.set_data_from_numpy(big)
    with pytest.raises(httpclient.InferenceServerException) as herr:
        h.infer("identity", [h_tensor])
    assert herr.value.status() == "413"
    assert "larger than the server's limit of 1048576 bytes" in herr.value.message()
    assert "--max-message-mb" in herr.value.message()
    h_tensor.set_shape(list(small.shape))
    h_tensor.set_data_from_numpy(small)
    np.testing.assert_array_equal(h.infer("identity", [h_tensor]).as_numpy("OUTPUT0"), small)
    h.close()
    assert server.alive


def test_sigterm_finishes_in_flight_requests_and_refuses_new_ones(small_server: ServerProcess) -> None:
    server = small_server
    in_flight: list[Any] = []
    grpc_c = grpcclient.InferenceServerClient(server.grpc_url)
    http_result: list[Any] = []
    body = '{"inputs":[{"name":"X","shape":[1,4],"datatype":"FP32","data":[7,7,7,7]}]}'
    http_thread = threading.Thread(
        target=lambda: http_result.append(post(server, "/v2/models/drowsy/infer", body)))
    for i in range(3):  # 0.4 s each, one at a time: 1.2 s of work in flight
        grpc_c.async_infer("drowsy", [x4(i)], callback=lambda result, error: in_flight.append((result, error)))
    http_thread.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    server.signal(signal.SIGTERM)
    time.sleep(0.2)
    # New requests while draining: UNAVAILABLE (or refused once the listener is gone).
    with pytest.raises(grpcclient.InferenceServerException) as err:
        grpc_c.infer("drowsy", [x4(9)], client_timeout=5)
    assert err.value.status() == "StatusCode.UNAVAILABLE", err.value
    status, _, refused = post(server, "/v2/models/drowsy/infer", b"{}")
    assert status == 503 and b"shutting down" in refused
    assert not grpc_c.is_server_ready()
    code = server.wait(timeout=15)
    assert code == 0, server.log()
    assert time.monotonic() - t0 < 10
    http_thread.join(5)
    ((status, _, body_out),) = http_result
    assert status == 200, body_out
    assert json.loads(body_out)["outputs"][0]["data"] == [7.0, 7.0, 7.0, 7.0]
    deadline = time.monotonic() + 5
    while len(in_flight) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [e for _, e in in_flight] == [None, None, None], in_flight
    assert sorted(float(r.as_numpy("Y")[0, 0]) for r, _ in in_flight) == [0.0, 1.0, 2.0]
    grpc_c.close()
