"""The dagserve command line: validate, compile, graph, ops; exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dagserve.cli import main
from dagserve.compiler import Plan

from .conftest import SPECS

ROOT = ["--root", str(SPECS)]
GOOD = SPECS / "good" / "detect.yaml"
BAD = SPECS / "bad" / "design_example.yaml"
WARN = SPECS / "bad" / "dead_node.yaml"


def test_validate_a_good_spec_exits_0_and_says_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(GOOD), "--target", "cpu", *ROOT]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{GOOD}: ok (4 nodes, plan ") and err == ""


def test_validate_a_bad_spec_exits_1_with_the_rendered_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(BAD), "--target", "cpu", *ROOT]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{BAD}:19:22: error[E-SHAPE]" in err and err.rstrip().endswith("1 error, 0 warnings")
    assert "Traceback" not in err


def test_validate_json_is_valid_json_with_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(BAD), str(WARN), "--format", "json", "--target", "cpu", *ROOT]) == 1
    doc = json.loads(capsys.readouterr().out)
    # sorted by file, then position
    assert [(d["code"], d["line"]) for d in doc["diagnostics"]] == [("W-DEAD-NODE", 12), ("E-SHAPE", 19)]
    assert doc["errors"] == 1 and doc["warnings"] == 1


def test_validate_json_of_a_clean_spec_is_an_empty_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(GOOD), "--format", "json", "--target", "cpu", *ROOT]) == 0
    assert json.loads(capsys.readouterr().out) == {"diagnostics": [], "errors": 0, "warnings": 0}


def test_warnings_pass_unless_strict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(WARN), "--target", "cpu", *ROOT]) == 0
    assert "warning[W-DEAD-NODE]" in capsys.readouterr().err
    assert main(["validate", str(WARN), "--strict", "--target", "cpu", *ROOT]) == 1


def test_validate_a_directory_checks_every_spec_in_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(SPECS / "good"), "--target", "gpu", "--root", str(SPECS)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(Path(line.split(":")[0]).name for line in lines) == sorted(
        p.name for p in (SPECS / "good").glob("*.yaml"))


def test_validate_a_directory_of_bad_specs_reports_them_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(SPECS / "bad"), "--format", "json", "--target", "cpu", *ROOT]) == 1
    doc = json.loads(capsys.readouterr().out)
    files = {Path(d["file"]).name for d in doc["diagnostics"]}
    assert files == {p.name for p in (SPECS / "bad").glob("*.yaml")}


def test_validate_a_directory_uses_it_as_the_repository_root(tmp_path: Path) -> None:
    shutil.copytree(SPECS / "models", tmp_path / "models")
    (tmp_path / "p").mkdir()
    spec = (SPECS / "good" / "two_inputs.yaml").read_text()
    (tmp_path / "p" / "two.yaml").write_text(spec)
    # the spec reads ../models/..., outside the directory given: that directory is the root
    assert main(["validate", str(tmp_path / "p"), "--target", "cpu"]) == 1
    assert main(["validate", str(tmp_path / "p"), "--target", "cpu", "--root", str(tmp_path)]) == 0


def test_an_empty_directory_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path)]) == 2
    assert "no specs found" in capsys.readouterr().err


def test_a_missing_spec_file_is_e_io(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml"), "--target", "cpu"]) == 1
    assert "error[E-IO]: cannot read spec" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [[], ["validate"], ["frobnicate"], ["compile", "a.yaml", "--target", "tpu"],
                                  ["validate", "x.yaml", "--format", "xml"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "usage: dagserve" in capsys.readouterr().err


def test_compile_writes_a_plan_that_loads_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "plan.json"
    assert main(["compile", str(GOOD), "-o", str(out), "--target", "gpu", *ROOT]) == 0
    plan = Plan.from_json(out.read_text())
    assert plan.target == "gpu" and len(plan.copies) == 3
    assert f"wrote {out} (plan {plan.hash[:12]})" in capsys.readouterr().err


def test_compile_to_stdout_and_explain(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(GOOD), "--explain", "--target", "cpu", *ROOT]) == 0
    assert "copies: 0 (every hand-off shares memory)" in capsys.readouterr().out
    assert main(["compile", str(GOOD), "-o", "-", "--target", "cpu", *ROOT]) == 0
    assert Plan.from_json(capsys.readouterr().out).name == "tiny_detect"


def test_compile_a_bad_spec_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    assert main(["compile", str(BAD), "-o", str(out), "--target", "cpu", *ROOT]) == 1
    assert not out.exists()


def test_compile_strict_refuses_a_spec_with_warnings(tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    assert main(["compile", str(WARN), "-o", str(out), "--strict", "--target", "cpu", *ROOT]) == 1
    assert not out.exists()
    assert main(["compile", str(WARN), "-o", str(out), "--target", "cpu", *ROOT]) == 0
    assert out.exists()


def test_compile_target_auto_without_a_gpu_is_cpu(capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import dagserve.cli as cli

    monkeypatch.setattr(cli, "detect_target", lambda: "cpu")
    assert main(["compile", str(GOOD), "-o", "-", *ROOT]) == 0
    assert Plan.from_json(capsys.readouterr().out).target == "cpu"


@pytest.mark.parametrize("suffix", [".dot", ".mmd"])
def test_graph_writes_dot_and_mermaid(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"g{suffix}"
    assert main(["graph", str(GOOD), "-o", str(out), "--target", "gpu", *ROOT]) == 0
    text = out.read_text()
    assert "detector" in text and "copy" in text


def test_graph_of_an_unknown_format_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", str(GOOD), "-o", str(tmp_path / "g.txt"), "--target", "cpu", *ROOT]) == 2
    assert "unknown graph format" in capsys.readouterr().err


def test_graph_of_a_bad_spec_exits_1(tmp_path: Path) -> None:
    assert main(["graph", str(BAD), "-o", str(tmp_path / "g.dot"), "--target", "cpu", *ROOT]) == 1
    assert not (tmp_path / "g.dot").exists()


def test_ops_lists_every_builtin_op(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ops"]) == 0
    out = capsys.readouterr().out
    for name in ("image.decode", "image.letterbox", "detect.nms", "classify.topk", "tensor.concat",
                 "model.onnx", "model.tensorrt"):
        assert name in out
    assert main(["ops", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    nms = next(op for op in doc if op["name"] == "detect.nms")
    assert nms["params"]["properties"]["iou_threshold"]["default"] == 0.45
    assert doc == sorted(doc, key=lambda op: op["name"])


def test_a_spec_never_produces_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_bytes(b"dagserve: 1\nname: \xff\xfe\n")
    assert main(["validate", str(spec), "--target", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "E-IO" in err and "Traceback" not in err


def test_compile_to_stdout_keeps_stdout_for_the_plan_alone(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(WARN), "-o", "-", "--format", "json", "--explain", "--target", "cpu", *ROOT]) == 0
    out, err = capsys.readouterr()
    assert Plan.from_json(out).name == "bad"  # one JSON document: the plan
    diagnostics, explanation = err.split("\npipeline ", 1)  # the JSON diagnostics, then --explain
    assert json.loads(diagnostics)["warnings"] == 1
    assert "copies: 0" in explanation


def test_compile_without_output_says_it_passed_and_how_to_get_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compile", str(GOOD), "--target", "cpu", *ROOT]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout stays clean for '-o -'
    assert f"{GOOD}: ok (" in captured.err and "target cpu" in captured.err
    assert "-o FILE" in captured.err and "--explain" in captured.err
