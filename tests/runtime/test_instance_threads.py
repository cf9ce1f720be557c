"""Where batches run: each node instance on a thread of its own (as Triton's instances),
or, with ``threads=N``, in one shared pool; cheap kernels on the loop, with no thread at all."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import numpy as np
import pytest

from dagserve.runtime.pipeline import Pipeline

from .conftest import run_async

MakePipeline = Callable[..., Pipeline]

pytestmark = pytest.mark.timeout(60)

TWO_INSTANCES = """
dagserve: 1
name: pair
max_batch_size: 1
inputs:
  x: {dtype: float32, shape: [4]}
outputs:
  y: work.y
nodes:
  work:
    op: test.slow
    inputs: {x: inputs.x}
    params: {seconds: 0.02}
    instances: 2
    batching: {max_batch_size: 1}
"""

INLINE_ONLY = """
dagserve: 1
name: cheap
max_batch_size: 4
inputs:
  x: {dtype: float32, shape: [4]}
outputs:
  y: b.y
nodes:
  a: {op: test.inline_add, inputs: {x: inputs.x}}
  b: {op: test.inline_add, inputs: {x: a.y}}
"""


def _names(prefix: str) -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith(prefix)}


async def _load(p: Pipeline, n: int) -> None:
    xs = [np.full((1, 4), i, np.float32) for i in range(n)]
    outs = await asyncio.gather(*(p.infer_async({"x": x}) for x in xs))
    for x, out in zip(xs, outs):
        np.testing.assert_array_equal(out["y"], x)


def test_each_instance_runs_its_batches_on_a_thread_of_its_own(make_pipeline: MakePipeline) -> None:
    async def main() -> tuple[set[str], set[str], int]:
        p = make_pipeline(TWO_INSTANCES)
        async with p:
            await _load(p, 12)
            running = _names("dagserve-pair")
            batches = p.runners["work"].stats.batches
        return running, _names("dagserve-pair"), batches

    running, after_close, batches = run_async(main())
    assert batches == 12
    # ThreadPoolExecutor names its threads PREFIX_N: one executor, one thread, per instance;
    # the threads that loaded the kernels are gone.
    assert running == {"dagserve-pair-work-0_0", "dagserve-pair-work-1_0"}
    assert after_close == set(), "a closed pipeline leaves no thread behind"


def test_threads_option_runs_every_kernel_in_one_shared_pool(make_pipeline: MakePipeline) -> None:
    async def main() -> set[str]:
        p = make_pipeline(TWO_INSTANCES, threads=3)
        async with p:
            await _load(p, 12)
            return _names("dagserve-pair")

    running = run_async(main())
    assert running and all(name.startswith("dagserve-pair_") for name in running)
    assert len(running) <= 3


def test_a_pipeline_of_inline_kernels_starts_no_worker_thread(make_pipeline: MakePipeline) -> None:
    async def main() -> set[str]:
        p = make_pipeline(INLINE_ONLY)
        async with p:
            outs = await asyncio.gather(*(p.infer_async({"x": np.ones((2, 4), np.float32)}) for _ in range(20)))
            assert all(out["y"].shape == (2, 4) for out in outs)
            return _names("dagserve-cheap")

    assert run_async(main()) == set()
