"""Pass 6, placement: give every node a device and make every transfer an explicit node.

Bytes tensors live on the host wherever they are made, and a port declared
``host`` (a GPU decoder's encoded input) reads the host: neither gets a copy.
``device: auto`` follows the target (``gpu`` when the op has a GPU kernel, else
``cpu``); an explicit device the op or target cannot honour is ``E-DEVICE``
(:func:`check_device`, which the ops pass runs before type inference).
Pipeline inputs arrive on and outputs leave from the host. Wherever a producer
and a consumer sit on different devices, one ``copy`` node per (producer port,
destination device) is inserted, so the Plan lists every copy it makes.
"""

from __future__ import annotations

from dagserve.compiler.context import CompileContext
from dagserve.compiler.ir import Node, NodeKind, PortRef
from dagserve.ops.base import OpDef
from dagserve.types import CPU, Device, parse_device

__all__ = ["check_device", "run"]


def check_device(ctx: CompileContext, node: Node, op: OpDef) -> bool:
    """Report ``E-DEVICE`` when ``node`` cannot be placed on the target; True when it can.

    Called by the ops pass, before type inference, so that a node that cannot run
    here (a TensorRT engine on a CPU target) is not opened at all.
    """
    devices, target = op.devices, ctx.options.target
    key = ("nodes", node.name, "device")
    span = ctx.spec.source.values.get(key) or node.span
    if node.device_request == "auto":
        if "cpu" in devices or (target == "gpu" and "gpu" in devices):
            return True
        ctx.report("E-DEVICE", f"node '{node.name}' (op {node.op}) runs only on {', '.join(sorted(devices))} "
                   f"but the target is {target}", span, node=node,
                   hint="compile with --target gpu, or use an op that runs on the CPU")
        return False
    device = parse_device(node.device_request)
    if device.kind not in devices:
        ctx.report("E-DEVICE", f"node '{node.name}' asks for device '{node.device_request}' but op "
                   f"{node.op} runs only on {', '.join(sorted(devices))}", span, node=node,
                   hint="use 'device: auto' or a device the op supports")
        return False
    if device.is_gpu and target == "cpu":
        ctx.report("E-DEVICE", f"node '{node.name}' asks for device '{node.device_request}' but the "
                   "target is cpu", span, node=node,
                   hint="use 'device: auto' so the spec also runs without a GPU, or compile with --target gpu")
        return False
    return True


def _place(ctx: CompileContext, node: Node) -> Device:
    """The device of a node :func:`check_device` accepted.

    A type rule may narrow the op's devices for one node (``meta["devices"]``, e.g.
    a ``python`` class that declares ``devices = ["cpu"]``): ``auto`` then follows
    the narrower set, and an explicit device outside it is ``E-DEVICE``.
    """
    op = ctx.registry.get(node.op or "")
    devices = op.devices if op else frozenset({"cpu"})
    declared = node.meta.get("devices")
    if declared:
        devices = devices & frozenset(declared)
    if node.device_request == "auto":
        return Device("gpu", 0) if ctx.options.target == "gpu" and "gpu" in devices else CPU
    device = parse_device(node.device_request)
    if declared and device.kind not in devices:
        span = ctx.spec.source.values.get(("nodes", node.name, "device")) or node.span
        ctx.report("E-DEVICE", f"node '{node.name}' asks for device '{node.device_request}' but its "
                   f"{node.op} implementation runs only on {', '.join(sorted(devices)) or 'no device'}",
                   span, node=node, hint="use 'device: auto', or declare the device in the class")
    return device


def _reads_host(ctx: CompileContext, node: Node, port: str) -> bool:
    op = ctx.registry.get(node.op or "")
    definition = op.input_port(port) if op else None
    return bool(definition and definition.host)


def _copy_name(ref: PortRef, device: Device) -> str:
    """A name no spec node can have (specs cannot use '/'), with no '.' (refs split on it)."""
    source = ref.node.replace(".", "/")
    port = "" if ref.node.startswith("inputs.") else "/" + ref.port.replace(".", "/")
    return f"copy/{source}{port}/{str(device).replace(':', '')}"


def _insert_copies(ctx: CompileContext) -> bool:
    graph = ctx.graph
    copies: dict[tuple[PortRef, Device], str] = {}
    modified = False
    for node in list(graph.topological_order()):
        if node.kind in (NodeKind.INPUT, NodeKind.COPY) or node.device is None or node.meta.get("dead"):
            continue  # a dead node does not run, so nothing is copied for it
        for port, refs in node.inputs.items():
            for i, ref in enumerate(refs):
                producer = graph.nodes[ref.node]
                src_type = graph.type_of(ref)
                here = src_type.device if src_type and src_type.device else producer.device
                host_only = _reads_host(ctx, node, port) or (src_type is not None and src_type.dtype == "bytes")
                wanted = CPU if host_only else node.device
                if here == wanted:
                    continue
                key = (ref, wanted)
                if key not in copies:
                    direction = "download" if not wanted.is_gpu else "peer" if here and here.is_gpu else "upload"
                    name = _copy_name(ref, wanted)
                    graph.add(Node(
                        name=name,
                        kind=NodeKind.COPY,
                        inputs={"value": [ref]},
                        input_spans={"value": [None]},
                        outputs={"value": src_type.with_device(wanted) if src_type else None},
                        device=wanted,
                        meta={"direction": direction, "source_device": str(here)},
                    ))
                    copies[key] = name
                    modified = True
                refs[i] = PortRef(copies[key], "value")
    return modified


def run(ctx: CompileContext) -> bool:
    for node in ctx.graph.nodes.values():
        if node.kind in (NodeKind.INPUT, NodeKind.OUTPUT):
            node.device = CPU
        elif node.kind is not NodeKind.COPY:
            node.device = _place(ctx, node)
        device = node.device or CPU
        node.outputs = {
            p: t.with_device(CPU if t.dtype == "bytes" else device) if t else None
            for p, t in node.outputs.items()
        }
    return _insert_copies(ctx)
