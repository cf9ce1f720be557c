"""The type rules of the element-wise ops: broadcast shapes (property-tested against NumPy),
dtype rules and their diagnostics, and Triton's ``simple`` model as a spec, run in-process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import dagserve
from dagserve.compiler import CompileResult
from dagserve.ops.elementwise import ARITHMETIC, COMPARISONS, BroadcastError, broadcast_shapes
from dagserve.types import UNKNOWN, TensorType

ROOT = Path(__file__).resolve().parents[2]
CompileText = Callable[..., CompileResult]

# --- the broadcast shape rule --------------------------------------------------------------------

int_shapes = st.lists(st.integers(0, 4), max_size=5).map(tuple)


@settings(max_examples=500, deadline=None)
@given(int_shapes, int_shapes)
def test_broadcast_of_fixed_shapes_is_numpys(a: tuple[int, ...], b: tuple[int, ...]) -> None:
    try:
        expected = np.broadcast_shapes(a, b)
    except ValueError:
        with pytest.raises(BroadcastError):
            broadcast_shapes(a, b)
        return
    assert broadcast_shapes(a, b) == expected


SYMBOLS = ("H", "W", UNKNOWN)
sym_shapes = st.lists(st.one_of(st.integers(0, 3), st.sampled_from(SYMBOLS)), max_size=4).map(tuple)


@settings(max_examples=500, deadline=None)
@given(sym_shapes, sym_shapes, st.dictionaries(st.sampled_from(("H", "W")), st.integers(0, 3)), st.data())
def test_symbolic_broadcast_is_sound_for_every_substitution(
        a: tuple, b: tuple, values: dict, data: st.DataObject) -> None:  # type: ignore[type-arg]
    """Whatever sizes the symbols take: an error means NumPy fails too; a fixed result dim is
    NumPy's; a symbol in the result is the size that symbol took."""
    env = {s: values.get(s, 1) for s in ("H", "W")}

    def concrete(shape: tuple) -> tuple[int, ...]:  # type: ignore[type-arg]
        # every '?' may be a different size
        return tuple(env[d] if d in env else data.draw(st.integers(0, 3)) if d == UNKNOWN else d for d in shape)

    ca, cb = concrete(a), concrete(b)
    try:
        result = broadcast_shapes(a, b)
    except BroadcastError:
        with pytest.raises(ValueError):
            np.broadcast_shapes(ca, cb)
        return
    try:
        actual = np.broadcast_shapes(ca, cb)
    except ValueError:
        return  # a symbol took a size that cannot broadcast: the kernel refuses that batch
    assert len(result) == len(actual)
    for mine, real in zip(result, actual):
        if isinstance(mine, int):
            assert mine == real
        elif mine != UNKNOWN:
            assert env[mine] == real


def test_symbolic_broadcast_examples() -> None:
    assert broadcast_shapes(("H", "W", 3), (3,)) == ("H", "W", 3)
    assert broadcast_shapes(("H", 1), (1, "W")) == ("H", "W")
    assert broadcast_shapes(("H",), (5,)) == (5,)  # H must be 1 or 5
    assert broadcast_shapes(("H",), ("W",)) == (UNKNOWN,)
    assert broadcast_shapes(("H",), ("H",)) == ("H",)
    with pytest.raises(BroadcastError) as info:
        broadcast_shapes(("H", 3, 4), (5, 4))
    assert (info.value.axis, info.value.a, info.value.b) == (-2, 3, 5)


# --- the type rules through the compiler ---------------------------------------------------------

SPEC = """
dagserve: 1
name: ew
max_batch_size: {mbs}
inputs:
  a: {{dtype: {da}, shape: {sa}}}
  b: {{dtype: {db}, shape: {sb}}}
outputs:
  y: op.y
nodes:
  op:
    op: tensor.{op}
    inputs: {{a: inputs.a, b: inputs.b}}
"""


def compile_op(compile_text: CompileText, op: str, da: str = "float32", sa: str = "[3, 4]",
               db: str | None = None, sb: str = "[4]", mbs: int = 4) -> CompileResult:
    return compile_text(SPEC.format(op=op, da=da, sa=sa, db=db or da, sb=sb, mbs=mbs))


def output_type(result: CompileResult) -> TensorType:
    assert result.plan is not None, [d.one_line() for d in result.diagnostics]
    node = result.graph.nodes["op"]
    return node.outputs["y"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("op", [*ARITHMETIC, *COMPARISONS])
def test_output_type_is_the_broadcast_shape_and_the_dtype_or_bool(compile_text: CompileText, op: str) -> None:
    t = output_type(compile_op(compile_text, op, da="int32", sa="[H, 1, 4]", sb="[5, 1]"))
    assert t.shape == ("H", 5, 4)
    assert t.dtype == ("bool" if op in COMPARISONS else "int32")


def test_a_per_channel_constant_keeps_the_image_layout(compile_text: CompileText) -> None:
    text = SPEC.format(op="mul", da="float32", sa="[3, 8, 8]", db="float32", sb="[3, 1, 1]", mbs=0)
    text = text.replace("shape: [3, 8, 8]}", "shape: [3, 8, 8], layout: chw}")
    assert output_type(compile_text(text)).layout == "chw"


@pytest.mark.parametrize("op", [*ARITHMETIC, *COMPARISONS])
def test_different_dtypes_are_e_dtype_at_input_b_with_a_cast_hint(compile_text: CompileText, op: str) -> None:
    result = compile_op(compile_text, op, da="int32", db="float32")
    (d,) = result.diagnostics
    assert d.code == "E-DTYPE" and d.span is not None and (d.span.line, d.span.col) == (12, 30)  # at 'inputs.b'
    assert d.message == ("input 'b' of node 'op' expects int32 (the dtype of 'inputs.a' on input 'a') "
                         "but 'inputs.b' produces float32[N,4]")
    assert d.hint == (f"tensor.{op} takes two tensors of the same dtype (no implicit promotion): cast input "
                      "'a' to float32 with a 'tensor.cast' node")


def test_the_cast_hint_names_the_input_to_cast(compile_text: CompileText) -> None:
    (d,) = compile_op(compile_text, "add", da="int64", db="int8").diagnostics
    assert "cast input 'b' to int64" in (d.hint or "")
    (d,) = compile_op(compile_text, "add", da="int32", db="uint32").diagnostics
    assert "cast input 'a' and 'b' to int64" in (d.hint or "")


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@pytest.mark.parametrize("dtype", ["bool", "bytes"])
def test_arithmetic_refuses_bool_and_bytes(compile_text: CompileText, op: str, dtype: str) -> None:
    result = compile_op(compile_text, op, da=dtype)
    assert sorted(d.code for d in result.diagnostics) == ["E-DTYPE", "E-DTYPE"]  # both inputs
    assert all("expects a numeric (int, uint or float) tensor" in d.message for d in result.diagnostics)


@pytest.mark.parametrize("op", ["min", "max", *COMPARISONS])
def test_min_max_and_comparisons_take_bool_but_not_bytes(compile_text: CompileText, op: str) -> None:
    assert compile_op(compile_text, op, da="bool").ok
    (d, _) = compile_op(compile_text, op, da="bytes").diagnostics
    assert d.code == "E-DTYPE" and "numeric (int, uint, float) or bool" in d.message


@pytest.mark.parametrize(("sa", "sb", "dim"), [
    ("[3, 4]", "[5]", "item dim -1 is 4 against 5"),
    ("[H, 3, 4]", "[2, 4]", "item dim -2 is 3 against 2"),
    ("[H, 3]", "[W, 2]", "item dim -1 is 3 against 2"),
])
def test_shapes_that_cannot_broadcast_are_e_shape(compile_text: CompileText, sa: str, sb: str, dim: str) -> None:
    (d,) = compile_op(compile_text, "add", sa=sa, sb=sb).diagnostics
    assert d.code == "E-SHAPE" and d.span is not None and (d.span.line, d.span.col) == (12, 30)  # at 'inputs.b'
    assert d.message.startswith("inputs of node 'op' do not broadcast: 'inputs.a' produces float32[N,")
    assert d.message.endswith(dim)
    assert "equal or one of them 1" in (d.hint or "")


def test_symbols_that_may_broadcast_are_accepted(compile_text: CompileText) -> None:
    assert output_type(compile_op(compile_text, "add", sa="[H, 4]", sb="[W, 4]")).shape == (UNKNOWN, 4)
    assert output_type(compile_op(compile_text, "add", sa="[H]", sb="[4]")).shape == (4,)


def test_an_unbatched_pipeline_broadcasts_its_items_too(compile_text: CompileText) -> None:
    t = output_type(compile_op(compile_text, "add", sa="[2, 3]", sb="[3]", mbs=0))
    assert t.shape == (2, 3)


# --- Triton's simple model --------------------------------------------------------------------


def test_the_simple_pipeline_is_tritons_simple_model() -> None:
    with dagserve.load(ROOT / "pipelines" / "simple.yaml") as pipeline:
        rng = np.random.default_rng(0)
        x0 = rng.integers(-1000, 1000, size=(8, 16), dtype=np.int32)
        x1 = rng.integers(-1000, 1000, size=(8, 16), dtype=np.int32)
        out = pipeline.infer({"INPUT0": x0, "INPUT1": x1})
        assert set(out) == {"OUTPUT0", "OUTPUT1"}
        assert out["OUTPUT0"].dtype == np.int32 and out["OUTPUT1"].dtype == np.int32
        np.testing.assert_array_equal(out["OUTPUT0"], x0 + x1)
        np.testing.assert_array_equal(out["OUTPUT1"], x0 - x1)
        one = pipeline.infer({"INPUT0": x0[:1], "INPUT1": x1[:1]})
        np.testing.assert_array_equal(one["OUTPUT1"], x0[:1] - x1[:1])
