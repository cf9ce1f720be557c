"""Figure 3, Triton side by side: the same pipelines, the same client, the same machine.

``add_mul`` (two element-wise steps) and ``detect`` (decode -> letterbox ->
detector -> NMS) run on dagserve and, as ensembles of python-backend models
running the same code (``benchmarks/triton_repo``), on Triton 2.51 with one and
with two instances per step. perf_analyzer drives each at concurrency 1, 2, 4, 8,
16. All three servers are up at once and take turns at each level (see
``_common.interleaved``); every repetition restarts them all.

Targets: dagserve >= 1.5x Triton's throughput on ``detect`` at concurrency >= 4
with a p99 no worse, and >= 1x on ``add_mul``. "Triton" in the ratios is Triton
at its best instance count for that pipeline (the higher median throughput over
the levels >= 4).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import _detect
from benchmarks._common import Settings, aggregate, interleaved, paired_ratio, ratio, save
from benchmarks._detect import DetectSetup
from benchmarks._proc import Managed
from benchmarks._servers import REPO, prepare_triton_repo, start_dagserve, start_triton

__all__ = ["run"]

TARGETS = {"detect": 1.5, "add_mul": 1.0}


def _triton(settings: Settings, repo: Path, who: str, tag: str) -> Managed:
    return start_triton(settings.peers, repo, settings.logs / f"{tag}.log", name=who)


def compare(settings: Settings, pipeline: str, spec: Path, repos: dict[str, Path], *, shape: str | None = None,
            input_data: Path | None = None, min_level: int) -> dict[str, Any]:
    """Measure every contestant on ``pipeline``; medians, ratios and the verdict."""
    starters: dict[str, Callable[[str], Managed]] = {
        "dagserve": lambda tag: start_dagserve([spec], settings.logs / f"{tag}.log"),
        **{who: functools.partial(_triton, settings, repo, who) for who, repo in repos.items()},
    }
    trials = interleaved(settings, starters, pipeline, settings.concurrency, f"sbs-{pipeline}", shape=shape,
                         input_data=input_data)
    return judge(pipeline, aggregate(trials), list(settings.concurrency), min_level)


def judge(pipeline: str, table: dict[str, Any], levels: list[Any], min_level: int) -> dict[str, Any]:
    """Ratios against Triton's better instance count, and the verdict.

    The throughput ratio is the median of per-repetition ratios (see ``paired_ratio``);
    p50/p99 and CPU ratios are of medians.
    """
    high = [c for c in levels if int(c) >= min_level]

    def score(who: str) -> float:
        return sum(table[who][c]["throughput"] or 0.0 for c in high)

    best = max(("triton-1", "triton-2"), key=score)
    rows: list[dict[str, Any]] = []
    for c in levels:
        d, t = table["dagserve"][c], table[best][c]
        rows.append({
            "concurrency": int(c),
            "throughput_ratio": paired_ratio(table, "dagserve", best, c),
            "p99_ratio": ratio(d["p99_ms"], t["p99_ms"]),
            "p50_ratio": ratio(d["p50_ms"], t["p50_ms"]),
            "cpu_efficiency_ratio": ratio(t.get("cpu_ms_per_req"), d.get("cpu_ms_per_req")),
        })
    target = TARGETS[pipeline]
    judged = [r for r in rows if r["concurrency"] >= min_level]
    meets = all(r["throughput_ratio"] is not None and r["throughput_ratio"] >= target for r in judged)
    if pipeline == "detect":
        meets = meets and all(r["p99_ratio"] is not None and r["p99_ratio"] <= 1.0 for r in judged)
    return {"results": table, "triton_best": best, "ratios": rows, "target": target, "judged_from": min_level,
            "meets_target": meets}


def run(settings: Settings, setup: DetectSetup | None) -> dict[str, Any]:
    """Both pipelines (``detect`` only when its spec and model exist); save ``out/side_by_side.json``."""
    data: dict[str, Any] = {"reps": settings.reps, "levels": list(settings.concurrency),
                            "interval_ms": settings.interval_ms, "windows": settings.windows}
    repos = {f"triton-{n}": prepare_triton_repo(settings.logs / f"triton_add_mul_{n}", ["add_mul", "add_one",
                                                                                        "mul_two"], n)
             for n in (1, 2)}
    data["add_mul"] = compare(settings, "add_mul", REPO / "pipelines" / "add_mul.yaml", repos, min_level=1)
    if setup is not None:
        repos = {f"triton-{n}": _detect.triton_repo(setup, settings.logs / f"triton_detect_{n}", n) for n in (1, 2)}
        data["detect"] = compare(settings, "detect", setup.spec, repos, input_data=setup.input_json, min_level=4)
    else:
        data["detect"] = None
        settings.notes.append("side by side: detect skipped (no pipelines/detect.yaml or detector yet)")
    save("side_by_side", data)
    return data
