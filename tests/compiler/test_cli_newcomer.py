"""A newcomer's first commands: ``python -m dagserve``, and ``dagserve ops`` naming every op's outputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from dagserve import __version__
from dagserve.cli import main


def test_python_m_dagserve_is_the_cli() -> None:
    result = subprocess.run([sys.executable, "-m", "dagserve", "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"dagserve {__version__}"
    usage = subprocess.run([sys.executable, "-m", "dagserve"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "usage: dagserve" in usage.stderr


def test_ops_says_what_every_op_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ops"]) == 0
    lines = capsys.readouterr().out.splitlines()
    heads = [line for line in lines if not line.startswith(" ")]
    assert heads
    for head in heads:
        assert not re.search(r"->\s*$", head), f"an op with no outputs listed: {head!r}"
    split = next(h for h in heads if h.startswith("tensor.split"))
    assert split.endswith("x -> (outputs named by its params)")
    python = next(h for h in heads if h.startswith("python "))
    assert python.endswith("(ports from the class)")
    onnx = next(h for h in heads if h.startswith("model.onnx"))
    assert onnx.endswith("(ports from the model)")


def test_ops_json_marks_ports_a_node_names_itself(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ops", "--format", "json"]) == 0
    doc = {op["name"]: op for op in json.loads(capsys.readouterr().out)}
    assert doc["tensor.split"]["dynamic_ports"] is True and doc["tensor.split"]["outputs"] == []
    assert doc["math.add"]["dynamic_ports"] is False and doc["math.add"]["outputs"] == ["y"]
