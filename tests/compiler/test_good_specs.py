"""Good specs compile, to byte-identical golden plans, deterministically.

Regenerate the golden plans after an intended change with::

    UPDATE_GOLDEN=1 python -m pytest tests/compiler/test_good_specs.py

and review the diff like code: every changed byte is a change in what will run.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pytest

from dagserve.compiler import Plan
from dagserve.diagnostics import render_text

from .conftest import SPECS, compile_spec_file

GOOD = SPECS / "good"
GOLDEN = SPECS / "golden"

# (spec, target): every good spec on the CPU, and the ones worth seeing on the GPU
CASES = [
    ("detect", "cpu"),
    ("detect", "gpu"),
    ("detect_gpu", "gpu"),
    ("classify", "cpu"),
    ("classify", "gpu"),
    ("two_inputs", "cpu"),
    ("two_inputs", "gpu"),
    ("fan_in", "cpu"),
    ("fan_in", "gpu"),
]


def normalised(plan: Plan) -> str:
    """The plan's JSON with the machine-specific root replaced (the hash does not cover it)."""
    return dataclasses.replace(plan, root="<root>").to_json()


def compiled(stem: str, target: str) -> Plan:
    result = compile_spec_file(GOOD / f"{stem}.yaml", target=target)
    assert result.ok and result.plan is not None, render_text(result.diagnostics)
    return result.plan


def test_every_good_spec_has_a_golden_plan() -> None:
    assert {p.stem for p in GOOD.glob("*.yaml")} == {stem for stem, _ in CASES}


@pytest.mark.parametrize(("stem", "target"), CASES, ids=[f"{s}-{t}" for s, t in CASES])
def test_plan_matches_golden_byte_for_byte(stem: str, target: str) -> None:
    text = normalised(compiled(stem, target))
    golden = GOLDEN / f"{stem}.{target}.json"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.write_text(text, encoding="utf-8")
    assert golden.exists(), f"no golden plan {golden.name}; run with UPDATE_GOLDEN=1"
    assert text == golden.read_text(encoding="utf-8")


@pytest.mark.parametrize("stem", sorted({s for s, _ in CASES}))
def test_good_spec_has_no_diagnostics_at_all(stem: str) -> None:
    target = "gpu" if stem.endswith("_gpu") else "cpu"
    result = compile_spec_file(GOOD / f"{stem}.yaml", target=target)
    assert result.diagnostics == [], render_text(result.diagnostics)


@pytest.mark.parametrize(("stem", "target"), CASES, ids=[f"{s}-{t}" for s, t in CASES])
def test_same_spec_compiles_to_byte_identical_plans(stem: str, target: str) -> None:
    first, second = compiled(stem, target), compiled(stem, target)
    assert first.to_json() == second.to_json()
    assert first.hash == second.hash


@pytest.mark.parametrize(("stem", "target"), CASES, ids=[f"{s}-{t}" for s, t in CASES])
def test_plan_json_round_trip_keeps_content_and_hash(stem: str, target: str) -> None:
    plan = compiled(stem, target)
    again = Plan.from_json(plan.to_json())
    assert again == plan
    assert again.hash == plan.hash
    assert again.to_json() == plan.to_json()


def test_plan_from_json_refuses_a_hand_edited_plan() -> None:
    text = compiled("detect", "cpu").to_json().replace('"instances": 2', '"instances": 3')
    with pytest.raises(ValueError, match="does not match its hash"):
        Plan.from_json(text)


def test_plan_from_json_refuses_an_unknown_format() -> None:
    text = compiled("detect", "cpu").to_json().replace('"format": 1', '"format": 99')
    with pytest.raises(ValueError, match="unsupported plan format 99"):
        Plan.from_json(text)


def test_hash_does_not_depend_on_where_the_repository_is(tmp_path: Path) -> None:
    shutil.copytree(SPECS / "good", tmp_path / "good")
    shutil.copytree(SPECS / "models", tmp_path / "models")
    shutil.copytree(SPECS / "data", tmp_path / "data")
    here = compiled("classify", "cpu")
    there = compile_spec_file(tmp_path / "good" / "classify.yaml", root=tmp_path).plan
    assert there is not None and there.root != here.root
    assert there.hash == here.hash


def test_changed_model_file_changes_the_hash(tmp_path: Path) -> None:
    shutil.copytree(SPECS / "good", tmp_path / "good")
    shutil.copytree(SPECS / "models", tmp_path / "models")
    spec = tmp_path / "good" / "two_inputs.yaml"
    before = compile_spec_file(spec, root=tmp_path).plan
    model = tmp_path / "models" / "two_inputs.onnx"
    model.write_bytes(model.read_bytes().replace(b"dagserve-tests", b"dagserve-TESTS"))
    after = compile_spec_file(spec, root=tmp_path).plan
    assert before is not None and after is not None
    assert after.files["models/two_inputs.onnx"] != before.files["models/two_inputs.onnx"]
    assert after.hash != before.hash
    assert [n.name for n in after.nodes] == [n.name for n in before.nodes]


def test_changed_labels_file_changes_the_hash(tmp_path: Path) -> None:
    for d in ("good", "models", "data"):
        shutil.copytree(SPECS / d, tmp_path / d)
    before = compile_spec_file(tmp_path / "good" / "classify.yaml", root=tmp_path).plan
    labels = tmp_path / "data" / "labels10.txt"
    labels.write_text(labels.read_text().replace("seven", "SEVEN"))
    after = compile_spec_file(tmp_path / "good" / "classify.yaml", root=tmp_path).plan
    assert before is not None and after is not None and before.hash != after.hash


def test_gpu_plan_copies_exactly_the_uploads_and_downloads_it_needs() -> None:
    # detect on the GPU: the encoded bytes are read from the host (no upload), and the
    # three outputs come back (three downloads); nothing else moves.
    plan = compiled("detect", "gpu")
    assert sorted((n.inputs["value"][0], n.device) for n in plan.copies) == [
        ("nms.boxes", "cpu"), ("nms.labels", "cpu"), ("nms.scores", "cpu"),
    ]
    # fan_in: both inputs go up once each (shared by all their readers), every output comes down
    plan = compiled("fan_in", "gpu")
    ups = sorted(n.inputs["value"][0] for n in plan.copies if n.device.startswith("gpu"))
    downs = sorted(n.inputs["value"][0] for n in plan.copies if n.device == "cpu")
    assert ups == ["inputs.w", "inputs.x"]
    # every output reads a download, and each download fetches a distinct port
    fetched = sorted(plan.node(t.source.partition(".")[0]).inputs["value"][0] for t in plan.outputs if t.source)
    assert downs == fetched == ["as_int.y", "flipped.y", "joined.y", "parts.y0", "parts.y1"]


def test_cpu_plans_make_no_copies() -> None:
    for stem, target in CASES:
        if target == "cpu":
            assert compiled(stem, target).copies == [], stem


def test_plan_nodes_are_in_topological_order() -> None:
    for stem, target in CASES:
        plan = compiled(stem, target)
        seen: set[str] = set()
        for node in plan.nodes:
            for refs in node.inputs.values():
                for ref in refs:
                    assert ref.startswith("inputs.") or ref.split(".")[0] in seen, (stem, node.name, ref)
            seen.add(node.name)


def test_plan_node_json_carries_every_field() -> None:
    from dagserve.compiler.plan import PlanNode

    for node in compiled("detect", "gpu").nodes:
        # 'warmup' is written only when a node sets it (its default keeps older plans unchanged)
        assert set(node.to_json()) | {"warmup"} == {f.name for f in dataclasses.fields(PlanNode)}
        assert PlanNode.from_json(node.to_json()) == node
    node = dataclasses.replace(compiled("detect", "gpu").nodes[0], warmup={"inputs": {"data": "x"}})
    assert set(node.to_json()) == {f.name for f in dataclasses.fields(PlanNode)}
    assert PlanNode.from_json(node.to_json()) == node


def test_a_pipeline_with_tensorflow_style_wire_names_compiles_and_runs(compile_text) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    import dagserve

    result = compile_text("""
        dagserve: 1
        name: tf_names
        inputs:
          input:0: {dtype: float32, shape: [4]}
          image.1: {dtype: float32, shape: [4]}
        outputs:
          dense/Softmax:0: plus.y
          echo:0: inputs.input:0
          copy.1: same.y
        nodes:
          plus:
            op: math.add
            inputs: {x: inputs.input:0}
            params: {value: 1}
          same:
            op: tensor.identity
            inputs: {x: inputs.image.1}
    """)
    assert result.ok, [d.one_line() for d in result.diagnostics]
    assert [t.name for t in result.plan.inputs] == ["input:0", "image.1"]
    assert [t.name for t in result.plan.outputs] == ["dense/Softmax:0", "echo:0", "copy.1"]
    with dagserve.load(result.plan) as pipeline:
        x = np.arange(4, dtype=np.float32)
        out = pipeline.infer({"input:0": x, "image.1": 3 * x})
    np.testing.assert_array_equal(out["dense/Softmax:0"], x + 1)
    np.testing.assert_array_equal(out["echo:0"], x)
    np.testing.assert_array_equal(out["copy.1"], 3 * x)
