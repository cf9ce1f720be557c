"""Each compiler pass on its own: what it requires, what it changes, what it reports."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from dagserve.compiler import compile_file
from dagserve.compiler.context import CompileContext, CompileOptions
from dagserve.compiler.ir import Graph, NodeKind, PortRef
from dagserve.compiler.passes import PASSES, acyclic, batching, build, ops, placement, reachability, types
from dagserve.ops.base import InferContext, OpDef, PortDef
from dagserve.ops.registry import OpRegistry, default_registry
from dagserve.spec.document import parse_spec
from dagserve.types import CPU, Device, TensorType

ContextFor = Callable[..., CompileContext]


@pytest.fixture
def context_for(write_spec: Callable[..., Path], tmp_path: Path) -> ContextFor:
    """A fresh CompileContext for a spec text, with no pass run yet."""

    def make(text: str, target: str = "cpu", registry: OpRegistry | None = None) -> CompileContext:
        spec, diagnostics = parse_spec(write_spec(text), root=str(tmp_path))
        assert spec is not None and diagnostics == [], diagnostics
        return CompileContext(spec, Graph(spec.name, spec.max_batch_size), registry or default_registry(),
                              CompileOptions(target=target, debug=True))

    return make


def run(ctx: CompileContext, *passes: Callable[[CompileContext], bool]) -> CompileContext:
    for p in passes:
        p(ctx)
    return ctx


def found(ctx: CompileContext) -> list[tuple[str, int]]:
    return sorted((d.code, d.span.line if d.span else 0) for d in ctx.bag.items)


CHAIN = """\
dagserve: 1
name: chain
max_batch_size: 4
inputs:
  x: {dtype: float32, shape: [2, 3]}
outputs:
  y: b.y
nodes:
  a:
    op: math.add
    inputs: {x: inputs.x}
    params: {value: 1}
  b:
    op: tensor.transpose
    inputs: {x: a.y}
    params: {perm: [1, 0]}
"""


def test_passes_run_in_the_documented_order() -> None:
    assert [p.name for p in PASSES] == [
        "resolve", "acyclic", "reachability", "ops", "types", "placement", "batching",
    ]


# --- resolve -------------------------------------------------------------------------------------


def test_resolve_builds_one_ir_node_per_input_node_and_output(context_for: ContextFor) -> None:
    ctx = run(context_for(CHAIN), build.run)
    g = ctx.graph
    assert [(n.name, n.kind) for n in g.nodes.values()] == [
        ("inputs.x", NodeKind.INPUT), ("a", NodeKind.OP), ("b", NodeKind.OP), ("outputs.y", NodeKind.OUTPUT),
    ]
    assert g.nodes["a"].inputs == {"x": [PortRef("inputs.x", "value")]}
    assert g.nodes["outputs.y"].inputs == {"value": [PortRef("b", "y")]}
    assert g.nodes["inputs.x"].outputs["value"] == TensorType("float32", (2, 3))
    assert g.nodes["a"].input_spans["x"][0].line == 11
    g.lint()


def test_resolve_reports_unknown_names_and_keeps_going(context_for: ContextFor) -> None:
    ctx = run(context_for(CHAIN.replace("inputs.x}", "inputs.z}").replace("a.y}", "aa.y}")), build.run)
    assert found(ctx) == [("E-REF", 11), ("E-REF", 15)]
    assert ctx.graph.nodes["a"].inputs == {} and ctx.graph.nodes["a"].meta["failed"]
    ctx.graph.lint(partial=True)


# --- acyclic -------------------------------------------------------------------------------------


def test_acyclic_accepts_a_dag_silently(context_for: ContextFor) -> None:
    assert found(run(context_for(CHAIN), build.run, acyclic.run)) == []


def test_acyclic_reports_each_cycle_once_with_its_path(context_for: ContextFor) -> None:
    text = CHAIN.replace("inputs: {x: inputs.x}", "inputs: {x: b.y}")
    ctx = run(context_for(text), build.run, acyclic.run)
    (d,) = ctx.bag.items
    assert d.code == "E-CYCLE" and d.message == "the graph has a cycle: a → b → a"
    assert d.span.line == 11 and d.node == "a"


# --- reachability --------------------------------------------------------------------------------


def test_reachability_marks_dead_nodes_and_unused_inputs(context_for: ContextFor) -> None:
    x = "  x: {dtype: float32, shape: [2, 3]}\n"
    text = CHAIN.replace("outputs:\n  y: b.y", "outputs:\n  y: a.y").replace(x, x + "  z: {dtype: int8, shape: []}\n")
    ctx = run(context_for(text), build.run, reachability.run)
    assert found(ctx) == [("W-DEAD-NODE", 14), ("W-UNUSED-INPUT", 6)]
    assert ctx.graph.nodes["b"].meta.get("dead") and not ctx.graph.nodes["a"].meta.get("dead")


def test_dead_nodes_are_type_checked_but_left_out_of_the_plan(compile_text: Callable[..., object]) -> None:
    result = compile_text(CHAIN.replace("y: b.y", "y: a.y").replace("perm: [1, 0]", "perm: [0, 0]"))
    assert sorted(d.code for d in result.diagnostics) == ["E-PARAM", "W-DEAD-NODE"]
    ok = compile_text(CHAIN.replace("y: b.y", "y: a.y"))
    assert [n.name for n in ok.plan.nodes] == ["a"]


# --- ops -----------------------------------------------------------------------------------------


def test_ops_fills_param_defaults_and_sets_the_node_kind(context_for: ContextFor) -> None:
    text = CHAIN.replace("op: math.add\n    inputs: {x: inputs.x}\n    params: {value: 1}",
                         "op: tensor.slice\n    inputs: {x: inputs.x}\n    params: {stop: 2}")
    ctx = run(context_for(text), build.run, ops.run)
    assert found(ctx) == []
    assert ctx.graph.nodes["a"].params == {"axis": 0, "start": 0, "stop": 2, "step": 1}


def test_ops_resolves_model_files_against_the_spec(context_for: ContextFor, tmp_path: Path) -> None:
    text = """\
dagserve: 1
name: m
max_batch_size: 2
inputs:
  a: {dtype: float32, shape: [4]}
  b: {dtype: float32, shape: [4]}
outputs:
  s: m.sum
nodes:
  m:
    op: model.onnx
    inputs: {a: inputs.a, b: inputs.b}
    params: {path: models/two_inputs.onnx}
"""
    ctx = run(context_for(text), build.run, ops.run)
    node = ctx.graph.nodes["m"]
    assert node.kind is NodeKind.MODEL and found(ctx) == []
    assert node.meta["files"] == {"path": str((tmp_path / "models" / "two_inputs.onnx").resolve())}


def test_ops_marks_failed_nodes_so_types_skips_them(context_for: ContextFor) -> None:
    ctx = run(context_for(CHAIN.replace("value: 1", "value: one")), build.run, ops.run, types.run)
    assert found(ctx) == [("E-PARAM", 12)]
    assert ctx.graph.nodes["a"].meta["failed"] and ctx.graph.nodes["b"].meta["failed"]
    assert ctx.graph.nodes["b"].outputs == {}  # skipped silently: one mistake, one error


def test_ops_reports_device_conflicts_before_types(context_for: ContextFor) -> None:
    ctx = run(context_for(CHAIN + "    device: gpu:1\n"), build.run, ops.run)
    (d,) = ctx.bag.items
    assert d.code == "E-DEVICE" and d.span.line == 17 and "target is cpu" in d.message
    assert found(run(context_for(CHAIN + "    device: gpu:1\n", target="gpu"), build.run, ops.run)) == []


def test_ops_only_checks_declared_ports_of_ops_with_static_inputs(context_for: ContextFor) -> None:
    text = CHAIN.replace("op: tensor.transpose\n    inputs: {x: a.y}\n    params: {perm: [1, 0]}",
                         "op: tensor.split\n    inputs: {data: a.y}\n    params: {sizes: [1, 1]}").replace(
        "y: b.y", "y: b.y0")
    ctx = run(context_for(text), build.run, ops.run)
    assert found(ctx) == [("E-PORT", 15)]


# --- types ---------------------------------------------------------------------------------------


def test_types_propagates_through_every_node(context_for: ContextFor) -> None:
    ctx = run(context_for(CHAIN), build.run, ops.run, types.run)
    assert found(ctx) == []
    assert ctx.graph.nodes["b"].outputs == {"y": TensorType("float32", (3, 2))}
    assert ctx.graph.nodes["outputs.y"].outputs == {"value": TensorType("float32", (3, 2))}


def test_types_reports_at_the_reference_that_feeds_the_port(context_for: ContextFor) -> None:
    ctx = run(context_for(CHAIN.replace("float32", "uint8").replace("value: 1", "value: 1.5")),
              build.run, ops.run, types.run)
    (d,) = ctx.bag.items
    assert (d.code, d.span.line, d.span.col) == ("E-DTYPE", 11, 17)


def test_type_rule_crash_is_e_internal_naming_op_and_node(context_for: ContextFor) -> None:
    def broken(ctx: InferContext) -> dict[str, TensorType]:
        raise ZeroDivisionError("oops")

    registry = _registry_with(OpDef("test.broken", "", (PortDef("x"),), (PortDef("y"),), broken))
    ctx = run(context_for(CHAIN.replace("math.add", "test.broken").replace("    params: {value: 1}\n", ""),
                          registry=registry), build.run, ops.run, types.run)
    (d,) = ctx.bag.items
    assert d.code == "E-INTERNAL" and "test.broken" in d.message and "'a'" in d.message
    assert "ZeroDivisionError: oops" in d.message


def test_type_rule_that_types_nothing_silently_is_caught(context_for: ContextFor) -> None:
    registry = _registry_with(OpDef("test.silent", "", (PortDef("x"),), (PortDef("y"),), lambda ctx: {}))
    ctx = run(context_for(CHAIN.replace("math.add", "test.silent").replace("    params: {value: 1}\n", ""),
                          registry=registry), build.run, ops.run, types.run)
    (d,) = ctx.bag.items
    assert d.code == "E-INTERNAL" and "gave no type for output(s) y" in d.message


def _registry_with(op: OpDef) -> OpRegistry:
    registry = OpRegistry()
    registry.register_all(default_registry())
    registry.register(dataclasses.replace(op, params_schema={"type": "object"}))
    return registry


# --- placement -----------------------------------------------------------------------------------


def test_placement_on_cpu_places_everything_on_the_host_without_copies(context_for: ContextFor) -> None:
    ctx = run(context_for(CHAIN), build.run, ops.run, types.run, placement.run)
    assert {n.device for n in ctx.graph.nodes.values()} == {CPU}
    assert ctx.graph.of_kind(NodeKind.COPY) == []
    ctx.graph.lint()


def test_placement_on_gpu_inserts_one_upload_and_one_download(context_for: ContextFor) -> None:
    ctx = run(context_for(CHAIN, target="gpu"), build.run, ops.run, types.run, placement.run)
    g = ctx.graph
    copies = {n.name: (n.inputs["value"][0], n.device, n.meta["direction"]) for n in g.of_kind(NodeKind.COPY)}
    assert copies == {
        "copy/inputs/x/gpu0": (PortRef("inputs.x", "value"), Device("gpu", 0), "upload"),
        "copy/b/y/cpu": (PortRef("b", "y"), CPU, "download"),
    }
    assert g.nodes["a"].inputs["x"] == [PortRef("copy/inputs/x/gpu0", "value")]
    assert g.nodes["outputs.y"].inputs["value"] == [PortRef("copy/b/y/cpu", "value")]
    assert g.nodes["b"].outputs["y"].device == Device("gpu", 0)
    g.lint()


def test_placement_shares_one_upload_between_all_readers(context_for: ContextFor) -> None:
    text = CHAIN.replace("inputs: {x: a.y}", "inputs: {x: inputs.x}")
    ctx = run(context_for(text.replace("y: b.y", "y: b.y\n  z: a.y"), target="gpu"),
              build.run, ops.run, types.run, placement.run)
    uploads = [n for n in ctx.graph.of_kind(NodeKind.COPY) if n.device.is_gpu]
    assert len(uploads) == 1


def test_placement_never_uploads_bytes(context_for: ContextFor) -> None:
    text = """\
dagserve: 1
name: b
inputs:
  data: {dtype: bytes, shape: []}
outputs:
  same: pass.y
nodes:
  pass:
    op: tensor.identity
    inputs: {x: inputs.data}
"""
    ctx = run(context_for(text, target="gpu"), build.run, ops.run, types.run, placement.run)
    assert ctx.graph.nodes["pass"].device == Device("gpu", 0)
    assert ctx.graph.of_kind(NodeKind.COPY) == []
    assert ctx.graph.nodes["pass"].outputs["y"].device == CPU


# --- batching ------------------------------------------------------------------------------------


def test_batching_fills_defaults_from_the_pipeline(context_for: ContextFor) -> None:
    ctx = run(context_for(CHAIN), build.run, ops.run, types.run, placement.run, batching.run)
    assert ctx.graph.nodes["a"].meta["batching"] == {**batching.DEFAULTS, "max_batch_size": 4}


def test_batching_caps_at_a_models_fixed_batch(compile_text: Callable[..., object]) -> None:
    text = """\
dagserve: 1
name: d
max_batch_size: 8
inputs:
  x: {dtype: float32, shape: [3, 64, 64]}
outputs:
  y: det.output0
nodes:
  det:
    op: model.onnx
    inputs: {images: inputs.x}
    params: {path: models/tiny_detector_b1.onnx}
"""
    result = compile_text(text)
    assert result.ok and result.plan.node("det").batching["max_batch_size"] == 1


def test_batching_without_a_batch_dimension_is_one_item_and_warns(context_for: ContextFor) -> None:
    text = CHAIN.replace("max_batch_size: 4", "max_batch_size: 0") + "    batching: {max_queue_delay_us: 10}\n"
    ctx = run(context_for(text), build.run, ops.run, types.run, placement.run, batching.run)
    assert found(ctx) == [("W-BATCH", 17)]
    assert ctx.graph.nodes["b"].meta["batching"]["max_batch_size"] == 1


def test_batching_default_priority_above_levels_is_e_batch(context_for: ContextFor) -> None:
    text = CHAIN + "    batching: {priority_levels: 2, default_priority: 3}\n"
    ctx = run(context_for(text), build.run, ops.run, types.run, placement.run, batching.run)
    assert found(ctx) == [("E-BATCH", 17)]


# --- the driver ----------------------------------------------------------------------------------


def test_a_crashing_pass_is_e_internal_naming_it_and_the_passes_before(
    monkeypatch: pytest.MonkeyPatch, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    def boom(ctx: CompileContext) -> bool:
        raise KeyError("lost")

    from dagserve.compiler import driver

    patched = tuple(dataclasses.replace(p, run=boom) if p.name == "placement" else p for p in PASSES)
    monkeypatch.setattr(driver, "PASSES", patched)
    result = compile_file(str(write_spec(CHAIN)), root=str(tmp_path))
    (d,) = result.diagnostics
    assert d.code == "E-INTERNAL" and result.plan is None
    assert d.message == ("internal compiler error in pass 'placement' (after resolve, acyclic, reachability, "
                         "ops, types): KeyError: 'lost'")
    assert d.location.endswith("spec.yaml") and "please report it" in (d.hint or "")


def test_a_crash_while_building_the_plan_is_e_internal(
    monkeypatch: pytest.MonkeyPatch, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    from dagserve.compiler import driver

    monkeypatch.setattr(driver, "build_plan", lambda *a: 1 / 0)
    result = compile_file(str(write_spec(CHAIN)), root=str(tmp_path))
    (d,) = result.diagnostics
    assert d.code == "E-INTERNAL" and "building the plan" in d.message and result.plan is None


def test_lint_runs_after_every_pass_in_debug_mode(
    monkeypatch: pytest.MonkeyPatch, write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    calls: list[bool] = []
    monkeypatch.setattr(Graph, "lint", lambda self, partial=False: calls.append(partial))
    compile_file(str(write_spec(CHAIN)), CompileOptions(debug=True), root=str(tmp_path))
    assert calls == [False] * len(PASSES)
    calls.clear()
    compile_file(str(write_spec(CHAIN)), CompileOptions(debug=False), root=str(tmp_path))
    assert calls == []
    monkeypatch.setenv("DAGSERVE_DEBUG", "1")
    compile_file(str(write_spec(CHAIN)), CompileOptions(debug=False), root=str(tmp_path))
    assert len(calls) == len(PASSES)


MODEL_SPEC = """\
dagserve: 1
name: m
max_batch_size: 2
inputs:
  a: {dtype: float32, shape: [4]}
  b: {dtype: float32, shape: [4]}
outputs:
  s: m.sum
nodes:
  m:
    op: model.onnx
    inputs: {a: inputs.a, b: inputs.b}
    params: {path: PATH}
"""


@pytest.mark.parametrize("path", ["/etc/hosts", "~/model.onnx", "../outside.onnx", "models/../../outside.onnx"])
def test_paths_that_leave_the_repository_are_e_path(compile_text: Callable[..., object], path: str) -> None:
    result = compile_text(MODEL_SPEC.replace("PATH", path))
    assert [(d.code, d.span.line) for d in result.diagnostics] == [("E-PATH", 13)]


def test_a_symlink_out_of_the_repository_is_e_path(compile_text: Callable[..., object], tmp_path: Path,
                                                   tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "two_inputs.onnx"
    outside.write_bytes((tmp_path / "models" / "two_inputs.onnx").read_bytes())
    (tmp_path / "models" / "link.onnx").symlink_to(outside)
    result = compile_text(MODEL_SPEC.replace("PATH", "models/link.onnx"))
    assert [d.code for d in result.diagnostics] == ["E-PATH"]


def test_a_path_that_goes_out_and_back_in_is_fine(compile_text: Callable[..., object], tmp_path: Path) -> None:
    result = compile_text(MODEL_SPEC.replace("PATH", f"../{tmp_path.name}/models/two_inputs.onnx"))
    assert result.diagnostics == [] and result.plan.node("m").files == {"path": "models/two_inputs.onnx"}
