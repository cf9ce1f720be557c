"""Param values that pass JSON Schema but cannot work are E-PARAM at the value's line."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from dagserve.compiler import CompileResult
from dagserve.ops._params import SCALE, value_problems

CompileText = Callable[..., CompileResult]

NMS = """
dagserve: 1
name: p
max_batch_size: 2
inputs:
  images: {{dtype: float32, shape: [3, 64, 64]}}
outputs:
  boxes: nms.boxes
nodes:
  detector:
    op: model.onnx
    inputs: {{images: inputs.images}}
    params: {{path: models/tiny_detector.onnx}}
  nms:
    op: detect.nms
    inputs: {{predictions: detector.output0}}
    params: {{{params}}}
"""

IMAGE = """
dagserve: 1
name: p
inputs:
  image: {{dtype: bytes, shape: []}}
outputs:
  y: op.image
nodes:
  decode:
    op: image.decode
    inputs: {{data: inputs.image}}
  op:
    op: {op}
    inputs: {{image: decode.image}}
    params: {{{params}}}
"""

ARITH = """
dagserve: 1
name: p
inputs:
  x: {{dtype: {dtype}, shape: [4]}}
outputs:
  y: op.y
nodes:
  op:
    op: {op}
    inputs: {{x: inputs.x}}
    params: {{value: {value}}}
"""


def only_error(result: CompileResult) -> tuple[str, int, str]:
    (d,) = result.diagnostics
    assert d.span is not None
    return d.code, d.span.line, d.message


@pytest.mark.parametrize("value", [".nan", ".NaN", ".inf", "-.inf"])
@pytest.mark.parametrize("param", ["score_threshold", "iou_threshold"])
def test_a_non_finite_threshold_is_e_param(compile_text: CompileText, param: str, value: str) -> None:
    code, line, message = only_error(compile_text(NMS.format(params=f"{param}: {value}")))
    assert (code, line) == ("E-PARAM", 16)
    if "nan" in value.lower():  # inf is already outside [0, 1]
        assert message == f"node 'nms' param '{param}' must be a finite number, not nan (op detect.nms)"


def test_a_finite_threshold_still_compiles(compile_text: CompileText) -> None:
    assert compile_text(NMS.format(params="score_threshold: 0.5, iou_threshold: 1")).ok


@pytest.mark.parametrize(("op", "params", "message"), [
    ("image.resize", "size: [32.0, 32]", "param 'size[0]' must be an integer, not 32.0 (write 32)"),
    ("image.letterbox", "size: [64, 64.0]", "param 'size[1]' must be an integer, not 64.0 (write 64)"),
    ("image.letterbox", "size: [64, 64], fill: 114.0", "param 'fill' must be an integer, not 114.0 (write 114)"),
    ("image.crop", "box: [0, 0, 4, 4], size: [8.0, 8]", "param 'size[0]' must be an integer"),
    ("image.normalize", "mean: [0.5, .nan, 0.5]", "param 'mean[1]' must be a finite number, not nan"),
    ("image.normalize", "scale: 1/0", "param 'scale' is '1/0', a division by zero"),
    ("image.normalize", "scale: '1..2/3'", "param 'scale' is '1..2/3', which is not a fraction of two numbers"),
    ("image.letterbox", "size: [64, 64], scale: 2/0.0", "param 'scale' is '2/0.0', a division by zero"),
    ("image.letterbox", "size: [64, 64], scale: .nan", "param 'scale' must be a finite number, not nan"),
])
def test_values_no_kernel_can_use_are_e_param_at_the_value(
        compile_text: CompileText, op: str, params: str, message: str) -> None:
    code, line, text = only_error(compile_text(IMAGE.format(op=op, params=params)))
    assert (code, line) == ("E-PARAM", 14)
    assert text.startswith(f"node 'op' {message}")


def test_the_caret_points_at_the_bad_item_of_a_list(compile_text: CompileText) -> None:
    (d,) = compile_text(IMAGE.format(op="image.resize", params="size: [32, 32.0]")).diagnostics
    assert d.span is not None and (d.span.line, d.span.col) == (14, 25)


@pytest.mark.parametrize(("op", "params"), [
    ("image.resize", "size: [32, 32]"),
    ("image.normalize", "scale: 1/255, mean: [0.5], std: [0.25]"),
    ("image.letterbox", "size: [64, 64], scale: 0.5"),
])
def test_good_values_compile(compile_text: CompileText, op: str, params: str) -> None:
    assert compile_text(IMAGE.format(op=op, params=params)).ok


@pytest.mark.parametrize(("dtype", "value", "message"), [
    ("uint8", "300", "param 'value' is 300, which does not fit the uint8 input 'inputs.x' (0 to 255)"),
    ("uint8", "-1", "param 'value' is -1, which does not fit the uint8 input 'inputs.x' (0 to 255)"),
    ("int8", "128", "(-128 to 127)"),
    ("int64", "9223372036854775808", "(-9223372036854775808 to 9223372036854775807)"),
    ("float16", "70000", "does not fit the float16 input 'inputs.x' (largest 65504)"),
    ("float32", "1.0e+39", "does not fit the float32 input 'inputs.x' (largest 3.40282e+38)"),
])
@pytest.mark.parametrize("op", ["math.add", "math.mul"])
def test_an_arithmetic_constant_that_does_not_fit_the_input_dtype_is_e_param(
        compile_text: CompileText, op: str, dtype: str, value: str, message: str) -> None:
    code, line, text = only_error(compile_text(ARITH.format(op=op, dtype=dtype, value=value)))
    assert (code, line) == ("E-PARAM", 11)
    assert message in text


@pytest.mark.parametrize(("dtype", "value"), [("uint8", "255"), ("int8", "-128"), ("float16", "65504"),
                                              ("float64", "1.0e+300"), ("int64", "-9223372036854775808")])
def test_constants_at_the_edge_of_the_dtype_compile(compile_text: CompileText, dtype: str, value: str) -> None:
    assert compile_text(ARITH.format(op="math.add", dtype=dtype, value=value)).ok


def test_an_infinite_constant_is_e_param(compile_text: CompileText) -> None:
    code, _, text = only_error(compile_text(ARITH.format(op="math.mul", dtype="float32", value=".inf")))
    assert code == "E-PARAM" and "must be a finite number, not inf" in text


def test_value_problems_walks_alternatives_lists_and_mappings() -> None:
    schema = {"type": "object", "properties": {
        "scale": SCALE,
        "sizes": {"type": "array", "items": {"type": "integer"}},
        "named": {"type": "object", "additionalProperties": {"type": "number"}},
        "free": {"type": "object"},
    }}
    problems = value_problems(schema, {"scale": "3/0", "sizes": [1, 2.0], "named": {"a": float("inf")},
                                       "free": {"anything": float("nan")}})
    assert [p for p, _ in problems] == [("scale",), ("sizes", 1), ("named", "a")]
    assert value_problems(schema, {"scale": 0.5, "sizes": [1, 2], "named": {"a": 1.5}}) == []
