"""Property tests of the batcher: a simulated clock and a simulated set of instances.

:func:`simulate` drives a :class:`Batcher` exactly as ``NodeRunner`` does (poll
whenever an instance is idle and something happened; re-poll at ``wake_at``),
through a discrete-event simulation of arrivals, cancellations, deadlines and
batches that take time. Hypothesis generates the arrival patterns and policies;
the invariants are checked on every run:

* every item is dispatched, dropped, or refused (queue full) exactly once;
* within one priority level, a request's items leave in order;
* no batch is empty or larger than ``max_batch_size``;
* no item waits past its delay while an instance is idle, and ``wake_at`` is
  never later than the oldest item's due time;
* nothing is dispatched after its deadline or after its request died, and an
  item dropped as expired had really reached its deadline.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dagserve.runtime.batcher import Batcher, BatchPolicy, QueueFull


@dataclass(frozen=True)
class Arrival:
    gap_us: int
    items: int
    priority: int
    timeout_us: int | None
    cancel_after_us: int | None


@dataclass
class Outcome:
    dispatched: dict[tuple[int, int], int] = field(default_factory=dict)
    """(request, item) -> dispatch time (µs)."""
    order: list[tuple[int, int]] = field(default_factory=list)
    dropped: dict[tuple[int, int], bool] = field(default_factory=dict)
    refused: set[tuple[int, int]] = field(default_factory=set)
    batches: list[int] = field(default_factory=list)


def simulate(policy: BatchPolicy, instances: int, arrivals: list[Arrival], service_us: list[int],
             batcher_cls: type[Batcher[tuple[int, int]]] = Batcher, fair: bool = False) -> Outcome:
    """Run the arrival pattern through a batcher and ``instances`` simulated workers.

    With ``fair`` each request's items are put as one flow (as fan-out children are).
    """
    dead: set[int] = set()
    batcher = batcher_cls(policy, lambda p: p[0] not in dead)
    out = Outcome()
    events: list[tuple[int, int, str, int]] = []  # (time µs, tiebreak, kind, request)
    tie = 0
    t = 0
    for rid, arrival in enumerate(arrivals):
        t += arrival.gap_us
        heapq.heappush(events, (t, tie, "arrive", rid))
        tie += 1
        if arrival.cancel_after_us is not None:
            heapq.heappush(events, (t + arrival.cancel_after_us, tie, "cancel", rid))
            tie += 1
    arrived_at: dict[int, int] = {}
    deadline_of: dict[int, float | None] = {}
    died_at: dict[int, int] = {}
    idle = instances
    timer: int | None = None
    services = iter(service_us * (1 + 10 * len(arrivals)))
    now = 0

    def pump() -> None:
        nonlocal idle, timer, tie
        while idle:
            decision = batcher.poll(now / 1e6)
            for item, expired in zip(decision.dropped, decision.expired):
                assert item.payload not in out.dropped and item.payload not in out.dispatched
                out.dropped[item.payload] = expired
                if expired:
                    assert item.deadline is not None and now / 1e6 >= item.deadline
            if not decision.batch:
                if decision.wake_at is not None:
                    wake = decision.wake_at * 1e6
                    # The simulated clock ticks in whole µs: the first tick at or after the
                    # wake time, and never ``now`` again (the batcher just said "not yet").
                    timer_us = max(int(-(-wake // 1)), now + 1)
                    heapq.heappush(events, (timer_us, tie, "timer", -1))
                    tie += 1
                    timer = timer_us
                return
            assert 1 <= len(decision.batch) <= policy.max_batch_size
            out.batches.append(len(decision.batch))
            for item in decision.batch:
                key = item.payload
                assert key not in out.dispatched and key not in out.dropped, f"{key} handed out twice"
                assert key[0] not in dead, f"{key} dispatched after its request died"
                if item.deadline is not None:
                    assert now / 1e6 < item.deadline, f"{key} dispatched after its deadline"
                out.dispatched[key] = now
                out.order.append(key)
            idle -= 1
            heapq.heappush(events, (now + next(services), tie, "free", -1))
            tie += 1

    while events:
        now, _, kind, rid = heapq.heappop(events)
        if kind == "arrive":
            arrival = arrivals[rid]
            arrived_at[rid] = now
            deadline = None if arrival.timeout_us is None else (now + arrival.timeout_us) / 1e6
            deadline_of[rid] = deadline
            for i in range(arrival.items):
                if rid in dead:
                    out.refused.add((rid, i))
                    continue
                try:
                    batcher.put((rid, i), now / 1e6, arrival.priority, deadline, rid if fair else None)
                except QueueFull:
                    out.refused.add((rid, i))
                    dead.add(rid)  # the runtime fails the whole request
                    died_at[rid] = now
        elif kind == "cancel":
            dead.add(rid)
            died_at.setdefault(rid, now)
        elif kind == "free":
            idle += 1
        elif kind == "timer":
            timer = None
        pump()
        if idle and len(batcher):
            # No item may be overdue while an instance is idle, and the wake-up
            # must come no later than the oldest live item's due time.
            live = [i for i in batcher._heap if i.payload[0] not in dead]
            due = min((i.enqueued + policy.max_queue_delay_us / 1e6 for i in live), default=None)
            if due is not None:
                assert now / 1e6 < due, "an item waits past its delay while an instance is idle"
                assert timer is not None and timer <= max(int(-(-due * 1e6 // 1)), now + 1), "wake-up too late"

    # Every item exactly once: dispatched, dropped, or refused.
    everything = {(rid, i) for rid, a in enumerate(arrivals) for i in range(a.items)}
    accounted = set(out.dispatched) | set(out.dropped) | out.refused
    assert accounted == everything
    assert len(out.dispatched) + len(out.dropped) + len(out.refused) == len(everything)
    # Per-request order within a priority (a request has one priority).
    position = {key: n for n, key in enumerate(out.order)}
    for rid, arrival in enumerate(arrivals):
        sent = [position[(rid, i)] for i in range(arrival.items) if (rid, i) in position]
        assert sent == sorted(sent), f"request {rid} items left out of order"
    return out


@st.composite
def policies(draw: st.DrawFn) -> BatchPolicy:
    max_batch = draw(st.integers(1, 8))
    preferred = draw(st.lists(st.integers(1, max_batch), max_size=3, unique=True))
    levels = draw(st.integers(1, 3))
    return BatchPolicy(
        max_batch_size=max_batch,
        max_queue_delay_us=draw(st.sampled_from([0, 1, 50, 100, 1000])),
        preferred_batch_sizes=tuple(sorted(preferred)),
        max_queue_size=draw(st.sampled_from([0, 0, 1, 4, 16])),
        timeout_us=draw(st.sampled_from([0, 0, 30, 300])),
        priority_levels=levels,
        default_priority=draw(st.integers(1, levels)),
    )


def arrivals_for(levels: int) -> st.SearchStrategy[list[Arrival]]:
    return st.lists(
        st.builds(
            Arrival,
            gap_us=st.integers(0, 300),
            items=st.integers(1, 5),
            priority=st.integers(1, levels),
            timeout_us=st.none() | st.integers(1, 2000),
            cancel_after_us=st.none() | st.integers(0, 500),
        ),
        min_size=1,
        max_size=25,
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[BatchPolicy, int, list[Arrival], list[int]]:
    policy = draw(policies())
    return (policy, draw(st.integers(1, 3)), draw(arrivals_for(policy.priority_levels)),
            draw(st.lists(st.integers(1, 400), min_size=1, max_size=10)))


@settings(max_examples=250, deadline=None)
@given(scenarios())
def test_batcher_accounts_for_every_item_once_in_order_and_never_idles_past_a_delay(
        scenario: tuple[BatchPolicy, int, list[Arrival], list[int]]) -> None:
    simulate(*scenario)


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_fair_queuing_keeps_every_invariant_of_the_batcher(
        scenario: tuple[BatchPolicy, int, list[Arrival], list[int]]) -> None:
    simulate(*scenario, fair=True)


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=2, max_size=6), data=st.data())
def test_fair_queuing_serves_backlogged_flows_within_one_batch_of_each_other(
        sizes: list[int], data: st.DataObject) -> None:
    """Start-time fair queuing: flows queued from the start never differ by more than one batch served."""
    puts = [flow for flow, n in enumerate(sizes) for _ in range(n)]
    order = data.draw(st.permutations(puts))
    batcher: Batcher[tuple[int, int]] = Batcher(BatchPolicy(max_batch_size=data.draw(st.integers(1, 4))))
    counts = [0] * len(sizes)
    for flow in order:
        batcher.put((flow, counts[flow]), 0.0, flow=flow)
        counts[flow] += 1
    served = [0] * len(sizes)
    while len(batcher):
        for item in batcher.poll(0.0).batch:
            flow, index = item.payload
            assert index == served[flow], "a flow's items left out of order"
            served[flow] += 1
        backlogged = [f for f in range(len(sizes)) if served[f] < sizes[f]]
        taken = [served[f] for f in backlogged]
        if taken:
            assert max(taken) - min(taken) <= batcher.policy.max_batch_size, served
    assert served == sizes


def test_a_small_flow_is_not_queued_behind_a_huge_one() -> None:
    batcher: Batcher[tuple[str, int]] = Batcher(BatchPolicy(max_batch_size=8))
    for i in range(1000):
        batcher.put(("huge", i), 0.0, flow="huge")
    assert [item.payload for item in batcher.poll(0.0).batch] == [("huge", i) for i in range(8)]
    batcher.put(("small", 0), 0.0, flow="small")
    batcher.put(("small", 1), 0.0, flow="small")
    second = [item.payload for item in batcher.poll(0.0).batch]
    assert ("small", 0) in second and ("small", 1) in second
    without_flows: Batcher[tuple[str, int]] = Batcher(BatchPolicy(max_batch_size=8))
    for i in range(1000):
        without_flows.put(("huge", i), 0.0)
    without_flows.put(("small", 0), 0.0)
    assert all(item.payload[0] == "huge" for item in without_flows.poll(0.0).batch)  # plain FIFO


@settings(max_examples=100, deadline=None)
@given(policy=policies(), instances=st.integers(1, 3), data=st.data())
def test_batcher_without_deaths_dispatches_every_item_within_its_delay_when_instances_keep_up(
        policy: BatchPolicy, instances: int, data: st.DataObject) -> None:
    """With instantaneous batches and no deadlines, nothing is dropped and nothing waits past its delay."""
    policy = BatchPolicy(policy.max_batch_size, policy.max_queue_delay_us, policy.preferred_batch_sizes,
                         0, 0, policy.priority_levels, policy.default_priority)
    arrivals = [Arrival(a.gap_us, a.items, a.priority, None, None)
                for a in data.draw(arrivals_for(policy.priority_levels))]
    out = simulate(policy, instances, arrivals, [0])
    assert not out.dropped and not out.refused
    t = 0
    for rid, a in enumerate(arrivals):
        t += a.gap_us
        for i in range(a.items):
            # +1: the simulated clock rounds a wake-up up to the next whole µs.
            assert out.dispatched[(rid, i)] <= t + policy.max_queue_delay_us + 1


def test_simulation_catches_a_batcher_that_wakes_too_late() -> None:
    """The property test can fail: a batcher whose wake_at ignores the delay is caught."""

    class LateBatcher(Batcher[tuple[int, int]]):
        def poll(self, now: float):  # type: ignore[no-untyped-def]
            d = super().poll(now)
            if d.wake_at is not None:
                d.wake_at += 0.01
            return d

    policy = BatchPolicy(max_batch_size=4, max_queue_delay_us=100)
    with pytest.raises(AssertionError, match="wake-up too late"):
        simulate(policy, 1, [Arrival(0, 1, 1, None, None)], [10], LateBatcher)
    simulate(policy, 1, [Arrival(0, 1, 1, None, None)], [10])


def test_simulation_catches_a_batcher_that_hands_out_an_item_twice() -> None:
    class Repeating(Batcher[tuple[int, int]]):
        def poll(self, now: float):  # type: ignore[no-untyped-def]
            d = super().poll(now)
            if d.batch:
                self._heap.append(d.batch[0])
            return d

    with pytest.raises(AssertionError, match="twice"):
        simulate(BatchPolicy(max_batch_size=2), 1, [Arrival(0, 3, 1, None, None)], [5], Repeating)
