"""Human views of a Plan: ``--explain`` text, Graphviz DOT and Mermaid diagrams.

All three read the Plan only (plain data), so they show exactly what will run.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from dagserve.compiler.plan import Plan, PlanNode
from dagserve.types import TensorType

__all__ = ["explain", "to_dot", "to_mermaid", "write_graph"]

_DEVICE_COLOURS = {"cpu": "#dbe9f6", "gpu": "#d5f0d0"}
_COPY_COLOUR = "#ffd6a5"


_TYPE_INDEX: dict[int, tuple[Plan, dict[str, TensorType]]] = {}


def _ref_type(plan: Plan, ref: str) -> TensorType | None:
    """The type a reference reads, from an index built once per plan (views of a
    10,000-node plan would otherwise be quadratic)."""
    cached = _TYPE_INDEX.get(id(plan))
    if cached is None or cached[0] is not plan:
        index = {f"inputs.{t.name}": t.type for t in plan.inputs}
        index.update((f"{n.name}.{port}", t) for n in plan.nodes for port, t in n.outputs.items())
        _TYPE_INDEX.clear()  # only the plan being rendered is kept
        cached = _TYPE_INDEX[id(plan)] = (plan, index)
    return cached[1].get(ref)


def _batched(plan: Plan) -> bool:
    return plan.max_batch_size > 0


def explain(plan: Plan) -> str:
    """Stages, nodes with device, types and batching, and every copy the plan makes."""
    b = _batched(plan)
    lines = [
        f"pipeline {plan.name} v{plan.version} (target {plan.target}, max_batch_size {plan.max_batch_size})",
        f"plan hash {plan.hash[:16]}",
        "inputs:",
        *(f"  {t.name}: {t.type.render(b)} on {t.type.device or 'cpu'}" for t in plan.inputs),
    ]
    by_stage: dict[int, list[PlanNode]] = {}
    for node in plan.nodes:
        by_stage.setdefault(node.stage, []).append(node)
    for stage in sorted(by_stage):
        lines.append(f"stage {stage}:")
        for node in by_stage[stage]:
            lines.extend(_explain_node(plan, node, b))
    lines.append("outputs:")
    lines.extend(f"  {t.name} <- {t.source}: {t.type.render(b)}" for t in plan.outputs)
    copies = plan.copies
    lines.append(f"copies: {len(copies)}" + ("" if copies else " (every hand-off shares memory)"))
    for node in copies:
        (src,) = node.inputs["value"]
        lines.append(f"  {src} -> {node.device} ({_direction(plan, node)})")
    return "\n".join(lines)


def _direction(plan: Plan, node: PlanNode) -> str:
    """``upload`` (host to GPU), ``download`` (GPU to host) or ``peer`` (GPU to GPU)."""
    source = _ref_type(plan, node.inputs["value"][0])
    from_gpu = bool(source and source.device and source.device.is_gpu)
    if node.device.startswith("gpu"):
        return "peer" if from_gpu else "upload"
    return "download"


def _explain_node(plan: Plan, node: PlanNode, b: bool) -> list[str]:
    head = f"  {node.name} [{node.op}] on {node.device}"
    if node.kind != "copy":
        head += f", {node.instances} instance{'s' * (node.instances != 1)}"
    out = [head]
    for port, refs in node.inputs.items():
        for ref in refs:
            t = _ref_type(plan, ref)
            out.append(f"    in  {port} <- {ref}: {t.render(b) if t else '?'}")
    for port, t in node.outputs.items():
        out.append(f"    out {port}: {t.render(b)}")
    q = node.batching
    if b and node.kind != "copy":
        extras = []
        if q["preferred_batch_sizes"]:
            extras.append(f"preferred {q['preferred_batch_sizes']}")
        if q["max_queue_size"]:
            extras.append(f"queue ≤ {q['max_queue_size']}")
        if q["timeout_us"]:
            extras.append(f"timeout {q['timeout_us']} µs")
        if q["priority_levels"] > 1:
            extras.append(f"{q['priority_levels']} priorities")
        more = f", {', '.join(extras)}" if extras else ""
        out.append(f"    batch ≤ {q['max_batch_size']}, delay {q['max_queue_delay_us']} µs{more}")
    return out


def _dot_id(name: str) -> str:
    return '"' + name.replace('"', '\\"') + '"'


def to_dot(plan: Plan) -> str:
    """Graphviz DOT: nodes coloured by device, copies in orange, edges labelled with types."""
    b = _batched(plan)
    lines = [
        f"digraph {_dot_id(plan.name)} {{",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for t in plan.inputs:
        lines.append(f"  {_dot_id('inputs.' + t.name)} [label=\"{t.name}\", shape=ellipse, fillcolor=white];")
    for node in plan.nodes:
        device_kind = "gpu" if node.device.startswith("gpu") else "cpu"
        colour = _COPY_COLOUR if node.kind == "copy" else _DEVICE_COLOURS[device_kind]
        label = f"{node.name}\\n{node.op} @ {node.device}"
        if node.kind == "copy":
            label = f"copy\\n{_direction(plan, node)} → {node.device}"
        lines.append(f"  {_dot_id(node.name)} [label=\"{label}\", fillcolor=\"{colour}\"];")
    for t in plan.outputs:
        lines.append(f"  {_dot_id('outputs.' + t.name)} [label=\"{t.name}\", shape=ellipse, fillcolor=white];")
    for node in plan.nodes:
        for port, refs in node.inputs.items():
            for ref in refs:
                lines.append(_dot_edge(plan, ref, node.name, port, b))
    for t in plan.outputs:
        assert t.source is not None
        lines.append(_dot_edge(plan, t.source, "outputs." + t.name, None, b))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_edge(plan: Plan, ref: str, consumer: str, port: str | None, b: bool) -> str:
    producer = ref if ref.startswith("inputs.") else ref.partition(".")[0]
    t = _ref_type(plan, ref)
    label = t.render(b).replace('"', "'") if t else "?"
    if port and not ref.startswith("inputs."):
        label = f"{ref.partition('.')[2]} → {port}\\n{label}"
    return f"  {_dot_id(producer)} -> {_dot_id(consumer)} [label=\"{label}\"];"


def _mermaid_ids(plan: Plan) -> dict[str, str]:
    """A distinct Mermaid id per input, node and output.

    Ids are the sanitised names, made unique by kind: a node named ``inputs_x``
    and the pipeline input ``x`` would otherwise both become ``inputs_x``.
    """
    names = [f"inputs.{t.name}" for t in plan.inputs] + [n.name for n in plan.nodes]
    names += [f"outputs.{t.name}" for t in plan.outputs]
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        prefix = "in_" if name.startswith("inputs.") else "out_" if name.startswith("outputs.") else "n_"
        ident = prefix + re.sub(r"[^A-Za-z0-9_]", "_", name.partition(".")[2] if prefix != "n_" else name)
        while ident in used:
            ident += "_"
        ids[name] = ident
        used.add(ident)
    return ids


def to_mermaid(plan: Plan) -> str:
    """A Mermaid flowchart (renders on GitHub), same content as :func:`to_dot`."""
    b = _batched(plan)
    ids = _mermaid_ids(plan)
    lines = ["flowchart LR"]
    for t in plan.inputs:
        lines.append(f"  {ids['inputs.' + t.name]}([{t.name}])")
    for node in plan.nodes:
        if node.kind == "copy":
            text = f"copy {_direction(plan, node)} → {node.device}"
        else:
            text = f"{node.name}<br/>{node.op} @ {node.device}"
        lines.append(f'  {ids[node.name]}["{text}"]')
        cls = "copy" if node.kind == "copy" else ("gpu" if node.device.startswith("gpu") else "cpu")
        lines.append(f"  class {ids[node.name]} {cls}")
    for t in plan.outputs:
        lines.append(f"  {ids['outputs.' + t.name]}([{t.name}])")
    edges = [(ref, n.name) for n in plan.nodes for refs in n.inputs.values() for ref in refs]
    edges += [(t.source or "", "outputs." + t.name) for t in plan.outputs]
    for ref, consumer in edges:
        producer = ref if ref.startswith("inputs.") else ref.partition(".")[0]
        edge_type = _ref_type(plan, ref)
        label = (edge_type.render(b) if edge_type else "?").replace('"', "'")
        lines.append(f'  {ids[producer]} -->|"{label}"| {ids[consumer]}')
    lines += [
        f"  classDef cpu fill:{_DEVICE_COLOURS['cpu']}",
        f"  classDef gpu fill:{_DEVICE_COLOURS['gpu']}",
        f"  classDef copy fill:{_COPY_COLOUR}",
    ]
    return "\n".join(lines) + "\n"


def write_graph(plan: Plan, out: str | Path) -> None:
    """Write ``out`` as .dot, .mmd, or (through Graphviz's ``dot``) .svg/.png.

    Raises:
        ValueError: an unknown extension.
        RuntimeError: .svg/.png asked but Graphviz is not installed, or it failed.
    """
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix in (".dot", ".gv"):
        out.write_text(to_dot(plan), encoding="utf-8")
    elif suffix in (".mmd", ".mermaid"):
        out.write_text(to_mermaid(plan), encoding="utf-8")
    elif suffix in (".svg", ".png", ".pdf"):
        dot = shutil.which("dot")
        if dot is None:
            raise RuntimeError(
                f"writing {suffix} needs Graphviz's 'dot' program (e.g. apt-get install graphviz); "
                "or write .dot or .mmd instead"
            )
        proc = subprocess.run([dot, f"-T{suffix[1:]}", "-o", str(out)], input=to_dot(plan),
                              text=True, capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"graphviz failed: {proc.stderr.strip()}")
    else:
        raise ValueError(f"unknown graph format '{suffix}': use .dot, .mmd, .svg or .png")
