"""Compile-time benchmark: generated pipelines of 10 to 10,000 nodes.

The generated pipelines are a realistic mix for a large ensemble: long chains of
scalar tensor ops, fan-in through ``tensor.concat`` (then sliced back to size),
fan-out (a node read by several others), casts and transposes, and image groups
(``image.decode -> image.resize -> image.normalize``) that feed the tensor part.
Every node reaches an output, so nothing is dead.

For each size it measures the median wall time of several runs (and the median
CPU time of this process, which other work on a shared machine does not inflate):

* ``load``: read the YAML and check it against the schema (``parse_spec``);
* ``validate``: everything ``dagserve validate`` does (``compile_file``);
* ``compile``: ``validate`` plus writing the canonical plan JSON and its hash
  (``dagserve compile -o``), for the CPU and the GPU target.

Targets (on the 2-core CI machine): 1,000 nodes under 1 s, 10,000 under 10 s.

Usage::

    python benchmarks/compile_bench.py            # 10, 100, 1000, 10000 nodes
    python benchmarks/compile_bench.py --sizes 1000 --repeat 3 --profile

Writes ``benchmarks/out/compile.json``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dagserve.compiler import compile_file
from dagserve.compiler.context import CompileOptions
from dagserve.spec.document import parse_spec

TARGETS_S = {1000: 1.0, 10000: 10.0}
OUT = Path(__file__).resolve().parent / "out" / "compile.json"


def generate(n: int, seed: int = 0) -> str:
    """A pipeline spec with exactly ``n`` nodes (YAML text); every node reaches an output."""
    rng = random.Random(seed)
    body: list[str] = []
    produced: list[str] = []  # every node's output reference, in order
    consumed: set[str] = set()
    tensors: list[str] = []  # producers of float32[4,8], the family most ops read

    def node(name: str, op: str, inputs: list[str], params: str | None = None, port: str = "y",
             variadic: bool = False) -> str:
        consumed.update(inputs)
        refs = f"[{', '.join(inputs)}]" if variadic else inputs[0]
        port_name = _PORT.get(op, "x")
        body.extend([f"  {name}:", f"    op: {op}", f"    inputs: {{{port_name}: {refs}}}"])
        if params:
            body.append(f"    params: {params}")
        produced.append(f"{name}.{port}")
        return f"{name}.{port}"

    def pick() -> str:
        return rng.choice(tensors[-16:]) if tensors else "inputs.x"

    uses_image = n >= 6
    i = 0
    while len(produced) < n:
        left, roll = n - len(produced), rng.random()
        if (roll < 0.04 or (uses_image and i == 0)) and left >= 6:
            # an image group: decode -> resize -> normalize (CHW float) -> slice a plane -> HWC -> cast
            image = node(f"decode{i}", "image.decode", ["inputs.image"], port="image")
            image = node(f"resize{i}", "image.resize", [image], "{size: [4, 8]}", port="image")
            image = node(f"norm{i}", "image.normalize", [image], "{scale: 1/255, layout: chw}", port="image")
            plane = node(f"plane{i}", "tensor.slice", [image], "{axis: 0, stop: 1}")
            hwc = node(f"hwc{i}", "tensor.transpose", [plane], "{perm: [1, 2, 0]}")
            node(f"half{i}", "tensor.cast", [hwc], "{dtype: float16}")
        elif roll < 0.20 and left >= 2 and len(tensors) >= 2:
            joined = node(f"cat{i}", "tensor.concat", [pick() for _ in range(rng.randint(2, 4))], "{axis: 0}",
                          variadic=True)
            tensors.append(node(f"cut{i}", "tensor.slice", [joined], "{axis: 0, start: 0, stop: 4}"))
        elif roll < 0.25 and left >= 2:
            flipped = node(f"tr{i}", "tensor.transpose", [pick()], "{perm: [1, 0]}")
            tensors.append(node(f"back{i}", "tensor.transpose", [flipped], "{perm: [1, 0]}"))
        else:
            op = rng.choice(["math.add", "math.mul", "tensor.identity"])
            params = f"{{value: {rng.randint(1, 9)}}}" if op != "tensor.identity" else None
            tensors.append(node(f"op{i}", op, [pick()], params))
        i += 1
    sinks = [ref for ref in produced if ref not in consumed]
    inputs = ["  x: {dtype: float32, shape: [4, 8]}"]
    if uses_image:
        inputs.insert(0, "  image: {dtype: bytes, shape: []}")
    if "inputs.x" not in consumed:
        sinks.append("inputs.x")
    head = ["dagserve: 1", f"name: generated_{n}", "max_batch_size: 8", "inputs:", *inputs, "outputs:"]
    head += [f"  out{k}: {ref}" for k, ref in enumerate(sinks)]
    return "\n".join([*head, "nodes:", *body]) + "\n"


_PORT = {"image.decode": "data", "image.resize": "image", "image.normalize": "image"}


def _median(fn, repeat: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Median wall time and median CPU time of this process, in seconds.

    Both are reported: on a shared 2-core machine other work inflates wall time,
    while CPU time is what the compiler itself costs.
    """
    wall, cpu = [], []
    for _ in range(repeat):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def bench(sizes: list[int], repeat: int, profile: bool) -> dict[str, object]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            path = Path(tmp) / f"gen_{n}.yaml"
            path.write_text(generate(n), encoding="utf-8")
            reps = repeat if n < 10000 else max(3, repeat // 2)
            check = compile_file(str(path), CompileOptions(target="cpu"), root=tmp)
            errors = [d.one_line() for d in check.diagnostics]
            if errors or check.plan is None:
                raise SystemExit(f"generated pipeline of {n} nodes does not compile cleanly: {errors[:5]}")
            n_nodes = len(check.plan.nodes)

            def load(path: Path = path) -> None:
                parse_spec(path, tmp)

            def validate(path: Path = path, target: str = "cpu") -> None:
                compile_file(str(path), CompileOptions(target=target), root=tmp)

            def full(path: Path = path, target: str = "cpu") -> None:
                result = compile_file(str(path), CompileOptions(target=target), root=tmp)
                assert result.plan is not None
                result.plan.to_json()

            row: dict[str, object] = {"nodes": n, "plan_nodes_cpu": n_nodes,
                                      "spec_lines": path.read_text().count("\n"), "repeat": reps}
            for key, fn in (("load", load), ("validate", validate), ("compile_target_cpu", full),
                            ("compile_target_gpu", lambda full=full: full(target="gpu"))):
                row[f"{key}_s"], row[f"{key}_cpu_time_s"] = _median(fn, reps)
            target = TARGETS_S.get(n)
            row["target_s"] = target
            slowest = max(row["compile_target_cpu_s"], row["compile_target_gpu_s"])  # type: ignore[type-var]
            row["meets_target"] = None if target is None else slowest < target
            rows.append(row)
            print(_row(row), flush=True)
            if profile:
                prof = cProfile.Profile()
                prof.enable()
                full()
                prof.disable()
                pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    return {
        "benchmark": "compile",
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "results": rows,
    }


HEADER = (f"{'nodes':>7} {'load':>9} {'validate':>9} {'compile(cpu)':>12} {'compile(gpu)':>12}"
          f" {'(cpu time)':>11}  target")


def _row(r: dict[str, object]) -> str:
    def ms(x: object) -> str:
        return f"{float(x) * 1000:7.1f}ms"  # type: ignore[arg-type]

    verdict = "" if r["target_s"] is None else ("ok" if r["meets_target"] else "MISSED") + f" (< {r['target_s']} s)"
    return (f"{r['nodes']:>7} {ms(r['load_s']):>9} {ms(r['validate_s']):>9} {ms(r['compile_target_cpu_s']):>12} "
            f"{ms(r['compile_target_gpu_s']):>12} {ms(r['compile_target_gpu_cpu_time_s']):>11}  {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (median); halved at 10,000")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one compile per size")
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    print(HEADER)
    doc = bench(args.sizes, args.repeat, args.profile)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.output}")
    missed = [r["nodes"] for r in doc["results"] if r["meets_target"] is False]  # type: ignore[index]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
