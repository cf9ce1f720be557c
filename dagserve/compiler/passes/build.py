"""Pass 1, resolve: build the IR from the spec and resolve every reference.

An unknown node or pipeline input is ``E-REF`` with a "did you mean" suggestion.
Ports are checked later, once the ops (and so their ports) are known.
"""

from __future__ import annotations

import difflib

from dagserve.compiler.context import CompileContext
from dagserve.compiler.ir import Node, NodeKind, PortRef
from dagserve.diagnostics import did_you_mean
from dagserve.spec.document import Ref
from dagserve.types import TensorType

__all__ = ["run"]


def _closest(word: str, choices: list[str]) -> str | None:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _resolve(ctx: CompileContext, ref: Ref, reader: str) -> PortRef | None:
    spec = ctx.spec
    if ref.is_input:
        if ref.port not in spec.inputs:
            if f"inputs.{ref.port}" in spec.unreadable or "inputs" in spec.partial:
                return None  # the input's own error is reported; this reference adds nothing
            diagnostic = ctx.report(
                "E-REF",
                f"{reader} reads 'inputs.{ref.port}' but the pipeline has no input '{ref.port}'"
                f"{did_you_mean(ref.port, spec.inputs)}",
                ref.span,
                hint=f"pipeline inputs: {', '.join(spec.inputs)}",
            )
            meant = _closest(ref.port, list(spec.inputs))
            if meant is not None:
                ctx.dangling.append((diagnostic, f"inputs.{meant}"))
            return None
        return PortRef(f"inputs.{ref.port}", "value")
    assert ref.node is not None
    if ref.node not in spec.nodes:
        if ref.node in spec.unreadable or "nodes" in spec.partial:
            return None
        suggestion = did_you_mean(ref.node, [*spec.nodes, "inputs"])
        diagnostic = ctx.report(
            "E-REF",
            f"{reader} reads '{ref.text}' but there is no node '{ref.node}'{suggestion}",
            ref.span,
        )
        meant = _closest(ref.node, [*spec.nodes, "inputs"])
        if meant is not None and meant != "inputs":
            ctx.dangling.append((diagnostic, meant))
        return None
    return PortRef(ref.node, ref.port)


def run(ctx: CompileContext) -> bool:
    spec, graph = ctx.spec, ctx.graph
    for name, tensor in spec.inputs.items():
        graph.add(Node(
            name=f"inputs.{name}",
            kind=NodeKind.INPUT,
            outputs={"value": TensorType(tensor.dtype, tensor.shape, tensor.layout, tensor.ragged)},
            span=tensor.span,
        ))
    for name, node_spec in spec.nodes.items():
        node = graph.add(Node(
            name=name,
            kind=NodeKind.MODEL if node_spec.op.startswith("model.") else NodeKind.OP,
            op=node_spec.op,
            params=dict(node_spec.params),
            device_request=node_spec.device,
            instances=node_spec.instances,
            batching=node_spec.batching,
            span=node_spec.span,
            variadic=node_spec.variadic,
            meta={"warmup": node_spec.warmup} if node_spec.warmup is not True else {},
        ))
        if node_spec.unchecked:  # its schema error is reported: checked no further, not typed
            node.meta["unchecked"] = node_spec.unchecked
            node.meta["failed"] = True
        if node_spec.unreadable_ports:
            node.meta.setdefault("unresolved", set()).update(node_spec.unreadable_ports)
            node.meta["failed"] = True
        for port, refs in node_spec.inputs.items():
            resolved = [(_resolve(ctx, r, f"node '{name}' input '{port}'"), r.span) for r in refs]
            node.inputs[port] = [p for p, _ in resolved if p is not None]
            node.input_spans[port] = [s for p, s in resolved if p is not None]
            if len(node.inputs[port]) < len(refs):
                node.meta.setdefault("unresolved", set()).add(port)
                node.meta["failed"] = True  # not typed: its inputs are incomplete
            if not node.inputs[port]:
                del node.inputs[port], node.input_spans[port]
    for name, out in spec.outputs.items():
        produced = _resolve(ctx, out.ref, f"output '{name}'")
        node = graph.add(Node(name=f"outputs.{name}", kind=NodeKind.OUTPUT, span=out.span))
        if produced is not None:
            node.inputs["value"] = [produced]
            node.input_spans["value"] = [out.ref.span]
    return True
