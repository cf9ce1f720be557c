"""A real ``dagserve serve`` in a subprocess, on free ports, for the end-to-end tests.

The server is started exactly as a user starts it (``python -m dagserve.cli
serve``), with ports 0 and ``--ready-file``; the file's ``grpc=P http=P
metrics=P`` line gives the ports. :meth:`ServerProcess.stop` sends SIGTERM and
returns the exit code, so each test can assert a clean shutdown (exit 0).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ServerProcess"]

STARTUP_TIMEOUT_S = 60.0
"""Compiling and warming the test pipelines takes ~1-3 s; a loaded CI machine can be much slower."""


class ServerProcess:
    """One ``dagserve serve`` process.

    Args:
        paths: spec files or repository directories to serve.
        workdir: where the ready file and the server's log go.
        args: extra command-line flags (``--max-message-mb 1``, ...).
    """

    def __init__(self, paths: list[str | Path], workdir: Path, *args: str) -> None:
        self.paths = [str(p) for p in paths]
        self.workdir = workdir
        self.args = list(args)
        self.ready_file = workdir / "ready.txt"
        self.log_file = workdir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports['http']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metrics']}/metrics"

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> ServerProcess:
        """Start the server and wait until it has written its ready file.

        Raises:
            RuntimeError: the process exited, or was not ready within ``timeout`` (with its log).
        """
        self.ready_file.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "dagserve.cli", "serve", *self.paths,
               "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0",
               "--ready-file", str(self.ready_file), *self.args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_file, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dagserve serve exited with {self.proc.returncode} before it was ready:\n"
                                   f"{self.log()}")
            text = self.ready_file.read_text() if self.ready_file.exists() else ""
            if text.endswith("\n"):
                self.ports = {k: int(v) for k, v in (kv.split("=") for kv in text.split())}
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"dagserve serve was not ready after {timeout} s:\n{self.log()}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        """The exit code, once the process has exited (``subprocess.TimeoutExpired`` after ``timeout``)."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit code; a process still running after ``timeout`` is killed (and -9 returned)."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
