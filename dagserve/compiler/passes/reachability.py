"""Pass 3, reachability: warn about inputs nobody reads and nodes no output needs.

Dead nodes stay in the IR (so they are still type-checked) but are marked
``meta["dead"]`` and left out of the Plan.

A misspelt reference (``E-REF`` with a close match) cuts off what it meant to read:
those dead nodes and unused inputs are named in that error instead of one warning
each. When part of the spec could not be read at all, reachability is not reported.

The search walks the IR's edges backwards from all outputs at once, in time
linear in the graph (one ``nx.ancestors`` per output would be O(outputs x nodes):
minutes for a pipeline of 10,000 nodes and 2,000 outputs).
"""

from __future__ import annotations

from dataclasses import replace

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


def _names(names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:5])
    return shown + (f" and {len(names) - 5:,} more" if len(names) > 5 else "")


def run(ctx: CompileContext) -> bool:
    graph = ctx.graph
    needed = needed_by_outputs(graph)
    read = {ref.node for node in graph.nodes.values() for ref in node.producers()}
    dead = [n.name for n in graph.nodes.values() if n.kind in (NodeKind.OP, NodeKind.MODEL) and n.name not in needed]
    unused = [n.name for n in graph.of_kind(NodeKind.INPUT) if n.name not in read]
    for name in dead:
        graph.nodes[name].meta["dead"] = True
    if ctx.spec.partial or ctx.spec.unreadable:
        # a reference, node or section that could not be read (its error is reported) may be
        # the one that reads these: warning about them would only repeat that error
        return bool(dead)
    # what a misspelt reference cut off is part of its error, not a warning per node
    folded: set[str] = set()
    dead_set, unused_set = set(dead), set(unused)
    for diagnostic, meant in ctx.dangling:
        cut: list[str] = []
        stack = [meant]
        while stack:
            name = stack.pop()
            if name in folded or not (name in dead_set or name in unused_set):
                continue
            folded.add(name)
            cut.append(name.removeprefix("inputs."))
            stack.extend(ref.node for ref in graph.nodes[name].producers())
        if cut:
            plural = len(cut) > 1
            if meant.startswith("inputs."):
                effect = f"pipeline input {_names(cut)} is read by no node"
            else:
                effect = f"node{'s' * plural} {_names(cut)} reach{'' if plural else 'es'} no pipeline output"
            ctx.bag.replace(diagnostic, replace(diagnostic, message=(
                f"{diagnostic.message} (so {effect}; not warned about separately)")))
    for name in unused:
        if name not in folded:
            node = graph.nodes[name]
            ctx.report("W-UNUSED-INPUT", f"pipeline input '{name.removeprefix('inputs.')}' is not read by any "
                       "node", node.span, hint="remove it, or feed it to the node that needs it")
    for name in dead:
        if name not in folded and not graph.nodes[name].meta.get("cyclic"):  # the cycle is its error
            node = graph.nodes[name]
            ctx.report("W-DEAD-NODE", f"node '{node.name}' does not contribute to any pipeline output "
                       "and will not run", node.span, node=node,
                       hint="add one of its ports to 'outputs:', or remove the node")
    return bool(dead)
