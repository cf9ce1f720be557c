"""Property tests: random DAGs (and not-quite-DAGs) of tensor ops written as spec YAML.

* a spec compiles iff its graph is acyclic (networkx is the ground truth);
* every E-CYCLE path is a real cycle of the generated graph, and each cyclic
  strongly connected component is reported exactly once;
* shape inference through chains of concat/add/identity equals running the
  graph on real numpy arrays;
* mutated specs never crash the compiler (no exception, no E-INTERNAL).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagserve.compiler import compile_file
from dagserve.compiler.context import CompileOptions
from dagserve.diagnostics import CODES

from .conftest import SPECS

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OPS = ("tensor.identity", "math.add", "tensor.concat")


@dataclass(frozen=True)
class RandomGraph:
    """Node i has an op and reads producers (-1 = the pipeline input x)."""

    ops: tuple[str, ...]
    producers: tuple[tuple[int, ...], ...]
    rows: int | None  # rows of x; None: a symbolic dim 'R'
    cols: int

    def name(self, i: int) -> str:
        return "inputs.x" if i < 0 else f"n{i}"

    def edges(self) -> list[tuple[str, str]]:
        return [(self.name(p), self.name(i)) for i, ps in enumerate(self.producers) for p in ps if p >= 0]

    def networkx(self) -> nx.DiGraph:
        g = nx.DiGraph()
        g.add_nodes_from(self.name(i) for i in range(len(self.ops)))
        g.add_edges_from(self.edges())
        return g

    def yaml(self) -> str:
        rows = self.rows if self.rows is not None else "R"
        lines = [
            "dagserve: 1", "name: random", "max_batch_size: 2",
            "inputs:", f"  x: {{dtype: float32, shape: [{rows}, {self.cols}]}}",
            "outputs:", *(f"  o{i}: n{i}.y" for i in range(len(self.ops))),
            "nodes:",
        ]
        for i, (op, ps) in enumerate(zip(self.ops, self.producers)):
            refs = [f"{self.name(p)}" if p < 0 else f"{self.name(p)}.y" for p in ps]
            lines += [f"  n{i}:", f"    op: {op}"]
            if op == "tensor.concat":
                lines.append(f"    inputs: {{x: [{', '.join(refs)}]}}")
            else:
                lines.append(f"    inputs: {{x: {refs[0]}}}")
            if op == "math.add":
                lines.append("    params: {value: 1}")
        return "\n".join(lines) + "\n"


@st.composite
def random_graphs(draw: st.DrawFn, acyclic: bool | None = None) -> RandomGraph:
    """``acyclic=True``: producers only from earlier nodes; ``None``: anything goes."""
    n = draw(st.integers(1, 8))
    ops, producers = [], []
    for i in range(n):
        op = draw(st.sampled_from(OPS))
        choices = list(range(-1, i)) if acyclic else list(range(-1, n))
        k = draw(st.integers(1, 3)) if op == "tensor.concat" else 1
        producers.append(tuple(draw(st.sampled_from(choices)) for _ in range(k)))
        ops.append(op)
    rows = draw(st.one_of(st.none(), st.integers(1, 5)))
    return RandomGraph(tuple(ops), tuple(producers), rows, draw(st.integers(1, 4)))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("props")


def compile_graph(g: RandomGraph, workdir: Path):  # type: ignore[no-untyped-def]
    path = workdir / "random.yaml"
    path.write_text(g.yaml(), encoding="utf-8")
    return compile_file(str(path), CompileOptions(debug=True), root=str(workdir))


def cycle_path(message: str) -> list[str]:
    return message.rsplit(": ", 1)[1].split(" → ")


@SETTINGS
@given(random_graphs())
def test_spec_compiles_iff_its_graph_is_acyclic(workdir: Path, g: RandomGraph) -> None:
    result = compile_graph(g, workdir)
    errors = [d for d in result.diagnostics if d.severity == "error"]
    if nx.is_directed_acyclic_graph(g.networkx()):
        assert result.ok and errors == [], [d.one_line() for d in errors]
    else:
        assert not result.ok and errors and {d.code for d in errors} == {"E-CYCLE"}


@SETTINGS
@given(random_graphs())
def test_every_reported_cycle_is_a_real_cycle_and_each_component_is_reported_once(
    workdir: Path, g: RandomGraph
) -> None:
    graph = g.networkx()
    result = compile_graph(g, workdir)
    reported = [cycle_path(d.message) for d in result.diagnostics if d.code == "E-CYCLE"]
    for path in reported:
        assert path[0] == path[-1] and len(set(path[:-1])) == len(path) - 1, path
        for producer, consumer in itertools.pairwise(path):
            assert graph.has_edge(producer, consumer), (path, producer, consumer)
    cyclic_components = [c for c in nx.strongly_connected_components(graph)
                         if len(c) > 1 or graph.has_edge(next(iter(c)), next(iter(c)))]
    assert sorted(sorted(c) for c in cyclic_components) == sorted(
        sorted(next(c for c in cyclic_components if set(path) <= c)) for path in reported)


def brute_force_shapes(g: RandomGraph) -> dict[str, tuple[int | str, ...]]:
    """Run the graph on zero arrays. A row count that came from the symbolic 'R' is
    'R' through identity/add and '?' once concatenated (a sum of unknowns)."""
    rows = g.rows if g.rows is not None else 7
    values: dict[int, np.ndarray] = {-1: np.zeros((rows, g.cols), np.float32)}
    label: dict[int, str | None] = {-1: None if g.rows is not None else "R"}
    for i in nx.topological_sort(nx.DiGraph([(p, i) for i, ps in enumerate(g.producers) for p in ps])):
        if i < 0:
            continue
        parts = [values[p] for p in g.producers[i]]
        labels = [label[p] for p in g.producers[i]]
        if g.ops[i] == "tensor.concat":
            values[i], label[i] = np.concatenate(parts, axis=0), "?" if any(labels) else None
        elif g.ops[i] == "math.add":
            values[i], label[i] = parts[0] + 1, labels[0]
        else:
            values[i], label[i] = parts[0], labels[0]
    return {f"o{i}": (label[i] or values[i].shape[0], values[i].shape[1]) for i in range(len(g.ops))}


@SETTINGS
@given(random_graphs(acyclic=True))
def test_inferred_shapes_equal_running_the_graph_on_arrays(workdir: Path, g: RandomGraph) -> None:
    result = compile_graph(g, workdir)
    assert result.ok, [d.one_line() for d in result.diagnostics]
    inferred = {t.name: t.type.shape for t in result.plan.outputs}
    assert inferred == brute_force_shapes(g)
    assert all(t.type.dtype == "float32" for t in result.plan.outputs)


@SETTINGS
@given(random_graphs(acyclic=True))
def test_random_dags_compile_deterministically_and_round_trip(workdir: Path, g: RandomGraph) -> None:
    from dagserve.compiler import Plan

    first, second = compile_graph(g, workdir).plan, compile_graph(g, workdir).plan
    assert first is not None and second is not None
    assert first.to_json() == second.to_json()
    assert Plan.from_json(first.to_json()).hash == first.hash


# --- mutated specs never crash ----------------------------------------------------------------------

TOKENS = [
    "inputs.image", "decode.image", "x", "[]", "[1, 2]", "{}", "null", "-1", "'?'", "3.5", "true", "gpu",
    "gpu:1", "cpu", "chw", "hwc", "bytes", "float32", "model.onnx", "model.tensorrt", "tensor.concat",
    "[inputs.x, inputs.x]", "a.y", "0", "''", "1e400", "&a x", "*a", "~", "H", "[H, W, 3]", "image.crop",
    "detect.nms", "classify.topk", "tensor.split", "{sizes: [1]}", "../models/tiny_classifier.onnx",
    "../models/not_a_model.onnx", "2024-01-02", "'1/0'", "[-1]", "{x: [a.y]}", "[[1]]",
]
SOURCES = sorted((SPECS / "good").glob("*.yaml")) + sorted((SPECS / "bad").glob("*.yaml"))[::3]


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    root = tmp_path_factory.mktemp("fuzz")
    for d in ("models", "data"):
        shutil.copytree(SPECS / d, root / d)
    (root / "specs").mkdir()
    return root


def mutate(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        j = rng.randrange(len(lines))
        roll = rng.random()
        if roll < 0.2 and len(lines) > 2:
            del lines[j]
        elif roll < 0.3:
            lines.insert(j, lines[rng.randrange(len(lines))])
        else:
            words = lines[j].split(" ")
            k = rng.randrange(len(words))
            tail = ("," if words[k].endswith(",") else "") + ("}" if words[k].endswith("}") else "")
            words[k] = rng.choice(TOKENS) + tail
            lines[j] = " ".join(words)
    return "\n".join(lines) + "\n"


@SETTINGS
@given(st.sampled_from(SOURCES), st.randoms(use_true_random=False), st.sampled_from(["cpu", "gpu"]))
def test_mutated_specs_never_crash_the_compiler(fuzz_root: Path, source: Path, rng: random.Random,
                                                target: str) -> None:
    text = mutate(source.read_text(encoding="utf-8"), rng)
    path = fuzz_root / "specs" / "mutant.yaml"
    path.write_text(text, encoding="utf-8")
    result = compile_file(str(path), CompileOptions(target=target, debug=True), root=str(fuzz_root))
    internal = [d.one_line() for d in result.diagnostics if d.code == "E-INTERNAL"]
    assert not internal, (internal, text)
    assert all(d.code in CODES for d in result.diagnostics)
    if result.plan is not None:
        result.plan.to_json()
