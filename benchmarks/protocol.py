"""Figure 2, the protocol floor: ``identity`` on dagserve against a bare ``grpc.aio`` server.

The bare server (``bare_grpc_server.py``) answers the same ModelInfer with nothing
behind it, so the ratio dagserve / bare is the share of the transport's own
ceiling that dagserve keeps while running a real (one-node) pipeline: request
parsing and validation, queueing, batching, dispatch, response encoding.
Target: >= 0.8 at concurrency 1 and 16. Triton's one-step python-backend
ensemble is measured alongside for context (full mode).

All servers are up at once and take turns at each level (``_common.interleaved``);
each repetition restarts them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks._common import Settings, aggregate, interleaved, paired_ratio, save
from benchmarks._proc import Managed
from benchmarks._servers import REPO, prepare_triton_repo, start_bare, start_dagserve, start_triton

__all__ = ["run"]

LEVELS = (1, 16)
SHAPE = "INPUT0:16"
TARGET = 0.8


def run(settings: Settings) -> dict[str, Any]:
    """Measure, save ``out/protocol.json``, return it."""
    triton_repo = prepare_triton_repo(settings.logs / "triton_identity", ["identity", "identity_step"], 1)
    starters: dict[str, Callable[[str], Managed]] = {
        "bare": lambda tag: start_bare(settings.logs / f"{tag}.log"),
        "dagserve": lambda tag: start_dagserve([REPO / "pipelines" / "identity.yaml"], settings.logs / f"{tag}.log"),
    }
    if not settings.quick:
        starters["triton"] = lambda tag: start_triton(settings.peers, triton_repo, settings.logs / f"{tag}.log")
    trials = interleaved(settings, starters, "identity", LEVELS, "protocol", shape=SHAPE)
    data = {
        "levels": list(LEVELS),
        "reps": settings.reps,
        "interval_ms": settings.interval_ms,
        "windows": settings.windows,
        "results": aggregate(trials),
    }
    judge(data)
    save("protocol", data)
    return data


def judge(data: dict[str, Any]) -> None:
    """dagserve / bare per level (median of per-repetition ratios) and the verdict, into ``data``."""
    table = data["results"]
    ratios = {c: paired_ratio(table, "dagserve", "bare", c) for c in table["dagserve"]}
    data["ratio_dagserve_to_bare"] = ratios
    data["target"] = TARGET
    data["meets_target"] = all(r is not None and r >= TARGET for r in ratios.values())
