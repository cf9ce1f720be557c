"""Shedding at the door: a request a full queue would refuse later is refused before any node runs it.

Under overload a cap only on the model node let decode and letterbox run for
items the model's queue then refused. The pipeline now checks, before a request
starts, that every capped node it will reach (every node: a request visits them
all) has room for all its items, and refuses it at once with RESOURCE_EXHAUSTED
naming the node otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from dagserve.compiler import compile_file
from dagserve.compiler.context import CompileOptions
from dagserve.errors import QueueFullError
from dagserve.runtime.pipeline import Pipeline

from ._kernels import SEEN, open_gate
from .conftest import run_async
from .test_pipeline import tagged

MakePipeline = Callable[..., Pipeline]

TWO_STEPS = """
dagserve: 1
name: door
max_batch_size: 4
inputs:
  x: {dtype: float32, shape: [4]}
outputs:
  y: work.y
nodes:
  pre:
    op: test.add
    inputs: {x: inputs.x}
    params: {value: 0}
    batching: {max_batch_size: 1}
  work:
    op: test.gate
    inputs: {x: pre.y}
    batching: {max_batch_size: 1, max_queue_size: 1}
"""
"""'pre' is uncapped and cheap; 'work' (held by its gate) has a queue of one item."""


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


def test_request_refused_at_the_door_never_reaches_the_first_node(make_pipeline: MakePipeline) -> None:
    async def main() -> None:
        async with make_pipeline(TWO_STEPS) as p:
            running = asyncio.ensure_future(p.infer_async({"x": tagged([1])}))
            await _until(lambda: len(SEEN["pre"]) == 1 and p.runners["work"].busy == 1)
            queued = asyncio.ensure_future(p.infer_async({"x": tagged([2])}))
            await _until(lambda: p.runners["work"].queue_depth == 1)
            with pytest.raises(QueueFullError, match="queue of node 'work' is full") as info:
                await p.infer_async({"x": tagged([3])})
            assert info.value.status == "RESOURCE_EXHAUSTED"
            assert "refused before any node ran it" in str(info.value)
            assert p.runners["work"].stats.rejected == 1
            assert p.stats.failure["RESOURCE_EXHAUSTED"] == 1
            open_gate("work")
            outs = await asyncio.gather(running, queued)
            assert [float(o["y"][0, 0]) for o in outs] == [1, 2]

    run_async(main())
    assert [f for r in SEEN["pre"] for f in r["firsts"]] == [1.0, 2.0], "the refused request ran 'pre'"


def test_a_request_that_fits_is_admitted_once_the_queue_drains(make_pipeline: MakePipeline) -> None:
    async def main() -> None:
        async with make_pipeline(TWO_STEPS) as p:
            running = asyncio.ensure_future(p.infer_async({"x": tagged([1])}))
            await _until(lambda: p.runners["work"].busy == 1)
            queued = asyncio.ensure_future(p.infer_async({"x": tagged([2])}))
            await _until(lambda: p.runners["work"].queue_depth == 1)
            with pytest.raises(QueueFullError):
                await p.infer_async({"x": tagged([3])})
            open_gate("work")
            await asyncio.gather(running, queued)
            ok = await p.infer_async({"x": tagged([4])})
            assert float(ok["y"][0, 0]) == 4

    run_async(main())


def test_a_request_larger_than_a_queue_is_refused_whole(make_pipeline: MakePipeline) -> None:
    async def main() -> None:
        async with make_pipeline(TWO_STEPS) as p:
            with pytest.raises(QueueFullError, match="the request has 2 item"):
                await p.infer_async({"x": tagged([1, 2])})

    run_async(main())
    assert not SEEN["pre"]


EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("spec", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_pipelines_ship_bounded_queues_that_hold_a_full_request(spec: Path) -> None:
    result = compile_file(str(spec), CompileOptions(target="cpu"))
    assert result.plan is not None, "\n".join(d.one_line() for d in result.diagnostics)
    for node in result.plan.nodes:
        cap = node.batching.get("max_queue_size", 0)
        assert cap >= max(1, result.plan.max_batch_size), f"{spec.name}: node '{node.name}' has max_queue_size {cap}"
