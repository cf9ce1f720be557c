"""Figure 4, batching: ``detect`` throughput and p99 over the detector node's batching settings.

One variant spec per (``max_batch_size``, ``max_queue_delay_us``) of the detector
node, everything else as in the real spec, written to a temporary pipeline
repository (the model files are copied along, since a spec's paths may not leave
its repository). One ``dagserve serve`` process serves every variant; each
repetition visits the variants in a rotated order, at a fixed concurrency.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from benchmarks._common import Settings, Trial, aggregate, log, measure, save, warmup
from benchmarks._detect import DetectSetup
from benchmarks._proc import running
from benchmarks._servers import settle, start_dagserve

__all__ = ["run", "write_variants"]

CONCURRENCY = 8


def _grid(quick: bool, max_batch: int) -> tuple[list[int], list[int]]:
    sizes = [1, 4, 8] if quick else [1, 4, 8, 16]
    delays = [0, 2000] if quick else [0, 2000, 8000]
    return sorted({min(s, max_batch) for s in sizes}), delays


def write_variants(setup: DetectSetup, dst: Path, sizes: list[int], delays: list[int]) -> dict[str, tuple[int, int]]:
    """Write one spec per (batch size, delay) into ``dst``; return name -> (size, delay)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    root = Path(setup.plan.root)
    spec_dir = setup.spec.parent
    for rel in setup.plan.files:  # model files etc., at the same place relative to the variant specs
        src = root / rel
        if src.resolve() == setup.spec.resolve() or not src.is_file():
            continue
        target = dst / src.resolve().relative_to(spec_dir.resolve())
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
    doc = yaml.safe_load(setup.spec.read_text())
    node = setup.nodes["model.onnx"].name
    variants: dict[str, tuple[int, int]] = {}
    for size in sizes:
        for delay in delays:
            name = f"{setup.name}_b{size}_d{delay}"
            variant = dict(doc)
            variant["name"] = name
            variant["max_batch_size"] = max(int(doc.get("max_batch_size", 1)), 1)
            nodes = {k: dict(v) for k, v in doc["nodes"].items()}
            nodes[node]["batching"] = {**(nodes[node].get("batching") or {}), "max_batch_size": size,
                                       "max_queue_delay_us": delay}
            variant["nodes"] = nodes
            (dst / f"{name}.yaml").write_text(yaml.safe_dump(variant, sort_keys=False))
            variants[name] = (size, delay)
    return variants


def run(settings: Settings, setup: DetectSetup) -> dict[str, Any]:
    """Measure every variant; save ``out/batching.json``."""
    max_batch = 16
    sizes, delays = _grid(settings.quick, max_batch)
    variants = write_variants(setup, settings.logs / "batching_specs", sizes, delays)
    names = list(variants)
    server = start_dagserve(sorted((settings.logs / "batching_specs").glob("*.yaml")),
                            settings.logs / "batching-dagserve.log", timeout=300)
    trials: list[Trial] = []
    with running(server):
        for rep in range(settings.reps):
            shift = (rep * len(names)) // max(settings.reps, 1)
            order = names[shift:] + names[:shift]
            for name in order:
                log(f"batching rep {rep + 1}/{settings.reps}: {name}")
                tag = f"batching-{name}-{rep}"
                if rep == 0:
                    warmup(settings, server, name, CONCURRENCY, tag, input_data=setup.input_json)
                trials.append(Trial(name, rep, measure(settings, server, name, (CONCURRENCY,), tag,
                                                       input_data=setup.input_json)))
    settle()
    table = aggregate(trials)
    grid = [{"max_batch_size": variants[n][0], "max_queue_delay_us": variants[n][1],
             "throughput": table[n][CONCURRENCY]["throughput"], "p50_ms": table[n][CONCURRENCY]["p50_ms"],
             "p99_ms": table[n][CONCURRENCY]["p99_ms"], "foreign_cores": table[n][CONCURRENCY]["foreign_cores"]}
            for n in names]
    data = {"concurrency": CONCURRENCY, "reps": settings.reps, "sizes": sizes, "delays_us": delays,
            "grid": grid, "results": table}
    save("batching", data)
    return data
