"""Pass 5, types: infer dtype, shape and layout on every port, producers first.

Each op's type rule checks its inputs and types its outputs; the problems it finds
become diagnostics at the reference that feeds the port (so the caret points at
``letterbox.image`` in ``inputs: {images: letterbox.image}``). A node whose inputs
are not all typed (because something upstream failed) is skipped silently, so one
mistake gives one error, not a cascade. References to ports a node does not
produce are ``E-PORT``.
"""

from __future__ import annotations

from typing import Any

from dagserve.compiler.context import CompileContext
from dagserve.compiler.ir import Node, NodeKind, PortRef
from dagserve.diagnostics import Span, did_you_mean
from dagserve.ops.base import InferContext, OpDef

__all__ = ["run"]


def _check_refs(ctx: CompileContext, node: Node) -> bool:
    """Every reference of ``node`` names a port its producer has; False if not all typed."""
    ok = True
    for port, refs in node.inputs.items():
        for ref, span in zip(refs, node.input_spans[port]):
            producer = ctx.graph.nodes[ref.node]
            if producer.meta.get("failed") or not producer.outputs:
                ok = False
                continue
            if ref.port not in producer.outputs:
                _unknown_port(ctx, producer, ref, span)
                node.meta["failed"] = True
                ok = False
            elif producer.outputs[ref.port] is None:
                ok = False
    return ok


def _unknown_port(ctx: CompileContext, producer: Node, ref: PortRef, span: Span | None) -> None:
    op = ctx.registry.get(producer.op or "")
    declared = {p.name for p in op.outputs} if op else set()
    if ref.port in declared:
        message = (f"node '{producer.name}' does not produce '{ref.port}' with its current params "
                   f"(op {producer.op})")
    else:
        ports = sorted(producer.outputs)
        message = (f"node '{producer.name}' has no output '{ref.port}'{did_you_mean(ref.port, ports)}")
    ctx.report("E-PORT", message, span, node=producer,
               hint=f"outputs of '{producer.name}': {', '.join(sorted(producer.outputs))}")


def _infer(ctx: CompileContext, node: Node, op: OpDef) -> None:
    inputs: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    for port, refs in node.inputs.items():
        types = [ctx.graph.type_of(r) for r in refs]
        if port in node.variadic or (op.input_port(port) and op.input_port(port).variadic):  # type: ignore[union-attr]
            inputs[port], sources[port] = types, [str(r) for r in refs]
        else:
            inputs[port], sources[port] = types[0], str(refs[0])
    infer_ctx = InferContext(
        node=node.name,
        op=op.name,
        params=node.params,
        inputs=inputs,
        sources=sources,
        batched=ctx.graph.batched,
        files=dict(node.meta.get("files", {})),
    )
    try:
        outputs = op.infer(infer_ctx)
    except Exception as exc:  # a type rule bug must not become a traceback
        ctx.report("E-INTERNAL", f"the type rule of op {op.name} failed on node '{node.name}': "
                   f"{type(exc).__name__}: {exc}", node.span, node=node,
                   hint="this is a bug in dagserve or in the plugin that defines the op; please report it")
        node.meta["failed"] = True
        return
    for problem in infer_ctx.problems:
        span = node.span
        if problem.param is not None:
            span = ctx.spec.source.values.get(("nodes", node.name, "params", problem.param)) or node.span
        elif problem.port and problem.port in node.input_spans:
            spans = node.input_spans[problem.port]
            span = spans[min(problem.index, len(spans) - 1)] or node.span
        ctx.report(problem.code, problem.message, span, hint=problem.hint, node=node)
    node.meta.update(infer_ctx.meta)
    if infer_ctx.problems:
        node.meta["failed"] = True
    elif not op.dynamic_ports:
        # a rule that types nothing and says nothing would let untyped ports through silently
        missing = [p.name for p in op.outputs if not p.optional and p.name not in outputs]
        if missing:
            ctx.report("E-INTERNAL", f"the type rule of op {op.name} gave no type for output(s) "
                       f"{', '.join(missing)} of node '{node.name}' and reported no problem", node.span,
                       node=node, hint="this is a bug in dagserve or in the plugin that defines the op; "
                       "please report it")
            node.meta["failed"] = True
    node.outputs = dict(outputs)


def run(ctx: CompileContext) -> bool:
    for node in ctx.graph.topological_order():
        if node.kind is NodeKind.INPUT:
            continue
        if node.kind is NodeKind.OUTPUT:
            if "value" in node.inputs and _check_refs(ctx, node):
                node.outputs = {"value": ctx.graph.type_of(node.inputs["value"][0])}
            continue
        op = ctx.registry.get(node.op or "")
        if op is None or node.meta.get("failed"):
            node.meta["failed"] = True
            continue
        if not _check_refs(ctx, node):
            node.meta["failed"] = True
            continue
        _infer(ctx, node, op)
    return True
