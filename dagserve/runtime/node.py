"""One node at run time: its batcher, its instances, and how a batch is run.

Each instance owns one kernel (and, on a GPU, one stream). Dispatch is driven by
callbacks, not polling: an arrival schedules one dispatch round for the current
loop iteration (so the items a producer delivers together batch together), a
finished batch frees its instance and dispatches again, and when the batcher is
waiting for a delay to run out a single timer is armed for that moment.

Each instance runs its kernel on a thread of its own (as Triton's model instances do),
where NumPy, OpenCV and ONNX Runtime release the GIL; keeping a session on one thread
keeps its caches warm (measured: +2-3% on the detect pipeline against a shared pool).
A CPU kernel that is cheaper than the thread hop itself (measured, see
:meth:`NodeRunner._adapt`), or that declares ``inline = True``, runs on the loop
instead.

A batched kernel that raises is retried item by item, so one bad item fails only
its own request; a per-item kernel is isolated item by item to begin with.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagserve.compiler.plan import PlanNode
from dagserve.errors import DeadlineExceededError, ItemError, QueueFullError
from dagserve.ops.base import Kernel
from dagserve.runtime.batcher import Batcher, BatchPolicy, QueuedItem, QueueFull
from dagserve.runtime.devices import InstanceDevice
from dagserve.runtime.stats import NodeStats
from dagserve.runtime.values import ItemValue, gather, scatter

if TYPE_CHECKING:
    from dagserve.runtime.request import Request

__all__ = ["NodeRunner", "PortSource"]

log = logging.getLogger(__name__)

Slot = tuple["Request", int]

INLINE_BELOW_NS = 60_000
"""Kernels whose batches take less than this (on average) run on the event loop."""


@dataclass(frozen=True)
class PortSource:
    """Where an input port reads from: value keys (one per reference) and raggedness."""

    port: str
    keys: tuple[str, ...]
    ragged: tuple[bool, ...]
    variadic: bool


class Pumps:
    """Runs the dispatch rounds of every node of a pipeline, without extra loop turns.

    A node that gets new items is queued here once; :meth:`run` gives each queued
    node a dispatch round. Callers that already run on the loop (a finished batch,
    a new request) call :meth:`run` right away, so a chain of cheap nodes runs in
    one loop turn; anything else schedules it with ``call_soon``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._queue: deque[NodeRunner] = deque()
        self._running = False
        self._scheduled = False

    def kick(self, runner: NodeRunner) -> None:
        self._queue.append(runner)
        if not self._running and not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.run)

    def run(self) -> None:
        if self._running:
            return
        self._scheduled = False
        self._running = True
        try:
            while self._queue:
                self._queue.popleft()._pump()
        finally:
            self._running = False


class _ItemFailure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


Result = dict[str, ItemValue] | _ItemFailure
"""What a node did for one item: its output values, or why it failed."""


class NodeRunner:
    """Queue + instances of one plan node."""

    def __init__(
        self,
        pipeline_name: str,
        node: PlanNode,
        sources: list[PortSource],
        output_ragged: dict[str, bool],
        kernels: list[Kernel],
        devices: list[InstanceDevice],
        executors: list[Executor],
        deliver: Callable[[NodeRunner, list[Slot], list[dict[str, ItemValue] | _ItemFailure]], None],
    ) -> None:
        self.pipeline_name = pipeline_name
        self.node = node
        self.name = node.name
        self.op = node.op or node.kind
        self.sources = sources
        self.output_ragged = output_ragged
        self.kernels = kernels
        self.devices = devices
        self.executors = executors
        """Where each instance runs its batches (by default a thread of its own, like Triton's instances)."""
        self.deliver = deliver
        self.policy = BatchPolicy.from_plan(node.batching)
        self.batcher: Batcher[Slot] = Batcher(self.policy, lambda slot: slot[0].live)
        self.stats = NodeStats()
        self.busy = 0
        self._pinned_inline = [bool(getattr(k, "inline", False)) and not d.is_gpu for k, d in zip(kernels, devices)]
        self._inline = list(self._pinned_inline)
        self._can_adapt = [not d.is_gpu for d in devices]
        self._cost_ns = [0.0] * len(kernels)
        self._samples: list[deque[int]] = [deque(maxlen=16) for _ in kernels]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pumps: Pumps | None = None
        self._idle: list[int] = []
        self._kicked = False
        self._closing = False
        self._flush = False
        self._timer: asyncio.TimerHandle | None = None
        self._stopped: list[asyncio.Future[None]] = []

    # -- queueing ---------------------------------------------------------------------------

    def submit(self, request: Request, index: int, now: float) -> None:
        """Queue item ``index`` of ``request``; a full queue fails the request at once."""
        priority = request.priority
        if priority is not None:
            priority = min(max(priority, 1), self.policy.priority_levels)
        try:
            self.batcher.put((request, index), now, priority, request.deadline)
        except QueueFull:
            self.stats.rejected += 1
            request.fail(QueueFullError(
                f"pipeline '{self.pipeline_name}': the queue of node '{self.name}' is full "
                f"(max_queue_size {self.policy.max_queue_size}); retry later"))
            return
        self._kick()

    def refuse_if_full(self, items: int) -> QueueFullError | None:
        """The error to refuse a request of ``items`` items with when this node's queue has no room for them.

        Counted as a rejection of this node; ``None`` when they fit (or the queue is uncapped).
        """
        if self.batcher.has_room(items):
            return None
        self.stats.rejected += 1
        return QueueFullError(
            f"pipeline '{self.pipeline_name}': the queue of node '{self.name}' is full "
            f"(max_queue_size {self.policy.max_queue_size}, {len(self.batcher)} queued, the request has "
            f"{items} item(s)); refused before any node ran it; retry later")

    @property
    def queue_depth(self) -> int:
        return len(self.batcher)

    # -- dispatch ---------------------------------------------------------------------------

    def start(self, pumps: Pumps) -> None:
        self._pumps = pumps
        self._loop = pumps.loop
        self._idle = list(range(len(self.kernels)))[::-1]

    def flush(self) -> None:
        """Stop waiting for batching delays: the pipeline drains, no more requests will come."""
        self._flush = True
        if len(self.batcher):
            self._kick()

    def stop_dispatch(self) -> None:
        """Start no more batches and disarm the timer (the pipeline drained requests first)."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def stop(self) -> None:
        """Stop dispatching and wait for the batches still running."""
        self.stop_dispatch()
        while self.busy:
            assert self._loop is not None
            waiter = self._loop.create_future()
            self._stopped.append(waiter)
            await waiter

    def release_kernels(self) -> None:
        """Drop this node's kernels (the pipeline closed and no batch runs): their sessions,
        buffers and threads are freed now, even while something still holds the pipeline
        (its stats, a reload's bookkeeping). A kernel with ``close()`` is closed first."""
        kernels, self.kernels = self.kernels, []
        for kernel in kernels:
            close = getattr(kernel, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:  # closing is best effort: log, never fail the shutdown
                    log.warning("node '%s': closing its kernel failed: %s", self.name, exc)
        self._idle = []

    def _kick(self) -> None:
        """Ask for one dispatch round soon (coalesces the submits of one delivery)."""
        if not self._kicked and not self._closing:
            self._kicked = True
            assert self._pumps is not None
            self._pumps.kick(self)

    def _pump(self) -> None:
        """Hand batches to idle instances while the batcher has one ready."""
        self._kicked = False
        loop = self._loop
        assert loop is not None
        while self._idle and not self._closing:
            if not len(self.batcher):
                break  # nothing queued: no batch, nothing to expire, no timer to arm
            decision = self.batcher.poll(loop.time(), self._flush)
            if decision.dropped:
                self._drop(decision.dropped, decision.expired)
            if not decision.batch:
                self._arm_timer(decision.wake_at)
                return
            assert decision.reason is not None
            self._launch(self._idle.pop(), decision.batch, decision.reason)
        if self._timer is None and self.policy.timeout_us and len(self.batcher) and not self._closing:
            # Every instance is busy: still fail items when their timeout_us runs out (one
            # scan per timer, not per arrival), instead of when an instance frees up.
            decision = self.batcher.expire(loop.time())
            if decision.dropped:
                self._drop(decision.dropped, decision.expired)
            self._arm_timer(decision.wake_at)

    def _arm_timer(self, wake_at: float | None) -> None:
        if self._timer is not None:
            if wake_at is not None and self._timer.when() <= wake_at:
                return
            self._timer.cancel()
            self._timer = None
        if wake_at is not None:
            assert self._loop is not None
            self._timer = self._loop.call_at(wake_at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._pump()

    def _launch(self, instance: int, batch: list[QueuedItem[Slot]], reason: str) -> None:
        loop = self._loop
        assert loop is not None
        slots = [item.payload for item in batch]
        now = loop.time()
        queue_ns = [int((now - item.enqueued) * 1e9) for item in batch]
        self.busy += 1
        if self._inline[instance]:
            t0 = time.perf_counter_ns()
            escaped: BaseException | None = None
            try:
                results = self._run(self.kernels[instance], self.devices[instance], slots)
            except BaseException as exc:  # as in a worker: fail these items, keep the instance
                results = [_ItemFailure(self._item_error(exc)) for _ in slots]
                escaped = exc if isinstance(exc, (KeyboardInterrupt, SystemExit)) else None
            self._finish(instance, slots, reason, queue_ns, time.perf_counter_ns() - t0, results)
            if escaped is not None:
                raise escaped
            return
        self.executors[instance].submit(self._run_and_post, instance, slots, reason, queue_ns)

    def _run_and_post(self, instance: int, slots: list[Slot], reason: str, queue_ns: list[int]) -> None:
        """Worker-thread side: run the batch, then hand the results back to the loop."""
        t0 = time.perf_counter_ns()
        try:
            results = self._run(self.kernels[instance], self.devices[instance], slots)
        except BaseException as exc:  # a runtime bug: fail these items, keep the node alive
            results = [_ItemFailure(self._item_error(exc)) for _ in slots]
        compute_ns = time.perf_counter_ns() - t0
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(
                self._finish_and_pump, instance, slots, reason, queue_ns, compute_ns, results)
        except RuntimeError:  # the loop is closed: the pipeline was shut down
            pass

    def _finish_and_pump(self, *args: Any) -> None:
        self._finish(*args)
        assert self._pumps is not None
        self._pumps.run()

    def _adapt(self, instance: int, compute_ns: int) -> None:
        """Run a CPU kernel on the loop itself while it costs less than a thread hop.

        A hand-off to the thread pool and back costs ~100-200 µs on a small machine,
        more than many kernels take. The last batches' wall times decide, 8 at least
        since the last switch:

        * on the loop, the median must stay under twice the limit (there, wall time is
          the kernel's own cost);
        * in the pool, one batch under the limit brings the kernel back: a pool
          thread's wall time also counts its waits for the GIL and for a core (up to
          the 5 ms switch interval), which would otherwise keep a cheap kernel in the
          pool on a busy machine, where the hop hurts most. A kernel that really takes
          long (computing, or waiting on I/O) never has such a batch.
        """
        samples = self._samples[instance]
        samples.append(compute_ns)
        self._cost_ns[instance] = float(compute_ns)
        if self._pinned_inline[instance] or not self._can_adapt[instance] or len(samples) < 8:
            return
        if self._inline[instance] and len(samples) == samples.maxlen and self.stats.batches % 8:
            return  # on the loop, a median over a full window only needs checking every 8 batches
        if self._inline[instance]:
            switch = sorted(samples)[len(samples) // 2] > 2 * INLINE_BELOW_NS
        else:
            switch = min(samples) < INLINE_BELOW_NS
        if switch:
            self._inline[instance] = not self._inline[instance]
            samples.clear()

    def _finish(self, instance: int, slots: list[Slot], reason: str, queue_ns: list[int], compute_ns: int,
                results: list[dict[str, ItemValue] | _ItemFailure]) -> None:
        self.busy -= 1
        self._idle.append(instance)
        self.stats.record_batch(len(slots), reason, queue_ns, compute_ns)
        self._adapt(instance, compute_ns)
        self.deliver(self, slots, results)
        if self._closing:
            if not self.busy:
                for waiter in self._stopped:
                    if not waiter.done():
                        waiter.set_result(None)
            return
        if len(self.batcher):
            self._kick()

    def _drop(self, items: list[QueuedItem[Slot]], expired: list[bool]) -> None:
        for item, timed_out in zip(items, expired):
            request, _ = item.payload
            if timed_out:
                self.stats.dropped["expired"] += 1
                request.fail(DeadlineExceededError(
                    f"pipeline '{self.pipeline_name}': request timed out waiting at node '{self.name}'"))
            else:
                self.stats.dropped["cancelled"] += 1

    # -- running a batch (in a worker thread) -----------------------------------------------

    def _inputs(self, slots: list[Slot]) -> tuple[dict[str, Any], list[Any]]:
        inputs: dict[str, Any] = {}
        events: list[Any] = []
        for src in self.sources:
            parts = []
            for key, ragged in zip(src.keys, src.ragged):
                values = [request.values[i][key] for request, i in slots]
                events.extend(v.ready for v in values if v.ready is not None)
                parts.append(gather(values, ragged))
            inputs[src.port] = parts if src.variadic else parts[0]
        return inputs, events

    def _item_inputs(self, request: Request, index: int) -> tuple[dict[str, Any], list[Any]]:
        inputs: dict[str, Any] = {}
        events: list[Any] = []
        values = request.values[index]
        for src in self.sources:
            parts = []
            for key in src.keys:
                value = values[key]
                if value.ready is not None:
                    events.append(value.ready)
                parts.append(value.get())
            inputs[src.port] = parts if src.variadic else parts[0]
        return inputs, events

    def _outputs(self, result: Any) -> Any:
        """Check that a kernel returned every output port (a clear message, not a KeyError)."""
        if not isinstance(result, Mapping):
            raise TypeError(f"kernel returned {type(result).__name__}, not a dict of outputs")
        missing = [port for port in self.output_ragged if port not in result]
        if missing:
            raise RuntimeError(f"kernel returned no output {', '.join(repr(p) for p in missing)} "
                               f"(it returned {sorted(result) or 'nothing'})")
        return result

    def _run(self, kernel: Kernel, device: InstanceDevice, slots: list[Slot]) -> list[Result]:
        run = self._run_per_item if kernel.per_item else self._run_batched
        if device.stream is None:  # CPU: no device or stream to make current
            return run(kernel, device, slots)
        with device.activate():
            return run(kernel, device, slots)

    def _run_per_item(self, kernel: Kernel, device: InstanceDevice, slots: list[Slot]) -> list[Result]:
        out: list[Result] = []
        for request, index in slots:
            if not request.live:
                out.append(_ItemFailure(RuntimeError("request already finished")))
                continue
            try:
                # Only this node's inputs: the item's dict may grow meanwhile (sibling nodes
                # deliver on the loop thread), so it must not be iterated from this thread.
                inputs, events = self._item_inputs(request, index)
                device.wait_for(events)
                result = self._outputs(kernel(inputs))
                ready = device.record()
                out.append({port: ItemValue(result[port], None, ready) for port in self.output_ragged})
            except Exception as exc:
                out.append(_ItemFailure(self._item_error(exc)))
        return out

    def _run_batched(self, kernel: Kernel, device: InstanceDevice, slots: list[Slot]) -> list[Result]:
        try:
            inputs, events = self._inputs(slots)
            device.wait_for(events)
            result = self._outputs(kernel(inputs))
            ready = device.record()
            per_port = {
                port: scatter(result[port], len(slots), ragged, ready)
                for port, ragged in self.output_ragged.items()
            }
            return [{port: values[k] for port, values in per_port.items()} for k in range(len(slots))]
        except Exception as exc:
            if len(slots) == 1:
                return [_ItemFailure(self._item_error(exc))]
        # Find the culprits: run each item alone, so the others still succeed.
        return [self._run_batched(kernel, device, [slot])[0] for slot in slots]

    def _item_error(self, exc: BaseException) -> ItemError:
        if isinstance(exc, KeyError) or not str(exc):
            # str(KeyError('x')) is just "'x'": name the exception so the message says what happened.
            described = RuntimeError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            described.__cause__ = exc
            exc = described
        return ItemError(self.pipeline_name, self.name, self.op, exc)
