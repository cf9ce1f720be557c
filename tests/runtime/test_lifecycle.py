"""Starting and stopping: concurrent starts, failed starts, drain, close, the synchronous API.

Nothing may be dropped silently (every request ends with a result or a status),
nothing may hang, and a closed pipeline leaves no thread behind.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from dagserve.errors import UnavailableError, UnrecoverableError
from dagserve.runtime.pipeline import Pipeline
from dagserve.runtime.request import Request

from ._kernels import SEEN
from .conftest import run_async
from .test_pipeline import DIAMOND, tagged

MakePipeline = Callable[..., Pipeline]

pytestmark = pytest.mark.timeout(60)

SLOW = """
dagserve: 1
name: slow
max_batch_size: 4
inputs:
  x: {dtype: float32, shape: [4]}
outputs:
  y: plus.y
nodes:
  work: {op: test.slow, inputs: {x: inputs.x}, params: {seconds: 0.05}, batching: {max_batch_size: 1}}
  plus: {op: test.add, inputs: {x: work.y}}
"""


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def _wait_for_threads_to_go(before: set[str], timeout: float = 2.0) -> set[str]:
    """Threads that are still alive after ``timeout`` and were not there ``before``."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        extra = _threads() - before
        if not extra:
            return set()
        time.sleep(0.01)
    return _threads() - before


def test_concurrent_first_requests_all_wait_for_the_same_start(make_pipeline: MakePipeline) -> None:
    async def main() -> list[dict[str, np.ndarray]]:
        p = make_pipeline(DIAMOND)  # not started: the first requests start it
        try:
            return list(await asyncio.gather(*(p.infer_async({"x": tagged([k])}) for k in range(5))))
        finally:
            await p.close()

    outs = run_async(main())
    for k, out in enumerate(outs):
        np.testing.assert_array_equal(out["out"], tagged([k]) * 3 + 11)


def test_drain_finishes_requests_in_flight_and_refuses_new_ones(make_pipeline: MakePipeline) -> None:
    async def main() -> None:
        p = make_pipeline(SLOW)
        await p.start()
        in_flight = [asyncio.ensure_future(p.infer_async({"x": tagged([k])})) for k in range(5)]
        await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(p.close(drain=True))
        await asyncio.sleep(0)
        with pytest.raises(UnavailableError, match="not accepting requests"):
            await p.infer_async({"x": tagged([99])})
        outs = await asyncio.gather(*in_flight)
        await closing
        assert [float(o["y"][0, 0]) for o in outs] == [1, 2, 3, 4, 5]
        with pytest.raises(UnavailableError, match="closed"):
            await p.infer_async({"x": tagged([100])})

    run_async(main())
    assert 99.0 not in [f for r in SEEN["work"] for f in r["firsts"]]
    assert 100.0 not in [f for r in SEEN["work"] for f in r["firsts"]]


def test_closed_pipeline_is_not_restarted_by_a_late_request(make_pipeline: MakePipeline) -> None:
    async def main() -> Pipeline:
        p = make_pipeline(DIAMOND)
        await p.infer_async({"x": tagged([1])})
        await p.close()
        with pytest.raises(UnavailableError):
            await p.infer_async({"x": tagged([2])})
        with pytest.raises(UnavailableError):
            await p.start()
        return p

    p = run_async(main())
    assert p._executor is None and not p.ready


def test_close_without_drain_fails_requests_in_flight_with_unavailable(make_pipeline: MakePipeline) -> None:
    async def main() -> list[Any]:
        p = make_pipeline(SLOW)
        await p.start()
        # 20 x 50 ms one at a time: draining would take a second; not draining waits only for the
        # batch already running (a bound with room for a loaded machine).
        in_flight = [asyncio.ensure_future(p.infer_async({"x": tagged([k])})) for k in range(20)]
        await asyncio.sleep(0.01)
        t0 = time.monotonic()
        await p.close(drain=False)
        assert time.monotonic() - t0 < 0.9
        return list(await asyncio.gather(*in_flight, return_exceptions=True))

    outs = run_async(main(), timeout=5)
    failed = [o for o in outs if isinstance(o, UnavailableError)]
    # A loaded machine may finish a request or two before close(); all the others fail, none is lost.
    assert len(failed) + sum(isinstance(o, dict) for o in outs) == len(outs)
    assert len(failed) >= 15 and all("shut down before the request finished" in str(o) for o in failed), outs


def test_drain_timeout_fails_the_stragglers_with_unavailable(make_pipeline: MakePipeline) -> None:
    async def main() -> list[Any]:
        p = make_pipeline(SLOW)
        await p.start()
        in_flight = [asyncio.ensure_future(p.infer_async({"x": tagged([k])})) for k in range(6)]
        await asyncio.sleep(0.01)
        await p.close(drain=True, timeout=0.08)
        return list(await asyncio.gather(*in_flight, return_exceptions=True))

    outs = run_async(main(), timeout=5)
    done = [o for o in outs if isinstance(o, dict)]
    failed = [o for o in outs if isinstance(o, UnavailableError)]
    # 6 x 50 ms one at a time cannot fit in 80 ms: some fail, and every request ends one way or the other.
    assert len(done) + len(failed) == 6 and failed, outs


LONG_DELAY = """
dagserve: 1
name: long_delay
max_batch_size: 8
inputs:
  x: {dtype: float32, shape: [4]}
outputs:
  y: plus.y
nodes:
  plus: {op: test.add, inputs: {x: inputs.x}, batching: {max_queue_delay_us: 60000000}}
"""


def test_close_without_drain_while_a_batching_timer_is_armed_cancels_it_and_does_not_hang(
        make_pipeline: MakePipeline) -> None:
    async def main() -> tuple[Any, Pipeline]:
        p = make_pipeline(LONG_DELAY)
        await p.start()
        waiting = asyncio.ensure_future(p.infer_async({"x": tagged([1])}))
        await asyncio.sleep(0.01)
        assert p.runners["plus"]._timer is not None
        await p.close(drain=False)
        return (await asyncio.gather(waiting, return_exceptions=True))[0], p

    out, p = run_async(main(), timeout=5)
    assert isinstance(out, UnavailableError)
    assert p.runners["plus"]._timer is None
    assert not SEEN["plus"]


def test_drain_sends_queued_items_without_waiting_for_the_batching_delay(make_pipeline: MakePipeline) -> None:
    async def main() -> tuple[list[Any], float]:
        p = make_pipeline(LONG_DELAY)
        await p.start()
        waiting = [asyncio.ensure_future(p.infer_async({"x": tagged([k])})) for k in range(3)]
        await asyncio.sleep(0.01)
        t0 = time.monotonic()
        await p.close(drain=True)
        return list(await asyncio.gather(*waiting)), time.monotonic() - t0

    outs, elapsed = run_async(main(), timeout=10)
    assert elapsed < 1.0, "the drain waited for the 60 s batching delay"
    assert [float(o["y"][0, 0]) for o in outs] == [1, 2, 3]
    assert [r["n"] for r in SEEN["plus"]] == [3]


def test_failed_start_names_the_node_and_can_be_retried(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: broken_model
    max_batch_size: 4
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      y: model.y
    nodes:
      model: {op: test.cannot_load, inputs: {x: inputs.x}}
    """
    before = _threads()

    async def main() -> Pipeline:
        p = make_pipeline(spec)
        for _ in range(2):  # the second attempt fails the same way, not with "shutting down"
            with pytest.raises(UnrecoverableError, match="pipeline 'broken_model', node 'model' "
                               r"\(test.cannot_load\): cannot create its kernel: cannot load the model"):
                await p.infer_async({"x": tagged([1])})
        assert not p.ready and p._executor is None and p._loop is None
        await p.close()
        return p

    run_async(main())
    assert not _wait_for_threads_to_go(before)


def test_missing_kernel_is_an_unrecoverable_error_naming_node_and_kernel(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: no_kernel
    max_batch_size: 4
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      y: model.y
    nodes:
      model: {op: test.no_kernel, inputs: {x: inputs.x}}
    """
    p = make_pipeline(spec)
    with pytest.raises(UnrecoverableError, match=r"node 'model': cannot load kernel .*no_such_factory"):
        p.infer({"x": tagged([1])})
    with pytest.raises(UnrecoverableError):
        p.infer({"x": tagged([1])})
    assert p._loop_thread is None, "a failed start left its loop thread running"
    p.shutdown()


def test_sync_infer_and_shutdown_leave_no_thread_behind(make_pipeline: MakePipeline) -> None:
    before = _threads()
    p = make_pipeline(SLOW)
    out = p.infer({"x": tagged([1, 2])})
    np.testing.assert_array_equal(out["y"], tagged([2, 3]))
    assert _threads() - before, "the pipeline runs on threads of its own"
    p.shutdown()
    assert _threads() - before == set(), "threads still alive right after shutdown()"
    with pytest.raises(UnavailableError):
        p.infer({"x": tagged([1])})
    assert _threads() - before == set(), "infer() after shutdown() started a thread"


def test_sync_context_manager_shuts_down_on_exit(make_pipeline: MakePipeline) -> None:
    before = _threads()
    with make_pipeline(DIAMOND) as p:
        assert p.infer({"x": tagged([2])})["out"][0, 0] == 2 * 3 + 11
    assert _threads() - before == set()


def test_async_close_leaves_no_worker_thread_behind(make_pipeline: MakePipeline) -> None:
    before = _threads()

    async def main() -> None:
        async with make_pipeline(SLOW) as p:
            await asyncio.gather(*(p.infer_async({"x": tagged([k])}) for k in range(4)))

    run_async(main())
    assert _threads() - before == set()


def test_infer_async_from_another_event_loop_runs_on_the_pipeline_loop(make_pipeline: MakePipeline) -> None:
    p = make_pipeline(DIAMOND)
    p.infer({"x": tagged([0])})  # started on its own loop thread
    try:
        out = run_async(p.infer_async({"x": tagged([3])}))
        np.testing.assert_array_equal(out["out"], tagged([3]) * 3 + 11)
    finally:
        p.shutdown()


def test_close_is_idempotent_and_works_on_a_pipeline_never_started(make_pipeline: MakePipeline) -> None:
    async def main() -> None:
        p = make_pipeline(DIAMOND)
        await p.close()
        await p.close()
        with pytest.raises(UnavailableError):
            await p.infer_async({"x": tagged([1])})
        q = make_pipeline(DIAMOND)
        await q.start()
        await q.close()
        await q.close()

    run_async(main())


def test_request_completes_once_whatever_the_order_of_fail_and_succeed() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ok = Request("a", 1, loop.create_future(), {}, 1, None, None, 0.0)
        ok.succeed({"y": 1})
        assert not ok.fail(RuntimeError("late")) and ok.future.result() == {"y": 1}
        ok.succeed({"y": 2})
        assert ok.future.result() == {"y": 1}
        bad = Request("b", 1, loop.create_future(), {}, 1, None, None, 0.0)
        assert bad.fail(RuntimeError("first")) and not bad.fail(RuntimeError("second"))
        bad.succeed({"y": 3})
        assert str(bad.future.exception()) == "first"
        gone = Request("c", 1, loop.create_future(), {}, 1, None, None, 0.0)
        gone.timer = loop.call_later(3600, lambda: None)
        gone.future.cancel()
        assert not gone.live and not gone.fail(RuntimeError("x")) and gone.timer is None

    run_async(main())


def test_close_during_start_makes_the_start_fail_and_leaves_nothing_running(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: slow_start
    max_batch_size: 4
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      y: model.y
    nodes:
      model: {op: test.slow_load, inputs: {x: inputs.x}, params: {seconds: 0.2}}
    """
    before = _threads()

    async def main() -> Pipeline:
        p = make_pipeline(spec)
        starting = asyncio.ensure_future(p.infer_async({"x": tagged([1])}))
        waiting = asyncio.ensure_future(p.infer_async({"x": tagged([2])}))
        await asyncio.sleep(0.05)
        await p.close()
        for task in (starting, waiting):
            with pytest.raises(UnavailableError, match="closed"):
                await task
        return p

    p = run_async(main(), timeout=5)
    assert not p.ready and p._executor is None and not p.runners
    assert not _wait_for_threads_to_go(before)


def test_sync_infer_called_on_the_pipeline_loop_raises_instead_of_deadlocking(make_pipeline: MakePipeline) -> None:
    async def main() -> None:
        async with make_pipeline(DIAMOND) as p:
            with pytest.raises(RuntimeError, match=r"use 'await pipeline\.infer_async"):
                p.infer({"x": tagged([1])})

    run_async(main(), timeout=5)


def test_sync_infer_racing_shutdown_from_other_threads_never_hangs(make_pipeline: MakePipeline) -> None:
    p = make_pipeline(DIAMOND)
    p.infer({"x": tagged([0])})
    outcomes: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                p.infer({"x": tagged([1])})
                outcomes.append("ok")
            except UnavailableError:
                outcomes.append("unavailable")
                return

    before = _threads()
    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    p.shutdown()
    stop.set()
    for t in threads:
        t.join(5)
    assert not any(t.is_alive() for t in threads), "a caller hangs on a stopped loop"
    assert "ok" in outcomes and outcomes.count("unavailable") <= 4
    assert not (_wait_for_threads_to_go(before) - {t.name for t in threads})


def test_loop_thread_stop_lets_coroutines_submitted_before_it_finish_and_refuses_later_ones() -> None:
    """The interleaving behind a shutdown() race: a submission queued just before stop() must not hang."""
    from dagserve.runtime.pipeline import _LoopThread

    loop_thread = _LoopThread()
    loop_thread.loop.call_soon_threadsafe(time.sleep, 0.2)  # keep the loop busy: what follows queues up
    results: list[Any] = []
    caller = threading.Thread(target=lambda: results.append(loop_thread.run(asyncio.sleep(0.01, result=42))),
                              daemon=True)
    caller.start()
    time.sleep(0.05)  # its task creation now waits in the loop's queue, ahead of stop()
    loop_thread.stop()
    caller.join(2)
    assert not caller.is_alive(), "the caller waits forever on a loop that stopped under it"
    assert results == [42]
    with pytest.raises(UnavailableError, match="shut down"):
        loop_thread.run(asyncio.sleep(0))


def test_close_timeout_bounds_the_wait_for_a_stuck_kernel(make_pipeline: MakePipeline,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    spec = SLOW.replace("seconds: 0.05", "seconds: 1.5")

    async def main() -> tuple[Any, float]:
        p = make_pipeline(spec)
        await p.start()
        running = asyncio.ensure_future(p.infer_async({"x": tagged([1])}))
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        await p.close(drain=True, timeout=0.2)
        elapsed = time.monotonic() - t0
        return (await asyncio.gather(running, return_exceptions=True))[0], elapsed

    out, elapsed = run_async(main(), timeout=10)
    assert elapsed < 1.0, f"close(timeout=0.2) took {elapsed:.2f} s"
    assert isinstance(out, UnavailableError)
    assert "node(s) work still ran a batch" in caplog.text
