"""Prometheus metrics, read from the runtime's live statistics at scrape time.

The runtime already counts everything (:class:`~dagserve.runtime.stats.PipelineStats`
per pipeline, :class:`~dagserve.runtime.stats.NodeStats` per node) with plain
integer updates on its event loop, so nothing here touches the request path:
:class:`PipelineCollector` turns a snapshot of those counters into metric
families when ``/metrics`` is scraped. The scrape runs on the same event loop as
the runtime, so it reads consistent values without locks.

Beside dagserve's own families, :class:`TritonCollector` exports Triton's
per-model ``nv_inference_*`` families (a pipeline is a model) and the standard
``process_*`` metrics come from prometheus_client, so Triton dashboards and
alerts carry over. Every metric is documented in ``docs/server.md``;
:data:`METRICS`, :data:`TRITON_METRICS` and :data:`PROCESS_METRICS` are the lists
a test checks that document against. Counters restart from zero when a pipeline is
reloaded (a new pipeline object), which Prometheus' ``rate()`` treats as a reset.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from dagserve import __version__
from dagserve.runtime.stats import Histogram
from dagserve.server.repository import Repository
from dagserve.server.triton import model_statistics

__all__ = ["BATCH_SIZE_BUCKETS", "FAILURE_REASONS", "METRICS", "PROCESS_METRICS", "TRITON_METRICS",
           "PipelineCollector", "TritonCollector", "build_metrics_app"]

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
"""dagserve's own metric families (name as scraped -> type)."""

PROCESS_METRICS: dict[str, str] = {
    "process_virtual_memory_bytes": "gauge",
    "process_resident_memory_bytes": "gauge",
    "process_start_time_seconds": "gauge",
    "process_cpu_seconds_total": "counter",
    "process_open_fds": "gauge",
    "process_max_fds": "gauge",
}
"""prometheus_client's ProcessCollector families (on Linux, where it reads /proc)."""


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


TRITON_METRICS: dict[str, str] = {
    "nv_inference_request_success": "counter",
    "nv_inference_request_failure": "counter",
    "nv_inference_count": "counter",
    "nv_inference_exec_count": "counter",
    "nv_inference_request_duration_us": "counter",
    "nv_inference_queue_duration_us": "counter",
    "nv_inference_compute_input_duration_us": "counter",
    "nv_inference_compute_infer_duration_us": "counter",
    "nv_inference_compute_output_duration_us": "counter",
    "nv_inference_pending_request_count": "gauge",
}
"""Triton's per-model families (name as scraped -> type), labelled ``model`` and ``version`` per pipeline."""

FAILURE_REASONS: dict[str, str] = {
    "DEADLINE_EXCEEDED": "REJECTED",
    "RESOURCE_EXHAUSTED": "REJECTED",
    "CANCELLED": "CANCELED",
    "INTERNAL": "BACKEND",
}
"""A failed request's status -> Triton's ``reason`` label; any other status is ``OTHER``.

Triton's REJECTED is a request its scheduler gave up on (timed out or refused by a
full queue), CANCELED one cancelled, BACKEND one the model failed to run."""

TRITON_REASONS: tuple[str, ...] = ("REJECTED", "CANCELED", "BACKEND", "OTHER")


def _counter(name: str, documentation: str) -> Metric:
    """A counter family whose sample is called ``name`` itself, as Triton's are (no ``_total``)."""
    return Metric(name, documentation, "counter")


def _add(family: Metric, value: float, labels: dict[str, str]) -> None:
    family.add_sample(family.name, labels, value)


class TritonCollector(Collector):
    """Triton's per-model inference metrics, one "model" per READY pipeline.

    The values are those of :func:`dagserve.server.triton.model_statistics`, so a
    dashboard and the statistics API agree, as they do on Triton.
    """

    def __init__(self, repository: Repository) -> None:
        self.repository = repository

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        success = _counter("nv_inference_request_success",
                           "Number of successful inference requests, all batch sizes")
        failure = _counter("nv_inference_request_failure", "Number of failed inference requests, all batch sizes")
        count = _counter("nv_inference_count", "Number of inferences performed (batch items of successful requests)")
        executions = _counter("nv_inference_exec_count",
                              "Number of model executions performed (one per successful request of a pipeline)")
        request_us = _counter("nv_inference_request_duration_us",
                              "Cumulative inference request duration in microseconds")
        queue_us = _counter("nv_inference_queue_duration_us",
                            "Cumulative inference queuing duration in microseconds (summed over nodes)")
        input_us = _counter("nv_inference_compute_input_duration_us",
                            "Cumulative compute input duration in microseconds (0: nodes read inputs in place)")
        infer_us = _counter("nv_inference_compute_infer_duration_us",
                            "Cumulative compute inference duration in microseconds (summed over nodes)")
        output_us = _counter("nv_inference_compute_output_duration_us",
                             "Cumulative inference compute output duration in microseconds (0: outputs are views)")
        pending = Metric("nv_inference_pending_request_count",
                         "Instantaneous number of pending requests awaiting execution per-model.", "gauge")
        for entry in sorted(self.repository.entries.values(), key=lambda e: e.name):
            pipeline = entry.pipeline
            if pipeline is None:
                continue
            labels = {"model": entry.name, "version": str(pipeline.plan.version)}
            stats = pipeline.stats
            statistics = model_statistics(pipeline)
            inference = statistics.inference_stats

            add = partial(_add, labels=labels)
            add(success, stats.success)
            reasons = dict.fromkeys(TRITON_REASONS, 0)
            for status, n in stats.failure.items():
                reasons[FAILURE_REASONS.get(status, "OTHER")] += n
            for reason, n in reasons.items():
                failure.add_sample(failure.name, {"model": entry.name, "reason": reason,
                                                  "version": labels["version"]}, n)
            add(count, statistics.inference_count)
            add(executions, statistics.execution_count)
            add(request_us, inference.success.ns // 1000)
            add(queue_us, inference.queue.ns // 1000)
            add(input_us, inference.compute_input.ns // 1000)
            add(infer_us, inference.compute_infer.ns // 1000)
            add(output_us, inference.compute_output.ns // 1000)
            add(pending, pipeline.in_flight)
        yield from (success, failure, count, executions, request_us, queue_us, input_us, infer_us, output_us,
                    pending)


_TRITON_COUNTER_HEADER = re.compile(
    r"^# (HELP|TYPE) (" + "|".join(n for n, k in TRITON_METRICS.items() if k == "counter") + r")_total ",
    flags=re.MULTILINE)


def _exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text of ``registry``, with Triton's counters named as Triton names them.

    prometheus_client writes every counter's HELP and TYPE lines as ``NAME_total``;
    Triton's counters (``nv_inference_request_success`` ...) have no such suffix, and
    their samples here have none either, so those two lines are renamed to match.
    """
    text = generate_latest(registry).decode("utf-8")
    return _TRITON_COUNTER_HEADER.sub(r"# \1 \2 ", text).encode("utf-8")


def build_metrics_app(repository: Repository) -> web.Application:
    """The metrics application: ``GET /metrics`` in the Prometheus text format.

    dagserve's own families, Triton's per-model families beside them (so Triton
    dashboards and alerts carry over), and the standard ``process_*`` metrics.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PipelineCollector(repository))
    registry.register(TritonCollector(repository))
    registry.register(ProcessCollector(registry=None))

    async def metrics(request: web.Request) -> web.Response:
        body: Any = _exposition(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app
