"""Graph.lint() catches every broken IR invariant; Graph helpers behave."""

from __future__ import annotations

import pytest

from dagserve.compiler.ir import Graph, IRError, Node, NodeKind, PortRef
from dagserve.types import CPU, Device, TensorType

F32 = TensorType("float32", (4,))


def small() -> Graph:
    g = Graph("g", 4)
    g.add(Node("inputs.x", NodeKind.INPUT, outputs={"value": F32}))
    g.add(Node("a", NodeKind.OP, op="tensor.identity", inputs={"x": [PortRef("inputs.x", "value")]},
               outputs={"y": F32}))
    g.add(Node("outputs.y", NodeKind.OUTPUT, inputs={"value": [PortRef("a", "y")]}))
    return g


def test_a_well_formed_graph_lints_clean() -> None:
    small().lint()


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda g: g.nodes["inputs.x"].inputs.update(x=[PortRef("a", "y")]), "input node 'inputs.x'"),
        (lambda g: g.nodes["outputs.y"].inputs.clear(), "output node 'outputs.y' must read exactly one"),
        (lambda g: setattr(g.nodes["a"], "op", None), "node 'a' of kind op has no op"),
        (lambda g: g.nodes["a"].inputs["x"].append(PortRef("inputs.x", "value")), "fed 2 times"),
        (lambda g: g.nodes["a"].inputs.update(x=[PortRef("ghost", "y")]), "reads missing node 'ghost'"),
        (lambda g: g.nodes["a"].inputs.update(x=[PortRef("outputs.y", "value")]), "reads output node"),
        (lambda g: g.nodes["outputs.y"].inputs.update(value=[PortRef("a", "z")]), "reads missing port 'a.z'"),
    ],
)
def test_lint_names_the_broken_invariant(breakage, message: str) -> None:  # type: ignore[no-untyped-def]
    g = small()
    breakage(g)
    with pytest.raises(IRError, match=message):
        g.lint()


def test_partial_lint_tolerates_only_what_failed_references_leave_behind() -> None:
    g = small()
    g.nodes["outputs.y"].inputs.clear()
    g.lint(partial=True)
    g = small()
    g.nodes["outputs.y"].inputs["value"] = [PortRef("a", "typo")]
    g.lint(partial=True)
    g.nodes["a"].inputs["x"] = [PortRef("ghost", "y")]
    with pytest.raises(IRError, match="missing node"):
        g.lint(partial=True)


def test_a_copy_must_change_device() -> None:
    g = small()
    for n in g.nodes.values():
        n.device = CPU
    g.add(Node("copy/a/y/cpu", NodeKind.COPY, inputs={"value": [PortRef("a", "y")]}, outputs={"value": F32},
               device=CPU))
    with pytest.raises(IRError, match="does not change device"):
        g.lint()
    g.nodes["copy/a/y/cpu"].device = Device("gpu", 0)
    g.lint()


def test_adding_a_node_twice_is_an_ir_error() -> None:
    with pytest.raises(IRError, match="added twice"):
        small().add(Node("a", NodeKind.OP, op="tensor.identity"))


def test_consumers_lists_every_reader_with_port_and_index() -> None:
    g = small()
    g.add(Node("cat", NodeKind.OP, op="tensor.concat", variadic=frozenset({"x"}),
               inputs={"x": [PortRef("a", "y"), PortRef("inputs.x", "value"), PortRef("a", "y")]}))
    assert [(c.name, p, i) for c, p, i in g.consumers("a")] == [("outputs.y", "value", 0), ("cat", "x", 0),
                                                                 ("cat", "x", 2)]
    assert g.consumers("outputs.y") == []


def test_topological_order_breaks_ties_by_spec_order() -> None:
    g = Graph("g", 0)
    for name in ("inputs.x", "z", "b", "a"):
        kind = NodeKind.INPUT if name.startswith("inputs.") else NodeKind.OP
        inputs = {} if kind is NodeKind.INPUT else {"x": [PortRef("inputs.x", "value")]}
        g.add(Node(name, kind, op=None if kind is NodeKind.INPUT else "tensor.identity", inputs=inputs))
    g.nodes["inputs.x"].outputs = {"value": F32}
    assert [n.name for n in g.topological_order()] == ["inputs.x", "z", "b", "a"]
