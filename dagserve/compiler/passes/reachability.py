"""Pass 3, reachability: warn about inputs nobody reads and nodes no output needs.

Dead nodes stay in the IR (so they are still type-checked) but are marked
``meta["dead"]`` and left out of the Plan.
"""

from __future__ import annotations

import networkx as nx

from dagserve.compiler.context import CompileContext
from dagserve.compiler.ir import NodeKind

__all__ = ["run"]


def run(ctx: CompileContext) -> bool:
    graph = ctx.graph
    g = graph.to_networkx()
    needed: set[str] = set()
    for out in graph.of_kind(NodeKind.OUTPUT):
        needed.add(out.name)
        needed |= nx.ancestors(g, out.name)
    modified = False
    for node in graph.nodes.values():
        if node.kind is NodeKind.INPUT and g.out_degree(node.name) == 0:
            name = node.name.removeprefix("inputs.")
            ctx.report("W-UNUSED-INPUT", f"pipeline input '{name}' is not read by any node", node.span,
                       hint="remove it, or feed it to the node that needs it")
        elif node.kind in (NodeKind.OP, NodeKind.MODEL) and node.name not in needed:
            node.meta["dead"] = True
            modified = True
            ctx.report("W-DEAD-NODE", f"node '{node.name}' does not contribute to any pipeline output "
                       "and will not run", node.span, node=node,
                       hint="add one of its ports to 'outputs:', or remove the node")
    return modified
