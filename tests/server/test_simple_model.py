"""Triton's ``simple`` model behind ``dagserve serve``, called the way NVIDIA's examples call it.

The simplest migration: ``model.onnx`` (INPUT0/INPUT1 int32[-1,16] -> OUTPUT0 =
sum, OUTPUT1 = difference) as the only node, fed straight from the request's
tensors, which arrive as read-only views of the message. tritonclient sends
them as binary data over gRPC and HTTP (as ``simple_grpc_infer_client.py`` and
``simple_http_infer_client.py`` do); every request must succeed. A second spec
chains two such models, so the second one is fed ONNX Runtime's own outputs.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from backends import _models  # tests/ is on sys.path: the backends test package

from ._server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SIMPLE = _models.SIMPLE_SPEC
CHAIN = _models.chain_spec("simple_chain")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repo = tmp_path_factory.mktemp("simple_repo")
    _models.simple(repo / "simple.onnx")
    (repo / "simple.yaml").write_text(textwrap.dedent(SIMPLE).lstrip("\n"), encoding="utf-8")
    (repo / "simple_chain.yaml").write_text(textwrap.dedent(CHAIN).lstrip("\n"), encoding="utf-8")
    proc = ServerProcess([repo], tmp_path_factory.mktemp("simple_server")).start()
    yield proc
    assert proc.stop() == 0, proc.log()


def _pair(k: int) -> tuple[np.ndarray, np.ndarray]:
    """The inputs of NVIDIA's simple_*_infer_client.py (0..15 and ones), shifted per request."""
    return (np.arange(16, dtype=np.int32).reshape(1, 16) + k, np.full((1, 16), 1 + k % 3, dtype=np.int32))


@pytest.mark.parametrize(("model", "factor"), [("simple", 1), ("simple_chain", 2)])
def test_binary_grpc_requests_all_succeed(server: ServerProcess, model: str, factor: int) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        for k in range(50):
            x, y = _pair(k)
            inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"),
                      grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
            inputs[0].set_data_from_numpy(x)
            inputs[1].set_data_from_numpy(y)
            outputs = [grpcclient.InferRequestedOutput("OUTPUT0"), grpcclient.InferRequestedOutput("OUTPUT1")]
            result = client.infer(model, inputs, outputs=outputs)
            want0, want1 = (x + y, x - y) if factor == 1 else (2 * x, 2 * y)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), want0)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), want1)


@pytest.mark.parametrize(("model", "factor"), [("simple", 1), ("simple_chain", 2)])
def test_binary_http_requests_all_succeed(server: ServerProcess, model: str, factor: int) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        for k in range(50):
            x, y = _pair(k)
            inputs = [httpclient.InferInput("INPUT0", [1, 16], "INT32"),
                      httpclient.InferInput("INPUT1", [1, 16], "INT32")]
            inputs[0].set_data_from_numpy(x, binary_data=True)
            inputs[1].set_data_from_numpy(y, binary_data=True)
            outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=True),
                       httpclient.InferRequestedOutput("OUTPUT1", binary_data=True)]
            result = client.infer(model, inputs, outputs=outputs)
            want0, want1 = (x + y, x - y) if factor == 1 else (2 * x, 2 * y)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), want0)
            np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), want1)
    finally:
        client.close()
