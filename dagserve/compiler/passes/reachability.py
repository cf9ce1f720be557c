"""Pass 3, reachability: warn about inputs nobody reads and nodes no output needs.

Dead nodes stay in the IR (so they are still type-checked) but are marked
``meta["dead"]`` and left out of the Plan.

The search walks the IR's edges backwards from all outputs at once, in time
linear in the graph (one ``nx.ancestors`` per output would be O(outputs x nodes):
minutes for a pipeline of 10,000 nodes and 2,000 outputs).
"""

from __future__ import annotations

from dagserve.compiler.context import CompileContext
from dagserve.compiler.ir import Graph, NodeKind

__all__ = ["needed_by_outputs", "run"]


def needed_by_outputs(graph: Graph) -> set[str]:
    """The names of the outputs and of every node they (transitively) read."""
    needed = {node.name for node in graph.of_kind(NodeKind.OUTPUT)}
    stack = list(needed)
    while stack:
        for ref in graph.nodes[stack.pop()].producers():
            if ref.node not in needed and ref.node in graph.nodes:
                needed.add(ref.node)
                stack.append(ref.node)
    return needed


def run(ctx: CompileContext) -> bool:
    graph = ctx.graph
    needed = needed_by_outputs(graph)
    read = {ref.node for node in graph.nodes.values() for ref in node.producers()}
    modified = False
    for node in graph.nodes.values():
        if node.kind is NodeKind.INPUT and node.name not in read:
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
