"""Fixtures of the server's end-to-end tests: a pipeline repository and real servers.

The session's main server serves :data:`SPECS` plus the example pipelines
``pipelines/identity.yaml`` and ``pipelines/add_mul.yaml``; tests that stop a
server or need other flags start their own with :class:`ServerProcess`. Every
server is stopped with SIGTERM and must exit 0.
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from ._server import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "pipelines"

SLEEP_PY = '''
"""A python-op class that sleeps: a node slow enough to fill queues and hit deadlines."""
import time

import numpy as np


class Sleep:
    inputs = {"x": {"dtype": "float32", "shape": [4]}}
    outputs = {"y": {"dtype": "float32", "shape": [4]}}

    def setup(self, params):
        self.seconds = float(params["seconds"])

    def __call__(self, inputs):
        time.sleep(self.seconds)
        return {"y": np.asarray(inputs["x"], dtype=np.float32)}
'''

SPECS: dict[str, str] = {
    "bytes_echo.yaml": """
        dagserve: 1
        name: bytes_echo
        description: BYTES in, the same BYTES out
        max_batch_size: 8
        inputs:
          TEXT: {dtype: bytes, shape: []}
        outputs:
          ECHO: same.y
        nodes:
          same:
            op: tensor.identity
            inputs: {x: inputs.TEXT}
        """,
    "int_add.yaml": """
        dagserve: 1
        name: int_add
        description: Y = X + 3 over INT64
        max_batch_size: 8
        inputs:
          X: {dtype: int64, shape: [4]}
        outputs:
          Y: plus.y
        nodes:
          plus:
            op: math.add
            inputs: {x: inputs.X}
            params: {value: 3}
        """,
    "slow.yaml": """
        dagserve: 1
        name: slow
        description: 0.3 s per item, one at a time, a queue of one
        max_batch_size: 1
        inputs:
          X: {dtype: float32, shape: [4]}
        outputs:
          Y: nap.y
        nodes:
          nap:
            op: python
            inputs: {x: inputs.X}
            params: {path: sleep.py, class: Sleep, params: {seconds: 0.3}}
            batching: {max_batch_size: 1, max_queue_size: 1}
        """,
    "reload_me.yaml": """
        dagserve: 1
        name: reload_me
        description: Y = X + 1 after a short nap (the reload test changes the 1)
        max_batch_size: 4
        inputs:
          X: {dtype: float32, shape: [4]}
        outputs:
          Y: plus.y
        nodes:
          nap:
            op: python
            inputs: {x: inputs.X}
            params: {path: sleep.py, class: Sleep, params: {seconds: 0.02}}
            batching: {max_batch_size: 4}
          plus:
            op: math.add
            inputs: {x: nap.y}
            params: {value: 1.0}
        """,
}


def write_repo(directory: Path, specs: dict[str, str], examples: bool = True) -> Path:
    """A pipeline repository: ``specs`` (dedented), ``sleep.py``, and optionally the example specs."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sleep.py").write_text(SLEEP_PY, encoding="utf-8")
    for name, text in specs.items():
        (directory / name).write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    if examples:
        for name in ("identity.yaml", "add_mul.yaml"):
            shutil.copy(EXAMPLES / name, directory / name)
    return directory


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repo(tmp_path_factory.mktemp("repo"), SPECS)


@pytest.fixture(scope="session")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The shared server; must still be alive after every test and exit 0 on SIGTERM.

    Model control is on (``--model-control-mode=explicit``): the repository and reload tests use it.
    """
    proc = ServerProcess([repo], tmp_path_factory.mktemp("server"), "--model-control-mode=explicit").start()
    yield proc
    code = proc.stop()
    assert code == 0, f"dagserve serve exited with {code} on SIGTERM:\n{proc.log()}"


@pytest.fixture
def live_server(server: ServerProcess) -> Iterator[ServerProcess]:
    """The shared server, checked to still be running after the test (no input may crash it)."""
    yield server
    assert server.alive, f"the server died during the test:\n{server.log()}"


@pytest.fixture
def grpc_client(live_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    client = grpcclient.InferenceServerClient(live_server.grpc_url)
    yield client
    client.close()


@pytest.fixture
def http_client(live_server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(live_server.http_url, concurrency=4)
    yield client
    client.close()
