"""One log line per finished request: every failure, and every success with ``--access-log``.

Both front ends call :meth:`RequestLog.finished` once per request (a gRPC call,
one message of a stream, an HTTP request). A line carries the protocol and call,
the pipeline, the node that failed (when one did), the status, the request id and
the latency, then the message::

    request failed: grpc ModelInfer pipeline=add_mul node=- status=INVALID_ARGUMENT id=42 latency_ms=0.31: ...

Failures go to the ``dagserve.server`` logger at INFO (a client's mistake, a
full queue, a deadline, a client that went away) or ERROR with the traceback
(INTERNAL: a bug). Successes go to ``dagserve.access`` at INFO, only when the
access log is on.
"""

from __future__ import annotations

import logging
import time

from dagserve.errors import ItemError, RequestError

__all__ = ["RequestLog", "failure_status"]

log = logging.getLogger("dagserve.server")
access = logging.getLogger("dagserve.access")


def failure_status(exc: BaseException) -> str:
    """The gRPC status name a failure answers with."""
    return exc.status if isinstance(exc, RequestError) else "INTERNAL"


class RequestLog:
    """Where finished requests are logged.

    Args:
        access_log: also log every successful request (``--access-log``).
    """

    def __init__(self, access_log: bool = False) -> None:
        self.access_log = access_log

    def finished(self, protocol: str, call: str, model: str, request_id: str, started: float,
                 status: str = "OK", message: str = "", exc: BaseException | None = None,
                 extra: str = "") -> None:
        """Log one request that ended with ``status`` (``OK``, or a gRPC status name).

        Args:
            started: ``time.perf_counter()`` when the request arrived.
            exc: the failure; its node (for an item that failed in a node) is logged,
                and its traceback only for INTERNAL.
            extra: more ``key=value`` fields (HTTP: the method, path and HTTP status).
        """
        if status == "OK" and not self.access_log:
            return
        node = exc.node if isinstance(exc, ItemError) else ""
        if isinstance(exc, ItemError) and not model:
            model = exc.pipeline
        latency_ms = (time.perf_counter() - started) * 1e3
        fields = (f"{protocol} {call} pipeline={model or '-'} node={node or '-'} status={status} "
                  f"id={request_id or '-'} latency_ms={latency_ms:.2f}{' ' + extra if extra else ''}")
        if status == "OK":
            access.info("%s", fields)
        elif status == "INTERNAL":
            log.error("request failed: %s: %s", fields, message, exc_info=exc)
        else:
            log.info("request failed: %s: %s", fields, message)
