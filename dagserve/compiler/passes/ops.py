"""Pass 4, ops: look up each node's op, check its params and ports, resolve its files.

* unknown op -> ``E-OP`` (did you mean);
* params against the op's params schema -> ``E-PARAM`` at the param's position,
  then the values JSON Schema lets through but no kernel can use (NaN or infinite
  numbers, ``32.0`` where an integer is needed, a fraction ``1/0``) -> ``E-PARAM``,
  then schema defaults are filled in;
* path params resolved against the spec file, kept inside the repository ->
  ``E-PATH``; a missing file -> ``E-MODEL-FILE`` (for models) or ``E-PARAM``;
* input ports the op does not have, and required ports left unfed -> ``E-PORT``
  (a required port is not reported unfed when a misnamed port was probably meant
  for it: the misnamed port's error already lists the op's inputs);
* a device the op cannot run on, given the target -> ``E-DEVICE`` (checked here,
  before type inference, so a GPU-only model is not opened on a CPU machine).

A node with any of these problems is marked ``meta["failed"]`` and not typed.
"""

from __future__ import annotations

import json
import os

from dagserve.compiler.context import CompileContext
from dagserve.compiler.ir import Node, NodeKind
from dagserve.compiler.passes import placement
from dagserve.diagnostics import did_you_mean
from dagserve.ops._params import value_problems, with_defaults
from dagserve.ops.base import OpDef
from dagserve.spec.document import resolve_path
from dagserve.spec.schema import validate_against

__all__ = ["run"]


def _check_params(ctx: CompileContext, node: Node, op: OpDef, valid: set[tuple[str, str]]) -> bool:
    prefix = ("nodes", node.name, "params")
    try:  # nodes often share params ({value: 2}, {perm: [1, 0]}): check each distinct set once
        key: tuple[str, str] | None = (op.name, json.dumps(node.params, sort_keys=True))
    except (TypeError, ValueError):
        key = None
    if key is not None and key in valid:
        node.params = with_defaults(op.params_schema, node.params)  # type: ignore[arg-type]
        return True
    problems = validate_against(op.params_schema, node.params, ctx.spec.source, prefix, kind="param")  # type: ignore[arg-type]
    for d in problems:
        ctx.report(d.code, f"{d.message} (op {op.name})", d.span, hint=d.hint, node=node)
    if problems:
        return False
    bad_values = value_problems(dict(op.params_schema), node.params)  # type: ignore[arg-type]
    for path, why in bad_values:
        name = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        ctx.report("E-PARAM", f"node '{node.name}' param '{name}' {why} (op {op.name})",
                   ctx.spec.source.value((*prefix, *path)), node=node)
    if bad_values:
        return False
    if key is not None:
        valid.add(key)
    node.params = with_defaults(op.params_schema, node.params)  # type: ignore[arg-type]
    return True


def _resolve_files(ctx: CompileContext, node: Node, op: OpDef) -> None:
    files: dict[str, str] = {}
    for param in op.path_params:
        value = node.params.get(param)
        if value is None:
            continue
        span = ctx.spec.source.value(("nodes", node.name, "params", param))
        resolved, why = resolve_path(str(value), ctx.spec.file, ctx.spec.root)
        if resolved is None:
            ctx.report("E-PATH", f"node '{node.name}' param '{param}': {why}", span, node=node,
                       hint="keep models and data inside the pipeline repository (see --root)")
            continue
        if not os.path.isfile(resolved):
            code = "E-MODEL-FILE" if op.kind == "model" else "E-PARAM"
            ctx.report(code, f"node '{node.name}' param '{param}': file '{value}' does not exist "
                       f"(looked for {resolved})", span, node=node)
            continue
        files[param] = resolved
    node.meta["files"] = files


def _check_ports(ctx: CompileContext, node: Node, op: OpDef) -> bool:
    """Report misnamed, misused and unfed input ports; True when all are right."""
    if op.dynamic_ports and not op.inputs:  # a model: its ports come from the file
        return True
    known = {p.name for p in op.inputs}
    listing = ", ".join(p.name + (" (optional)" if p.optional else "") for p in op.inputs) or "none"
    misnamed, misused = [], []
    for port in list(node.inputs):
        definition = op.input_port(port)
        span = ctx.spec.source.key(("nodes", node.name, "inputs", port))
        if definition is None:
            ctx.report("E-PORT", f"op {op.name} has no input '{port}'{did_you_mean(port, known)}",
                       span, node=node, hint=f"inputs of {op.name}: {listing}")
            del node.inputs[port], node.input_spans[port]
            misnamed.append(port)
        elif port in node.variadic and not definition.variadic:
            ctx.report("E-PORT", f"input '{port}' of op {op.name} takes one reference, not a list",
                       span, node=node, hint=f"write '{port}: NODE.PORT'; only ports such as tensor.concat's "
                       "'x' take a list")
            del node.inputs[port], node.input_spans[port]
            misused.append(port)
    unresolved = node.meta.get("unresolved", set())
    unfed = [d.name for d in op.inputs
             if not d.optional and d.name not in node.inputs and d.name not in unresolved and d.name not in misused]
    if misnamed:  # the misnamed ports' errors already list the op's inputs
        unfed = unfed[len(misnamed):]
    for name in unfed:
        ctx.report("E-PORT", f"node '{node.name}' leaves required input '{name}' of "
                   f"op {op.name} unfed", node.span, node=node,
                   hint=f"add '{name}: NODE.PORT' under the node's 'inputs:'")
    return not (misnamed or misused or unfed)


def run(ctx: CompileContext) -> bool:
    valid_params: set[tuple[str, str]] = set()
    for node in ctx.graph.of_kind(NodeKind.OP, NodeKind.MODEL):
        assert node.op is not None
        unchecked = node.meta.get("unchecked", frozenset())  # fields whose schema error is reported
        if "op" in unchecked:
            continue
        op = ctx.registry.get(node.op)
        if op is None:
            span = ctx.spec.source.value(("nodes", node.name, "op"))
            ctx.report("E-OP", f"unknown op '{node.op}'{did_you_mean(node.op, ctx.registry.names())}",
                       span, node=node, hint="'dagserve ops' lists every op")
            node.meta["failed"] = True
            continue
        node.kind = NodeKind.MODEL if op.kind == "model" else NodeKind.OP
        params_ok = "params" not in unchecked and _check_params(ctx, node, op, valid_params)
        if params_ok:
            _resolve_files(ctx, node, op)
        ports_ok = "inputs" not in unchecked and _check_ports(ctx, node, op)
        device_ok = "device" not in unchecked and placement.check_device(ctx, node, op)
        files_ok = len(node.meta.get("files", {})) >= sum(1 for p in op.path_params if node.params.get(p) is not None)
        if not (params_ok and ports_ok and device_ok and files_ok):
            node.meta["failed"] = True
    return True
