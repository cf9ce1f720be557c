"""Runtime benchmark: scheduling overhead per request, ONNX batching throughput, instance scaling.

Run it with ``python benchmarks/runtime_bench.py`` (``--quick`` for a smoke run). It
writes ``benchmarks/out/runtime.json`` and prints a table.

1. **Scheduling overhead**: a chain of five no-op nodes (each returns its input
   object), one item of float32[16] per request, at concurrency 1 (one request at
   a time) and 64 (64 clients, each sending its next request when the last one
   returns). The kernels cost ~0.1 µs, so the time per request *is* the runtime's
   overhead: validation, queueing, dispatch, hand-offs, output assembly. Three
   modes: kernels pinned to the event loop (``inline``), kept in the thread pool
   (``pool``: adaptation switched off), and the default (``adaptive``: starts in the
   pool, moves cheap kernels to the loop after 8 batches). ``us_per_request`` is
   wall time / requests (at concurrency 64 that is the inverse of throughput);
   ``p50_latency_us`` is the median request latency. Each number is the median of
   several runs.
2. **ONNX throughput** (needs ``dagserve/backends/onnxruntime_backend.py``): a small
   CNN built here with ``onnx.helper`` (float32[N,3,64,64] -> 3 convolutions ->
   global pooling -> 10 logits, ~11 M multiply-adds per item), one item per
   request, 64 concurrent clients; node batching off (``max_batch_size: 1``) vs on
   (up to 32), and ``instances: 1`` vs ``2`` (ONNX Runtime with one intra-op
   thread per instance, on a 2-core machine).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

from dagserve.compiler.context import CompileOptions
from dagserve.compiler.driver import compile_file
from dagserve.compiler.plan import Plan
from dagserve.ops.base import InferContext, KernelContext, OpDef, PortDef
from dagserve.ops.registry import OpRegistry, default_registry
from dagserve.runtime import node as node_module
from dagserve.runtime.pipeline import Pipeline
from dagserve.types import TensorType

OUT = Path(__file__).resolve().parent / "out" / "runtime.json"

# -- the no-op op -----------------------------------------------------------------------------


class NoopKernel:
    """Returns its input object: costs nothing, so what is measured is the runtime."""

    per_item = False

    def __init__(self, ctx: KernelContext) -> None:
        if ctx.params.get("inline"):
            self.inline = True

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"y": inputs["x"]}


def noop(ctx: KernelContext) -> NoopKernel:
    return NoopKernel(ctx)


def _same(ctx: InferContext) -> dict[str, TensorType]:
    x = ctx.inputs.get("x")
    return {"y": x} if isinstance(x, TensorType) else {}


def bench_registry() -> OpRegistry:
    """Built-in ops plus ``bench.noop``."""
    registry = OpRegistry()
    for op in default_registry():
        registry.register(op)
    registry.register(OpDef(
        name="bench.noop", summary="returns its input", inputs=(PortDef("x"),), outputs=(PortDef("y"),),
        infer=_same, kernel=f"{__name__}:noop",
        params_schema={"type": "object", "additionalProperties": False,
                       "properties": {"inline": {"type": "boolean"}}},
    ))
    return registry


def compile_text(text: str, directory: Path, registry: OpRegistry | None = None) -> Plan:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "spec.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    result = compile_file(str(path), CompileOptions(target="cpu"), root=str(directory), registry=registry)
    if result.plan is None:
        raise SystemExit("\n".join(d.one_line() for d in result.diagnostics))
    return result.plan


def noop_chain_spec(inline: bool) -> str:
    nodes = []
    for k in range(5):
        source = "inputs.x" if k == 0 else f"n{k - 1}.y"
        nodes.append(f"  n{k}: {{op: bench.noop, inputs: {{x: {source}}}, params: {{inline: {str(inline).lower()}}}}}")
    return "\n".join([
        "dagserve: 1", "name: noop5", "max_batch_size: 64",
        "inputs:", "  x: {dtype: float32, shape: [16]}",
        "outputs:", "  y: n4.y",
        "nodes:", *nodes, "",
    ])


# -- drivers ----------------------------------------------------------------------------------


async def drive(pipeline: Pipeline, inputs: dict[str, Any], concurrency: int,
                total: int) -> tuple[float, float, float]:
    """``concurrency`` clients send ``total`` requests in all.

    Returns:
        (wall seconds per request, CPU seconds per request (all threads of the
        process), median latency in seconds).
    """
    latencies: list[float] = []
    per_client = total // concurrency

    async def client() -> None:
        for _ in range(per_client):
            t0 = time.perf_counter()
            await pipeline.infer_async(inputs)
            latencies.append(time.perf_counter() - t0)

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = per_client * concurrency
    return wall / n, cpu / n, statistics.median(latencies)


def direct_chain_us(n: int = 20000) -> float:
    """The five kernels called back to back with no runtime: the floor under the overhead."""
    kernels = [NoopKernel(KernelContext("n", "bench.noop", {}, None, True, {}, {})) for _ in range(5)]  # type: ignore[arg-type]
    x = {"x": np.zeros((1, 16), np.float32)}
    t0 = time.perf_counter()
    for _ in range(n):
        value = x
        for kernel in kernels:
            value = {"x": kernel(value)["y"]}
    return (time.perf_counter() - t0) / n * 1e6


async def _overhead_run(plan: Plan, registry: OpRegistry, x: dict[str, Any], concurrency: int,
                        total: int) -> tuple[float, float, float, float]:
    async with Pipeline(plan, registry=registry) as p:
        await drive(p, x, concurrency, min(total, 64 * 8))  # warm-up (and, adaptive, the move inline)
        first = p.runners["n0"].stats
        items0, batches0 = first.items, first.batches
        wall, cpu, latency = await drive(p, x, concurrency, total)
        return wall, cpu, latency, (first.items - items0) / max(1, first.batches - batches0)


def bench_overhead(directory: Path, runs: int, total: int) -> list[dict[str, Any]]:
    """Every configuration once per round, ``runs`` rounds: a shared machine's load drifts
    over all of them alike instead of favouring whichever ran in a quiet minute."""
    registry = bench_registry()
    x = {"x": np.zeros((1, 16), np.float32)}
    plans = {mode: compile_text(noop_chain_spec(inline=mode == "inline"), directory / mode, registry)
             for mode in ("inline", "pool", "adaptive")}
    configs = [(mode, concurrency) for mode in plans for concurrency in (1, 64)]
    all_samples: dict[tuple[str, int], list[tuple[float, float, float, float]]] = {c: [] for c in configs}
    for _ in range(runs):
        for mode, concurrency in configs:
            saved = node_module.INLINE_BELOW_NS
            if mode == "pool":
                node_module.INLINE_BELOW_NS = 0  # never move a kernel to the loop
            try:
                all_samples[(mode, concurrency)].append(
                    asyncio.run(_overhead_run(plans[mode], registry, x, concurrency, total)))
            finally:
                node_module.INLINE_BELOW_NS = saved
    rows = []
    for (mode, concurrency), samples in all_samples.items():
        rows.append({
            "mode": mode, "concurrency": concurrency, "requests": total, "runs": runs,
            "us_per_request": round(statistics.median(s[0] for s in samples) * 1e6, 1),
            "cpu_us_per_request": round(statistics.median(s[1] for s in samples) * 1e6, 1),
            "p50_latency_us": round(statistics.median(s[2] for s in samples) * 1e6, 1),
            "mean_batch_size": round(statistics.median(s[3] for s in samples), 2),
            "all_runs_us_per_request": [round(s[0] * 1e6, 1) for s in samples],
        })
    return rows


# -- ONNX -------------------------------------------------------------------------------------


def build_cnn(path: Path) -> None:
    """A small CNN: float32[N,3,64,64] -> logits float32[N,10]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> Any:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32), name)

    inits = [weight("w1", 16, 3, 3, 3), weight("b1", 16), weight("w2", 32, 16, 3, 3), weight("b2", 32),
             weight("w3", 64, 32, 3, 3), weight("b3", 64), weight("wf", 64, 10), weight("bf", 10)]
    nodes = [
        helper.make_node("Conv", ["images", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "cnn",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def cnn_spec(max_batch: int, instances: int, delay_us: int = 0) -> str:
    return f"""
    dagserve: 1
    name: cnn
    max_batch_size: 32
    inputs:
      images: {{dtype: float32, shape: [3, 64, 64]}}
    outputs:
      logits: model.logits
    nodes:
      model:
        op: model.onnx
        inputs: {{images: inputs.images}}
        params: {{path: cnn.onnx, intra_op_threads: 1}}
        instances: {instances}
        batching: {{max_batch_size: {max_batch}, max_queue_delay_us: {delay_us}}}
    """


async def _onnx_run(plan: Plan, x: dict[str, Any], total: int) -> tuple[float, float, float, float]:
    async with Pipeline(plan) as p:
        await drive(p, x, 64, 256)  # warm-up
        stats = p.runners["model"].stats
        items0, batches0 = stats.items, stats.batches
        wall, cpu, latency = await drive(p, x, 64, total)
        return wall, cpu, latency, (stats.items - items0) / max(1, stats.batches - batches0)


def bench_onnx(directory: Path, runs: int, total: int) -> list[dict[str, Any]]:
    build_cnn(directory / "cnn.onnx")
    x = {"images": np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)}
    configs = [
        ("no batching", 1, 1),
        ("batching <=32", 32, 1),
        ("no batching", 1, 2),
        ("batching <=32", 32, 2),
    ]
    plans = []
    for k, (_, max_batch, instances) in enumerate(configs):
        (directory / f"cnn{k}").mkdir()
        (directory / f"cnn{k}" / "cnn.onnx").write_bytes((directory / "cnn.onnx").read_bytes())
        plans.append(compile_text(cnn_spec(max_batch, instances, 0), directory / f"cnn{k}"))
    all_samples: list[list[tuple[float, float, float, float]]] = [[] for _ in configs]
    for _ in range(runs):  # interleaved, as in bench_overhead
        for k, plan in enumerate(plans):
            all_samples[k].append(asyncio.run(_onnx_run(plan, x, total)))
    rows = []
    for (label, max_batch, instances), samples in zip(configs, all_samples):
        rows.append({
            "config": label, "max_batch_size": max_batch, "instances": instances, "max_queue_delay_us": 0,
            "concurrency": 64, "requests": total, "runs": runs,
            "items_per_s": round(statistics.median(1.0 / s[0] for s in samples), 1),
            "cpu_ms_per_item": round(statistics.median(s[1] for s in samples) * 1e3, 3),
            "p50_latency_ms": round(statistics.median(s[2] for s in samples) * 1e3, 2),
            "mean_batch_size": round(statistics.median(s[3] for s in samples), 2),
            "all_runs_items_per_s": [round(1.0 / s[0], 1) for s in samples],
        })
    return rows


def single_call_ms(directory: Path) -> dict[str, float]:
    """ONNX Runtime alone (one thread, no dagserve): ms per call at batch 1 and 32."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(directory / "cnn.onnx"), options, providers=["CPUExecutionProvider"])
    out = {}
    for batch in (1, 32):
        x = np.random.default_rng(2).standard_normal((batch, 3, 64, 64)).astype(np.float32)
        for _ in range(5):
            session.run(None, {"images": x})
        times = []
        for _ in range(20 if batch == 1 else 5):
            t0 = time.perf_counter()
            session.run(None, {"images": x})
            times.append(time.perf_counter() - t0)
        out[f"batch_{batch}_ms"] = round(statistics.median(times) * 1e3, 3)
        out[f"batch_{batch}_items_per_s"] = round(batch / statistics.median(times), 1)
    return out


# -- report -----------------------------------------------------------------------------------


def print_table(doc: dict[str, Any]) -> None:
    print(f"\nScheduling overhead, 5-node no-op pipeline (median of {doc['overhead'][0]['runs']} runs; "
          f"kernels called directly: {doc['direct_chain_us']:.2f} us)")
    print(f"{'mode':<10}{'concurrency':>12}{'us/request':>12}{'cpu us/req':>12}{'p50 latency us':>16}"
          f"{'mean batch':>12}")
    for row in doc["overhead"]:
        print(f"{row['mode']:<10}{row['concurrency']:>12}{row['us_per_request']:>12.1f}"
              f"{row['cpu_us_per_request']:>12.1f}{row['p50_latency_us']:>16.1f}{row['mean_batch_size']:>12.2f}")
    if doc.get("onnx"):
        base = doc["onnx_runtime_alone"]
        print(f"\nONNX CNN, 1 item/request, 64 concurrent clients (ONNX Runtime alone, 1 thread: "
              f"batch 1 {base['batch_1_ms']} ms = {base['batch_1_items_per_s']} items/s; "
              f"batch 32 {base['batch_32_ms']} ms = {base['batch_32_items_per_s']} items/s)")
        print(f"{'config':<16}{'instances':>10}{'items/s':>10}{'cpu ms/item':>13}{'p50 ms':>9}{'mean batch':>12}")
        for row in doc["onnx"]:
            print(f"{row['config']:<16}{row['instances']:>10}{row['items_per_s']:>10.1f}"
                  f"{row['cpu_ms_per_item']:>13.3f}{row['p50_latency_ms']:>9.2f}{row['mean_batch_size']:>12.2f}")
    elif doc.get("onnx_skipped"):
        print(f"\nONNX: skipped ({doc['onnx_skipped']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and runs (a smoke test)")
    parser.add_argument("--runs", type=int, default=None, help="runs per measurement (median reported)")
    parser.add_argument("--out", default=str(OUT), help="where to write the JSON results")
    args = parser.parse_args(argv)
    runs = args.runs or (1 if args.quick else 5)
    doc: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_start": [round(v, 2) for v in os.getloadavg()]},
        "direct_chain_us": round(direct_chain_us(), 3),
    }
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        doc["overhead"] = bench_overhead(directory, runs, 640 if args.quick else 4096)
        backend = Path(__file__).resolve().parents[1] / "dagserve" / "backends" / "onnxruntime_backend.py"
        if not backend.exists() or importlib.util.find_spec("onnxruntime") is None:
            doc["onnx_skipped"] = "no ONNX Runtime backend in this checkout" if not backend.exists() \
                else "onnxruntime is not installed"
        else:
            doc["onnx"] = bench_onnx(directory, max(1, runs - 2), 512 if args.quick else 2048)
            doc["onnx_runtime_alone"] = single_call_ms(directory)
    doc["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print_table(doc)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
