"""The dynamic batcher of one node: a priority queue of items and Triton's dispatch rule.

It is pure logic with an explicit clock: every method takes ``now`` (seconds,
monotonic) and nothing here sleeps or awaits, so tests drive it with a fake clock
and hypothesis. The node runner asks :meth:`Batcher.poll` for work whenever one of
its instances is idle.

Dispatch rule (Triton's dynamic batcher, per priority order):

1. items whose request is finished (failed, cancelled) or whose deadline passed
   leave the queue first, and are returned as ``dropped``;
2. if the queue holds ``max_batch_size`` items, send a full batch (``full``);
3. else if it holds at least a preferred batch size, send the largest preferred
   size that fits (``preferred``);
4. else if the oldest item has waited ``max_queue_delay_us``, send everything
   queued (``delay``);
5. else wait until the oldest item's delay, or the nearest deadline, runs out.

Priority 1 is the highest; within a priority, items leave in arrival order, except
that items put with a ``flow`` (the request they belong to) are ordered by
*start-time fair queuing* across flows: an item's tag is the larger of the queue's
virtual time (the tag of the last item taken) and its flow's previous tag + 1, and
the queue takes the smallest tag first, in arrival order among equal tags. A request
that puts 1,000 items (the children of a fan-out) is then served one item per turn
alongside a request that puts 2, instead of ahead of it, while each flow's own items
still leave in order. Items without a flow are tagged with the virtual time, so a
queue that never sees flows is plain FIFO (Goyal et al., "Start-time fair queueing",
SIGCOMM 1996; unit cost per item).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["BatchPolicy", "Batcher", "Decision", "QueueFull", "QueuedItem"]

T = TypeVar("T")


@dataclass(frozen=True)
class BatchPolicy:
    """A node's batching settings (the Plan's ``batching`` block), times in µs."""

    max_batch_size: int = 1
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 0
    timeout_us: int = 0
    priority_levels: int = 1
    default_priority: int = 1

    @classmethod
    def from_plan(cls, data: dict[str, Any]) -> BatchPolicy:
        return cls(
            max_batch_size=max(1, int(data.get("max_batch_size", 1))),
            max_queue_delay_us=int(data.get("max_queue_delay_us", 0)),
            preferred_batch_sizes=tuple(sorted(int(s) for s in data.get("preferred_batch_sizes", ()))),
            max_queue_size=int(data.get("max_queue_size", 0)),
            timeout_us=int(data.get("timeout_us", 0)),
            priority_levels=int(data.get("priority_levels", 1)),
            default_priority=int(data.get("default_priority", 1)),
        )


class QueueFull(Exception):
    """The node's queue holds ``max_queue_size`` live items."""


@dataclass(order=True)
class QueuedItem(Generic[T]):
    """One batch item waiting at a node. Ordered by (priority, fair-queuing tag, arrival)."""

    priority: int
    tag: int
    seq: int
    enqueued: float = field(compare=False)
    deadline: float | None = field(compare=False)
    payload: T = field(compare=False)
    flow: Hashable | None = field(default=None, compare=False)


@dataclass
class Decision(Generic[T]):
    """What :meth:`Batcher.poll` decided.

    Attributes:
        batch: items to run now (empty: nothing to run yet).
        reason: ``full``, ``preferred`` or ``delay`` when ``batch`` is not empty.
        dropped: items removed because they expired or their request finished;
            ``expired`` tells which of them ran out of time.
        wake_at: when to poll again if nothing arrives (``None``: only on arrival).
    """

    batch: list[QueuedItem[T]] = field(default_factory=list)
    reason: str | None = None
    dropped: list[QueuedItem[T]] = field(default_factory=list)
    expired: list[bool] = field(default_factory=list)
    wake_at: float | None = None


class Batcher(Generic[T]):
    """A node's queue. ``is_live(payload)`` says whether an item's request still wants it."""

    def __init__(self, policy: BatchPolicy, is_live: Callable[[T], bool] = lambda _: True) -> None:
        self.policy = policy
        self._is_live = is_live
        self._heap: list[QueuedItem[T]] = []
        self._purged: list[QueuedItem[T]] = []
        """Dead items :meth:`put` removed to make room; the next poll reports them as dropped."""
        self._seq = itertools.count()
        self._virtual = 0
        """The tag of the last item taken: where a newly backlogged flow starts."""
        self._flows: dict[Hashable, list[int]] = {}
        """Per flow with queued items: [its last tag, how many it has queued]."""

    def __len__(self) -> int:
        return len(self._heap)

    def put(self, payload: T, now: float, priority: int | None = None, deadline: float | None = None,
            flow: Hashable | None = None) -> QueuedItem[T]:
        """Queue one item.

        Args:
            priority: 1 (highest) .. ``priority_levels``; default: the policy's.
            deadline: absolute time after which the item is dropped; the policy's
                ``timeout_us`` applies when it is sooner.
            flow: what the item is queued on behalf of (its request), for fair
                queuing across flows; ``None``: tagged with the virtual time.

        Raises:
            QueueFull: ``max_queue_size`` live items are already queued.
            ValueError: the priority is outside ``1..priority_levels``.
        """
        p = self.policy
        level = p.default_priority if priority is None or priority == 0 else priority
        if not 1 <= level <= p.priority_levels:
            raise ValueError(f"priority {priority} is outside 1..{p.priority_levels}")
        if p.max_queue_size and len(self._heap) >= p.max_queue_size:
            self._purge_dead()
            if len(self._heap) >= p.max_queue_size:
                raise QueueFull(f"queue is full ({p.max_queue_size} items)")
        if p.timeout_us:
            policy_deadline = now + p.timeout_us / 1e6
            deadline = policy_deadline if deadline is None else min(deadline, policy_deadline)
        tag = self._virtual
        if flow is not None:
            state = self._flows.get(flow)
            if state is None:
                self._flows[flow] = [tag, 1]
            else:
                tag = max(tag, state[0] + 1)
                state[0] = tag
                state[1] += 1
        item = QueuedItem(level, tag, next(self._seq), now, deadline, payload, flow)
        heapq.heappush(self._heap, item)
        return item

    def _left(self, item: QueuedItem[T]) -> None:
        """Forget ``item`` in its flow's count (it was taken or dropped)."""
        if item.flow is None:
            return
        state = self._flows.get(item.flow)
        if state is not None:
            state[1] -= 1
            if state[1] <= 0:
                del self._flows[item.flow]

    def has_room(self, n: int) -> bool:
        """Whether ``n`` more items fit under ``max_queue_size`` now (always, without a cap).

        The pipeline asks every capped node this before a request starts, so a
        request whose items a full queue would refuse later is refused at the door,
        before any node has spent work on it. Items of finished requests do not count.
        """
        cap = self.policy.max_queue_size
        if not cap:
            return True
        if len(self._heap) + n > cap:
            self._purge_dead()
        return len(self._heap) + n <= cap

    def _purge_dead(self) -> None:
        dead = [i for i in self._heap if not self._is_live(i.payload)]
        if dead:
            self._heap = [i for i in self._heap if self._is_live(i.payload)]
            heapq.heapify(self._heap)
            self._purged.extend(dead)
            for item in dead:
                self._left(item)

    def _drop_expired_and_dead(self, now: float, decision: Decision[T]) -> None:
        if self._purged:
            decision.dropped.extend(self._purged)
            decision.expired.extend([False] * len(self._purged))
            self._purged = []
        keep = []
        for item in self._heap:
            expired = item.deadline is not None and now >= item.deadline
            if expired or not self._is_live(item.payload):
                decision.dropped.append(item)
                decision.expired.append(expired)
                self._left(item)
            else:
                keep.append(item)
        if len(keep) != len(self._heap):
            heapq.heapify(keep)
            self._heap = keep

    def _take(self, n: int) -> list[QueuedItem[T]]:
        taken = [heapq.heappop(self._heap) for _ in range(min(n, len(self._heap)))]
        if taken:
            self._virtual = max(self._virtual, taken[-1].tag)
            if self._flows:
                for item in taken:
                    self._left(item)
        return taken

    def expire(self, now: float) -> Decision[T]:
        """Only drop expired and dead items (every instance is busy, nothing can run).

        ``wake_at`` is the nearest remaining deadline, so a node whose instances are
        all busy still fails items at their deadline, not when an instance frees up.
        """
        decision: Decision[T] = Decision()
        self._drop_expired_and_dead(now, decision)
        deadlines = [item.deadline for item in self._heap if item.deadline is not None]
        decision.wake_at = min(deadlines) if deadlines else None
        return decision

    def poll(self, now: float, flush: bool = False) -> Decision[T]:
        """Decide what to run now; see the module docstring for the rule.

        With ``flush`` (the pipeline is draining: nothing more will arrive) queued
        items go at once instead of waiting for ``max_queue_delay_us``.
        """
        decision: Decision[T] = Decision()
        self._drop_expired_and_dead(now, decision)
        queued = len(self._heap)
        if queued == 0:
            return decision
        p = self.policy
        if queued >= p.max_batch_size:
            decision.batch, decision.reason = self._take(p.max_batch_size), "full"
            return decision
        fitting = [s for s in p.preferred_batch_sizes if s <= queued]
        if fitting:
            decision.batch, decision.reason = self._take(fitting[-1]), "preferred"
            return decision
        oldest = min(item.enqueued for item in self._heap)
        due = oldest + p.max_queue_delay_us / 1e6
        if now >= due or flush:
            decision.batch, decision.reason = self._take(queued), "delay"
            return decision
        deadlines = [item.deadline for item in self._heap if item.deadline is not None]
        decision.wake_at = min([due, *deadlines])
        return decision
