"""The dynamic batcher on its own: Triton's dispatch rule with an explicit clock.

Nothing here sleeps: every call passes ``now`` (seconds). Times are written in µs
and converted with :func:`us`.
"""

from __future__ import annotations

import pytest

from dagserve.runtime.batcher import Batcher, BatchPolicy, QueueFull


def us(t: float) -> float:
    """µs -> seconds (the batcher's clock unit)."""
    return t / 1e6


def names(items: list) -> list:  # type: ignore[type-arg]
    return [i.payload for i in items]


def test_batcher_sends_full_batch_at_once_even_with_a_delay() -> None:
    b: Batcher[str] = Batcher(BatchPolicy(max_batch_size=4, max_queue_delay_us=1_000_000))
    for name in "abcd":
        b.put(name, 0.0)
    d = b.poll(0.0)
    assert (names(d.batch), d.reason) == (list("abcd"), "full")
    assert len(b) == 0


def test_batcher_sends_max_batch_size_when_more_are_queued_and_keeps_the_rest() -> None:
    b: Batcher[int] = Batcher(BatchPolicy(max_batch_size=4, max_queue_delay_us=100))
    for i in range(6):
        b.put(i, 0.0)
    d = b.poll(0.0)
    assert (names(d.batch), d.reason) == ([0, 1, 2, 3], "full")
    d = b.poll(0.0)
    assert d.batch == [] and d.wake_at == pytest.approx(us(100))
    d = b.poll(us(100))
    assert (names(d.batch), d.reason) == ([4, 5], "delay")


def test_batcher_sends_largest_preferred_size_that_fits_at_once() -> None:
    b: Batcher[int] = Batcher(BatchPolicy(max_batch_size=8, max_queue_delay_us=10**6, preferred_batch_sizes=(2, 4)))
    for i in range(3):
        b.put(i, 0.0)
    d = b.poll(0.0)
    assert (names(d.batch), d.reason) == ([0, 1], "preferred")
    for i in range(3, 8):
        b.put(i, 0.0)
    d = b.poll(0.0)  # 6 queued: 4 is the largest preferred size that fits
    assert (names(d.batch), d.reason) == ([2, 3, 4, 5], "preferred")
    d = b.poll(0.0)
    assert (names(d.batch), d.reason) == ([6, 7], "preferred")


def test_batcher_waits_until_the_oldest_item_has_waited_its_delay() -> None:
    b: Batcher[str] = Batcher(BatchPolicy(max_batch_size=8, max_queue_delay_us=100))
    b.put("old", 0.0)
    d = b.poll(0.0)
    assert d.batch == [] and d.reason is None and d.wake_at == pytest.approx(us(100))
    b.put("new", us(60))
    d = b.poll(us(60))
    assert d.batch == [] and d.wake_at == pytest.approx(us(100)), "the oldest item sets the wake time"
    assert b.poll(us(99)).batch == []
    d = b.poll(us(100))
    assert (names(d.batch), d.reason) == (["old", "new"], "delay")
    assert b.poll(us(100)).wake_at is None, "an empty queue needs no wake-up"


def test_batcher_with_zero_delay_sends_a_single_item_at_once() -> None:
    b: Batcher[str] = Batcher(BatchPolicy(max_batch_size=8))
    b.put("a", 5.0)
    d = b.poll(5.0)
    assert (names(d.batch), d.reason) == (["a"], "delay")


def test_batcher_wakes_at_the_nearest_deadline_when_sooner_than_the_delay() -> None:
    b: Batcher[str] = Batcher(BatchPolicy(max_batch_size=8, max_queue_delay_us=1000))
    b.put("a", 0.0)
    b.put("b", 0.0, deadline=us(30))
    assert b.poll(0.0).wake_at == pytest.approx(us(30))
    d = b.poll(us(30))
    assert names(d.dropped) == ["b"] and d.expired == [True]
    assert d.batch == [] and d.wake_at == pytest.approx(us(1000))


def test_batcher_orders_by_priority_then_arrival() -> None:
    b: Batcher[str] = Batcher(BatchPolicy(max_batch_size=2, priority_levels=3))
    for name, prio in [("a3", 3), ("b2", 2), ("c1", 1), ("d2", 2), ("e1", 1), ("f3", 3)]:
        b.put(name, 0.0, priority=prio)
    batches = [names(b.poll(0.0).batch) for _ in range(3)]
    assert batches == [["c1", "e1"], ["b2", "d2"], ["a3", "f3"]]


def test_batcher_uses_default_priority_for_none_and_zero_and_rejects_out_of_range() -> None:
    b: Batcher[str] = Batcher(BatchPolicy(max_batch_size=1, priority_levels=2, default_priority=2))
    assert b.put("x", 0.0).priority == 2
    assert b.put("y", 0.0, priority=0).priority == 2
    assert b.put("z", 0.0, priority=1).priority == 1
    with pytest.raises(ValueError, match=r"outside 1\.\.2"):
        b.put("w", 0.0, priority=3)
    assert names(b.poll(0.0).batch) == ["z"]


def test_batcher_refuses_items_beyond_max_queue_size() -> None:
    b: Batcher[int] = Batcher(BatchPolicy(max_batch_size=8, max_queue_delay_us=1000, max_queue_size=3))
    for i in range(3):
        b.put(i, 0.0)
    with pytest.raises(QueueFull, match="3 items"):
        b.put(3, 0.0)
    assert len(b) == 3


def test_batcher_purges_dead_items_before_refusing_on_a_full_queue() -> None:
    dead: set[int] = set()
    b: Batcher[int] = Batcher(BatchPolicy(max_batch_size=8, max_queue_delay_us=1000, max_queue_size=2),
                              lambda i: i not in dead)
    b.put(0, 0.0)
    b.put(1, 0.0)
    dead.add(0)
    b.put(2, 0.0)  # room once the dead item is gone
    assert sorted(i.payload for i in b._heap) == [1, 2]
    with pytest.raises(QueueFull):
        b.put(3, 0.0)


def test_batcher_drops_dead_items_unrun_and_not_as_expired() -> None:
    dead = {"b"}
    b: Batcher[str] = Batcher(BatchPolicy(max_batch_size=8), lambda p: p not in dead)
    for name in "abc":
        b.put(name, 0.0)
    d = b.poll(0.0)
    assert names(d.batch) == ["a", "c"]
    assert names(d.dropped) == ["b"] and d.expired == [False]


def test_batcher_policy_timeout_sets_a_deadline_and_keeps_a_sooner_request_deadline() -> None:
    b: Batcher[str] = Batcher(BatchPolicy(max_batch_size=8, max_queue_delay_us=10_000, timeout_us=100))
    assert b.put("policy", 0.0).deadline == pytest.approx(us(100))
    assert b.put("sooner", 0.0, deadline=us(40)).deadline == pytest.approx(us(40))
    assert b.put("later", 0.0, deadline=us(500)).deadline == pytest.approx(us(100))
    d = b.poll(us(40))
    assert names(d.dropped) == ["sooner"] and d.expired == [True]
    d = b.poll(us(100))
    assert sorted(names(d.dropped)) == ["later", "policy"] and d.expired == [True, True]
    assert d.batch == [] and len(b) == 0


def test_batcher_drops_expired_items_before_sending_a_batch() -> None:
    b: Batcher[str] = Batcher(BatchPolicy(max_batch_size=2))
    b.put("late", 0.0, deadline=us(10))
    b.put("ok", us(5))
    d = b.poll(us(10))
    assert names(d.dropped) == ["late"] and names(d.batch) == ["ok"]


def test_batch_policy_from_plan_reads_every_field_and_sorts_preferred_sizes() -> None:
    p = BatchPolicy.from_plan({"max_batch_size": 16, "max_queue_delay_us": 7, "preferred_batch_sizes": [8, 4],
                               "max_queue_size": 9, "timeout_us": 11, "priority_levels": 3, "default_priority": 2})
    assert p == BatchPolicy(16, 7, (4, 8), 9, 11, 3, 2)
    assert BatchPolicy.from_plan({"max_batch_size": 0}).max_batch_size == 1


def test_batcher_reports_dead_items_that_put_purged_as_dropped_on_the_next_poll() -> None:
    dead: set[int] = set()
    b: Batcher[int] = Batcher(BatchPolicy(max_batch_size=8, max_queue_delay_us=1000, max_queue_size=1),
                              lambda i: i not in dead)
    b.put(0, 0.0)
    dead.add(0)
    b.put(1, 0.0)
    d = b.poll(0.0)
    assert names(d.dropped) == [0] and d.expired == [False]
    assert b.poll(0.0).dropped == []


def test_batcher_expire_drops_only_expired_and_dead_items_and_wakes_at_the_next_deadline() -> None:
    dead = {"gone"}
    b: Batcher[str] = Batcher(BatchPolicy(max_batch_size=1, timeout_us=100), lambda p: p not in dead)
    b.put("old", 0.0)
    b.put("gone", us(10))
    b.put("new", us(50))
    d = b.expire(us(100))
    assert names(d.dropped) == ["old", "gone"] and d.expired == [True, False]
    assert d.batch == [] and d.wake_at == pytest.approx(us(150)) and len(b) == 1


def test_batcher_flush_sends_queued_items_without_waiting_for_the_delay() -> None:
    b: Batcher[str] = Batcher(BatchPolicy(max_batch_size=8, max_queue_delay_us=10**6))
    b.put("a", 0.0)
    b.put("b", 0.0)
    assert b.poll(0.0).batch == []
    d = b.poll(0.0, flush=True)
    assert (names(d.batch), d.reason) == (["a", "b"], "delay")
