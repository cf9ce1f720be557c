"""Prometheus metrics, read from the runtime's live statistics at scrape time.

The runtime already counts everything (:class:`~dagserve.runtime.stats.PipelineStats`
per pipeline, :class:`~dagserve.runtime.stats.NodeStats` per node) with plain
integer updates on its event loop, so nothing here touches the request path:
:class:`PipelineCollector` turns a snapshot of those counters into metric
families when ``/metrics`` is scraped. The scrape runs on the same event loop as
the runtime, so it reads consistent values without locks.

Every metric is documented in ``docs/server.md``; :data:`METRICS` is the list a
test checks that document against. Counters restart from zero when a pipeline is
reloaded (a new pipeline object), which Prometheus' ``rate()`` treats as a reset.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from dagserve import __version__
from dagserve.runtime.stats import Histogram
from dagserve.server.repository import Repository

__all__ = ["BATCH_SIZE_BUCKETS", "METRICS", "PipelineCollector", "build_metrics_app"]

BATCH_SIZE_BUCKETS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Upper bounds of the batch-size histogram (a batch larger than the last counts in +Inf)."""

DISPATCH_REASONS: tuple[str, ...] = ("full", "preferred", "delay")
DROP_REASONS: tuple[str, ...] = ("expired", "cancelled")

METRICS: dict[str, str] = {
    "dagserve_info": "gauge",
    "dagserve_pipeline_ready": "gauge",
    "dagserve_requests_total": "counter",
    "dagserve_request_duration_seconds": "histogram",
    "dagserve_request_items_total": "counter",
    "dagserve_node_instances": "gauge",
    "dagserve_node_instances_busy": "gauge",
    "dagserve_node_queue_depth": "gauge",
    "dagserve_node_items_total": "counter",
    "dagserve_node_batches_total": "counter",
    "dagserve_node_batch_size": "histogram",
    "dagserve_node_dispatch_total": "counter",
    "dagserve_node_queue_duration_seconds": "histogram",
    "dagserve_node_compute_duration_seconds": "histogram",
    "dagserve_node_busy_seconds_total": "counter",
    "dagserve_node_failures_total": "counter",
    "dagserve_node_dropped_total": "counter",
    "dagserve_node_rejected_total": "counter",
}
"""Every metric family exported (name as scraped -> type)."""


def _histogram(family: HistogramMetricFamily, labels: list[str], hist: Histogram) -> None:
    """Add a runtime :class:`Histogram` (non-cumulative counts + overflow) as Prometheus buckets."""
    buckets: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip(hist.bounds, hist.counts):
        running += count
        buckets.append((floatToGoString(bound), running))
    buckets.append(("+Inf", hist.count))
    family.add_metric(labels, buckets, hist.total)


def _batch_histogram(family: HistogramMetricFamily, labels: list[str], sizes: dict[int, int]) -> None:
    """Add a {batch size: batches} counter as a cumulative histogram over :data:`BATCH_SIZE_BUCKETS`."""
    buckets: list[tuple[str, float]] = []
    for bound in BATCH_SIZE_BUCKETS:
        buckets.append((floatToGoString(bound), sum(c for s, c in sizes.items() if s <= bound)))
    total = sum(sizes.values())
    buckets.append(("+Inf", total))
    family.add_metric(labels, buckets, sum(s * c for s, c in sizes.items()))


class PipelineCollector(Collector):
    """Metric families for every pipeline of a repository, built at each scrape."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the families depend on what is loaded when scraped."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One family per :data:`METRICS` entry, with a sample per pipeline (and node)."""
        p_labels = ["pipeline"]
        n_labels = ["pipeline", "node"]
        info = GaugeMetricFamily("dagserve_info", "The dagserve version serving (always 1).", labels=["version"])
        info.add_metric([__version__], 1)
        ready = GaugeMetricFamily(
            "dagserve_pipeline_ready", "1 if the pipeline is READY (loaded and accepting requests), else 0.",
            labels=p_labels)
        requests = CounterMetricFamily(
            "dagserve_requests", "Requests finished, by status: OK or the gRPC status name of the failure.",
            labels=["pipeline", "status"])
        duration = HistogramMetricFamily(
            "dagserve_request_duration_seconds",
            "End-to-end time of successful requests inside the pipeline (queueing and compute of every node).",
            labels=p_labels)
        items = CounterMetricFamily(
            "dagserve_request_items", "Batch items of successful requests.", labels=p_labels)
        instances = GaugeMetricFamily(
            "dagserve_node_instances", "Instances (concurrent workers) of the node.", labels=n_labels)
        busy = GaugeMetricFamily(
            "dagserve_node_instances_busy", "Instances of the node running a batch now.", labels=n_labels)
        depth = GaugeMetricFamily(
            "dagserve_node_queue_depth", "Items waiting in the node's queue now.", labels=n_labels)
        n_items = CounterMetricFamily("dagserve_node_items", "Items the node has run.", labels=n_labels)
        batches = CounterMetricFamily("dagserve_node_batches", "Batches the node has run.", labels=n_labels)
        batch_size = HistogramMetricFamily(
            "dagserve_node_batch_size", "Items per batch the node ran.", labels=n_labels)
        dispatch = CounterMetricFamily(
            "dagserve_node_dispatch",
            "Batches by why they left the queue: full (max_batch_size reached), preferred (a preferred size "
            "reached), delay (the oldest item waited max_queue_delay_us).",
            labels=[*n_labels, "reason"])
        queue = HistogramMetricFamily(
            "dagserve_node_queue_duration_seconds", "Time each item waited in the node's queue.", labels=n_labels)
        compute = HistogramMetricFamily(
            "dagserve_node_compute_duration_seconds", "Time each batch took to run in the node.", labels=n_labels)
        busy_s = CounterMetricFamily(
            "dagserve_node_busy_seconds",
            "Instance-seconds spent running batches (divide its rate by instances for utilisation).",
            labels=n_labels)
        failures = CounterMetricFamily(
            "dagserve_node_failures", "Items that failed in the node (each fails its request).", labels=n_labels)
        dropped = CounterMetricFamily(
            "dagserve_node_dropped",
            "Items removed from the node's queue unrun: expired (past the request's timeout) or cancelled "
            "(the request had already failed or was cancelled).", labels=[*n_labels, "reason"])
        rejected = CounterMetricFamily(
            "dagserve_node_rejected",
            "Items refused because the node's queue was full (max_queue_size); the request got RESOURCE_EXHAUSTED.",
            labels=n_labels)

        for entry in sorted(self.repository.entries.values(), key=lambda e: e.name):
            pipeline = entry.pipeline
            ready.add_metric([entry.name], 1 if entry.state == "READY" and pipeline is not None else 0)
            if pipeline is None:
                continue
            name = entry.name
            stats = pipeline.stats
            requests.add_metric([name, "OK"], stats.success)
            for status, count in sorted(stats.failure.items()):
                requests.add_metric([name, status], count)
            _histogram(duration, [name], stats.request_seconds)
            items.add_metric([name], stats.items)
            for node, runner in pipeline.runners.items():
                labels = [name, node]
                s = runner.stats
                instances.add_metric(labels, len(runner.kernels))
                busy.add_metric(labels, runner.busy)
                depth.add_metric(labels, runner.queue_depth)
                n_items.add_metric(labels, s.items)
                batches.add_metric(labels, s.batches)
                _batch_histogram(batch_size, labels, dict(s.batch_sizes))
                for reason in sorted({*DISPATCH_REASONS, *s.dispatch}):
                    dispatch.add_metric([*labels, reason], s.dispatch.get(reason, 0))
                _histogram(queue, labels, s.queue_seconds)
                _histogram(compute, labels, s.compute_seconds)
                busy_s.add_metric(labels, s.busy_ns / 1e9)
                failures.add_metric(labels, s.failures)
                for reason in sorted({*DROP_REASONS, *s.dropped}):
                    dropped.add_metric([*labels, reason], s.dropped.get(reason, 0))
                rejected.add_metric(labels, s.rejected)
        yield from (info, ready, requests, duration, items, instances, busy, depth, n_items, batches, batch_size,
                    dispatch, queue, compute, busy_s, failures, dropped, rejected)


def build_metrics_app(repository: Repository) -> web.Application:
    """The metrics application: ``GET /metrics`` in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(repository))

    async def metrics(request: web.Request) -> web.Response:
        body: Any = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
