"""Adaptive inline execution: cheap CPU kernels move onto the event loop, expensive ones stay
in the thread pool (``NodeRunner._adapt``)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from dagserve.runtime import node as node_module
from dagserve.runtime.pipeline import Pipeline

from ._kernels import SEEN
from .conftest import run_async
from .test_pipeline import tagged

MakePipeline = Callable[..., Pipeline]

pytestmark = pytest.mark.timeout(60)

SPEC = """
dagserve: 1
name: adaptive
max_batch_size: 4
inputs:
  x: {dtype: float32, shape: [4]}
outputs:
  y: costly.y
nodes:
  cheap: {op: test.cheap, inputs: {x: inputs.x}}
  costly: {op: test.sleep, inputs: {x: cheap.y}, params: {seconds: 0.001}}
"""


def test_cheap_kernel_moves_to_the_loop_and_expensive_one_stays_in_the_pool(
        make_pipeline: MakePipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    # Thresholds scaled up (5 ms; the dear kernel sleeps 20 ms) so that a loaded machine, where a
    # thread hop alone can take 100s of µs, cannot blur cheap and dear: the mechanism is under test
    # here, the real threshold in the _adapt tests below.
    monkeypatch.setattr(node_module, "INLINE_BELOW_NS", 5_000_000)
    loop_thread = threading.get_ident()  # run_async runs the loop on this thread

    async def main() -> Pipeline:
        async with make_pipeline(SPEC.replace("seconds: 0.001", "seconds: 0.02")) as p:
            for k in range(20):
                await p.infer_async({"x": tagged([k])})
            return p

    p = run_async(main())
    cheap, costly = p.runners["cheap"], p.runners["costly"]
    assert cheap._inline == [True] and costly._inline == [False]
    cheap_threads = [r["thread"] for r in SEEN["cheap"]]
    assert cheap_threads[0] != loop_thread, "a kernel starts in the pool"
    first_inline = cheap_threads.index(loop_thread)
    assert 8 <= first_inline <= 10, f"moved inline after {first_inline} batches"
    assert set(cheap_threads[first_inline:]) == {loop_thread}, "flipped back and forth"
    assert loop_thread not in {r["thread"] for r in SEEN["costly"]}


def test_kernel_sleeping_1ms_stays_in_the_pool_at_the_real_threshold(make_pipeline: MakePipeline) -> None:
    loop_thread = threading.get_ident()

    async def main() -> Pipeline:
        async with make_pipeline(SPEC) as p:
            for k in range(20):
                await p.infer_async({"x": tagged([k])})
            return p

    p = run_async(main())
    assert p.runners["costly"]._inline == [False]
    assert len(SEEN["costly"]) == 20 and loop_thread not in {r["thread"] for r in SEEN["costly"]}


def test_inline_pinned_kernel_runs_on_the_loop_from_the_first_batch(make_pipeline: MakePipeline) -> None:
    spec = SPEC.replace("test.cheap", "test.inline_add")
    loop_thread = threading.get_ident()

    async def main() -> None:
        async with make_pipeline(spec) as p:
            await p.infer_async({"x": tagged([1])})

    run_async(main())
    assert [r["thread"] for r in SEEN["cheap"]] == [loop_thread]


def _runner(make_pipeline: MakePipeline) -> node_module.NodeRunner:
    async def main() -> Pipeline:
        async with make_pipeline(SPEC) as p:
            return p

    return run_async(main()).runners["cheap"]


def test_adapt_moves_inline_only_after_enough_batches_and_back_with_hysteresis(make_pipeline: MakePipeline) -> None:
    runner = _runner(make_pipeline)
    below, limit = node_module.INLINE_BELOW_NS // 4, node_module.INLINE_BELOW_NS
    for _ in range(7):
        runner._adapt(0, below)
    assert runner._inline == [False], "moved inline before 8 batches"
    runner._adapt(0, below)
    assert runner._inline == [True]
    for _ in range(8):  # a little dearer than the limit: inside the hysteresis band, stays
        runner._adapt(0, int(1.5 * limit))
    assert runner._inline == [True]
    for _ in range(8):
        runner._adapt(0, 5 * limit)
    assert runner._inline == [False], "an expensive kernel went back to the pool"
    for _ in range(6):
        runner._adapt(0, 3 * limit)
    runner._adapt(0, int(0.9 * limit))
    assert runner._inline == [False], "switched back before 8 batches since the last switch"
    runner._adapt(0, 3 * limit)
    assert runner._inline == [True], "one cheap batch in the pool shows the kernel is cheap"


def test_pool_kernel_slowed_by_contention_still_comes_back_inline(make_pipeline: MakePipeline) -> None:
    """Wall times in the pool include GIL waits: a cheap kernel seen slow 15 times out of 16 is still cheap."""
    runner = _runner(make_pipeline)
    limit = node_module.INLINE_BELOW_NS
    runner._inline = [False]
    for k in range(16):
        runner._adapt(0, limit // 2 if k == 11 else 40 * limit)
        if runner._inline == [True]:
            break
    assert runner._inline == [True]


def test_adapt_never_moves_a_gpu_instance_or_unpins_an_inline_kernel(make_pipeline: MakePipeline) -> None:
    runner = _runner(make_pipeline)
    runner._can_adapt = [False]
    runner.stats.batches = 100
    for _ in range(20):
        runner._adapt(0, 10)
    assert runner._inline == [False]
    runner._pinned_inline = [True]
    runner._inline = [True]
    runner._can_adapt = [True]
    for _ in range(20):
        runner._adapt(0, 10**9)
    assert runner._inline == [True]
