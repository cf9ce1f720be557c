"""Pass 2, acyclic: report every cycle as a path ``a → b → c → a``.

Each strongly connected component with a cycle is reported once, at the reference
that closes the cycle (the consumer's input that reads back into the loop). Its
nodes are marked failed, so the later passes check the rest of the graph (a dtype
error elsewhere is still reported) and skip what the loop feeds.
"""

from __future__ import annotations

import networkx as nx

from dagserve.compiler.context import CompileContext

__all__ = ["run"]


def run(ctx: CompileContext) -> bool:
    graph = ctx.graph
    g = graph.to_networkx()
    position = {name: i for i, name in enumerate(graph.nodes)}
    components = sorted(
        (sorted(c, key=position.__getitem__) for c in nx.strongly_connected_components(g)
         if len(c) > 1 or g.has_edge(next(iter(c)), next(iter(c)))),
        key=lambda c: position[c[0]],
    )
    for component in components:
        for name in component:  # not typed: the type of a port in a loop depends on itself
            graph.nodes[name].meta.update(failed=True, cyclic=True)
        start = component[0]
        cycle = nx.find_cycle(g.subgraph(component), source=start)
        names = [u for u, _ in cycle]
        closing_consumer = cycle[-1][1]
        closing_producer = cycle[-1][0]
        node = graph.nodes[closing_consumer]
        span = next(
            (s for port, refs in node.inputs.items() for ref, s in zip(refs, node.input_spans[port])
             if ref.node == closing_producer),
            node.span,
        )
        path = " → ".join([*names, names[0]])
        if len(names) == 1:
            message = f"node '{start}' reads its own output: {path}"
        else:
            message = f"the graph has a cycle: {path}"
        ctx.report("E-CYCLE", message, span, node=closing_consumer,
                   hint="a pipeline is a DAG: break the cycle by reading from an earlier node")
    return False
