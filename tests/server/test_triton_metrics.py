"""Triton's per-model metric families and the process metrics, beside dagserve's own.

Checked against what Triton itself exports (docs/user_guide/metrics.md of
triton-inference-server/server): the names, counters without ``_total``, the
``model``/``version`` labels, the ``reason`` label of failures, and the pending
request count as a gauge.
"""

from __future__ import annotations

import asyncio
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from prometheus_client.parser import text_string_to_metric_families

from dagserve.server.metrics import PROCESS_METRICS, TRITON_METRICS

from ._server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "server.md"


def scrape_text(server: ServerProcess) -> str:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        return response.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The one sample ``name`` with exactly these labels.

    prometheus_client's parser calls a counter's sample ``NAME_total`` even where the
    text has no suffix (as Triton's has not); the raw text is checked separately.
    """
    found = [s.value for family in text_string_to_metric_families(text) for s in family.samples
             if s.name in (name, f"{name}_total") and s.labels == labels]
    assert len(found) == 1, (name, labels, found)
    return float(found[0])


def test_triton_families_are_named_and_typed_as_triton_does(live_server: ServerProcess) -> None:
    text = scrape_text(live_server)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, kind in TRITON_METRICS.items():
        # Triton's text: '# TYPE nv_inference_count counter' and samples named the same, no '_total'
        assert re.search(rf"^# TYPE {name} {kind}$", text, flags=re.MULTILINE), name
        assert families[name].type == kind
        labelled = [s for s in families[name].samples if s.labels.get("model") == "add_mul"]
        assert labelled and all(s.labels["version"] == "1" for s in labelled)
        assert re.search(rf'^{name}{{model="add_mul",(reason="[A-Z]+",)?version="1"}} ', text, flags=re.MULTILINE)
    assert "_total" not in "".join(line for line in text.splitlines() if line.startswith(("# TYPE nv_", "nv_")))
    reasons = {s.labels["reason"] for s in families["nv_inference_request_failure"].samples
               if s.labels["model"] == "add_mul"}
    assert reasons == {"REJECTED", "CANCELED", "BACKEND", "OTHER"}
    if sys.platform.startswith("linux"):
        for name, kind in PROCESS_METRICS.items():
            family = families[name.removesuffix("_total") if kind == "counter" else name]
            assert family.type == kind
        assert sample(text, "process_resident_memory_bytes") > 0


def test_triton_counts_follow_requests(grpc_client: grpcclient.InferenceServerClient,
                                       live_server: ServerProcess) -> None:
    m = {"model": "add_mul", "version": "1"}
    before = scrape_text(live_server)
    tensor = grpcclient.InferInput("INPUT0", [4, 16], "FP32")
    tensor.set_data_from_numpy(np.ones((4, 16), dtype=np.float32))
    for _ in range(3):
        grpc_client.infer("add_mul", [tensor])
    bad = grpcclient.InferInput("INPUT0", [1, 15], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 15), dtype=np.float32))
    with pytest.raises(grpcclient.InferenceServerException):
        grpc_client.infer("add_mul", [bad])
    after = scrape_text(live_server)

    def delta(name: str, **extra: str) -> float:
        return sample(after, name, **m, **extra) - sample(before, name, **m, **extra)

    assert delta("nv_inference_request_success") == 3
    assert delta("nv_inference_count") == 12
    assert delta("nv_inference_exec_count") == 3
    assert delta("nv_inference_request_failure", reason="OTHER") == 1
    assert delta("nv_inference_request_failure", reason="BACKEND") == 0
    assert delta("nv_inference_request_duration_us") > 0
    assert delta("nv_inference_compute_infer_duration_us") > 0
    assert delta("nv_inference_queue_duration_us") >= 0
    assert sample(after, "nv_inference_pending_request_count", **m) == 0
    # the same numbers as the statistics API, as on Triton
    stats = grpc_client.get_inference_statistics("add_mul").model_stats[0]
    assert sample(after, "nv_inference_request_success", **m) == stats.inference_stats.success.count
    assert sample(after, "nv_inference_count", **m) == stats.inference_count
    assert sample(after, "nv_inference_request_duration_us", **m) == stats.inference_stats.success.ns // 1000


def test_timeouts_and_full_queues_are_rejected_and_pending_counts_waiting_requests(
        live_server: ServerProcess) -> None:
    """``slow`` runs 0.3 s per item with a queue of one: one runs, one waits and expires, one is refused."""
    m = {"model": "slow", "version": "1"}
    before = scrape_text(live_server)
    peak = [0.0]
    done = threading.Event()

    def watch() -> None:  # the gauge while requests are in flight, polled until they finish
        while not done.is_set():
            peak[0] = max(peak[0], sample(scrape_text(live_server), "nv_inference_pending_request_count", **m))
            done.wait(0.02)

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
            await asyncio.gather(one(0, None), one(1, 150_000), one(2, None))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        done.set()
        watcher.join(30)
    deadline = time.monotonic() + 10
    while True:  # the expired item leaves the node's queue once the running one finishes
        after = scrape_text(live_server)
        if sample(after, "nv_inference_pending_request_count", **m) == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)

    def delta(name: str, **extra: str) -> float:
        return sample(after, name, **m, **extra) - sample(before, name, **m, **extra)

    assert delta("nv_inference_request_failure", reason="REJECTED") >= 2  # expired + refused
    assert delta("nv_inference_request_success") >= 1
    assert peak[0] >= 1
    assert sample(after, "nv_inference_pending_request_count", **m) == 0


def test_docs_map_every_triton_and_process_metric() -> None:
    text = DOCS.read_text(encoding="utf-8")
    (section,) = [part for part in text.split("\n## ") if part.startswith("Prometheus metrics")]
    documented = set(re.findall(r"^\| `((?:nv|process)_[a-z_]+)` \|", section, flags=re.MULTILINE))
    expected = set(TRITON_METRICS) | set(PROCESS_METRICS)
    assert expected <= documented, f"docs/server.md does not document: {sorted(expected - documented)}"
    assert documented <= expected, f"docs/server.md documents metrics that do not exist: {documented - expected}"
