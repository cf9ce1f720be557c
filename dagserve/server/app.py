"""``dagserve serve``: the repository, the gRPC service, HTTP/REST and metrics, and shutdown.

Start-up: compile and warm every pipeline, then listen; readiness stays false
until every pipeline is READY. SIGTERM/SIGINT: stop accepting (readiness false,
new requests UNAVAILABLE), finish every request in flight, then exit 0 — within
``drain_timeout`` seconds, after which what is left fails with UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from dagserve.server.control import ModelControl
from dagserve.server.grpc_service import InferenceService
from dagserve.server.repository import Repository
from dagserve.server.requestlog import RequestLog

__all__ = ["Server", "ServerConfig", "serve"]

log = logging.getLogger("dagserve.server")

SERVICE = "inference.GRPCInferenceService"


@dataclass
class ServerConfig:
    """Where and how to serve. Ports 0 pick a free port; -1 disables that listener."""

    paths: list[str]
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    target: str = "cpu"
    max_message_bytes: int = 64 * 1024 * 1024
    drain_timeout: float = 30.0
    exit_on_error: bool = True
    grpc_options: list[tuple[str, int]] = field(default_factory=list)
    model_control_mode: str = "none"
    """``explicit``: clients may load and unload pipelines; ``none``: refused, as in Triton."""
    access_log: bool = False
    """Log every successful request too (failures are always logged)."""
    http_read_timeout: float = 60.0
    """Seconds an HTTP request body may take to arrive (then 408 and the connection closes); 0: no limit."""
    http_idle_timeout: float = 75.0
    """Seconds an HTTP connection may sit without a request before it is closed."""
    http_max_connections: int = 1000
    """HTTP connections open at once (per listener); more are answered 503 and closed. 0: no cap."""
    grpc_max_concurrent_rpcs: int = 1000
    """gRPC calls (a stream counts as one) served at once; more are refused with RESOURCE_EXHAUSTED."""
    grpc_max_streams: int = 100
    """HTTP/2 streams (calls in flight) one gRPC connection may open (``grpc.max_concurrent_streams``)."""
    grpc_idle_timeout: float = 300.0
    """Seconds a gRPC connection with no call in flight stays open (``grpc.max_connection_idle_ms``)."""
    grpc_max_connection_age: float = 0.0
    """Seconds after which a gRPC connection is told to go away (then as long again, at most 30 s, for its
    calls to finish before it is closed): the bound on a call whose message never arrives. 0: off."""


class Server:
    """All listeners over one repository, on the running event loop."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.repository = Repository(config.paths, target=config.target, drain_timeout=config.drain_timeout)
        self.live = asyncio.Event()
        self.draining = asyncio.Event()
        self.stopped = asyncio.Event()
        self.grpc_server: grpc.aio.Server | None = None
        self.health = health_aio.HealthServicer()
        self.ports: dict[str, int] = {}
        self._http_runners: list[object] = []
        self.model_control = ModelControl(self.repository, explicit=config.model_control_mode == "explicit")
        self.requests = RequestLog(access_log=config.access_log)

    async def start(self) -> None:
        """Load every pipeline, then open the listeners.

        Raises:
            RuntimeError: a pipeline failed to load and ``exit_on_error`` is set.
        """
        c = self.config
        errors = await self.repository.load_all()
        if errors:
            for error in errors:
                log.error("%s", error)
            if c.exit_on_error:
                await self.repository.close(timeout=0)
                raise RuntimeError(f"{len(errors)} pipeline(s) failed to load (each is reported above); "
                                   "--no-exit-on-error serves the others")
        if not self.repository.entries:
            log.warning("no pipeline specs found in %s", ", ".join(c.paths))
        options = [
            ("grpc.max_receive_message_length", c.max_message_bytes),
            ("grpc.max_send_message_length", c.max_message_bytes),
            ("grpc.so_reuseport", 0),
            ("grpc.max_concurrent_streams", c.grpc_max_streams),
            ("grpc.max_connection_idle_ms", int(c.grpc_idle_timeout * 1000)),
            ("grpc.keepalive_time_ms", 60_000),  # find dead peers: ping after a minute without traffic
            ("grpc.keepalive_timeout_ms", 20_000),
        ]
        if c.grpc_max_connection_age > 0:
            options += [("grpc.max_connection_age_ms", int(c.grpc_max_connection_age * 1000)),
                        ("grpc.max_connection_age_grace_ms", int(min(c.grpc_max_connection_age, 30.0) * 1000))]
        options += c.grpc_options
        if c.grpc_port >= 0:
            server = grpc.aio.server(options=options, maximum_concurrent_rpcs=c.grpc_max_concurrent_rpcs or None)
            service = InferenceService(self.repository, self.live, self.draining, self.model_control, self.requests)
            server.add_generic_rpc_handlers((service.handler(),))
            health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
            names = (SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, server)
            self.ports["grpc"] = server.add_insecure_port(f"{c.host}:{c.grpc_port}")
            if self.ports["grpc"] == 0:
                raise RuntimeError(f"cannot listen on {c.host}:{c.grpc_port} (gRPC)")
            await server.start()
            self.grpc_server = server
        await self._start_http()
        self.live.set()
        status = health_pb2.HealthCheckResponse.SERVING if self.repository.ready else \
            health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("", status)
        await self.health.set(SERVICE, status)
        log.info("dagserve serving %d pipeline(s) on %s", len(self.repository.entries),
                 ", ".join(f"{k} {c.host}:{v}" for k, v in self.ports.items()))

    async def _start_http(self) -> None:
        c = self.config
        if c.http_port < 0 and c.metrics_port < 0:
            return
        from aiohttp import web

        from dagserve.server.http import CappedAppRunner, build_http_app
        from dagserve.server.metrics import build_metrics_app

        for kind, port, factory in (
            ("http", c.http_port, lambda: build_http_app(
                self.repository, self.live, self.draining, c.max_message_bytes,
                read_timeout=c.http_read_timeout or None, model_control=self.model_control,
                requests=self.requests)),
            ("metrics", c.metrics_port, lambda: build_metrics_app(self.repository)),
        ):
            if port < 0:
                continue
            runner = CappedAppRunner(factory(), c.http_max_connections, access_log=None,
                                     keepalive_timeout=c.http_idle_timeout)
            await runner.setup()
            site = web.TCPSite(runner, c.host, port)
            await site.start()
            sockets = site._server.sockets if site._server else []  # type: ignore[union-attr,attr-defined]
            self.ports[kind] = sockets[0].getsockname()[1] if sockets else port
            self._http_runners.append(runner)

    async def stop(self) -> None:
        """Stop accepting, drain every pipeline, close the listeners."""
        if self.draining.is_set():
            await self.stopped.wait()
            return
        self.draining.set()
        await self.health.enter_graceful_shutdown()
        log.info("draining: finishing requests in flight (up to %.0f s)", self.config.drain_timeout)
        await self.repository.close(timeout=self.config.drain_timeout)
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=1.0)
        for runner in self._http_runners:
            await runner.cleanup()  # type: ignore[attr-defined]
        self.live.clear()
        self.stopped.set()


async def serve(config: ServerConfig, ready_file: str | None = None) -> int:
    """Run until SIGTERM/SIGINT; return the process exit code."""
    server = Server(config)
    try:
        await server.start()
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    if ready_file:
        with open(ready_file, "w", encoding="utf-8") as fh:
            fh.write(" ".join(f"{k}={v}" for k, v in server.ports.items()) + "\n")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received: shutting down")
    await server.stop()
    return 0

