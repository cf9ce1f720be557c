"""Triton's own load generator, perf_analyzer, against ``dagserve serve`` (optional).

Needs the peers from ``../shared/tools/peers/setup.sh`` (``~/.cache/dagserve-peers``);
skipped with the reason when they are not set up. perf_analyzer refuses to run
unless ServerMetadata, ModelMetadata, ModelConfig, ModelStatistics and ModelInfer
all answer as Triton does, so an exit code of 0 is a real compatibility check.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._server import ServerProcess

PEERS = Path(os.environ.get("DAGSERVE_PEERS", Path.home() / ".cache" / "dagserve-peers"))
PERF_ANALYZER = PEERS / "bin" / "perf_analyzer"
EXAMPLES = Path(__file__).resolve().parents[2] / "pipelines"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.peers,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not PERF_ANALYZER.exists(),
                       reason=f"perf_analyzer not found at {PERF_ANALYZER}; run ../shared/tools/peers/setup.sh"),
]


@pytest.fixture(scope="module")
def examples_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """``dagserve serve`` over the example pipelines, stopped with SIGTERM (exit 0) after the tests."""
    # The two example specs by name: other specs in pipelines/ may need model files made elsewhere.
    server = ServerProcess([EXAMPLES / "identity.yaml", EXAMPLES / "add_mul.yaml"],
                           tmp_path_factory.mktemp("peers")).start()
    try:
        yield server
        code = server.stop()
        assert code == 0, server.log()
    finally:
        server.kill()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_perf_analyzer_runs_against_dagserve(examples_server: ServerProcess, protocol: str) -> None:
    url = examples_server.grpc_url if protocol == "grpc" else examples_server.http_url
    # --stability-percentage 100: the machine may be shared; what is tested is the protocol, not the noise.
    cmd = [str(PERF_ANALYZER), "-m", "identity", "-u", url, "-i", protocol, "--concurrency-range", "1:2",
           "--measurement-interval", "1000", "--shape", "INPUT0:16", "--stability-percentage", "100"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Concurrency: 2, throughput:" in output, output
    assert "error" not in output.lower(), output
