"""Run the passes over a spec and build the Plan.

:func:`compile_file` is what the CLI and ``dagserve.load`` call. It never raises
for a problem in the spec: every problem is a diagnostic in the result. A crash
inside a pass becomes one ``E-INTERNAL`` diagnostic that names the pass and the
spec, and asks for a bug report.
"""

from __future__ import annotations

import hashlib
import os
import traceback
from dataclasses import dataclass, field

import networkx as nx

from dagserve.compiler.context import CompileContext, CompileOptions
from dagserve.compiler.ir import Graph, Node, NodeKind
from dagserve.compiler.passes import PASSES
from dagserve.compiler.plan import Plan, PlanNode, PlanTensor
from dagserve.diagnostics import Diagnostic
from dagserve.ops.registry import OpRegistry, default_registry
from dagserve.spec.document import PipelineSpec, gc_paused, parse_spec

__all__ = ["CompileResult", "compile_file", "compile_spec"]


@dataclass
class CompileResult:
    """Diagnostics, and the plan when there were no errors.

    ``graph`` is the final IR (for ``graph`` rendering and ``--explain``); it is
    ``None`` when the spec could not be read.
    """

    diagnostics: list[Diagnostic]
    plan: Plan | None = None
    graph: Graph | None = None
    passes_run: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.plan is not None and not any(d.severity == "error" for d in self.diagnostics)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _rel(path: str, root: str) -> str:
    return os.path.relpath(os.path.realpath(path), os.path.realpath(root)).replace(os.sep, "/")


def _stages(graph: Graph, live: list[Node]) -> dict[str, int]:
    g = graph.to_networkx().subgraph([n.name for n in live] + [n.name for n in graph.of_kind(NodeKind.INPUT)])
    stage: dict[str, int] = {}
    for name in nx.topological_sort(g):
        preds = list(g.predecessors(name))
        stage[name] = 0 if not preds else 1 + max(stage[p] for p in preds)
    return stage


def build_plan(spec: PipelineSpec, graph: Graph, target: str) -> Plan:
    """The Plan of a graph that compiled without errors (dead nodes left out)."""
    live = [n for n in graph.topological_order()
            if n.kind in (NodeKind.OP, NodeKind.MODEL, NodeKind.COPY) and not n.meta.get("dead")]
    stages = _stages(graph, live)
    spec_rel = _rel(spec.file, spec.root)
    files = {spec_rel: _sha256(spec.file)}
    first_reader: dict[str, Node] = {}  # copy node -> the node it was made for (Graph.consumers is O(N))
    for node in graph.nodes.values():
        for ref in node.producers():
            first_reader.setdefault(ref.node, node)
    nodes = []
    for node in live:
        node_files = {p: _rel(f, spec.root) for p, f in sorted(node.meta.get("files", {}).items())}
        for path in node.meta.get("files", {}).values():
            files[_rel(path, spec.root)] = _sha256(path)
        source = node.span
        if node.kind is NodeKind.COPY:
            consumer = first_reader.get(node.name)
            source = consumer.span if consumer else None
        nodes.append(PlanNode(
            name=node.name,
            kind=node.kind.value,
            op=node.op if node.kind is not NodeKind.COPY else "copy",
            params=dict(sorted(node.params.items())),
            inputs={p: [str(r) for r in refs] for p, refs in node.inputs.items()},
            outputs={p: t for p, t in node.outputs.items() if t is not None},
            device=str(node.device),
            instances=node.instances,
            batching=node.meta["batching"],
            warmup=node.meta.get("warmup", True),
            stage=stages[node.name],
            files=node_files,
            source=f"{spec_rel if source.file == spec.file else _rel(source.file, spec.root)}:"
                   f"{source.line}:{source.col}" if source else None,
        ))
    inputs = tuple(
        PlanTensor(n.name.removeprefix("inputs."), n.outputs["value"], None, spec.inputs[n.name[7:]].description)
        for n in graph.of_kind(NodeKind.INPUT) if n.outputs["value"] is not None
    )
    outputs = []
    for node in graph.of_kind(NodeKind.OUTPUT):
        name = node.name.removeprefix("outputs.")
        t = node.outputs.get("value")
        assert t is not None
        outputs.append(PlanTensor(name, t, str(node.inputs["value"][0]), spec.outputs[name].description))
    return Plan(
        name=spec.name,
        version=spec.version,
        description=spec.description,
        max_batch_size=spec.max_batch_size,
        target=target,
        inputs=inputs,
        outputs=tuple(outputs),
        nodes=tuple(nodes),
        spec=_rel(spec.file, spec.root),
        files=files,
        root=os.path.realpath(spec.root),
    )


def _internal(spec: PipelineSpec, stage: str, ran: list[str], exc: BaseException) -> Diagnostic:
    where = f" (after {', '.join(ran)})" if ran else ""
    return Diagnostic(
        "E-INTERNAL",
        f"internal compiler error in {stage}{where}: {type(exc).__name__}: {exc}",
        file=spec.file,
        hint="this is a bug in dagserve; please report it with this spec and the trace below\n"
             + "".join(traceback.format_exception(exc)).rstrip(),
    )


def compile_spec(
    spec: PipelineSpec,
    options: CompileOptions | None = None,
    registry: OpRegistry | None = None,
    prior: list[Diagnostic] | None = None,
) -> CompileResult:
    """Run every pass over a parsed spec (``prior``: what reading it reported already)."""
    options = options or CompileOptions()
    ctx = CompileContext(spec, Graph(spec.name, spec.max_batch_size), registry or default_registry(), options)
    ctx.bag.extend(prior or ())
    debug = options.debug or os.environ.get("DAGSERVE_DEBUG") == "1"
    ran: list[str] = []
    for p in PASSES:
        before = len(ctx.bag.errors)
        try:
            p.run(ctx)
            if debug:
                ctx.graph.lint(partial=ctx.bag.has_errors())
        except Exception as exc:  # a compiler bug: report it, never a traceback
            ctx.bag.add(_internal(spec, f"pass '{p.name}'", ran, exc))
            return CompileResult(ctx.bag.sorted(), None, ctx.graph, ran)
        ran.append(p.name)
        if p.stop_on_error and len(ctx.bag.errors) > before:
            break
        if p.name == "types" and ctx.bag.has_errors():
            break
    if ctx.bag.has_errors():
        return CompileResult(ctx.bag.sorted(), None, ctx.graph, ran)
    try:
        plan = build_plan(spec, ctx.graph, options.target)
    except Exception as exc:  # a compiler bug: report it, never a traceback
        ctx.bag.add(_internal(spec, "building the plan", ran, exc))
        return CompileResult(ctx.bag.sorted(), None, ctx.graph, ran)
    return CompileResult(ctx.bag.sorted(), plan, ctx.graph, ran)


def compile_file(
    path: str | os.PathLike[str],
    options: CompileOptions | None = None,
    root: str | None = None,
    registry: OpRegistry | None = None,
) -> CompileResult:
    """Read and compile the spec at ``path`` (``root``: the pipeline repository)."""
    with gc_paused():
        return _compile_file(path, options, root, registry)


def _compile_file(
    path: str | os.PathLike[str],
    options: CompileOptions | None,
    root: str | None,
    registry: OpRegistry | None,
) -> CompileResult:
    spec, diagnostics = parse_spec(path, root)
    if spec is None:
        return CompileResult(sorted(diagnostics, key=Diagnostic.sort_key))
    # a spec with schema, name or reference-syntax errors is still compiled: the parts
    # with errors are left out (spec.unreadable, spec.partial), the rest is checked
    result = compile_spec(spec, options, registry, prior=diagnostics)
    if any(d.severity == "error" for d in result.diagnostics):
        result.plan = None
    return result
