"""--explain text, Graphviz DOT and Mermaid views of a Plan."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dagserve.compiler import Plan
from dagserve.render import explain, to_dot, to_mermaid, write_graph

from .conftest import SPECS, compile_spec_file


def plan_of(stem: str, target: str = "cpu") -> Plan:
    result = compile_spec_file(SPECS / "good" / f"{stem}.yaml", target=target)
    assert result.plan is not None
    return result.plan


def test_explain_on_gpu_lists_exactly_the_copies_the_plan_makes() -> None:
    text = explain(plan_of("two_inputs", "gpu"))
    copies = text[text.index("copies:"):].splitlines()
    assert copies == [
        "copies: 3",
        "  inputs.a -> gpu:0 (upload)",
        "  inputs.b -> gpu:0 (upload)",
        "  scaled.y -> cpu (download)",
    ]


def test_explain_on_cpu_says_nothing_is_copied() -> None:
    text = explain(plan_of("detect"))
    assert text.rstrip().endswith("copies: 0 (every hand-off shares memory)")


def test_explain_shows_stages_devices_types_and_batching() -> None:
    text = explain(plan_of("detect", "gpu"))
    assert text.splitlines()[0] == "pipeline tiny_detect v1 (target gpu, max_batch_size 8)"
    assert "stage 3:\n  detector [model.onnx] on gpu:0, 2 instances" in text
    assert "    in  images <- letterbox.image: float32[N,3,64,64] (chw)" in text
    assert "    batch ≤ 16, delay 2000 µs, preferred [4, 8]" in text
    assert "  image: bytes[N] on cpu" in text


def test_explain_of_an_unbatched_plan_has_no_batch_lines() -> None:
    text = explain(plan_of("fan_in"))
    assert "batch ≤" not in text and "max_batch_size 0" in text


def _dot_structure(dot: str) -> tuple[set[str], list[tuple[str, str]]]:
    """Declared node ids and edges of the DOT we write (one statement per line)."""
    assert dot.startswith("digraph ") and dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    nodes, edges = set(), []
    for line in dot.splitlines()[1:-1]:
        line = line.strip()
        assert line.endswith(";"), line
        assert line.count('"') % 2 == 0, line
        edge = re.match(r'^"([^"]+)" -> "([^"]+)" \[label="[^"]*"\];$', line)
        node = re.match(r'^"([^"]+)" \[label="[^"]*".*\];$', line)
        if edge:
            edges.append((edge.group(1), edge.group(2)))
        elif node:
            nodes.add(node.group(1))
    return nodes, edges


@pytest.mark.parametrize(("stem", "target"), [("detect", "gpu"), ("fan_in", "cpu"), ("classify", "gpu")])
def test_dot_output_is_well_formed_and_edges_join_declared_nodes(stem: str, target: str) -> None:
    plan = plan_of(stem, target)
    nodes, edges = _dot_structure(to_dot(plan))
    assert nodes == {f"inputs.{t.name}" for t in plan.inputs} | {n.name for n in plan.nodes} | {
        f"outputs.{t.name}" for t in plan.outputs}
    assert {u for u, _ in edges} | {v for _, v in edges} <= nodes
    n_refs = sum(len(refs) for n in plan.nodes for refs in n.inputs.values())
    assert len(edges) == n_refs + len(plan.outputs)


def test_dot_marks_copies_and_devices_by_colour() -> None:
    dot = to_dot(plan_of("detect", "gpu"))
    assert dot.count('fillcolor="#ffd6a5"') == 3  # the three downloads
    assert dot.count('fillcolor="#d5f0d0"') == 4  # four nodes on the GPU


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed")
def test_graphviz_accepts_the_dot_output(tmp_path: Path) -> None:
    proc = subprocess.run(["dot", "-Tsvg"], input=to_dot(plan_of("detect", "gpu")), text=True,
                          capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    write_graph(plan_of("fan_in"), tmp_path / "g.svg")
    assert (tmp_path / "g.svg").read_text().lstrip().startswith("<")


def test_mermaid_declares_every_node_once_with_a_class() -> None:
    plan = plan_of("detect", "gpu")
    text = to_mermaid(plan)
    assert text.startswith("flowchart LR\n")
    classes = re.findall(r"^  class (\S+) (cpu|gpu|copy)$", text, re.M)
    assert len(classes) == len(plan.nodes) == len({c for c, _ in classes})
    assert sum(1 for _, c in classes if c == "copy") == 3
    edges = re.findall(r"^  (\S+) -->\|\"[^\"]*\"\| (\S+)$", text, re.M)
    assert len(edges) == sum(len(r) for n in plan.nodes for r in n.inputs.values()) + len(plan.outputs)


def test_mermaid_ids_do_not_collide_between_inputs_and_look_alike_nodes(compile_text) -> None:  # type: ignore[no-untyped-def]
    result = compile_text("""\
        dagserve: 1
        name: clash
        inputs:
          x: {dtype: float32, shape: [2]}
        outputs:
          y: inputs_x.y
        nodes:
          inputs_x:
            op: tensor.identity
            inputs: {x: inputs.x}
        """)
    text = to_mermaid(result.plan)
    edges = re.findall(r"^  (\S+) -->\|\"[^\"]*\"\| (\S+)$", text, re.M)
    assert len(edges) == 2 and all(u != v for u, v in edges)


def test_write_graph_picks_the_format_from_the_extension(tmp_path: Path) -> None:
    plan = plan_of("detect")
    write_graph(plan, tmp_path / "g.dot")
    write_graph(plan, tmp_path / "g.mmd")
    assert (tmp_path / "g.dot").read_text() == to_dot(plan)
    assert (tmp_path / "g.mmd").read_text() == to_mermaid(plan)
    with pytest.raises(ValueError, match=r"unknown graph format '\.txt'"):
        write_graph(plan, tmp_path / "g.txt")


def test_write_graph_svg_without_graphviz_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="needs Graphviz's 'dot'"):
        write_graph(plan_of("detect"), tmp_path / "g.svg")


def test_a_copy_between_two_gpus_is_a_peer_copy_not_an_upload(compile_text) -> None:  # type: ignore[no-untyped-def]
    result = compile_text("""\
        dagserve: 1
        name: two_gpus
        max_batch_size: 2
        inputs:
          x: {dtype: float32, shape: [4]}
        outputs:
          y: second.y
        nodes:
          first:
            op: tensor.identity
            inputs: {x: inputs.x}
            device: gpu:0
          second:
            op: math.add
            inputs: {x: first.y}
            params: {value: 1}
            device: gpu:1
        """, target="gpu")
    assert result.ok, [d.one_line() for d in result.diagnostics]
    text = explain(result.plan)
    assert text[text.index("copies:"):].splitlines() == [
        "copies: 3",
        "  inputs.x -> gpu:0 (upload)",
        "  first.y -> gpu:1 (peer)",
        "  second.y -> cpu (download)",
    ]
    assert "copy\\npeer → gpu:1" in to_dot(result.plan)
