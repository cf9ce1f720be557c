"""A running pipeline, built from a Plan: inputs in, outputs out, batched per node.

Life cycle: ``await pipeline.start()`` creates every node's kernels (one per
instance, in the thread pool: models take time to load and warm up), then
requests flow; ``await pipeline.close()`` stops accepting, lets everything in
flight finish, then stops the workers. ``infer``/``infer_async`` validate the
inputs against the plan (names, dtypes, shapes, batch size) before anything is
queued, so a bad request fails alone with a message that says what was expected.

The synchronous :meth:`Pipeline.infer` runs the pipeline on a private event loop
in a background thread, so scripts and notebooks need no asyncio.
"""

from __future__ import annotations

import asyncio
import ctypes
import importlib
import itertools
import logging
import os
import platform
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from dagserve.compiler.plan import Plan, PlanNode, PlanTensor
from dagserve.errors import (
    DagserveError,
    DeadlineExceededError,
    InvalidInputError,
    ItemError,
    RequestError,
    UnavailableError,
    UnrecoverableError,
)
from dagserve.ops.base import Kernel, KernelContext
from dagserve.ops.registry import OpRegistry, default_registry
from dagserve.runtime.devices import CopyKernel, InstanceDevice, to_host
from dagserve.runtime.node import NodeRunner, PortSource, Pumps, Result, Slot, _ItemFailure
from dagserve.runtime.request import Request
from dagserve.runtime.stats import PipelineStats
from dagserve.runtime.values import ItemValue, gather
from dagserve.types import DTYPES, UNKNOWN, TensorType, parse_device

__all__ = ["Pipeline"]

log = logging.getLogger(__name__)

_ids = itertools.count(1)


def _np_dtype(dtype: str) -> np.dtype[Any]:
    return np.dtype(DTYPES[dtype][0])


def _load_kernel(plan: Plan, node: PlanNode, device: InstanceDevice, instance: int,
                 registry: OpRegistry) -> Kernel:
    """Create one instance's kernel: the op's factory, or the runtime's copy kernel."""
    input_types: dict[str, Any] = {}
    for port, refs in node.inputs.items():
        types = [_ref_type(plan, ref) for ref in refs]
        input_types[port] = types[0] if len(types) == 1 else types
    params = node.params
    if node.warmup is not True and "warmup" in params:  # the spec's choice replaces the backend's own warm-up
        params = {**params, "warmup": False}
    ctx = KernelContext(
        node=node.name,
        op=node.op or node.kind,
        params=params,
        device=device.device,
        batched=plan.max_batch_size > 0,
        input_types=input_types,
        output_types=dict(node.outputs),
        files={k: os.path.join(plan.root, v) for k, v in node.files.items()},
        instance=instance,
        stream=device.stream,
    )
    if node.kind == "copy":
        return CopyKernel(ctx)
    op = registry.get(node.op or "")
    if op is None or op.kernel is None:
        raise UnrecoverableError(f"node '{node.name}': op '{node.op}' has no runtime kernel in this installation")
    module_name, _, attr = op.kernel.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UnrecoverableError(f"node '{node.name}': cannot load kernel {op.kernel}: {exc}") from exc
    try:
        kernel: Kernel = factory(ctx)
    except DagserveError:
        raise
    except Exception as exc:
        raise UnrecoverableError(f"pipeline '{plan.name}', node '{node.name}' ({node.op}): "
                                 f"cannot create its kernel: {exc}") from exc
    if isinstance(node.warmup, dict):
        _warm_up(plan, node, kernel, input_types)
    return kernel


def _sample(value: Any, t: TensorType, batched: bool, per_item: bool) -> Any:
    """One warm-up item from the spec (YAML scalars and lists) as the kernel is fed it."""
    if t.dtype == "bytes":
        def encode(v: Any) -> Any:
            if isinstance(v, list):
                return [encode(x) for x in v]
            return v.encode("utf-8") if isinstance(v, str) else bytes(v)

        item = encode(value)
        array = np.empty(np.shape(item), dtype=object) if isinstance(item, list) else None
        if array is not None:
            array[...] = item
            item = array
    else:
        item = np.asarray(value, dtype=_np_dtype(t.dtype))
    if per_item or not batched:
        return item
    if t.ragged:
        return [item]  # a batched kernel gets ragged items as a list
    if isinstance(item, bytes):
        batch = np.empty((1,), dtype=object)
        batch[0] = item
        return batch
    return np.asarray(item)[None]


def _warm_up(plan: Plan, node: PlanNode, kernel: Kernel, input_types: dict[str, Any]) -> None:
    """Run the spec's sample inputs (``warmup: {inputs: ...}``) through a new kernel once.

    Raises:
        UnrecoverableError: a port is unknown or missing, a value does not fit its type, or the
            kernel fails on the samples (the user vouched for them, so a failure stops the load).
    """
    samples = node.warmup.get("inputs", {}) if isinstance(node.warmup, dict) else {}
    where = f"pipeline '{plan.name}', node '{node.name}' ({node.op}): warmup"
    unknown = sorted(set(samples) - set(input_types))
    missing = sorted(set(input_types) - set(samples))
    if unknown or missing:
        raise UnrecoverableError(
            f"{where} inputs must name exactly the node's input ports ({', '.join(sorted(input_types))}); "
            + "; ".join(x for x in (f"unknown: {', '.join(unknown)}" if unknown else "",
                                    f"missing: {', '.join(missing)}" if missing else "") if x))
    batched = plan.max_batch_size > 0
    per_item = bool(getattr(kernel, "per_item", False))
    feeds: dict[str, Any] = {}
    for port, value in samples.items():
        t = input_types[port]
        if isinstance(t, list):
            t = t[0]
        try:
            feeds[port] = _sample(value, t, batched, per_item)
        except (TypeError, ValueError, OverflowError) as exc:
            raise UnrecoverableError(f"{where} input '{port}' is not a {t.dtype} item: {exc}") from None
    try:
        kernel(feeds)
    except Exception as exc:
        raise UnrecoverableError(f"{where} failed on the spec's sample inputs: {type(exc).__name__}: {exc}") from exc
    log.info("%s ran on the spec's sample inputs", where)


_malloc_trim: list[Any] = []


def trim_heap() -> bool:
    """Hand the C heap's free memory back to the OS (glibc's ``malloc_trim(0)``); False elsewhere.

    Called after a pipeline closes: its kernels' buffers (model weights, arenas,
    decoded images) were freed, but glibc keeps freed memory in its heaps until
    asked, so RSS after a reload would stay at its peak. Costs a few ms.
    """
    if not _malloc_trim:
        function = None
        if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
            try:
                function = ctypes.CDLL(None).malloc_trim
                function.argtypes = [ctypes.c_size_t]
            except (OSError, AttributeError):
                function = None
        _malloc_trim.append(function)
    trim = _malloc_trim[0]
    if trim is None:
        return False
    trim(0)
    return True


def _ref_type(plan: Plan, ref: str) -> TensorType:
    """The type a reference (``inputs.NAME`` or ``NODE.PORT``) carries in the plan."""
    head, _, tail = ref.partition(".")
    if head == "inputs":
        return next(t.type for t in plan.inputs if t.name == tail)
    return plan.node(head).outputs[tail]


class _LoopThread:
    """An event loop running in a daemon thread, for the synchronous API.

    :meth:`stop` lets every coroutine submitted before it finish (they fail fast
    once the pipeline is closed) and refuses later ones, so no caller of
    :meth:`run` waits forever on a loop that stopped under it.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._lock = threading.Lock()
        self._stopped = False
        self._thread = threading.Thread(target=self.loop.run_forever, name="dagserve-loop", daemon=True)
        self._thread.start()

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        with self._lock:
            if self._stopped:
                coro.close()
                raise UnavailableError("the pipeline was shut down")
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    @staticmethod
    async def _settle() -> None:
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        if others:
            await asyncio.wait(others, timeout=5)

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            settled = asyncio.run_coroutine_threadsafe(self._settle(), self.loop)
        try:
            settled.result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self.loop.close()


class Pipeline:
    """A compiled pipeline, ready to run once started.

    Args:
        plan: the compiled Plan (the only thing the runtime reads).
        threads: run every kernel in one shared pool of this many threads (default: each
            node instance on a thread of its own, started with its first batch).
        registry: where ops are looked up (default: built-ins and plugins).
    """

    def __init__(self, plan: Plan, threads: int | None = None, registry: OpRegistry | None = None) -> None:
        self.plan = plan
        self.registry = registry or default_registry()
        self.name = plan.name
        self.stats = PipelineStats()
        self.runners: dict[str, NodeRunner] = {}
        self._threads = threads
        self._executor: ThreadPoolExecutor | None = None
        """Loads kernels; with ``threads``, also runs them."""
        self._instance_executors: list[ThreadPoolExecutor] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: _LoopThread | None = None
        self._pumps: Pumps | None = None
        self._accepting = False
        self._closed = False
        self._starting: asyncio.Future[None] | None = None
        self._in_flight: set[asyncio.Future[Any]] = set()
        self._idle: asyncio.Event | None = None
        self._start_lock = threading.Lock()
        self._inputs = {t.name: t for t in plan.inputs}
        self._consumers: dict[str, list[str]] = {}
        self._pending_template: dict[str, int] = {}
        self._entry: list[str] = []
        self._capped: list[NodeRunner] = []
        self._admitters: list[tuple[NodeRunner, Any]] = []
        """Entry nodes fed only by the request whose kernel has ``admit`` (checked at the door)."""
        """Nodes with a ``max_queue_size``: every request reaches every node, so each is checked at the door."""
        self._analyse()

    # -- structure --------------------------------------------------------------------------

    def _ragged_of(self, ref: str) -> bool:
        if ref.startswith("inputs."):
            return self._inputs[ref[len("inputs."):]].type.ragged
        node, _, port = ref.partition(".")
        return self.plan.node(node).outputs[port].ragged

    def _analyse(self) -> None:
        for node in self.plan.nodes:
            producers = {ref.partition(".")[0] for refs in node.inputs.values() for ref in refs
                         if not ref.startswith("inputs.")}
            self._pending_template[node.name] = len(producers)
            if not producers:
                self._entry.append(node.name)
            for producer in producers:
                self._consumers.setdefault(producer, []).append(node.name)

    def _variadic(self, node: PlanNode, port: str) -> bool:
        """The op declares ``port`` variadic: its kernel gets a list even for a single reference."""
        op = self.registry.get(node.op) if node.op else None
        definition = op.input_port(port) if op is not None else None
        return definition is not None and definition.variadic

    @property
    def ready(self) -> bool:
        return self._accepting

    @property
    def in_flight(self) -> int:
        """Requests received and not yet answered (Triton's pending request count, for the server)."""
        return len(self._in_flight)

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load every kernel (in the thread pool), then accept requests.

        Concurrent calls wait for the same start. A start that fails leaves the
        pipeline as it was before (it may be started again); a closed pipeline
        cannot be started again.

        Raises:
            UnrecoverableError: a kernel could not be created (model missing, no GPU, ...).
            UnavailableError: the pipeline was closed.
        """
        if self._closed:
            raise UnavailableError(f"pipeline '{self.name}' is closed")
        if self._accepting:
            return
        if self._starting is not None:  # another caller is starting it: wait for that start
            await asyncio.shield(self._starting)
            return
        loop = asyncio.get_running_loop()
        starting: asyncio.Future[None] = loop.create_future()
        self._starting = starting
        try:
            await self._load(loop)
            if self._closed:
                raise UnavailableError(f"pipeline '{self.name}' was closed while it started")
        except BaseException as exc:
            self._loop = None
            self.runners = {}
            self._shutdown_executors(wait=False)
            starting.set_exception(exc)
            starting.exception()  # retrieved: only concurrent callers re-raise it
            raise
        finally:
            self._starting = None
        self._accepting = True
        starting.set_result(None)
        trim_heap()  # loading parsed models and ran warm-ups: hand their garbage back to the OS

    async def _load(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._idle = asyncio.Event()
        self._idle.set()
        instances = sum(n.instances for n in self.plan.nodes)
        self._executor = ThreadPoolExecutor(
            max_workers=self._threads or max(2, instances), thread_name_prefix=f"dagserve-{self.name}")
        for node in self.plan.nodes:
            devices = [InstanceDevice(parse_device(node.device)) for _ in range(node.instances)]
            kernels = await asyncio.gather(*(
                self._loop.run_in_executor(self._executor, _load_kernel, self.plan, node, devices[i], i,
                                           self.registry)
                for i in range(node.instances)
            ))
            sources = [
                PortSource(port, tuple(refs), tuple(self._ragged_of(r) for r in refs),
                           len(refs) > 1 or self._variadic(node, port))
                for port, refs in node.inputs.items()
            ]
            if self._threads:
                executors = [self._executor] * node.instances
            else:
                executors = [
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"dagserve-{self.name}-{node.name}-{i}")
                    for i in range(node.instances)
                ]
                self._instance_executors.extend(executors)
            runner = NodeRunner(
                self.name, node, sources, {p: t.ragged for p, t in node.outputs.items()},
                list(kernels), devices, list(executors), self._deliver,
            )
            self.runners[node.name] = runner
        if not self._threads:  # the kernels are loaded and each instance has its own thread
            self._executor.shutdown(wait=True)
            self._executor = None
        self._capped = [r for r in self.runners.values() if r.policy.max_queue_size]
        self._admitters = [
            (runner, admit) for runner in self.runners.values()
            if runner.kernels and callable(admit := getattr(runner.kernels[0], "admit", None))
            and all(key.startswith("inputs.") for src in runner.sources for key in src.keys)
        ]
        self._pumps = Pumps(self._loop)
        for runner in self.runners.values():
            runner.start(self._pumps)

    async def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop accepting; with ``drain`` finish what is in flight; stop. All within ``timeout`` s.

        Requests still running after the timeout fail with UNAVAILABLE, never silently.
        A kernel still running then (stuck) is left to its thread: close() returns
        anyway, and logs which node it gave up on. Closing is final: later requests
        fail with UNAVAILABLE.
        """
        self._accepting = False
        self._closed = True
        if self._loop is None or self._starting is not None:
            return  # never started, or still starting: start() sees _closed and undoes itself
        loop = self._loop
        deadline = None if timeout is None else loop.time() + timeout
        if drain and self._in_flight:
            assert self._idle is not None
            for runner in self.runners.values():
                runner.flush()
            if self._pumps is not None:
                self._pumps.run()
            try:
                await asyncio.wait_for(self._idle.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        for future in list(self._in_flight):
            if not future.done():
                future.set_exception(UnavailableError(f"pipeline '{self.name}' shut down before the request finished"))
        for runner in self.runners.values():
            runner.stop_dispatch()
        stuck = []
        for runner in self.runners.values():
            if not runner.busy:
                continue
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                await asyncio.wait_for(runner.stop(), remaining)
            except asyncio.TimeoutError:
                stuck.append(runner.name)
        if stuck:
            log.warning("pipeline '%s': closed while node(s) %s still ran a batch (timeout %s s)",
                        self.name, ", ".join(stuck), timeout)
        # Every batch has finished (runner.stop waited), so the workers are idle and exit
        # at once: wait for them, so that no thread outlives the pipeline.
        self._shutdown_executors(wait=not stuck)
        self._loop = None
        for runner in self.runners.values():
            if runner.name not in stuck:  # a stuck kernel is still in use by its thread
                runner.release_kernels()
        self._pumps = None
        trim_heap()

    def _shutdown_executors(self, wait: bool) -> None:
        for executor in [*self._instance_executors, *([self._executor] if self._executor else [])]:
            executor.shutdown(wait=wait, cancel_futures=True)
        self._instance_executors = []
        self._executor = None

    # -- requests ---------------------------------------------------------------------------

    def _validate(self, inputs: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """Check names, dtypes, shapes and batch size; return (items, arrays)."""
        unknown = sorted(set(inputs) - set(self._inputs))
        if unknown:
            raise InvalidInputError(
                f"pipeline '{self.name}' has no input '{unknown[0]}'; its inputs are: {', '.join(self._inputs)}")
        missing = [name for name in self._inputs if name not in inputs]
        if missing:
            raise InvalidInputError(f"pipeline '{self.name}': input '{missing[0]}' is missing")
        batched = self.plan.max_batch_size > 0
        arrays: dict[str, Any] = {}
        count: int | None = None
        symbols: dict[str, tuple[int, str]] = {}
        for name, spec in self._inputs.items():
            raw = inputs[name]
            if batched and spec.type.ragged and spec.type.dtype != "bytes" and isinstance(raw, (list, tuple)):
                value: Any = _ragged_items(self.name, name, raw, spec.type, self.plan.max_batch_size)
                n = len(value)
            else:
                try:
                    value = _as_array(raw, spec.type, batched)
                except InvalidInputError as exc:
                    raise InvalidInputError(f"pipeline '{self.name}' input '{name}': {exc}") from None
                _check_type(self.name, name, value, spec.type, batched, self.plan.max_batch_size)
                n = value.shape[0] if batched else 1
                if not spec.type.ragged:
                    _bind_symbols(self.name, name, tuple(value.shape)[1 if batched else 0:], spec.type, symbols)
            if count is not None and n != count:
                raise InvalidInputError(
                    f"pipeline '{self.name}': inputs disagree on the batch size ({count} vs {n} for '{name}')")
            count = n
            arrays[name] = value
        assert count is not None
        return count, arrays

    async def infer_async(
        self,
        inputs: Mapping[str, Any],
        *,
        priority: int | None = None,
        timeout: float | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Run one request.

        Args:
            inputs: name -> array (NumPy or anything NumPy can read; bytes inputs as
                an object array or a list of ``bytes``). With ``max_batch_size > 0``
                the leading dimension is the request's batch.
            priority: 1 is the highest; default: each node's default priority.
            timeout: seconds; past it the request fails with DEADLINE_EXCEEDED and
                its items leave every queue.

        Returns:
            output name -> NumPy array (a list of arrays for a ragged output whose
            items differ in shape).

        Raises:
            RequestError: a subclass that says what went wrong (and maps to a status).
        """
        loop = asyncio.get_running_loop()
        if not self._accepting and not self._closed:
            await self.start()
        if loop is not self._loop and self._loop is not None:  # called from another loop: run on ours
            handoff = asyncio.run_coroutine_threadsafe(
                self.infer_async(inputs, priority=priority, timeout=timeout, request_id=request_id), self._loop)
            return await asyncio.wrap_future(handoff)
        if not self._accepting:
            state = "closed" if self._closed and self._loop is None else "shutting down"
            raise UnavailableError(f"pipeline '{self.name}' is not accepting requests ({state})")
        try:
            count, arrays = self._validate(inputs)
        except RequestError:
            self.stats.failure["INVALID_ARGUMENT"] += 1
            raise
        for runner, admit in self._admitters:
            try:
                self._admit(runner, admit, arrays, count)
            except RequestError:
                self.stats.failure["INVALID_ARGUMENT"] += 1
                raise
        for runner in self._capped:  # shed at the door: no work on a request a full queue would refuse
            refused = runner.refuse_if_full(count)
            if refused is not None:
                self.stats.failure[refused.status] += 1
                raise refused
        now = loop.time()
        deadline = now + timeout if timeout else None
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        request = Request(request_id or str(next(_ids)), count, future, self._pending_template,
                          len(self.plan.nodes), priority, deadline, now)
        batched = self.plan.max_batch_size > 0
        for name, array in arrays.items():
            key = f"inputs.{name}"
            if not batched:  # a batch of one, as a view: the first kernel gets the caller's memory
                request.values[0][key] = ItemValue(array[None], 0)
                continue
            for i in range(count):
                request.values[i][key] = ItemValue(array, i)
        if deadline is not None:
            request.timer = loop.call_at(deadline, self._expire, request, timeout)
            future.add_done_callback(request.stop_timer)  # also when cancelled or failed by close()
        self._in_flight.add(future)
        self._idle.clear()  # type: ignore[union-attr]
        try:
            if not self.plan.nodes:
                self._finish(request)
            for name in self._entry:
                runner = self.runners[name]
                for i in range(count):
                    if not request.live:  # e.g. a full queue refused an item: queue no more of it
                        break
                    runner.submit(request, i, now)
            if self._pumps is not None:
                self._pumps.run()
            outputs = await future
        except RequestError as exc:
            self.stats.failure[exc.status] += 1
            raise
        except asyncio.CancelledError:
            self.stats.failure["CANCELLED"] += 1
            raise
        finally:  # bookkeeping here, not in a done-callback: no extra loop turn per request
            self._in_flight.discard(future)
            if not self._in_flight:
                self._idle.set()  # type: ignore[union-attr]
        elapsed = int((loop.time() - now) * 1e9)
        self.stats.success += 1
        self.stats.items += count
        self.stats.request_ns += elapsed
        self.stats.request_seconds.observe(elapsed / 1e9)
        self.stats.last_inference_ms = int(time.time() * 1000)
        return outputs

    def _admit(self, runner: NodeRunner, admit: Any, arrays: dict[str, Any], count: int) -> None:
        """Let a kernel that reads the request's inputs directly refuse the whole request
        before anything runs (``kernel.admit({port: [item, ...]})``; e.g. image.decode's
        per-request pixel budget). Its ValueError becomes INVALID_ARGUMENT naming the node."""
        batched = self.plan.max_batch_size > 0
        items: dict[str, list[Any]] = {}
        for src in runner.sources:
            array = arrays[src.keys[0][len("inputs."):]]
            items[src.port] = [array[i] for i in range(count)] if batched else [array]
        try:
            admit(items)
        except ValueError as exc:
            raise InvalidInputError(f"pipeline '{self.name}', node '{runner.name}' ({runner.op}): {exc}") from None

    def infer(self, inputs: Mapping[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Synchronous :meth:`infer_async` (runs the pipeline on a background loop).

        Raises:
            RequestError: as :meth:`infer_async`.
            RuntimeError: called on the event loop the pipeline runs on (it would
                wait for itself forever): ``await pipeline.infer_async(...)`` there.
        """
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and running is self._loop:
            raise RuntimeError(f"pipeline '{self.name}': infer() called on the event loop the pipeline runs on "
                               "would block it forever; use 'await pipeline.infer_async(...)' there")
        with self._start_lock:
            if self._closed:
                raise UnavailableError(f"pipeline '{self.name}' is closed")
            if self._loop_thread is None:
                loop_thread = _LoopThread()
                try:
                    loop_thread.run(self.start())
                except BaseException:
                    loop_thread.stop()  # a failed start leaves no thread behind
                    raise
                self._loop_thread = loop_thread
            loop_thread = self._loop_thread  # shutdown() may clear the attribute meanwhile
        return loop_thread.run(self.infer_async(inputs, **kwargs))  # type: ignore[no-any-return]

    def shutdown(self) -> None:
        """Synchronous close for pipelines used through :meth:`infer`."""
        with self._start_lock:
            self._closed = True
            loop_thread, self._loop_thread = self._loop_thread, None
        if loop_thread is not None:
            try:
                loop_thread.run(self.close())
            finally:
                loop_thread.stop()

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    async def __aenter__(self) -> Pipeline:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- internals (event loop thread) -----------------------------------------------------

    def _expire(self, request: Request, timeout: float | None) -> None:
        request.timer = None
        request.fail(DeadlineExceededError(f"pipeline '{self.name}': request timed out after {timeout} s"))

    def _deliver(self, runner: NodeRunner, slots: list[Slot], results: list[Result]) -> None:
        assert self._loop is not None
        now = self._loop.time()
        consumers = self._consumers.get(runner.name, ())
        prefix = runner.name + "."
        for (request, index), result in zip(slots, results):
            if not request.live:
                continue
            if isinstance(result, _ItemFailure):
                runner.stats.failures += 1
                exc = result.exc
                request.fail(exc.at_item(index) if request.n_items > 1 and isinstance(exc, ItemError) else exc)
                continue
            values = request.values[index]
            for port, value in result.items():
                values[prefix + port] = value
            for consumer in consumers:
                pending = request.pending[index]
                pending[consumer] -= 1
                if pending[consumer] == 0:
                    self.runners[consumer].submit(request, index, now)
            request.nodes_left[index] -= 1
            if request.nodes_left[index] == 0:
                request.items_left -= 1
                if request.items_left == 0:
                    self._finish(request)

    def _finish(self, request: Request) -> None:
        try:
            outputs = {t.name: self._output(request, t) for t in self.plan.outputs}
        except Exception as exc:
            request.fail(RequestError(f"pipeline '{self.name}': could not assemble the outputs: {exc}"))
            return
        request.succeed(outputs)

    def _output(self, request: Request, tensor: PlanTensor) -> Any:
        assert tensor.source is not None
        values = [request.values[i][tensor.source] for i in range(request.n_items)]
        if self.plan.max_batch_size == 0:
            return self._checked(tensor, to_host(values[0].get()), False)
        if not tensor.type.ragged:
            return self._checked(tensor, to_host(gather(values, False)), True)
        items = [to_host(v.get()) for v in values]
        if all(getattr(x, "shape", None) == getattr(items[0], "shape", None) for x in items):
            return np.stack(items) if hasattr(items[0], "shape") else np.array(items, dtype=object)
        return items


    def _checked(self, tensor: PlanTensor, value: Any, batched: bool) -> Any:
        """``value`` if it has the output's declared dtype, rank and fixed dims, else a clear error.

        The compiler promised clients this type (it is in the model metadata); a
        kernel that breaks it is reported here, naming the node, instead of sending
        a tensor that does not match its description.
        """
        spec = tensor.type
        dtype = getattr(value, "dtype", None)
        shape = tuple(getattr(value, "shape", ()))
        item = shape[1:] if batched else shape
        if (dtype == _NP_DTYPES[spec.dtype] and len(item) == spec.rank
                and all(not isinstance(want, int) or got == want for got, want in zip(item, spec.shape))):
            return value
        assert tensor.source is not None
        node = tensor.source.partition(".")[0]
        origin = f"node '{node}' ({self.plan.node(node).op})" if node != "inputs" else "the request"
        raise ValueError(f"output '{tensor.name}' should be {spec.render(batched)} but {origin} produced "
                         f"{_dtype_name(dtype)}{list(shape)}")


def _as_array(value: Any, spec: TensorType, batched: bool) -> Any:
    if spec.dtype == "bytes":
        if isinstance(value, (bytes, bytearray)):
            if not batched and spec.rank == 0:  # one scalar BYTES tensor
                scalar = np.empty((), dtype=object)
                scalar[()] = bytes(value)
                return scalar
            value = [bytes(value)]
        try:
            arr = np.asarray(value, dtype=object) if not isinstance(value, np.ndarray) else value
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"expected {spec.render(batched)}, got a {type(value).__name__} that is not "
                                    f"an array: {exc}") from None
        if arr.dtype.kind == "S":
            arr = arr.astype(object)
        return arr
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__dlpack__"):
        return value
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as exc:  # e.g. nested lists of different lengths
        raise InvalidInputError(f"expected {spec.render(batched)}, got a {type(value).__name__} that is not "
                                f"an array: {exc}") from None


def _bind_symbols(pipeline: str, name: str, item_shape: tuple[int, ...], spec: TensorType,
                  symbols: dict[str, tuple[int, str]]) -> None:
    """Check that every dimension named by a symbol (``L``) has one size across the inputs.

    The compiler typed the graph assuming it (two ports sharing a symbol agree), so a
    request that breaks it is refused here rather than failing inside some node.
    """
    for got, want in zip(item_shape, spec.shape):
        if not isinstance(want, str) or want == UNKNOWN:
            continue
        seen = symbols.setdefault(want, (int(got), name))
        if seen[0] != got:
            where = f"input '{seen[1]}'" if seen[1] != name else "another dimension of it"
            raise InvalidInputError(
                f"pipeline '{pipeline}' input '{name}': dimension {want} is {got} but {where} has {want}={seen[0]}; "
                f"inputs sharing a dimension name must agree")


def _ragged_items(pipeline: str, name: str, items: Any, spec: TensorType, max_batch: int) -> list[Any]:
    """A ragged input given as a list of items (each without the batch dimension), checked item by item."""
    if not 1 <= len(items) <= max_batch:
        raise InvalidInputError(f"pipeline '{pipeline}' input '{name}': batch size {len(items)} is outside "
                                f"1..{max_batch} (max_batch_size)")
    out = []
    for k, item in enumerate(items):
        try:
            value = _as_array(item, spec, False)
        except InvalidInputError as exc:
            raise InvalidInputError(f"pipeline '{pipeline}' input '{name}' item {k}: {exc}") from None
        try:
            _check_type(pipeline, name, value, spec, False, max_batch)
        except InvalidInputError as exc:
            raise InvalidInputError(str(exc).replace(f"input '{name}':", f"input '{name}' item {k}:", 1)) from None
        out.append(value)
    return out


def _dtype_name(dtype: Any) -> str:
    """A dtype's name as specs spell it: NumPy's, or a DLPack producer's (``torch.float32`` -> ``float32``)."""
    if dtype is None:
        return "None"
    try:
        kind = np.dtype(dtype).kind
    except TypeError:  # not a NumPy dtype (torch, ...): use its own name
        return str(dtype).rpartition(".")[2]
    return "object" if kind == "O" else str(np.dtype(dtype))


_NP_DTYPES: dict[str, np.dtype[Any]] = {name: np.dtype(np_name) for name, (np_name, _) in DTYPES.items()}


def _check_type(pipeline: str, name: str, value: Any, spec: TensorType, batched: bool, max_batch: int) -> None:
    shape = tuple(getattr(value, "shape", ()))
    dtype = getattr(value, "dtype", None)
    # Fast path (the per-request hot path): a NumPy array of exactly the declared dtype.
    if not (isinstance(value, np.ndarray) and dtype == _NP_DTYPES[spec.dtype]):
        got_dtype = _dtype_name(dtype)
        if got_dtype != spec.dtype and not (got_dtype == "object" and spec.dtype == "bytes"):
            raise InvalidInputError(f"pipeline '{pipeline}' input '{name}': expected {spec.render(batched)}, "
                                    f"got {got_dtype}{list(shape)}")
    item_shape = shape[1:] if batched else shape
    if batched:
        if len(shape) != spec.rank + 1:
            raise InvalidInputError(f"pipeline '{pipeline}' input '{name}': expected {spec.render(batched)} "
                                    f"(rank {spec.rank + 1} with the batch dimension), got shape {list(shape)}")
        if not 1 <= shape[0] <= max_batch:
            raise InvalidInputError(f"pipeline '{pipeline}' input '{name}': batch size {shape[0]} is outside "
                                    f"1..{max_batch} (max_batch_size)")
    elif len(shape) != spec.rank:
        raise InvalidInputError(f"pipeline '{pipeline}' input '{name}': expected {spec.render(batched)}, "
                                f"got shape {list(shape)}")
    for got, want in zip(item_shape, spec.shape):
        if isinstance(want, int) and got != want:
            raise InvalidInputError(f"pipeline '{pipeline}' input '{name}': expected {spec.render(batched)}, "
                                    f"got shape {list(shape)}")
    if spec.dtype == "bytes":
        flat = value.reshape(-1)
        for item in flat:
            if not isinstance(item, (bytes, bytearray, np.bytes_)):
                raise InvalidInputError(
                    f"pipeline '{pipeline}' input '{name}': BYTES elements must be bytes, got {type(item).__name__}")
