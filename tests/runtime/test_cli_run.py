"""``dagserve run``: inputs from the command line, outputs as a table or JSON, errors as one line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from dagserve import cli
from dagserve.compiler import driver
from dagserve.runtime import pipeline as pipeline_module

from .conftest import registry

pytestmark = pytest.mark.timeout(60)

ADD_MUL = """
dagserve: 1
name: add_mul
max_batch_size: 8
inputs:
  x: {dtype: float32, shape: [3]}
  k: {dtype: int32, shape: []}
outputs:
  y: double.y
  k_out: k_plus.y
nodes:
  plus:   {op: math.add, inputs: {x: inputs.x}, params: {value: 1.0}}
  double: {op: math.mul, inputs: {x: plus.y}, params: {value: 2.0}}
  k_plus: {op: math.add, inputs: {x: inputs.k}, params: {value: 10}}
"""

UNBATCHED = """
dagserve: 1
name: flat
max_batch_size: 0
inputs:
  x: {dtype: float32, shape: [2, 2]}
outputs:
  y: t.y
nodes:
  t: {op: tensor.transpose, inputs: {x: inputs.x}, params: {perm: [1, 0]}}
"""

BLOBS = """
dagserve: 1
name: blobs
max_batch_size: 4
inputs:
  data: {dtype: bytes, shape: []}
  n: {dtype: int64, shape: [1]}
outputs:
  size: size.y
  seq: seq.y
  echo: inputs.data
nodes:
  size: {op: test.bytes_len, inputs: {x: inputs.data}}
  seq: {op: test.ragged, inputs: {x: inputs.n}}
"""


def write(tmp_path: Path, text: str, name: str = "spec.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["run", *argv, "--target", "cpu"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def test_ops(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Let the command (which uses the default registry) see the test ops too."""
    monkeypatch.setattr(driver, "default_registry", registry)
    monkeypatch.setattr(pipeline_module, "default_registry", registry)
    yield


def test_run_prints_a_table_of_outputs_and_adds_the_batch_dimension(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, write(tmp_path, ADD_MUL), "--input", "x=[1, 2, 3]", "--input", "k=5")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["OUTPUT", "DTYPE", "SHAPE", "VALUES"]
    assert lines[1].split()[:3] == ["y", "float32", "[1,"] and "[[4., 6., 8.]]" in lines[1]
    assert lines[2].split()[:2] == ["k_out", "int32"] and lines[2].endswith("[15]")
    assert len(lines) == 3, "no latency line for a single run"


def test_run_json_output_has_dtype_shape_and_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, write(tmp_path, ADD_MUL), "-i", "x=[[1,2,3],[0,0,0.5]]", "-i", "k=[1, 2]",
                       "--format", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["outputs"]["y"] == {"dtype": "float32", "shape": [2, 3], "ragged": False,
                                   "data": [[4.0, 6.0, 8.0], [2.0, 2.0, 3.0]]}
    assert doc["outputs"]["k_out"]["data"] == [11, 12]
    assert "latency_ms" not in doc


def test_run_reads_npy_and_json_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "x.npy", np.array([[1, 1, 1], [2, 2, 2]], dtype=np.float64))  # cast to float32
    (tmp_path / "k.json").write_text("[3, 4]")
    code, out, err = run(capsys, write(tmp_path, ADD_MUL), "-i", f"x=@{tmp_path / 'x.npy'}",
                         "-i", f"k=@{tmp_path / 'k.json'}", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)["outputs"]
    assert doc["y"]["data"] == [[4.0] * 3, [6.0] * 3] and doc["k_out"]["data"] == [13, 14]


def test_run_repeat_prints_latency_percentiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, write(tmp_path, ADD_MUL), "-i", "x=[1,2,3]", "-i", "k=1", "--repeat", "20")
    assert code == 0
    last = out.splitlines()[-1]
    assert last.startswith("latency over 20 runs: p50 ") and " p90 " in last and " p99 " in last
    code, out, _ = run(capsys, write(tmp_path, ADD_MUL), "-i", "x=[1,2,3]", "-i", "k=1", "--repeat", "5",
                       "--format", "json")
    latency = json.loads(out)["latency_ms"]
    assert latency["runs"] == 5 and latency["min"] <= latency["p50"] <= latency["p90"] <= latency["p99"]


def test_run_unbatched_pipeline_takes_values_as_they_are(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, write(tmp_path, UNBATCHED), "-i", "x=[[1,2],[3,4]]", "--format", "json")
    assert code == 0
    assert json.loads(out)["outputs"]["y"]["data"] == [[1.0, 3.0], [2.0, 4.0]]


def test_run_bytes_inputs_from_a_file_text_and_json_and_ragged_outputs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], test_ops: None) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\x02\xff")
    spec = write(tmp_path, BLOBS)
    code, out, err = run(capsys, spec, "-i", f"data=@{tmp_path / 'blob.bin'}", "-i", "n=[2]", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)["outputs"]
    assert doc["size"]["data"] == [4] and doc["echo"]["dtype"] == "bytes"
    code, out, err = run(capsys, spec, "-i", 'data=["ab", "cde"]', "-i", "n=[[1], [3]]", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)["outputs"]
    assert doc["size"]["data"] == [2, 3] and doc["echo"]["data"] == ["ab", "cde"]
    assert doc["seq"]["ragged"] and doc["seq"]["shape"] == [[1], [3]] and doc["seq"]["data"] == [[0.0], [0, 1, 2]]
    code, out, _ = run(capsys, spec, "-i", "data=hello", "-i", "n=[2]")
    assert code == 0 and "size" in out and "ragged" not in out.splitlines()[1]
    assert "b'hello'" in out


def test_run_accepts_a_compiled_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = write(tmp_path, ADD_MUL)
    assert cli.main(["compile", spec, "-o", str(tmp_path / "plan.json"), "--target", "cpu"]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, str(tmp_path / "plan.json"), "-i", "x=[1,2,3]", "-i", "k=0")
    assert code == 0 and "[[4., 6., 8.]]" in out


@pytest.mark.parametrize(("args", "message"), [
    (["-i", "x=[1,2,3]"], "missing --input for: k (int32[N])"),
    (["-i", "x=[1,2,3]", "-i", "k=1", "-i", "z=1"], "pipeline 'add_mul' has no input 'z'; its inputs are: x, k"),
    (["-i", "x=[1,2,3]", "-i", "k=1", "-i", "k=2"], "input 'k' is given twice"),
    (["-i", "x=[1,2", "-i", "k=1"], "input 'x': cannot parse '[1,2' as JSON"),
    (["-i", "x=[1,2,3]", "-i", "k=1.5"], "input 'k' is int32: 1.5 does not fit without loss"),
    (["-i", 'x=["a","b","c"]', "-i", "k=1"], "input 'x' is float32: expected numbers"),
    (["-i", "x=@/no/such/file.npy", "-i", "k=1"], "input 'x': no such file: /no/such/file.npy"),
    (["-i", "x=[1,2,3,4]", "-i", "k=1"], "input 'x': expected float32[N,3], got shape [1, 4]"),
    (["-i", "x", "-i", "k=1"], "--input 'x': expected NAME=@FILE or NAME=VALUE"),
])
def test_run_errors_print_one_line_without_traceback_and_exit_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, out, err = run(capsys, write(tmp_path, ADD_MUL), *args)
    assert code == 1 and out == ""
    assert err.startswith("dagserve run: ") and message in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_run_raw_file_for_a_numeric_input_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "x.bin").write_bytes(b"1234")
    code, _, err = run(capsys, write(tmp_path, ADD_MUL), "-i", f"x=@{tmp_path / 'x.bin'}", "-i", "k=1")
    assert code == 1 and "input 'x' is float32: give a .npy or .json file" in err


def test_run_spec_with_errors_prints_diagnostics_and_exits_1(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, write(tmp_path, ADD_MUL.replace("math.mul", "math.nope")), "-i", "x=[1,2,3]")
    assert code == 1 and out == "" and "math.nope" in err and "Traceback" not in err


def test_run_kernel_failure_prints_the_item_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], test_ops: None) -> None:
    spec = write(tmp_path, """
    dagserve: 1
    name: failing
    max_batch_size: 2
    inputs:
      x: {dtype: float32, shape: [2]}
    outputs:
      y: bad.y
    nodes:
      bad: {op: test.fail_on, inputs: {x: inputs.x}, params: {marker: 7}}
    """)
    code, _, err = run(capsys, spec, "-i", "x=[7, 0]")
    assert code == 1
    assert err.strip() == "dagserve run: pipeline 'failing', node 'bad' (test.fail_on): item with marker value 7 " \
                          "is not allowed"


def test_run_repeat_below_one_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, write(tmp_path, ADD_MUL), "-i", "x=[1,2,3]", "-i", "k=1", "--repeat", "0")
    assert code == 2 and "--repeat must be at least 1" in err


def test_cli_does_not_import_the_runtime_unless_run_is_used() -> None:
    code = ("import sys; from dagserve import cli; cli.build_parser(); "
            "print(any(m.startswith('dagserve.runtime') for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
