"""``dagserve serve`` at start-up: a busy port is one line naming the flag; a bad spec is reported once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IDENTITY = ROOT / "pipelines" / "identity.yaml"

pytestmark = pytest.mark.timeout(120)


def _serve(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dagserve", "serve", *args], capture_output=True, text=True,
                          timeout=90, env=dict(os.environ, PYTHONUNBUFFERED="1"))


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another socket listens on for the duration of the test."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


@pytest.mark.parametrize("flag", ["--grpc-port", "--http-port", "--metrics-port"])
def test_a_busy_port_is_one_line_naming_the_flag(flag: str, taken_port: int) -> None:
    ports = {"--grpc-port": "0", "--http-port": "0", "--metrics-port": "0", flag: str(taken_port)}
    result = _serve(str(IDENTITY), *(x for kv in ports.items() for x in kv))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"dagserve serve: port {taken_port} on 127.0.0.1 is already in use; change {flag} "
        "(0 picks a free port, -1 turns that listener off)"]
    assert result.stdout == ""


def test_two_listeners_on_one_port_is_one_line() -> None:
    with socket.socket() as probe:  # a port free a moment ago; the check refuses the pair before binding
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    result = _serve(str(IDENTITY), "--grpc-port", port, "--http-port", port, "--metrics-port", "0")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"dagserve serve: --http-port {port} is also --grpc-port; give each listener its own port"]


def test_a_spec_that_fails_to_compile_is_reported_once_with_its_path_once(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(textwrap.dedent("""\
        dagserve: 1
        name: bad
        max_batch_size: 8
        inputs:
          x: {dtype: float32, shape: [3]}
        outputs:
          y: plus.z
        nodes:
          plus: {op: math.add, inputs: {x: inputs.x}, params: {value: 1.0}}
        """), encoding="utf-8")
    result = _serve(str(tmp_path), "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0")
    assert result.returncode == 1
    err = result.stderr
    assert err.count("error[E-PORT]") == 1, err
    assert err.count(str(spec)) == 1, err
    assert f"{spec}:7:6: error[E-PORT]: node 'plus' has no output 'z'" in err
    assert "1 pipeline(s) failed to load" in err and "--no-exit-on-error" in err
    assert "Traceback" not in err
