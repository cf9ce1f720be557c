"""One exception root for dagserve.

Every error dagserve raises derives from :class:`DagserveError`. Two families:

* :class:`RequestError` and its subclasses are *recoverable*: they fail one request
  (or one batch item) and the server goes on. Each maps to a KServe/gRPC status.
* :class:`UnrecoverableError` means the process cannot go on serving (a model that
  cannot load, a corrupted plan); the server stops.

Compile-time problems are not exceptions: the compiler collects them as
:class:`dagserve.diagnostics.Diagnostic` objects and raises :class:`CompileError`
once, carrying all of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dagserve.diagnostics import Diagnostic

__all__ = [
    "CompileError",
    "DagserveError",
    "DeadlineExceededError",
    "InvalidInputError",
    "ItemError",
    "KernelInputError",
    "MissingExtraError",
    "NotFoundError",
    "QueueFullError",
    "RequestError",
    "UnavailableError",
    "UnrecoverableError",
]


class DagserveError(Exception):
    """Root of every dagserve exception."""


class CompileError(DagserveError):
    """A spec failed to compile; ``diagnostics`` holds every problem found."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        errors = [d for d in diagnostics if d.severity == "error"]
        first = errors[0].one_line() if errors else "no diagnostics"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{first}{more}")


class MissingExtraError(DagserveError):
    """An optional dependency is not installed; the message names the extra."""

    def __init__(self, what: str, module: str, extra: str, then: str = "") -> None:
        self.extra = extra
        super().__init__(
            f"{what} needs the Python module {module!r}, which is not installed; "
            f"install it with: pip install 'dagserve[{extra}]'{then}"
        )


class UnrecoverableError(DagserveError):
    """The server cannot go on (a model failed to load, a plan is corrupt)."""


class RequestError(DagserveError):
    """Fails one request; ``status`` is the gRPC status name it maps to."""

    status = "INTERNAL"


class InvalidInputError(RequestError):
    status = "INVALID_ARGUMENT"


class NotFoundError(RequestError):
    status = "NOT_FOUND"


class QueueFullError(RequestError):
    status = "RESOURCE_EXHAUSTED"


class DeadlineExceededError(RequestError):
    status = "DEADLINE_EXCEEDED"


class UnavailableError(RequestError):
    status = "UNAVAILABLE"


class KernelInputError(InvalidInputError, ValueError):
    """An input a kernel cannot process: corrupt image bytes, a wrong dtype, NaN logits.

    It fails only the request (or batch item) it was raised for, with status
    ``INVALID_ARGUMENT``. It is also a :class:`ValueError`, so code calling a kernel
    directly can catch it without knowing dagserve's exception tree.
    """


class ItemError(RequestError):
    """One batch item failed inside a node; names the pipeline, node and op.

    The status follows the cause: bad data (a :class:`RequestError` of its own, or a
    ``ValueError``/``TypeError`` a kernel raised about its input) is the client's
    ``INVALID_ARGUMENT``; anything else is the server's ``INTERNAL``, still with
    the node and the cause in the message.
    """

    def __init__(self, pipeline: str, node: str, op: str, cause: BaseException, item: int | None = None) -> None:
        self.pipeline, self.node, self.op, self.cause, self.item = pipeline, node, op, cause, item
        if isinstance(cause, RequestError):
            self.status = cause.status
        elif isinstance(cause, (ValueError, TypeError)):
            self.status = "INVALID_ARGUMENT"
        else:
            self.status = "INTERNAL"
        where = f", batch item {item}" if item is not None else ""
        super().__init__(f"pipeline '{pipeline}', node '{node}' ({op}){where}: {cause}")

    def at_item(self, item: int) -> ItemError:
        """The same failure, naming the item (its index in the request's batch) that failed."""
        named = ItemError(self.pipeline, self.node, self.op, self.cause, item)
        named.__cause__ = self.__cause__
        return named
