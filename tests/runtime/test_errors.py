"""Failures: bad items, broken kernels, timeouts, full queues, cancellation, invalid inputs.

Each failure must hit only the request it belongs to, with a message that says
what happened where, and must never hang: every test runs under a hard timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from dagserve.errors import (
    DeadlineExceededError,
    InvalidInputError,
    ItemError,
    QueueFullError,
    RequestError,
)
from dagserve.runtime.pipeline import Pipeline

from ._kernels import SEEN, open_gate
from .conftest import run_async
from .test_pipeline import tagged

MakePipeline = Callable[..., Pipeline]

pytestmark = pytest.mark.timeout(60)


def _spec(name: str, node_yaml: str, max_batch: int = 8, tail: str = "bad") -> str:
    return f"""
dagserve: 1
name: {name}
max_batch_size: {max_batch}
inputs:
  x: {{dtype: float32, shape: [4]}}
outputs:
  y: {tail}.y
nodes:
  gate: {{op: test.gate, inputs: {{x: inputs.x}}}}
{node_yaml}
"""


async def _batched_together(p: Pipeline, requests: list[np.ndarray], **kwargs: Any) -> list[Any]:
    """Send ``requests`` while 'gate' holds a first one, so they reach the next node in one batch."""
    first = asyncio.ensure_future(p.infer_async({"x": tagged([-100.0])}))
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(p.infer_async({"x": x}, **kwargs)) for x in requests]
    await asyncio.sleep(0)
    open_gate("gate")
    outs = await asyncio.gather(*rest, return_exceptions=True)
    await asyncio.gather(first, return_exceptions=True)
    return list(outs)


def test_one_bad_item_fails_only_its_request_with_pipeline_node_op_and_cause(make_pipeline: MakePipeline) -> None:
    spec = _spec("isolation", "  bad: {op: test.fail_on, inputs: {x: gate.y}, params: {marker: -1}}")
    requests = [tagged([1, 2]), tagged([3, -1, 4]), tagged([5])]

    async def main() -> list[Any]:
        async with make_pipeline(spec) as p:
            outs = await _batched_together(p, requests)
            assert p.runners["bad"].stats.failures == 1
            assert p.stats.failure == {"INVALID_ARGUMENT": 1}
            return outs

    good1, bad, good2 = run_async(main())
    np.testing.assert_array_equal(good1["y"], requests[0])
    np.testing.assert_array_equal(good2["y"], requests[2])
    assert isinstance(bad, ItemError) and bad.status == "INVALID_ARGUMENT"
    assert (bad.pipeline, bad.node, bad.op) == ("isolation", "bad", "test.fail_on")
    message = str(bad)
    for part in ("isolation", "'bad'", "test.fail_on", "marker value -1"):
        assert part in message, f"{part!r} missing from {message!r}"
    assert isinstance(bad.cause, ValueError)
    assert [r["n"] for r in SEEN["bad"]][:2] == [1, 6], "the bad item was batched with the good ones"


def test_bad_item_in_a_per_item_kernel_fails_only_its_request(make_pipeline: MakePipeline) -> None:
    spec = _spec("per_item_isolation", "  bad: {op: test.per_item, inputs: {x: gate.y}, params: {marker: -1}}")

    async def main() -> list[Any]:
        async with make_pipeline(spec) as p:
            return await _batched_together(p, [tagged([1]), tagged([-1, 2]), tagged([3])])

    ok1, bad, ok2 = run_async(main())
    assert isinstance(bad, ItemError) and "per-item marker" in str(bad) and "'bad' (test.per_item)" in str(bad)
    np.testing.assert_array_equal(ok1["y"], tagged([3]))
    np.testing.assert_array_equal(ok2["y"], tagged([9]))


def test_failed_request_items_downstream_are_not_computed(make_pipeline: MakePipeline) -> None:
    spec = _spec("downstream", "  bad: {op: test.fail_on, inputs: {x: gate.y}, params: {marker: -1}}\n"
                 "  after: {op: test.add, inputs: {x: bad.y}}", tail="after")

    async def main() -> list[Any]:
        async with make_pipeline(spec) as p:
            return await _batched_together(p, [tagged([-1, 7])])

    (bad,) = run_async(main())
    assert isinstance(bad, ItemError)
    assert 7.0 not in [f for r in SEEN["after"] for f in r["firsts"]], "item 7 of the failed request still ran"


@pytest.mark.parametrize(("op", "expected"), [
    ("test.bad_size", "returned leading dimension 3 for a batch of 2"),
    ("test.missing_port", "returned no output 'y'"),
    ("test.key_error", "KeyError: 'no_such_port'"),
])
def test_broken_kernel_fails_its_items_with_a_clear_message_and_does_not_hang(
        make_pipeline: MakePipeline, op: str, expected: str) -> None:
    spec = _spec("broken", f"  bad: {{op: {op}, inputs: {{x: gate.y}}}}")

    async def main() -> list[Any]:
        async with make_pipeline(spec) as p:
            outs = await _batched_together(p, [tagged([1]), tagged([2])])
            assert p.runners["bad"].busy == 0 and p.runners["bad"].queue_depth == 0
            return outs

    outs = run_async(main(), timeout=10)
    for out in outs:
        assert isinstance(out, ItemError), out
        assert "'bad'" in str(out) and op in str(out)
        if op != "test.bad_size":  # alone, a batch of 1 returns 2 items
            assert expected in str(out), str(out)
    if op == "test.bad_size":
        assert "returned leading dimension 2 for a batch of 1" in str(outs[0])


def test_kernel_bug_raising_key_error_is_not_reported_as_a_missing_output(make_pipeline: MakePipeline) -> None:
    spec = _spec("keyerr", "  bad: {op: test.key_error, inputs: {x: inputs.x}}")

    async def main() -> Any:
        async with make_pipeline(spec) as p:
            return (await asyncio.gather(p.infer_async({"x": tagged([1])}), return_exceptions=True))[0]

    err = run_async(main())
    assert isinstance(err, ItemError) and "KeyError: 'no_such_port'" in str(err)
    assert "returned no output" not in str(err)
    assert isinstance(err.cause.__cause__, KeyError)


@pytest.mark.parametrize("op", ["test.boom", "test.inline_boom"])
def test_kernel_raising_a_base_exception_fails_its_request_and_the_node_keeps_working(
        make_pipeline: MakePipeline, op: str) -> None:
    spec = _spec("boom", f"  bad: {{op: {op}, inputs: {{x: inputs.x}}, params: {{marker: -1}}}}")

    async def main() -> tuple[Any, Any]:
        async with make_pipeline(spec) as p:
            bad = (await asyncio.gather(p.infer_async({"x": tagged([-1])}), return_exceptions=True))[0]
            good = await p.infer_async({"x": tagged([2])})
            assert p.runners["bad"].busy == 0
            return bad, good

    bad, good = run_async(main(), timeout=10)
    assert isinstance(bad, ItemError) and "boom" in str(bad)
    np.testing.assert_array_equal(good["y"], tagged([2]))


GATED = """
dagserve: 1
name: gated
max_batch_size: 4
inputs:
  x: {{dtype: float32, shape: [4]}}
outputs:
  y: work.y
nodes:
  work:
    op: test.gate
    inputs: {{x: inputs.x}}
    batching: {{max_batch_size: 1{extra}}}
"""
"""'work' holds each batch until the test calls ``open_gate("work")``."""


def _seen_tags(node: str) -> list[float]:
    return [f for r in SEEN[node] for f in r["firsts"]]


def test_timeout_raises_deadline_exceeded_and_its_items_leave_the_queue_uncomputed(
        make_pipeline: MakePipeline) -> None:
    async def main() -> None:
        async with make_pipeline(GATED.format(extra="")) as p:
            busy = asyncio.ensure_future(p.infer_async({"x": tagged([1])}))
            await asyncio.sleep(0)  # 'work' holds request 1 until the gate opens
            with pytest.raises(DeadlineExceededError, match=r"timed out after 0\.05 s") as info:
                await p.infer_async({"x": tagged([2])}, timeout=0.05)
            assert not busy.done(), "the deadline fired only when the node freed up"
            assert info.value.status == "DEADLINE_EXCEEDED"
            open_gate("work")
            await busy
            await asyncio.sleep(0.05)
            assert p.runners["work"].queue_depth == 0
            assert sum(p.runners["work"].stats.dropped.values()) == 1
            assert p.stats.failure == {"DEADLINE_EXCEEDED": 1}

    run_async(main())
    assert _seen_tags("work") == [1.0], "the expired request was computed"


def test_node_timeout_us_expires_items_at_their_deadline_even_while_the_node_is_busy(
        make_pipeline: MakePipeline) -> None:
    async def main() -> None:
        async with make_pipeline(GATED.format(extra=", timeout_us: 30000")) as p:
            busy = asyncio.ensure_future(p.infer_async({"x": tagged([1])}))
            await asyncio.sleep(0)
            t0 = time.monotonic()
            with pytest.raises(DeadlineExceededError, match="waiting at node 'work'"):
                await p.infer_async({"x": tagged([2])})
            assert time.monotonic() - t0 >= 0.03
            assert not busy.done(), "expired when the instance freed up, not at its deadline"
            assert p.runners["work"].queue_depth == 0
            open_gate("work")
            await busy
            assert p.runners["work"].stats.dropped["expired"] == 1

    run_async(main())
    assert _seen_tags("work") == [1.0]


def test_queue_full_rejects_at_once_with_resource_exhausted_and_others_succeed(make_pipeline: MakePipeline) -> None:
    async def main() -> None:
        async with make_pipeline(GATED.format(extra=", max_queue_size: 2")) as p:
            first = asyncio.ensure_future(p.infer_async({"x": tagged([1])}))
            await asyncio.sleep(0)  # 'work' holds request 1; the queue holds the next two
            queued = [asyncio.ensure_future(p.infer_async({"x": tagged([k])})) for k in (2, 3)]
            await asyncio.sleep(0)
            with pytest.raises(QueueFullError, match="queue of node 'work' is full") as info:
                await p.infer_async({"x": tagged([4])})
            assert not first.done(), "the rejection waited for the queue"
            assert info.value.status == "RESOURCE_EXHAUSTED"
            open_gate("work")
            outs = await asyncio.gather(first, *queued)
            assert [float(o["y"][0, 0]) for o in outs] == [1, 2, 3]
            assert p.runners["work"].stats.rejected == 1

    run_async(main())
    assert 4.0 not in _seen_tags("work")


def test_queue_full_for_a_multi_item_request_queues_none_of_its_items(make_pipeline: MakePipeline) -> None:
    async def main() -> None:
        async with make_pipeline(GATED.format(extra=", max_queue_size: 2")) as p:
            first = asyncio.ensure_future(p.infer_async({"x": tagged([1])}))
            await asyncio.sleep(0)
            with pytest.raises(QueueFullError, match="the request has 4 item"):
                await p.infer_async({"x": tagged([2, 3, 4, 5])})
            assert p.runners["work"].stats.rejected == 1, "one refusal per request, not per item"
            assert p.runners["work"].queue_depth == 0, "refused at the door: no item was queued"
            open_gate("work")
            await first
            ok = await p.infer_async({"x": tagged([6])})
            assert float(ok["y"][0, 0]) == 6
            assert p.runners["work"].stats.dropped == {}

    run_async(main())
    assert _seen_tags("work") == [1.0, 6.0]


def test_cancelling_the_awaiting_task_drops_its_items_before_compute(make_pipeline: MakePipeline) -> None:
    async def main() -> None:
        async with make_pipeline(GATED.format(extra="")) as p:
            busy = asyncio.ensure_future(p.infer_async({"x": tagged([1])}))
            await asyncio.sleep(0)
            doomed = asyncio.ensure_future(p.infer_async({"x": tagged([2])}, timeout=30))
            await asyncio.sleep(0.01)
            doomed.cancel()
            with pytest.raises(asyncio.CancelledError):
                await doomed
            open_gate("work")
            await busy
            await asyncio.sleep(0.02)
            stats = p.runners["work"].stats
            assert stats.dropped["cancelled"] == 1 and p.runners["work"].queue_depth == 0
            assert p.stats.failure == {"CANCELLED": 1}
            assert not p._in_flight

    run_async(main())
    assert _seen_tags("work") == [1.0]


def test_cancelled_request_disarms_its_timeout_timer(make_pipeline: MakePipeline,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancelled request must not stay referenced by an armed deadline timer for the whole timeout."""
    from dagserve.runtime import request as request_module

    created: list[Any] = []
    original = request_module.Request.__init__

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(request_module.Request, "__init__", spy)

    async def main() -> None:
        async with make_pipeline(GATED.format(extra="")) as p:
            busy = asyncio.ensure_future(p.infer_async({"x": tagged([1])}))
            await asyncio.sleep(0)
            doomed = asyncio.ensure_future(p.infer_async({"x": tagged([2])}, timeout=3600))
            await asyncio.sleep(0.01)
            doomed.cancel()
            await asyncio.gather(doomed, return_exceptions=True)
            await asyncio.sleep(0)
            assert created[1].timer is None, "the cancelled request's deadline timer is still armed"
            open_gate("work")
            await busy

    run_async(main())


VALID = """
dagserve: 1
name: strict
max_batch_size: 4
inputs:
  x: {dtype: float32, shape: [2, -1]}
  tag: {dtype: bytes, shape: []}
outputs:
  y: plus.y
nodes:
  plus: {op: test.add, inputs: {x: inputs.x}}
  size: {op: test.bytes_len, inputs: {x: inputs.tag}}
"""

_X = np.zeros((1, 2, 3), np.float32)
_TAG = [b"t"]


@pytest.mark.parametrize(("inputs", "pattern"), [
    ({"x": _X, "tag": _TAG, "z": _X}, r"pipeline 'strict' has no input 'z'; its inputs are: x, tag"),
    ({"x": _X}, r"input 'tag' is missing"),
    ({"x": _X.astype(np.float64), "tag": _TAG}, r"input 'x': expected float32\[N,2,\?\], got float64\[1, 2, 3\]"),
    ({"x": np.zeros((2, 3), np.float32), "tag": _TAG},
     r"input 'x': expected float32\[N,2,\?\] .*rank 3.*got shape \[2, 3\]"),
    ({"x": np.zeros((1, 3, 3), np.float32), "tag": _TAG},
     r"input 'x': expected float32\[N,2,\?\], got shape \[1, 3, 3\]"),
    ({"x": np.zeros((0, 2, 3), np.float32), "tag": np.array([], dtype=object)}, r"batch size 0 is outside 1..4"),
    ({"x": np.zeros((5, 2, 3), np.float32), "tag": [b"t"] * 5}, r"batch size 5 is outside 1..4"),
    ({"x": _X, "tag": ["text"]}, r"input 'tag': BYTES elements must be bytes, got str"),
    ({"x": _X, "tag": [b"a", b"b"]}, r"inputs disagree on the batch size \(1 vs 2 for 'tag'\)"),
    ({"x": _X, "tag": np.array([1.0])}, r"input 'tag': expected bytes\[N\], got float64\[1\]"),
    ({"x": [[[1.0, 2.0, 3.0], [1.0]]], "tag": _TAG},
     r"input 'x': expected float32\[N,2,\?\], got a list that is not an array: .*inhomogeneous"),
    ({"x": np.array([[[object()] * 3] * 2]), "tag": _TAG}, r"input 'x': expected float32\[N,2,\?\], got object\["),
])
def test_invalid_input_is_rejected_with_a_message_naming_input_expected_and_received(
        make_pipeline: MakePipeline, inputs: dict[str, Any], pattern: str) -> None:
    async def main() -> Pipeline:
        async with make_pipeline(VALID) as p:
            with pytest.raises(InvalidInputError, match=pattern) as info:
                await p.infer_async(inputs)
            assert info.value.status == "INVALID_ARGUMENT"
            ok = await p.infer_async({"x": _X, "tag": _TAG})  # the pipeline is unharmed
            np.testing.assert_array_equal(ok["y"], _X + 1)
            return p

    p = run_async(main())
    assert p.stats.failure == {"INVALID_ARGUMENT": 1}
    assert SEEN["plus"] == [SEEN["plus"][0]] and SEEN["plus"][0]["n"] == 1, "an invalid request reached a kernel"


def test_invalid_input_to_unbatched_pipeline_reports_shape_without_batch_dim(make_pipeline: MakePipeline) -> None:
    spec = VALID.replace("max_batch_size: 4", "max_batch_size: 0")

    async def main() -> None:
        async with make_pipeline(spec) as p:
            with pytest.raises(InvalidInputError, match=r"expected float32\[2,\?\], got shape \[1, 2, 3\]"):
                await p.infer_async({"x": _X, "tag": b"t"})

    run_async(main())


def test_every_request_error_maps_to_a_status() -> None:
    for cls in (InvalidInputError, QueueFullError, DeadlineExceededError):
        assert issubclass(cls, RequestError) and cls.status != "INTERNAL"


def test_outputs_that_cannot_be_assembled_fail_the_request_with_a_counted_request_error(
        make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: varying
    max_batch_size: 4
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      y: v.y
    nodes:
      v: {op: test.varying, inputs: {x: inputs.x}}
    """

    async def main() -> Pipeline:
        async with make_pipeline(spec) as p:
            with pytest.raises(RequestError, match="pipeline 'varying': could not assemble the outputs: ") as info:
                await p.infer_async({"x": tagged([1, 2])})
            assert info.value.status == "INTERNAL"
            ok = await p.infer_async({"x": tagged([3])})
            assert ok["y"].shape == (1, 4)
            return p

    p = run_async(main())
    assert p.stats.failure == {"INTERNAL": 1} and p.stats.success == 1


SYMBOLS = """
dagserve: 1
name: symbols
max_batch_size: 4
inputs:
  a: {dtype: float32, shape: [L]}
  b: {dtype: float32, shape: [L]}
  sq: {dtype: float32, shape: [S, S]}
outputs:
  y: both.y
  z: square.y
nodes:
  both: {op: test.sum, inputs: {a: inputs.a, b: inputs.b}}
  square: {op: test.add, inputs: {x: inputs.sq}}
"""


@pytest.mark.parametrize(("shapes", "pattern"), [
    (((1, 3), (1, 4), (1, 2, 2)),
     r"input 'b': dimension L is 4 but input 'a' has L=3; inputs sharing a dimension name must agree"),
    (((1, 3), (1, 3), (1, 2, 5)), r"input 'sq': dimension S is 5 but another dimension of it has S=2"),
])
def test_inputs_sharing_a_dimension_name_must_agree(
        make_pipeline: MakePipeline, shapes: tuple[tuple[int, ...], ...], pattern: str) -> None:
    async def main() -> None:
        async with make_pipeline(SYMBOLS) as p:
            ok = await p.infer_async({"a": np.ones((2, 5), np.float32), "b": np.ones((2, 5), np.float32),
                                      "sq": np.zeros((2, 3, 3), np.float32)})
            np.testing.assert_array_equal(ok["y"], np.full((2, 5), 2, np.float32))
            with pytest.raises(InvalidInputError, match=pattern):
                await p.infer_async({n: np.zeros(s, np.float32) for n, s in zip(("a", "b", "sq"), shapes)})

    run_async(main())


def test_ragged_input_item_with_a_wrong_dtype_or_shape_names_the_item(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: ragged_in
    max_batch_size: 4
    inputs:
      seq: {dtype: float32, shape: [L, 2], ragged: true}
    outputs:
      total: total.y
    nodes:
      total: {op: test.ragged_sum, inputs: {x: inputs.seq}}
    """

    async def main() -> None:
        async with make_pipeline(spec) as p:
            good = np.ones((3, 2), np.float32)
            with pytest.raises(InvalidInputError,
                               match=r"input 'seq' item 1: expected float32\[L,2\] \(ragged\), got float64\[3, 2\]"):
                await p.infer_async({"seq": [good, np.ones((3, 2))]})
            with pytest.raises(InvalidInputError,
                               match=r"input 'seq' item 0: expected float32\[L,2\] \(ragged\), got shape \[3, 5\]"):
                await p.infer_async({"seq": [np.ones((3, 5), np.float32)]})
            with pytest.raises(InvalidInputError, match=r"batch size 5 is outside 1\.\.4"):
                await p.infer_async({"seq": [good] * 5})

    run_async(main())


def test_per_item_kernel_skips_the_remaining_items_of_a_request_that_timed_out(make_pipeline: MakePipeline) -> None:
    spec = """
    dagserve: 1
    name: per_item_deadline
    max_batch_size: 8
    inputs:
      x: {dtype: float32, shape: [4]}
    outputs:
      y: each.y
    nodes:
      each: {op: test.per_item, inputs: {x: inputs.x}, params: {seconds: 0.05}}
    """

    async def main() -> None:
        async with make_pipeline(spec) as p:
            with pytest.raises(DeadlineExceededError):
                await p.infer_async({"x": tagged(list(range(8)))}, timeout=0.07)
        # close() waited for the batch that was running

    run_async(main())
    assert len(SEEN["each"]) < 8, "every item of the timed-out request was still computed"


@pytest.mark.parametrize(("op", "produced"), [("test.widen", r"float64\[2, 4\]"), ("test.shrink", r"float32\[2, 2\]")])
def test_output_of_another_type_than_declared_fails_the_request_naming_output_and_node(
        make_pipeline: MakePipeline, op: str, produced: str) -> None:
    spec = f"""
    dagserve: 1
    name: mistyped
    max_batch_size: 4
    inputs:
      x: {{dtype: float32, shape: [4]}}
    outputs:
      y: liar.y
    nodes:
      liar: {{op: {op}, inputs: {{x: inputs.x}}}}
    """

    async def main() -> None:
        async with make_pipeline(spec) as p:
            with pytest.raises(RequestError, match=rf"output 'y' should be float32\[N,4\] but node 'liar' \({op}\) "
                                                   rf"produced {produced}"):
                await p.infer_async({"x": tagged([1, 2])})

    run_async(main())
