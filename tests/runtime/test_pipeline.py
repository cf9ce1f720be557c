"""Running pipelines: results, batching across requests, zero-copy hand-offs, instances, priority.

Kernels are the small NumPy ops of ``_kernels.py``; each records what it saw in
``SEEN`` so a test can tell how items were batched and which memory a kernel got.
Items are tagged by their first element so every batch can be traced back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from dagserve.runtime.pipeline import Pipeline

from ._kernels import SEEN, open_gate
from .conftest import run_async

MakePipeline = Callable[..., Pipeline]

pytestmark = pytest.mark.timeout(60)


def tagged(tags: list[float], width: int = 4) -> np.ndarray:
    """A float32 batch whose item k is filled with ``tags[k]``."""
    return np.repeat(np.asarray(tags, dtype=np.float32)[:, None], width, axis=1)


DIAMOND = """
dagserve: 1
name: diamond
max_batch_size: 8
inputs:
  x: {dtype: float32, shape: [4]}
outputs:
  out: last.y
  left: left.y
nodes:
  left:  {op: test.add, inputs: {x: inputs.x}, params: {value: 1}}
  right: {op: test.mul, inputs: {x: inputs.x}, params: {value: 2}}
  join:  {op: test.sum, inputs: {a: left.y, b: right.y}}
  last:  {op: test.add, inputs: {x: join.y}, params: {value: 10}}
"""


def test_fan_out_fan_in_dag_gives_correct_results(make_pipeline: MakePipeline) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)

    async def main() -> dict[str, np.ndarray]:
        async with make_pipeline(DIAMOND) as p:
            return await p.infer_async({"x": x})

    out = run_async(main())
    np.testing.assert_array_equal(out["out"], (x + 1) + (x * 2) + 10)
    np.testing.assert_array_equal(out["left"], x + 1)
    assert out["out"].dtype == np.float32 and out["out"].shape == (3, 4)
    assert [r["n"] for r in SEEN["join"]] == [3], "the fan-in node ran once, on the whole request"


SLOW_THEN_CHAIN = """
dagserve: 1
name: mixer
max_batch_size: 16
inputs:
  x: {dtype: float32, shape: [4]}
outputs:
  y: double.y
nodes:
  gate:   {op: test.gate, inputs: {x: inputs.x}, batching: {max_batch_size: 16}}
  plus:   {op: test.add, inputs: {x: gate.y}, params: {value: 1}}
  double: {op: test.mul, inputs: {x: plus.y}, params: {value: 2}}
"""


def test_results_are_split_back_per_request_in_order_when_batches_mix_requests(
        make_pipeline: MakePipeline) -> None:
    sizes = [1, 3, 2, 4, 1, 2]
    requests = [tagged([100 * r + k for k in range(n)]) for r, n in enumerate(sizes)]

    async def main() -> list[dict[str, np.ndarray]]:
        async with make_pipeline(SLOW_THEN_CHAIN) as p:
            first = asyncio.ensure_future(p.infer_async({"x": tagged([-5.0])}))
            await asyncio.sleep(0)  # 'gate' holds the first request: the next ones queue up together
            rest = [asyncio.ensure_future(p.infer_async({"x": x})) for x in requests]
            await asyncio.sleep(0)
            open_gate("gate")
            await first
            return list(await asyncio.gather(*rest))

    outs = run_async(main())
    for x, out in zip(requests, outs):
        np.testing.assert_array_equal(out["y"], (x + 1) * 2)
    mixed = [r for r in SEEN["gate"] if r["n"] == sum(sizes)]
    assert mixed, f"expected one batch holding every queued request, got {[r['n'] for r in SEEN['gate']]}"
    assert mixed[0]["firsts"] == [t for x in requests for t in x[:, 0]], "batch keeps arrival order"


def test_batched_results_equal_per_item_results(make_pipeline: MakePipeline) -> None:
    rng = np.random.default_rng(7)
    data = [rng.standard_normal((int(rng.integers(1, 5)), 4)).astype(np.float32) for _ in range(12)]

    async def main() -> tuple[list[np.ndarray], list[np.ndarray]]:
        async with make_pipeline(DIAMOND) as p:
            together = await asyncio.gather(*(p.infer_async({"x": x}) for x in data))
            alone = [await p.infer_async({"x": x[k:k + 1]}) for x in data for k in range(len(x))]
        return [o["out"] for o in together], [o["out"] for o in alone]

    together, alone = run_async(main())
    np.testing.assert_array_equal(np.concatenate(together), np.concatenate(alone))
    assert max(r["n"] for r in SEEN["last"]) > 1, "the concurrent round really batched"


PASS_CHAIN = """
dagserve: 1
name: zero_copy
max_batch_size: {mbs}
inputs:
  x: {{dtype: float32, shape: [4]}}
outputs:
  y: second.y
nodes:
  first:  {{op: test.pass, inputs: {{x: inputs.x}}}}
  second: {{op: test.pass, inputs: {{x: first.y}}}}
"""


def _ptr(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def test_zero_copy_the_input_and_each_hand_off_share_memory_on_cpu(make_pipeline: MakePipeline) -> None:
    x = tagged([1, 2, 3, 4])

    async def main() -> dict[str, np.ndarray]:
        async with make_pipeline(PASS_CHAIN.format(mbs=8)) as p:
            return await p.infer_async({"x": x})

    out = run_async(main())
    first, second = SEEN["first"][0], SEEN["second"][0]
    assert first["n"] == second["n"] == 4
    assert first["ptr"] == _ptr(x) and np.shares_memory(first["array"], x), "the input was copied"
    assert second["ptr"] == first["ptr"] and np.shares_memory(second["array"], first["array"]), \
        "the hand-off between the two nodes was copied"
    assert np.shares_memory(out["y"], x)
    np.testing.assert_array_equal(out["y"], x)


def test_zero_copy_consumer_of_a_mixed_batch_gets_a_view_of_its_run_of_items(make_pipeline: MakePipeline) -> None:
    """A request whose items are a contiguous run of a producer batch gets a view of it, not a copy."""
    spec = """
    dagserve: 1
    name: zero_copy_views
    max_batch_size: 8
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      y: p.y
    nodes:
      gate: {op: test.gate, inputs: {x: inputs.x}}
      plus: {op: test.add, inputs: {x: gate.y}}
      p: {op: test.pass, inputs: {x: plus.y}, batching: {max_batch_size: 2}}
    """

    async def main() -> list[dict[str, np.ndarray]]:
        async with make_pipeline(spec) as p:
            first = asyncio.ensure_future(p.infer_async({"x": tagged([0.0])}))
            await asyncio.sleep(0)
            rest = [asyncio.ensure_future(p.infer_async({"x": tagged(t)})) for t in ([1, 2], [3, 4])]
            await asyncio.sleep(0)
            open_gate("gate")
            await first
            return list(await asyncio.gather(*rest))

    outs = run_async(main())
    np.testing.assert_array_equal(outs[1]["y"], tagged([4, 5]))
    # 'plus' ran one batch of 4; 'p' (max 2) consumed it in two runs of 2: views, same memory.
    assert [r["n"] for r in SEEN["plus"]][-1] == 4
    views = [r["array"] for r in SEEN["p"] if r["n"] == 2]
    assert len(views) == 2 and views[0].base is not None and views[0].base is views[1].base


def test_zero_copy_unbatched_pipeline_hands_the_request_input_to_the_kernel_uncopied(
        make_pipeline: MakePipeline) -> None:
    x = np.arange(4, dtype=np.float32)

    async def main() -> dict[str, np.ndarray]:
        async with make_pipeline(PASS_CHAIN.format(mbs=0)) as p:
            return await p.infer_async({"x": x})

    out = run_async(main())
    assert np.shares_memory(SEEN["first"][0]["array"], x), "an unbatched input was copied on its way in"
    assert out["y"].shape == (4,) and np.shares_memory(out["y"], x)


UNBATCHED = """
dagserve: 1
name: unbatched
max_batch_size: 0
inputs:
  x: {dtype: float32, shape: [2, 3]}
outputs:
  y: triple.y
  z: plus.y
nodes:
  plus:   {op: test.add, inputs: {x: inputs.x}, params: {value: 1}}
  triple: {op: test.per_item, inputs: {x: plus.y}}
"""


def test_unbatched_pipeline_takes_and_returns_tensors_without_a_batch_dimension(make_pipeline: MakePipeline) -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)

    async def main() -> list[dict[str, np.ndarray]]:
        async with make_pipeline(UNBATCHED) as p:
            return list(await asyncio.gather(*(p.infer_async({"x": x + k}) for k in range(3))))

    outs = run_async(main())
    for k, out in enumerate(outs):
        assert out["y"].shape == (2, 3) and out["z"].shape == (2, 3)
        np.testing.assert_array_equal(out["y"], (x + k + 1) * 3)
    assert {r["ndim"] for r in SEEN["triple"]} == {2}, "a per-item kernel sees items without a batch dim"
    assert all(r["n"] == 1 for r in SEEN["plus"]), "an unbatched pipeline never batches requests"


def test_per_item_kernel_in_a_batched_pipeline_sees_single_items(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: per_item
    max_batch_size: 8
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      y: triple.y
    nodes:
      triple: {op: test.per_item, inputs: {x: inputs.x}}
    """
    x = tagged([1, 2, 3])

    async def main() -> dict[str, np.ndarray]:
        async with make_pipeline(spec) as p:
            return await p.infer_async({"x": x})

    np.testing.assert_array_equal(run_async(main())["y"], x * 3)
    assert [(r["ndim"], r["first"]) for r in SEEN["triple"]] == [(1, 1.0), (1, 2.0), (1, 3.0)]


RAGGED = """
dagserve: 1
name: ragged
max_batch_size: 8
inputs:
  n: {dtype: int64, shape: [1]}
outputs:
  seq: make.y
  total: total.y
nodes:
  make:  {op: test.ragged, inputs: {x: inputs.n}}
  total: {op: test.ragged_sum, inputs: {x: make.y}}
"""


def test_ragged_outputs_come_back_as_a_list_when_items_differ_and_stacked_when_equal(
        make_pipeline: MakePipeline) -> None:
    async def main() -> tuple[dict[str, object], dict[str, object]]:
        async with make_pipeline(RAGGED) as p:
            return (await p.infer_async({"n": np.array([[2], [5], [0]])}),
                    await p.infer_async({"n": np.array([[3], [3]])}))

    differ, equal = run_async(main())
    seq = differ["seq"]
    assert isinstance(seq, list) and [len(s) for s in seq] == [2, 5, 0]
    np.testing.assert_array_equal(seq[1], np.arange(5, dtype=np.float32))
    np.testing.assert_array_equal(differ["total"], [[1.0], [10.0], [0.0]])
    assert isinstance(equal["seq"], np.ndarray) and equal["seq"].shape == (2, 3)
    assert all(r["ragged"] for r in SEEN["total"]), "a ragged port is fed a list of items"


def test_bytes_input_reaches_the_kernel_as_bytes_items(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: blobs
    max_batch_size: 4
    inputs:
      data: {dtype: bytes, shape: []}
    outputs:
      size: size.y
    nodes:
      size: {op: test.bytes_len, inputs: {x: inputs.data}}
    """

    async def main() -> list[dict[str, np.ndarray]]:
        async with make_pipeline(spec) as p:
            return [await p.infer_async({"data": [b"abc", b"", b"hello"]}),
                    await p.infer_async({"data": b"single"}),
                    await p.infer_async({"data": np.array([b"xy", b"z"])})]

    many, one, fixed = run_async(main())
    assert list(many["size"]) == [3, 0, 5] and list(one["size"]) == [6] and list(fixed["size"]) == [2, 1]
    assert SEEN["size"][0]["items"] == [b"abc", b"", b"hello"]


def test_unbatched_bytes_scalar_input_is_accepted(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: blob
    max_batch_size: 0
    inputs:
      data: {dtype: bytes, shape: []}
    outputs:
      size: size.y
    nodes:
      size: {op: test.bytes_len, inputs: {x: inputs.data}}
    """

    async def main() -> dict[str, np.ndarray]:
        async with make_pipeline(spec) as p:
            return await p.infer_async({"data": b"four"})

    out = run_async(main())
    assert out["size"].shape == () and int(out["size"]) == 4


def test_request_larger_than_a_node_batch_is_split_into_batches_and_reassembled(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: split
    max_batch_size: 8
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      y: small.y
    nodes:
      small: {op: test.add, inputs: {x: inputs.x}, batching: {max_batch_size: 3}}
    """
    x = tagged(list(range(8)))

    async def main() -> dict[str, np.ndarray]:
        async with make_pipeline(spec) as p:
            return await p.infer_async({"x": x})

    np.testing.assert_array_equal(run_async(main())["y"], x + 1)
    assert [r["n"] for r in SEEN["small"]] == [3, 3, 2]


def test_instances_two_run_two_batches_concurrently(make_pipeline: MakePipeline) -> None:
    """Each batch waits at a two-party barrier: it only passes if both run at the same time."""
    spec = """
    dagserve: 1
    name: two_instances
    max_batch_size: 4
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      y: meet.y
    nodes:
      meet: {op: test.barrier, inputs: {x: inputs.x}, instances: 2, batching: {max_batch_size: 1}}
    """

    async def main() -> list[dict[str, np.ndarray]]:
        async with make_pipeline(spec) as p:
            return list(await asyncio.gather(*(p.infer_async({"x": tagged([k])}) for k in range(4))))

    outs = run_async(main())
    assert [float(o["y"][0, 0]) for o in outs] == [0, 1, 2, 3]
    assert len({r["thread"] for r in SEEN["meet"]}) == 2


def test_priority_one_overtakes_priority_two_at_a_busy_node(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: priorities
    max_batch_size: 4
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      y: work.y
    nodes:
      work:
        op: test.gate
        inputs: {x: inputs.x}
        batching: {max_batch_size: 1, priority_levels: 2, default_priority: 2}
    """

    async def main() -> None:
        async with make_pipeline(spec) as p:
            busy = asyncio.ensure_future(p.infer_async({"x": tagged([0])}))
            await asyncio.sleep(0)  # 'work' holds it until the gate opens
            low = [asyncio.ensure_future(p.infer_async({"x": tagged([20 + k])}, priority=2)) for k in range(3)]
            await asyncio.sleep(0)
            high = [asyncio.ensure_future(p.infer_async({"x": tagged([10 + k])}, priority=1)) for k in range(3)]
            await asyncio.sleep(0)
            open_gate("work")
            await asyncio.gather(busy, *low, *high)

    run_async(main())
    order = [r["firsts"][0] for r in SEEN["work"]]
    assert order == [0, 10, 11, 12, 20, 21, 22]


def test_preferred_batch_size_is_sent_without_waiting_for_the_delay(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: preferred
    max_batch_size: 8
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      y: plus.y
    nodes:
      plus:
        op: test.add
        inputs: {x: inputs.x}
        batching: {max_queue_delay_us: 5000000, preferred_batch_sizes: [4]}
    """

    async def main() -> float:
        async with make_pipeline(spec) as p:
            t0 = time.monotonic()
            await asyncio.gather(*(p.infer_async({"x": tagged([k])}) for k in range(4)))
            elapsed = time.monotonic() - t0
            assert p.runners["plus"].stats.dispatch == {"preferred": 1}
            return elapsed

    assert run_async(main()) < 2.0, "waited for the 5 s delay instead of sending the preferred batch"
    assert [r["n"] for r in SEEN["plus"]] == [4]


def test_a_single_item_at_a_node_with_a_delay_goes_after_the_delay(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: delayed
    max_batch_size: 8
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      y: plus.y
    nodes:
      plus: {op: test.add, inputs: {x: inputs.x}, batching: {max_queue_delay_us: 30000}}
    """

    async def main() -> float:
        async with make_pipeline(spec) as p:
            t0 = time.monotonic()
            out = await p.infer_async({"x": tagged([1])})
            np.testing.assert_array_equal(out["y"], tagged([2]))
            assert p.runners["plus"].stats.dispatch == {"delay": 1}
            return time.monotonic() - t0

    assert 0.025 <= run_async(main(), timeout=5) < 2.0


def test_delay_collects_requests_that_arrive_within_it_into_one_batch(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: delay_batch
    max_batch_size: 8
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      y: plus.y
    nodes:
      plus: {op: test.add, inputs: {x: inputs.x}, batching: {max_queue_delay_us: 200000}}
    """

    async def main() -> None:
        async with make_pipeline(spec) as p:
            tasks = []
            for k in range(3):
                tasks.append(asyncio.ensure_future(p.infer_async({"x": tagged([k])})))
                await asyncio.sleep(0.01)
            await asyncio.gather(*tasks)

    run_async(main())
    assert [r["n"] for r in SEEN["plus"]] == [3]


def test_output_read_straight_from_an_input_is_returned(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: echo
    max_batch_size: 4
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      same: inputs.x
      plus: plus.y
    nodes:
      plus: {op: test.add, inputs: {x: inputs.x}}
    """
    x = tagged([1, 2])

    async def main() -> dict[str, np.ndarray]:
        async with make_pipeline(spec) as p:
            return await p.infer_async({"x": x})

    out = run_async(main())
    np.testing.assert_array_equal(out["same"], x)
    np.testing.assert_array_equal(out["plus"], x + 1)


def test_node_stats_count_items_batches_and_dispatch_reasons(make_pipeline: MakePipeline) -> None:
    async def main() -> Pipeline:
        async with make_pipeline(DIAMOND) as p:
            await p.infer_async({"x": tagged([1, 2])})
            await p.infer_async({"x": tagged([3])})
        return p

    p = run_async(main())
    stats = p.runners["left"].stats
    assert (stats.items, stats.batches, dict(stats.batch_sizes)) == (3, 2, {2: 1, 1: 1})
    assert sum(stats.dispatch.values()) == 2 and stats.failures == 0
    assert stats.queue_seconds.count == 3 and stats.compute_seconds.count == 2
    assert (p.stats.success, p.stats.items) == (2, 3)


def test_kernel_contexts_carry_the_input_types_of_each_port(make_pipeline: MakePipeline) -> None:
    """Kernels such as image.normalize read their input's layout from ``ctx.input_types``."""
    async def main() -> None:
        async with make_pipeline(DIAMOND) as p:  # while running: a closed pipeline drops its kernels
            ctx = p.runners["join"].kernels[0].ctx
            assert set(ctx.input_types) == {"a", "b"}
            assert ctx.input_types["a"].dtype == "float32" and ctx.input_types["a"].shape == (4,)
            assert p.runners["left"].kernels[0].ctx.input_types["x"].shape == (4,)

    run_async(main())


def test_sync_infer_from_many_threads_gives_each_caller_its_own_result(make_pipeline: MakePipeline) -> None:
    p = make_pipeline(DIAMOND)
    results: dict[int, np.ndarray] = {}

    def call(k: int) -> None:
        results[k] = p.infer({"x": tagged([k])})["out"]

    try:
        threads = [threading.Thread(target=call, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    finally:
        p.shutdown()
    for k in range(8):
        np.testing.assert_array_equal(results[k], tagged([k]) * 3 + 11)


class FakeDType:
    """A dtype object NumPy does not know, named like torch's (``fake.float32``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __str__(self) -> str:
        return f"fake.{self.name}"


class FakeTensor:
    """A DLPack producer that is not NumPy (as a torch or CuPy tensor is), over a NumPy array."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    @property
    def dtype(self) -> FakeDType:
        return FakeDType(self.array.dtype.name)

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, key: object) -> FakeTensor:
        return FakeTensor(self.array[key])  # type: ignore[index]

    def __dlpack__(self, **kwargs: object) -> object:
        return self.array.__dlpack__(**kwargs)  # type: ignore[arg-type]

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.array.__dlpack_device__()  # type: ignore[no-any-return]


def test_zero_copy_a_non_numpy_dlpack_input_reaches_the_kernel_as_is(make_pipeline: MakePipeline) -> None:
    t = FakeTensor(np.arange(8, dtype=np.float32).reshape(2, 4))

    async def main() -> dict[str, np.ndarray]:
        async with make_pipeline(PASS_CHAIN.format(mbs=8)) as p:
            return await p.infer_async({"x": t})

    out = run_async(main())
    assert SEEN["first"][0]["array"] is t and SEEN["second"][0]["array"] is t
    assert isinstance(out["y"], np.ndarray) and np.shares_memory(out["y"], t.array)
    np.testing.assert_array_equal(out["y"], t.array)


def test_non_numpy_dlpack_input_of_the_wrong_dtype_is_an_invalid_input(make_pipeline: MakePipeline) -> None:
    from dagserve.errors import InvalidInputError

    async def main() -> None:
        async with make_pipeline(PASS_CHAIN.format(mbs=8)) as p:
            with pytest.raises(InvalidInputError, match=r"expected float32\[N,4\], got float64\[2, 4\]"):
                await p.infer_async({"x": FakeTensor(np.zeros((2, 4)))})

    run_async(main())


def test_builtin_tensor_ops_fan_in_spec_gives_numpy_results() -> None:
    """The compiler's fan_in example (variadic concat, split ports, transpose, slice, cast), unbatched."""
    from dagserve.api import load_plan

    specs = Path(__file__).resolve().parents[1] / "specs"
    plan = load_plan(specs / "good" / "fan_in.yaml", root=str(specs))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    w = np.arange(10, dtype=np.int32).reshape(2, 5)

    async def main() -> dict[str, np.ndarray]:
        async with Pipeline(plan) as p:
            return await p.infer_async({"x": x, "w": w})

    out = run_async(main())
    joined = np.concatenate([x + 1, x * 2.5, x + 1, w.astype(np.float32)], axis=1)
    np.testing.assert_array_equal(out["joined"], joined)
    np.testing.assert_array_equal(out["head"], joined[:, :4])
    np.testing.assert_array_equal(out["tail"], joined[:, 4:])
    np.testing.assert_array_equal(out["flipped"], joined[:, :4].T)
    np.testing.assert_array_equal(out["ints"], joined[:, 1:13:3].astype(np.int64))
    assert out["ints"].dtype == np.int64


def test_variadic_port_with_a_single_reference_still_gets_a_list(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: concat_one
    max_batch_size: 4
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      y: joined.y
    nodes:
      joined: {op: tensor.concat, inputs: {x: [inputs.x]}, params: {axis: 0}}
    """
    x = tagged([1, 2])

    async def main() -> dict[str, np.ndarray]:
        async with make_pipeline(spec) as p:
            return await p.infer_async({"x": x})

    np.testing.assert_array_equal(run_async(main())["y"], x)


def test_ragged_input_takes_a_list_of_differently_sized_items_without_copying(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: ragged_in
    max_batch_size: 4
    inputs:
      seq: {dtype: float32, shape: [L], ragged: true}
    outputs:
      total: total.y
      echo: inputs.seq
    nodes:
      total: {op: test.ragged_sum, inputs: {x: inputs.seq}}
    """
    items = [np.arange(3, dtype=np.float32), np.arange(5, dtype=np.float32)]

    async def main() -> dict[str, object]:
        async with make_pipeline(spec) as p:
            return await p.infer_async({"seq": items})

    out = run_async(main())
    np.testing.assert_array_equal(out["total"], [[3.0], [10.0]])
    echo = out["echo"]
    assert isinstance(echo, list) and all(e is i for e, i in zip(echo, items))
