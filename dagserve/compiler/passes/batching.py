"""Pass 7, batching: settle each node's dynamic-batcher settings and check them.

Defaults: a node batches up to the pipeline's ``max_batch_size`` items (capped by
a model's fixed batch dimension), sends what is queued at once
(``max_queue_delay_us: 0``), has an unbounded queue, no timeout, one priority level.
Like Triton, a batch larger than the model accepts is an error, but here it names
the node, the model input and the edge that feeds it.
"""

from __future__ import annotations

from typing import Any

from dagserve.compiler.context import CompileContext
from dagserve.compiler.ir import Node, NodeKind

__all__ = ["DEFAULTS", "run"]

DEFAULTS: dict[str, Any] = {
    "max_queue_delay_us": 0,
    "preferred_batch_sizes": [],
    "max_queue_size": 0,
    "timeout_us": 0,
    "priority_levels": 1,
    "default_priority": 1,
}


def _span(ctx: CompileContext, node: Node, key: str | None = None):  # type: ignore[no-untyped-def]
    path = ("nodes", node.name, "batching") + ((key,) if key else ())
    return ctx.spec.source.value(path) if ctx.spec.source.value(path) != ctx.spec.source.value(()) else node.span


def _model_edge(node: Node) -> str:
    signature = node.meta.get("signature")
    for name, refs in node.inputs.items():
        if signature and name in signature.inputs and isinstance(signature.inputs[name].shape[0], int):
            return f"model input '{name}' (fed by '{refs[0]}')"
    return "the model"


def _plan_node(ctx: CompileContext, node: Node) -> dict[str, Any]:
    asked = dict(node.batching or {})
    limit = node.meta.get("max_batch")
    pipeline_max = ctx.graph.max_batch_size
    plan = {**DEFAULTS, **{k: v for k, v in asked.items() if k != "max_batch_size"}}
    if "max_batch_size" in asked:
        size = asked["max_batch_size"]
        if limit is not None and size > limit:
            ctx.report(
                "E-BATCH",
                f"node '{node.name}' batches up to {size} items but {_model_edge(node)} of "
                f"'{node.params.get('path')}' has a fixed batch dimension of {limit}",
                _span(ctx, node, "max_batch_size"), node=node,
                hint=f"set batching.max_batch_size to at most {limit}, "
                     "or export the model with a dynamic batch dimension",
            )
    else:
        size = pipeline_max if limit is None else min(pipeline_max, limit)
    plan["max_batch_size"] = size
    for preferred in plan["preferred_batch_sizes"]:
        if preferred > size:
            ctx.report("E-BATCH", f"node '{node.name}' prefers batches of {preferred} but batches at most "
                       f"{size} items", _span(ctx, node, "preferred_batch_sizes"), node=node)
    if plan["default_priority"] > plan["priority_levels"]:
        ctx.report("E-BATCH", f"node '{node.name}' default_priority {plan['default_priority']} is above its "
                   f"{plan['priority_levels']} priority level(s)", _span(ctx, node, "default_priority"), node=node)
    plan["preferred_batch_sizes"] = sorted(plan["preferred_batch_sizes"])
    return plan


def run(ctx: CompileContext) -> bool:
    for node in ctx.graph.of_kind(NodeKind.OP, NodeKind.MODEL, NodeKind.COPY):
        if not ctx.graph.batched:
            if node.batching:
                ctx.report("W-BATCH", f"node '{node.name}' sets batching but the pipeline's max_batch_size "
                           "is 0, so requests carry no batch dimension and nodes do not batch",
                           _span(ctx, node), node=node,
                           hint="set the pipeline's max_batch_size (e.g. 8) to batch across requests")
            node.meta["batching"] = {**DEFAULTS, "max_batch_size": 1}
            continue
        if node.kind is NodeKind.COPY:
            node.meta["batching"] = {**DEFAULTS, "max_batch_size": ctx.graph.max_batch_size}
            continue
        node.meta["batching"] = _plan_node(ctx, node)
    return True
