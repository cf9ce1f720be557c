"""``dagserve run`` asks only for the inputs something reads (W-UNUSED-INPUT ones get placeholders)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from dagserve import cli
from dagserve.api import load_plan
from dagserve.runtime._run_command import read_inputs

pytestmark = pytest.mark.timeout(60)

SPARE = """
dagserve: 1
name: spare
max_batch_size: 8
inputs:
  x: {dtype: float32, shape: [3]}
  spare: {dtype: int32, shape: [-1]}
  blob: {dtype: bytes, shape: []}
  echo: {dtype: int64, shape: [2]}
outputs:
  y: plus.y
  echoed: inputs.echo
nodes:
  plus: {op: math.add, inputs: {x: inputs.x}, params: {value: 1.0}}
"""


@pytest.fixture
def spec(tmp_path: Path) -> str:
    path = tmp_path / "spare.yaml"
    path.write_text(textwrap.dedent(SPARE).lstrip("\n"), encoding="utf-8")
    return str(path)


def test_read_inputs_are_those_a_node_or_an_output_reads(spec: str) -> None:
    assert read_inputs(load_plan(spec, target="cpu")) == {"x", "echo"}


def test_run_needs_no_input_that_nothing_reads(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", spec, "-i", "x=[[1,2,3],[4,5,6]]", "-i", "echo=[[1,2],[3,4]]", "--format", "json",
                     "--target", "cpu"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    outputs = json.loads(out)["outputs"]
    assert outputs["y"]["data"] == [[2.0, 3.0, 4.0], [5.0, 6.0, 7.0]]
    assert outputs["echoed"]["data"] == [[1, 2], [3, 4]]


def test_run_still_names_a_missing_input_that_is_read(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", spec, "-i", "x=[1,2,3]", "--target", "cpu"])
    _, err = capsys.readouterr()
    assert code == 1
    assert err.strip() == "dagserve run: missing --input for: echo (int64[N,2])"


def test_an_unread_input_may_still_be_given(spec: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", spec, "-i", "x=[1,2,3]", "-i", "echo=[5,6]", "-i", "spare=[7,8,9]", "-i", "blob=hi",
                     "--target", "cpu"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, ""), err
    assert "[[2., 3., 4.]]" in out
