"""Load: 1,000 concurrent requests through a five-node pipeline, then no growth of threads,
tasks or memory in a second round."""

from __future__ import annotations

import asyncio
import gc
import threading
import tracemalloc
from collections.abc import Callable

import numpy as np
import pytest

from dagserve.runtime.pipeline import Pipeline
from dagserve.runtime.request import Request

from ._kernels import RECORDING
from .conftest import run_async

MakePipeline = Callable[..., Pipeline]

pytestmark = pytest.mark.timeout(120)

FIVE_NODES = """
dagserve: 1
name: stress
max_batch_size: 4
inputs:
  x: {dtype: float32, shape: [8]}
outputs:
  y: last.y
  side: c.y
nodes:
  a: {op: test.add, inputs: {x: inputs.x}, params: {value: 1}, batching: {max_batch_size: 32}}
  b:
    op: test.mul
    inputs: {x: a.y}
    params: {value: 2}
    instances: 2
    batching: {max_batch_size: 16, max_queue_delay_us: 300, preferred_batch_sizes: [8]}
  c: {op: test.add, inputs: {x: inputs.x}, params: {value: 3}, batching: {max_batch_size: 8}}
  d: {op: test.sum, inputs: {a: b.y, b: c.y}, batching: {max_batch_size: 64}}
  last: {op: test.per_item, inputs: {x: d.y}}
"""

N_REQUESTS = 1000


def _requests(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(rng.integers(1, 5)), 8)).astype(np.float32) for _ in range(N_REQUESTS)]


async def _round(p: Pipeline, requests: list[np.ndarray]) -> None:
    outs = await asyncio.gather(*(p.infer_async({"x": x}) for x in requests))
    for x, out in zip(requests, outs):
        np.testing.assert_allclose(out["y"], ((x + 1) * 2 + (x + 3)) * 3, rtol=1e-6)
        np.testing.assert_array_equal(out["side"], x + 3)


async def _settle() -> None:
    """Let the loop drop the handle that woke us (it holds the gather and its results), then collect.

    A pool worker posts its batch's results to the loop before it returns, so for a moment
    after the last answer its frame may still hold that batch's requests: wait (briefly) for
    the workers to let go. A real leak never does.
    """
    await asyncio.sleep(0)
    gc.collect()
    for _ in range(100):
        if _alive(Request) == 0:
            return
        await asyncio.sleep(0.01)
        gc.collect()


def _alive(cls: type) -> int:
    return sum(type(o) is cls for o in gc.get_objects())


def test_thousand_concurrent_requests_are_all_answered_and_nothing_grows(make_pipeline: MakePipeline) -> None:
    RECORDING[0] = False  # the test kernels' records would grow by design

    async def main() -> tuple[int, int, int, int, int, Pipeline]:
        async with make_pipeline(FIVE_NODES) as p:
            await _round(p, _requests(1))
            await _settle()
            assert _alive(Request) == 0, "requests outlive their answers"
            assert _alive(asyncio.Task) <= 2
            threads, tasks = threading.active_count(), len(asyncio.all_tasks())
            tracemalloc.start()  # after a first round: caches and pools are warm
            try:
                before = tracemalloc.take_snapshot()
                await _round(p, _requests(2))
                await _settle()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            assert _alive(Request) == 0
            growth = sum(s.size_diff for s in after.compare_to(before, "filename"))
            return threads, tasks, threading.active_count(), len(asyncio.all_tasks()), growth, p

    threads_before, tasks_before, threads_after, tasks_after, growth, p = run_async(main(), timeout=100)
    assert threads_after == threads_before, "threads grew between rounds"
    # Only run_async's own two tasks (wait_for and the test coroutine) may be running.
    assert tasks_after == tasks_before <= 2, "tasks are left behind"
    # A request's state is a few KiB: leaking even a small part of it per request would pass this
    # bound by far; below it is allocator and interpreter noise (measured: 5-70 KiB).
    assert growth < 256 * 1024, f"memory grew by {growth} bytes over 1,000 requests"
    assert p.stats.success == 2 * N_REQUESTS and not p.stats.failure
    assert not p._in_flight
    for runner in p.runners.values():
        assert runner.queue_depth == 0 and runner.busy == 0 and runner.stats.failures == 0
    b = p.runners["b"].stats
    assert max(b.batch_sizes) > 1, "node b never batched under load"
    assert sum(size * n for size, n in b.batch_sizes.items()) == b.items


def test_stress_with_timeouts_and_cancellations_answers_every_request_exactly_once(
        make_pipeline: MakePipeline) -> None:
    """Under load, some requests time out and some are cancelled: each ends exactly one way."""
    RECORDING[0] = False

    async def main() -> tuple[list[object], Pipeline]:
        async with make_pipeline(FIVE_NODES) as p:
            requests = _requests(4)[:400]
            tasks = [asyncio.ensure_future(p.infer_async({"x": x}, timeout=0.002 if k % 7 == 0 else None))
                     for k, x in enumerate(requests)]
            await asyncio.sleep(0)
            for k in range(3, len(tasks), 11):
                tasks[k].cancel()
            outs = await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.sleep(0.01)
            return list(outs), p

    outs, p = run_async(main(), timeout=60)
    kinds = {type(o).__name__ for o in outs}
    assert kinds <= {"dict", "DeadlineExceededError", "CancelledError"}, kinds
    assert "dict" in kinds and "CancelledError" in kinds
    answered = sum(isinstance(o, dict) for o in outs)
    assert p.stats.success == answered
    assert p.stats.success + sum(p.stats.failure.values()) == len(outs)
    assert not p._in_flight
    for runner in p.runners.values():
        assert runner.queue_depth == 0 and runner.busy == 0
