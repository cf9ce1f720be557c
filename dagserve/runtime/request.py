"""The state of one request while its items travel through the graph.

All of it is touched on the event loop's thread only, so it needs no locks. A
request is *done* as soon as it succeeds, fails, times out or its caller goes
away; from then on its items are dropped from every queue before they run.
"""

from __future__ import annotations

import asyncio
from typing import Any

from dagserve.runtime.values import ItemValue

__all__ = ["Request"]


class Request:
    """Items of one request, what each has produced, and what each still waits for.

    Attributes:
        values: per item, ``"node.port"`` (or ``"inputs.NAME"``) -> value.
        pending: per item, node -> producers it still waits for.
        nodes_left: per item, how many nodes still have to run on it.
    """

    __slots__ = (
        "deadline",
        "future",
        "id",
        "items_left",
        "n_items",
        "nodes_left",
        "pending",
        "priority",
        "started",
        "timer",
        "values",
    )

    def __init__(
        self,
        request_id: str,
        n_items: int,
        future: asyncio.Future[Any],
        pending_template: dict[str, int],
        n_nodes: int,
        priority: int | None,
        deadline: float | None,
        started: float,
    ) -> None:
        self.id = request_id
        self.n_items = n_items
        self.future = future
        self.values: list[dict[str, ItemValue]] = [{} for _ in range(n_items)]
        self.pending = [dict(pending_template) for _ in range(n_items)]
        self.nodes_left = [n_nodes] * n_items
        self.items_left = n_items
        self.priority = priority
        self.deadline = deadline
        self.started = started
        self.timer: asyncio.TimerHandle | None = None

    @property
    def live(self) -> bool:
        """Still wanted: not finished, failed, timed out or abandoned by its caller."""
        return not self.future.done()

    def fail(self, exc: BaseException) -> bool:
        """Fail the request with ``exc`` unless it is already done; True if this call did it."""
        if self.future.done():
            self.stop_timer()
            return False
        self.future.set_exception(exc)
        self.stop_timer()
        return True

    def succeed(self, outputs: dict[str, Any]) -> None:
        if not self.future.done():
            self.future.set_result(outputs)
        self.stop_timer()

    def stop_timer(self, _future: object = None) -> None:
        """Disarm the deadline timer (also usable as the future's done callback)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
