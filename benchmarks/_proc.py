"""Processes the benchmarks start: servers on loopback, always stopped.

Every process is started in its own process group and registered here; an
``atexit`` hook and SIGTERM/SIGINT/SIGHUP handlers stop whatever is still running
(SIGTERM to the group, then SIGKILL after a grace period), so an interrupted run
leaves nothing behind. Nothing binds anything but 127.0.0.1.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType

__all__ = [
    "BOOST",
    "HOST",
    "CpuSample",
    "Managed",
    "cpu_sample",
    "foreign_load",
    "free_port",
    "new_session",
    "running",
    "start",
    "stop_all",
    "wait_until",
]

HOST = "127.0.0.1"

_running: list[Managed] = []

BOOST: dict[str, int | None] = {"nice": -10}
"""Scheduling boost of every process the benchmarks start (``None``: none).

Linux groups processes by session ("autogroups") and shares the CPU fairly between
groups; ``nice`` only counts inside a group. On a machine shared with other jobs,
each server under test (and perf_analyzer) therefore runs in a session of its own
whose group nice is set to this value, so other sessions' jobs take less from the
measurement, and every contestant is treated alike (one group each, however many
processes or threads it has).
"""


def new_session() -> None:
    """``preexec_fn`` for children: a session of their own, boosted as :data:`BOOST` says."""
    os.setsid()
    nice = BOOST["nice"]
    if nice is not None:
        with contextlib.suppress(OSError):
            with open("/proc/self/autogroup", "w", encoding="ascii") as fh:
                fh.write(str(nice))


class Managed:
    """One child process (a server), with its log file.

    Attributes:
        name: short label used in logs and errors.
        proc: the ``subprocess.Popen``.
        log_path: where its stdout and stderr go.
    """

    def __init__(self, name: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.log_path = log_path
        self.ports: dict[str, int] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the process group, wait up to ``grace`` seconds, then SIGKILL it."""
        if self in _running:
            _running.remove(self)
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        # Anything left in the group (python-backend stubs) goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


_TICK = os.sysconf("SC_CLK_TCK")


def _group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of every live process in process group ``pgid``."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state (field 3); pgrp is field 5, utime/stime are fields 14/15.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return (total - idle) / _TICK, total / _TICK


class CpuSample:
    """CPU use over an interval: the server under test, our own children, everyone else.

    ``foreign`` is what processes that are not part of the measurement used: other
    people's jobs on a shared machine. It is reported next to every figure, because
    it lowers a throughput without saying so.
    """

    def __init__(self, server: Managed | None) -> None:
        self.server = server
        self.t0 = time.monotonic()
        self.busy0, _ = _machine_busy()
        self.server0 = _group_cpu(server.pid) if server else 0.0
        self.self0 = _self_cpu()

    def stop(self) -> dict[str, float]:
        """Seconds of wall time, and cores used on average by server / client+us / others."""
        wall = max(time.monotonic() - self.t0, 1e-9)
        busy, _ = _machine_busy()
        server = (_group_cpu(self.server.pid) if self.server else 0.0) - self.server0
        ours = _self_cpu() - self.self0
        foreign = max(busy - self.busy0 - server - ours, 0.0)
        return {"wall_s": wall, "server_cores": server / wall, "client_cores": ours / wall,
                "foreign_cores": foreign / wall}


def _self_cpu() -> float:
    import resource

    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def foreign_load(seconds: float = 0.3) -> float:
    """Cores other processes used over the next ``seconds`` (ours idle: whole machine minus this process)."""
    busy0, _ = _machine_busy()
    self0, t0 = _self_cpu(), time.monotonic()
    time.sleep(seconds)
    busy1, _ = _machine_busy()
    wall = max(time.monotonic() - t0, 1e-9)
    return max(busy1 - busy0 - (_self_cpu() - self0), 0.0) / wall


def cpu_sample(server: Managed | None) -> CpuSample:
    """Start measuring CPU use (see :class:`CpuSample`)."""
    return CpuSample(server)


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago (for servers that cannot take 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def start(name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Managed:
    """Start ``argv`` in a new process group, output to ``log_path``; registered for cleanup."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, preexec_fn=new_session)
    managed = Managed(name, proc, log_path)
    _running.append(managed)
    return managed


def wait_until(check: Callable[[], bool], what: Managed, timeout: float) -> None:
    """Poll ``check`` until it is true; fail with the server's log if it dies or times out.

    Raises:
        RuntimeError: the process exited, or ``timeout`` seconds passed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not what.alive():
            raise RuntimeError(f"{what.name} exited with {what.proc.returncode} while starting:\n{what.log_tail()}")
        try:
            if check():
                return
        except Exception:  # not ready yet (connection refused, file not there, ...)
            pass
        time.sleep(0.2)
    what.stop()
    raise RuntimeError(f"{what.name} was not ready after {timeout:.0f} s:\n{what.log_tail()}")


def stop_all() -> None:
    """Stop every process still registered (newest first)."""
    for managed in list(reversed(_running)):
        with contextlib.suppress(Exception):
            managed.stop(grace=5.0)


@contextlib.contextmanager
def running(managed: Managed) -> Iterator[Managed]:
    """Stop ``managed`` when the block ends, however it ends."""
    try:
        yield managed
    finally:
        managed.stop()


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stop_all()
    sys.stderr.write(f"benchmarks: stopped by signal {signum}; every server was stopped\n")
    os._exit(128 + signum)


atexit.register(stop_all)
for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(_sig, _on_signal)
