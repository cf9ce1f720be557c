"""Per-node and per-pipeline statistics, cheap to update on the hot path.

Counters only grow; a snapshot is plain data the server turns into Triton's
ModelStatistics and Prometheus metrics. Durations are kept in nanoseconds
(Triton's unit) as totals and counts, plus fixed-bucket histograms.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["DURATION_BUCKETS_S", "Histogram", "NodeStats", "PipelineStats"]

DURATION_BUCKETS_S: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


@dataclass
class Histogram:
    """Cumulative-friendly histogram: counts per upper bound, plus sum and count."""

    bounds: tuple[float, ...] = DURATION_BUCKETS_S
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1


@dataclass
class NodeStats:
    """What one node did. Times in nanoseconds."""

    items: int = 0
    batches: int = 0
    batch_sizes: Counter[int] = field(default_factory=Counter)
    dispatch: Counter[str] = field(default_factory=Counter)
    """Why batches left the queue: full, preferred, delay."""
    failures: int = 0
    """Items that failed in this node."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Items removed from the queue unrun: expired, cancelled."""
    rejected: int = 0
    """Items refused because the queue was full."""
    queue_ns: int = 0
    compute_ns: int = 0
    busy_ns: int = 0
    queue_seconds: Histogram = field(default_factory=Histogram)
    compute_seconds: Histogram = field(default_factory=Histogram)

    def record_batch(self, size: int, reason: str, queue_ns: list[int], compute_ns: int) -> None:
        self.items += size
        self.batches += 1
        self.batch_sizes[size] += 1
        self.dispatch[reason] += 1
        self.compute_ns += compute_ns
        self.busy_ns += compute_ns
        self.compute_seconds.observe(compute_ns / 1e9)
        for q in queue_ns:
            self.queue_ns += q
            self.queue_seconds.observe(q / 1e9)


@dataclass
class PipelineStats:
    """Requests of one pipeline by outcome, and their end-to-end durations."""

    success: int = 0
    failure: Counter[str] = field(default_factory=Counter)
    """Failed requests by status (INVALID_ARGUMENT, DEADLINE_EXCEEDED, ...)."""
    items: int = 0
    request_ns: int = 0
    request_seconds: Histogram = field(default_factory=Histogram)
    last_inference_ms: int = 0
    """Wall-clock time (ms since the epoch) of the last request, as Triton reports it."""
