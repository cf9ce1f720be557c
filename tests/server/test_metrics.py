"""The Prometheus endpoint after real traffic, and its documentation."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from prometheus_client.parser import text_string_to_metric_families

from dagserve.server.metrics import METRICS

from ._server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]  # a server start can take 30 s on a busy machine

DOCS = Path(__file__).resolve().parents[2] / "docs" / "server.md"


def scrape(server: ServerProcess) -> dict[str, Any]:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(families: dict[str, Any], family: str, sample: str, **labels: str) -> list[float]:
    """Values of the samples called ``sample`` of ``family`` that carry these labels."""
    return [float(s.value) for s in families[family].samples
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]


def value(families: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    """The value of the one sample called ``sample`` of ``family`` with these labels."""
    found = samples(families, family, sample, **labels)
    assert len(found) == 1, (family, sample, labels, families[family].samples)
    return found[0]


def test_metrics_after_traffic(grpc_client: grpcclient.InferenceServerClient, live_server: ServerProcess) -> None:
    before = scrape(live_server)
    tensor = grpcclient.InferInput("INPUT0", [4, 16], "FP32")
    tensor.set_data_from_numpy(np.zeros((4, 16), dtype=np.float32))
    for _ in range(6):
        grpc_client.infer("add_mul", [tensor])
    bad = grpcclient.InferInput("INPUT0", [1, 15], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 15), dtype=np.float32))
    with pytest.raises(grpcclient.InferenceServerException):
        grpc_client.infer("add_mul", [bad])
    after = scrape(live_server)

    # Prometheus' parser drops the _total suffix from counter family names.
    names = {n if METRICS.get(n) != "counter" else n.removesuffix("_total") for n in METRICS}
    assert names <= set(after), names - set(after)
    for name, kind in METRICS.items():
        family = after[name if kind != "counter" else name.removesuffix("_total")]
        assert family.type == kind, (name, family.type)

    def delta(family: str, sample: str, **labels: str) -> float:
        return value(after, family, sample, **labels) - value(before, family, sample, **labels)

    p = {"pipeline": "add_mul"}
    assert delta("dagserve_requests", "dagserve_requests_total", status="OK", **p) == 6
    assert value(after, "dagserve_requests", "dagserve_requests_total", status="INVALID_ARGUMENT", **p) >= 1
    assert delta("dagserve_request_items", "dagserve_request_items_total", **p) == 24
    assert delta("dagserve_request_duration_seconds", "dagserve_request_duration_seconds_count", **p) == 6
    assert delta("dagserve_request_duration_seconds", "dagserve_request_duration_seconds_sum", **p) > 0
    assert value(after, "dagserve_pipeline_ready", "dagserve_pipeline_ready", **p) == 1
    for node in ("add_one", "double"):
        n = {**p, "node": node}
        assert delta("dagserve_node_items", "dagserve_node_items_total", **n) == 24
        batches = delta("dagserve_node_batches", "dagserve_node_batches_total", **n)
        assert 1 <= batches <= 6
        assert delta("dagserve_node_batch_size", "dagserve_node_batch_size_count", **n) == batches
        assert delta("dagserve_node_batch_size", "dagserve_node_batch_size_sum", **n) == 24
        assert delta("dagserve_node_batch_size", "dagserve_node_batch_size_bucket", le="2.0", **n) == 0
        assert delta("dagserve_node_batch_size", "dagserve_node_batch_size_bucket", le="+Inf", **n) == batches
        dispatched = sum(delta("dagserve_node_dispatch", "dagserve_node_dispatch_total", reason=r, **n)
                         for r in ("full", "preferred", "delay"))
        assert dispatched == batches
        assert delta("dagserve_node_queue_duration_seconds", "dagserve_node_queue_duration_seconds_count", **n) == 24
        assert delta("dagserve_node_compute_duration_seconds",
                     "dagserve_node_compute_duration_seconds_count", **n) == batches
        assert delta("dagserve_node_busy_seconds", "dagserve_node_busy_seconds_total", **n) > 0
        assert value(after, "dagserve_node_queue_depth", "dagserve_node_queue_depth", **n) == 0
        assert value(after, "dagserve_node_instances_busy", "dagserve_node_instances_busy", **n) == 0
        assert value(after, "dagserve_node_instances", "dagserve_node_instances", **n) == 1
        for reason in ("expired", "cancelled"):
            assert value(after, "dagserve_node_dropped", "dagserve_node_dropped_total", reason=reason, **n) >= 0
        assert value(after, "dagserve_node_rejected", "dagserve_node_rejected_total", **n) == 0
        assert value(after, "dagserve_node_failures", "dagserve_node_failures_total", **n) == 0
    # The histograms' buckets are cumulative and end at the count.
    samples = [s for s in after["dagserve_request_duration_seconds"].samples
               if s.name.endswith("_bucket") and s.labels["pipeline"] == "add_mul"]
    counts = [s.value for s in samples]
    assert counts == sorted(counts) and samples[-1].labels["le"] == "+Inf"


def test_rejections_and_expiries_are_counted(live_server: ServerProcess) -> None:
    """A full queue and a deadline on ``slow`` show up in the request and node counters."""
    before = scrape(live_server)

    async def main() -> None:
        async with grpcaio.InferenceServerClient(live_server.grpc_url) as client:
            async def one(i: int, timeout: int | None) -> None:
                tensor = grpcaio.InferInput("X", [1, 4], "FP32")
                tensor.set_data_from_numpy(np.zeros((1, 4), dtype=np.float32))
                await asyncio.sleep(0.05 * i)
                try:
                    await client.infer("slow", [tensor], timeout=timeout)
                except grpcclient.InferenceServerException:
                    pass
            # runs 0.3 s; waits in the queue and expires there (150 ms); refused (queue full)
            await asyncio.gather(one(0, None), one(1, 150_000), one(2, None))
            await asyncio.sleep(0.4)

    asyncio.run(asyncio.wait_for(main(), 30))
    after = scrape(live_server)
    p = {"pipeline": "slow"}
    n = {**p, "node": "nap"}

    def delta(family: str, sample: str, **labels: str) -> float:
        return value(after, family, sample, **labels) - sum(samples(before, family, sample, **labels))

    assert delta("dagserve_requests", "dagserve_requests_total", status="RESOURCE_EXHAUSTED", **p) >= 1
    assert delta("dagserve_requests", "dagserve_requests_total", status="DEADLINE_EXCEEDED", **p) == 1
    assert delta("dagserve_node_rejected", "dagserve_node_rejected_total", **n) >= 1
    dropped = sum(delta("dagserve_node_dropped", "dagserve_node_dropped_total", reason=r, **n)
                  for r in ("expired", "cancelled"))
    assert dropped == 1, "the expired item left the queue unrun and was counted"


def test_docs_describe_every_metric() -> None:
    text = DOCS.read_text(encoding="utf-8")
    (section,) = [part for part in text.split("\n## ") if part.startswith("Prometheus metrics")]
    documented = set(re.findall(r"^\| `(dagserve_[a-z_]+)` \|", section, flags=re.MULTILINE))
    missing = set(METRICS) - documented
    assert not missing, f"docs/server.md does not document: {sorted(missing)}"
    unknown = documented - set(METRICS)
    assert not unknown, f"docs/server.md documents metrics that do not exist: {sorted(unknown)}"
