"""The compiler's IR: a graph of nodes with typed ports.

Node kinds (a closed set):

``input``
    One pipeline input. Named ``inputs.NAME``; one output port ``value``.
``op``
    A built-in or plugin op (``image.decode``, ``detect.nms``, ...).
``model``
    An op whose ports come from a model file (``model.onnx``, ...).
``copy``
    A host <-> device transfer the placement pass inserted. One input and one
    output port, both ``value``.
``output``
    One pipeline output. Named ``outputs.NAME``; one input port ``value``.

An edge is a :class:`PortRef` in a consumer's ``inputs``: the producer node and its
output port. Passes mutate the IR; :meth:`Graph.lint` checks its invariants and is
run after every pass in tests and with ``DAGSERVE_DEBUG=1``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import networkx as nx

from dagserve.diagnostics import Span
from dagserve.types import Device, TensorType

__all__ = ["Graph", "IRError", "Node", "NodeKind", "PortRef"]


class NodeKind(str, Enum):
    INPUT = "input"
    OP = "op"
    MODEL = "model"
    COPY = "copy"
    OUTPUT = "output"


@dataclass(frozen=True, order=True)
class PortRef:
    """The output ``port`` of node ``node``."""

    node: str
    port: str

    def __str__(self) -> str:
        if self.node.startswith("inputs."):
            return self.node
        return f"{self.node}.{self.port}"


@dataclass(eq=False)
class Node:
    """One node of the IR.

    Attributes:
        inputs: input port -> producers (more than one only for variadic ports).
        input_spans: input port -> the spans of the references that feed it.
        outputs: output port -> type; filled by type inference (``None`` = unknown).
        device_request: what the spec asked for (``auto``, ``cpu``, ``gpu:0``).
        device: the placement; set by the placement pass.
        meta: facts passes learn (resolved files, model signature, batch limit).
    """

    name: str
    kind: NodeKind
    op: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, list[PortRef]] = field(default_factory=dict)
    input_spans: dict[str, list[Span | None]] = field(default_factory=dict)
    outputs: dict[str, TensorType | None] = field(default_factory=dict)
    device_request: str = "auto"
    device: Device | None = None
    instances: int = 1
    batching: dict[str, Any] | None = None
    span: Span | None = None
    variadic: frozenset[str] = frozenset()
    meta: dict[str, Any] = field(default_factory=dict)

    def producers(self) -> Iterator[PortRef]:
        for refs in self.inputs.values():
            yield from refs

    @property
    def label(self) -> str:
        return self.name


class IRError(AssertionError):
    """An IR invariant is broken: a compiler bug, never a user error."""


@dataclass
class Graph:
    """The pipeline being compiled: nodes by name, in spec order, plus pipeline facts."""

    name: str
    max_batch_size: int
    nodes: dict[str, Node] = field(default_factory=dict)

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0

    def add(self, node: Node) -> Node:
        if node.name in self.nodes:
            raise IRError(f"node '{node.name}' added twice")
        self.nodes[node.name] = node
        return node

    def remove(self, name: str) -> None:
        del self.nodes[name]

    def of_kind(self, *kinds: NodeKind) -> list[Node]:
        return [n for n in self.nodes.values() if n.kind in kinds]

    def consumers(self, name: str) -> list[tuple[Node, str, int]]:
        """Every (consumer, its input port, index) reading any port of node ``name``."""
        out = []
        for node in self.nodes.values():
            for port, refs in node.inputs.items():
                for i, ref in enumerate(refs):
                    if ref.node == name:
                        out.append((node, port, i))
        return out

    def type_of(self, ref: PortRef) -> TensorType | None:
        node = self.nodes.get(ref.node)
        return node.outputs.get(ref.port) if node else None

    def to_networkx(self) -> nx.DiGraph:
        """A DiGraph of node names; an edge per producer -> consumer pair."""
        g = nx.DiGraph()
        g.add_nodes_from(self.nodes)
        for node in self.nodes.values():
            for ref in node.producers():
                if ref.node in self.nodes:
                    g.add_edge(ref.node, node.name)
        return g

    def topological_order(self) -> list[Node]:
        """Nodes producers-first; ties broken by spec order, so the order is deterministic."""
        position = {name: i for i, name in enumerate(self.nodes)}
        g = self.to_networkx()
        if not nx.is_directed_acyclic_graph(g):
            # cycles are reported (E-CYCLE) and their nodes are not typed; order the rest
            for component in nx.strongly_connected_components(g):
                g.remove_edges_from([(u, v) for u, v in g.subgraph(component).edges])
        order = nx.lexicographical_topological_sort(g, key=position.__getitem__)
        return [self.nodes[name] for name in order]

    def lint(self, partial: bool = False) -> None:
        """Check the IR's invariants; raise :class:`IRError` naming the first broken one.

        Args:
            partial: the spec has errors already reported, so references that failed
                to resolve may be missing: an output may read nothing, and a node may
                read a port its producer does not have. Every other invariant holds.
        """
        for node in self.nodes.values():
            if node.kind is NodeKind.INPUT:
                if node.inputs or set(node.outputs) != {"value"}:
                    raise IRError(f"input node '{node.name}' must have no inputs and one output 'value'")
            if node.kind is NodeKind.OUTPUT and set(node.inputs) != {"value"}:
                if not (partial and not node.inputs):
                    raise IRError(f"output node '{node.name}' must read exactly one port 'value'")
            if node.kind in (NodeKind.OP, NodeKind.MODEL) and not node.op and not node.meta.get("unchecked"):
                raise IRError(f"node '{node.name}' of kind {node.kind.value} has no op")
            for port, refs in node.inputs.items():
                if len(refs) > 1 and port not in node.variadic:
                    raise IRError(f"port '{node.name}.{port}' is fed {len(refs)} times")
                for ref in refs:
                    producer = self.nodes.get(ref.node)
                    if producer is None:
                        raise IRError(f"'{node.name}.{port}' reads missing node '{ref.node}'")
                    if producer.kind is NodeKind.OUTPUT:
                        raise IRError(f"'{node.name}.{port}' reads output node '{ref.node}'")
                    if producer.outputs and ref.port not in producer.outputs and not partial:
                        raise IRError(f"'{node.name}.{port}' reads missing port '{ref}'")
            if node.kind is NodeKind.COPY:
                (ref,) = node.inputs["value"]
                if node.device is None or self.nodes[ref.node].device == node.device:
                    raise IRError(f"copy node '{node.name}' does not change device")
