"""Where things are, the peers (Triton, perf_analyzer), and starting each server under test.

Servers are started one at a time by the sections, always on 127.0.0.1 and on
ports nobody chose by hand: dagserve and the bare server take port 0 and report
the port they got in a ready file; Triton needs explicit ports, which are picked
free just before it starts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchmarks._proc import HOST, Managed, free_port, start, wait_until

__all__ = [
    "BENCH",
    "OUT",
    "PEERS",
    "REPO",
    "Peers",
    "ensure_peers",
    "prepare_triton_repo",
    "start_bare",
    "start_dagserve",
    "start_triton",
]

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
OUT = BENCH / "out"
PEERS = Path(os.environ.get("DAGSERVE_PEERS", Path.home() / ".cache" / "dagserve-peers"))
SETUP = REPO.parent / "shared" / "tools" / "peers" / "setup.sh"
TRITON_TEMPLATES = BENCH / "triton_repo"


@dataclass(frozen=True)
class Peers:
    """The real peers' executables."""

    tritonserver: Path
    perf_analyzer: Path
    python: Path


def ensure_peers() -> Peers:
    """Return the peers, running ``../shared/tools/peers/setup.sh`` first if any is missing.

    Raises:
        RuntimeError: the setup script is missing or failed.
    """
    peers = Peers(PEERS / "bin" / "tritonserver", PEERS / "bin" / "perf_analyzer", PEERS / "bin" / "python")
    if all(os.access(p, os.X_OK) for p in (peers.tritonserver, peers.perf_analyzer, peers.python)):
        return peers
    if not SETUP.exists():
        raise RuntimeError(f"peers missing in {PEERS} and no setup script at {SETUP}")
    print(f"benchmarks: setting up Triton and perf_analyzer in {PEERS} ({SETUP})", flush=True)
    subprocess.run(["bash", str(SETUP), str(PEERS)], check=True, timeout=900)
    return peers


def _ready_ports(path: Path) -> dict[str, int]:
    text = path.read_text().strip()
    if not text:
        raise ValueError("empty")
    return {k: int(v) for k, v in (part.split("=") for part in text.split())}


def _dagserve_argv() -> list[str]:
    script = Path(sys.executable).parent / "dagserve"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from dagserve.cli import main; sys.exit(main())"]


def start_dagserve(specs: list[Path], log: Path, timeout: float = 120.0, name: str = "dagserve") -> Managed:
    """``dagserve serve SPECS`` with gRPC only, on a free loopback port; waits until ready."""
    ready = Path(tempfile.mkstemp(prefix="dagserve-ready-", suffix=".txt")[1])
    ready.write_text("")
    argv = [*_dagserve_argv(), "serve", *map(str, specs), "--host", HOST, "--grpc-port", "0",
            "--http-port", "-1", "--metrics-port", "-1", "--target", "cpu", "--ready-file", str(ready),
            "--log-level", "warning"]
    server = start(name, argv, log, cwd=REPO)
    try:
        wait_until(lambda: bool(_ready_ports(ready)), server, timeout)
        server.ports = _ready_ports(ready)
    finally:
        ready.unlink(missing_ok=True)
    return server


def start_bare(log: Path, timeout: float = 30.0) -> Managed:
    """``benchmarks/bare_grpc_server.py`` on a free loopback port; waits until ready."""
    ready = Path(tempfile.mkstemp(prefix="bare-ready-", suffix=".txt")[1])
    ready.write_text("")
    server = start("bare-grpc", [sys.executable, str(BENCH / "bare_grpc_server.py"), "--host", HOST,
                                 "--port", "0", "--ready-file", str(ready)], log, cwd=REPO)
    try:
        wait_until(lambda: bool(_ready_ports(ready)), server, timeout)
        server.ports = _ready_ports(ready)
    finally:
        ready.unlink(missing_ok=True)
    return server


def start_triton(peers: Peers, repo: Path, log: Path, timeout: float = 180.0, name: str = "triton") -> Managed:
    """Triton 2.51 over ``repo``, every listener on loopback; waits for /v2/health/ready."""
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    argv = [str(peers.tritonserver), "--model-repository", str(repo),
            "--http-address", HOST, "--http-port", str(http),
            "--grpc-address", HOST, "--grpc-port", str(grpc_port),
            "--metrics-address", HOST, "--metrics-port", str(metrics),
            "--allow-gpu-metrics", "false", "--exit-on-error", "true", "--log-verbose", "0"]
    server = start(name, argv, log)

    def ready() -> bool:
        with urllib.request.urlopen(f"http://{HOST}:{http}/v2/health/ready", timeout=2) as r:
            return bool(r.status == 200)

    wait_until(ready, server, timeout)
    server.ports = {"grpc": grpc_port, "http": http, "metrics": metrics}
    return server


def dagserve_site_packages() -> str:
    """This interpreter's site-packages: where the Triton python models find Pillow and OpenCV."""
    return sysconfig.get_paths()["purelib"]


def prepare_triton_repo(dst: Path, models: list[str], instances: int, params: dict[str, str] | None = None,
                        step_params: dict[str, dict[str, str]] | None = None,
                        config_edits: dict[str, dict[str, int]] | None = None) -> Path:
    """Copy ``models`` from ``benchmarks/triton_repo`` into ``dst`` with ``instances`` per step.

    Args:
        params: added to (or replacing) the ``parameters`` of every python-backend model
            (the detect steps read ``dagserve_root``, ``site_packages``, ``model_path``).
        step_params: the same, per model.
        config_edits: per model, integer fields to set (``max_batch_size``,
            ``max_queue_delay_microseconds``).

    Ensembles get an empty version directory (Triton needs one).
    """
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for model in models:
        shutil.copytree(TRITON_TEMPLATES / model, dst / model, ignore=shutil.ignore_patterns("__pycache__"))
        (dst / model / "1").mkdir(exist_ok=True)
        config = dst / model / "config.pbtxt"
        text = config.read_text()
        for field_name, number in (config_edits or {}).get(model, {}).items():
            text, n = re.subn(rf"{field_name}:\s*\d+", f"{field_name}: {int(number)}", text)
            if n == 0:
                raise ValueError(f"{model}/config.pbtxt has no '{field_name}' to set")
        if 'backend: "python"' in text:
            text = re.sub(r"count:\s*\d+", f"count: {instances}", text)
            for key, value in {**(params or {}), **(step_params or {}).get(model, {})}.items():
                text = re.sub(rf'parameters \{{ key: "{re.escape(key)}".*\n', "", text)
                quoted = value.replace("\\", "\\\\").replace('"', '\\"')
                text += f'parameters {{ key: "{key}" value: {{ string_value: "{quoted}" }} }}\n'
        config.write_text(text)
    return dst


def settle(seconds: float = 1.0) -> None:
    """Let the machine go quiet between a server's stop and the next start."""
    time.sleep(seconds)
