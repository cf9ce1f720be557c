"""The python op: compile-time checks of user classes, and the runtime kernel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dagserve.errors import UnrecoverableError
from dagserve.ops import python_op
from dagserve.ops.python_op import PythonKernel, UserCodeError, create, load_user_class
from dagserve.types import CPU, Device, TensorType

from .conftest import FIXTURES, errors, kernel_context

HANDLERS = str(FIXTURES / "handlers.py")


def spec(cls: str, inputs: str, pipeline_inputs: str, path: str = "handlers/handlers.py",
         outputs: str = "out: user.y", extra_nodes: str = "", max_batch_size: int = 8) -> str:
    """A pipeline with one python node 'user' (the text is dedented by compile_text)."""
    return f"""
dagserve: 1
name: py
max_batch_size: {max_batch_size}
inputs:
{pipeline_inputs}
outputs:
  {outputs}
nodes:
{extra_nodes}
  user:
    op: python
    inputs: {inputs}
    params: {{path: {path}, class: {cls}, params: {{factor: 2}}}}
"""


X3 = "  x: {dtype: float32, shape: [3]}"


# -- compile time -----------------------------------------------------------------------------


def test_declared_outputs_type_the_node(compile_text: Any) -> None:
    result = compile_text(spec("Scale", "{x: inputs.x}", X3))
    assert errors(result) == []
    assert result.plan is not None
    assert result.plan.node("user").outputs["y"] == TensorType("float32", (3,), device=Device("cpu"))


def test_symbols_bind_to_the_producers_dims(compile_text: Any) -> None:
    result = compile_text(spec("Add", "{a: inputs.a, b: inputs.b}",
                               "  a: {dtype: float32, shape: [7]}\n  b: {dtype: float32, shape: [7]}",
                               outputs="out: user.sum"))
    assert errors(result) == []
    assert result.plan.node("user").outputs["sum"].shape == (7,)


def test_inputs_sharing_a_symbol_must_agree(compile_text: Any) -> None:
    result = compile_text(spec("Add", "{a: inputs.a, b: inputs.b}",
                               "  a: {dtype: float32, shape: [7]}\n  b: {dtype: float32, shape: [5]}",
                               outputs="out: user.sum"))
    assert [(c, m) for c, m in errors(result) if c == "E-SHAPE"] == [
        ("E-SHAPE", "input 'b' of node 'user' has T=5 but input 'a' has T=7 (class Add declares them equal)")]


def test_fed_type_mismatch_names_both_sides(compile_text: Any) -> None:
    result = compile_text(spec("Scale", "{x: inputs.x}", "  x: {dtype: uint8, shape: [3]}"))
    (code, message), = errors(result)
    assert code == "E-DTYPE"
    assert "input 'x' of node 'user' expects float32[N,3] but 'inputs.x' produces uint8[N,3]" in message


def test_unknown_and_unfed_ports_are_port_errors(compile_text: Any) -> None:
    result = compile_text(spec("Scale", "{xx: inputs.x}", X3))
    found = errors(result)
    assert ("E-PORT", "node 'user' feeds input 'xx' but class Scale has no such input; did you mean 'x'?") in found
    assert ("E-PORT", "node 'user' leaves input(s) 'x' of class Scale unfed") in found


def test_ragged_input_to_a_batched_class_needs_a_ragged_declaration(compile_text: Any) -> None:
    decode = """  decode:
    op: image.decode
    inputs: {data: inputs.image}
"""
    ok = compile_text(spec("MeanColor", "{image: decode.image}", "  image: {dtype: bytes, shape: []}",
                           outputs="out: user.mean", extra_nodes=decode))
    assert errors(ok) == []
    bad = compile_text(spec("MeanColorUniform", "{image: decode.image}", "  image: {dtype: bytes, shape: []}",
                            outputs="out: user.mean", extra_nodes=decode))
    (diagnostic,) = bad.diagnostics
    assert diagnostic.code == "E-RAGGED"
    assert diagnostic.message == ("input 'image' of node 'user' expects uint8[N,H,W,3] (hwc) with the same size for "
                                  "every item but 'decode.image' produces uint8[N,H,W,3] (hwc, ragged)")
    assert "declare 'ragged': True on MeanColorUniform.inputs['image']" in (diagnostic.hint or "")


def test_a_per_item_class_takes_ragged_items(compile_text: Any, repo: Path) -> None:
    (repo / "handlers" / "per_item.py").write_text(
        "class Mean:\n"
        "    inputs = {'image': {'dtype': 'uint8', 'shape': ['H', 'W', 3]}}\n"
        "    outputs = {'mean': {'dtype': 'float32', 'shape': []}}\n"
        "    per_item = True\n"
        "    def __call__(self, inputs):\n"
        "        return {'mean': inputs['image'].mean(dtype='float32')}\n")
    decode = """  decode:
    op: image.decode
    inputs: {data: inputs.image}
"""
    result = compile_text(spec("Mean", "{image: decode.image}", "  image: {dtype: bytes, shape: []}",
                               path="handlers/per_item.py", outputs="out: user.mean", extra_nodes=decode))
    assert errors(result) == []


def test_output_raggedness_follows_the_inputs_unless_declared(compile_text: Any) -> None:
    decode = """  decode:
    op: image.decode
    inputs: {data: inputs.image}
"""
    result = compile_text(spec("Flip", "{image: decode.image}", "  image: {dtype: bytes, shape: []}",
                               outputs="out: user.image", extra_nodes=decode))
    assert errors(result) == []
    outputs = result.graph.nodes["user"].outputs
    assert outputs["image"].ragged is True  # H, W bound to a ragged input's dims
    assert outputs["boxes"].ragged is True  # '?' rows: items may differ
    assert outputs["size"].ragged is False  # declared
    uniform = compile_text(spec("Scale", "{x: inputs.x}", X3))
    assert uniform.graph.nodes["user"].outputs["y"].ragged is False


def test_missing_class_is_a_param_error_with_a_suggestion(compile_text: Any) -> None:
    (code, message), = errors(compile_text(spec("Scal", "{x: inputs.x}", X3)))
    assert code == "E-PARAM"
    assert message == "node 'user': 'handlers/handlers.py' has no class 'Scal'; did you mean 'Scale'?"


def test_a_name_that_is_not_a_class_is_a_param_error(compile_text: Any) -> None:
    (code, message), = errors(compile_text(spec("not_a_class", "{x: inputs.x}", X3)))
    assert (code, message) == ("E-PARAM",
                               "node 'user': 'not_a_class' in 'handlers/handlers.py' is a int, not a class")


@pytest.mark.parametrize("cls, fragment", [
    ("BadDtype", "BadDtype.inputs['x']: unknown dtype 'float33'"),
    ("BadShape", "BadShape.inputs['x']: shape must be a list (per item, no batch dim), got 3"),
    ("NoOutputs", "class NoOutputs must declare class attribute 'outputs' as a non-empty dict"),
    ("NotCallable", "class NotCallable must define __call__(self, inputs) -> dict"),
])
def test_malformed_classes_are_model_errors(compile_text: Any, cls: str, fragment: str) -> None:
    (code, message), = errors(compile_text(spec(cls, "{x: inputs.x}", X3)))
    assert code == "E-MODEL"
    assert fragment in message


def test_import_error_in_the_user_module_is_reported_without_a_traceback(compile_text: Any) -> None:
    result = compile_text(spec("Handler", "{x: inputs.x}", X3, path="handlers/broken_import.py"))
    (code, message), = errors(result)
    assert code == "E-MODEL"
    assert message == ("node 'user': importing 'handlers/broken_import.py' failed: ModuleNotFoundError: No module "
                       "named 'dagserve_no_such_module_for_tests' (line 3)")
    assert result.diagnostics[0].hint == ("install 'dagserve_no_such_module_for_tests' in the environment "
                                          "that runs dagserve")
    assert "Traceback" not in message


def test_exception_in_the_module_body_names_its_line(compile_text: Any) -> None:
    (code, message), = errors(compile_text(spec("Handler", "{x: inputs.x}", X3, path="handlers/raises_at_import.py")))
    assert code == "E-MODEL"
    assert message.endswith("failed: KeyError: 'threshold' (line 4)")


def test_syntax_error_names_its_line(compile_text: Any, repo: Path) -> None:
    (repo / "handlers" / "syntax_error.py").write_text("class Handler:\n    def __call__(self, inputs)\n        pass\n")
    (code, message), = errors(compile_text(spec("Handler", "{x: inputs.x}", X3, path="handlers/syntax_error.py")))
    assert code == "E-MODEL"
    assert "importing 'handlers/syntax_error.py' failed: SyntaxError: " in message and "(line 2)" in message


def test_missing_file_and_non_python_file_are_param_errors(compile_text: Any, repo: Path) -> None:
    missing = errors(compile_text(spec("Scale", "{x: inputs.x}", X3, path="handlers/absent.py")))
    assert [c for c, _ in missing] == ["E-PARAM"]
    (repo / "handlers" / "notes.txt").write_text("hello")
    (code, message), = errors(compile_text(spec("Scale", "{x: inputs.x}", X3, path="handlers/notes.txt")))
    assert (code, message) == ("E-PARAM", "node 'user': param 'path' must name a Python file (.py), got "
                                          "'handlers/notes.txt'")


def test_a_path_outside_the_repository_is_refused(compile_text: Any) -> None:
    found = errors(compile_text(spec("Scale", "{x: inputs.x}", X3, path="../../etc/handlers.py")))
    assert [c for c, _ in found] == ["E-PATH"]


def test_two_files_with_the_same_name_are_different_modules(tmp_path: Path) -> None:
    for sub, value in (("a", 1.0), ("b", 2.0)):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "handler.py").write_text(
            "class H:\n"
            "    inputs = {'x': {'dtype': 'float32', 'shape': [1]}}\n"
            "    outputs = {'y': {'dtype': 'float32', 'shape': [1]}}\n"
            f"    value = {value}\n"
            "    def __call__(self, inputs):\n"
            "        return {'y': inputs['x']}\n")
    a = load_user_class(str(tmp_path / "a" / "handler.py"), "H")
    b = load_user_class(str(tmp_path / "b" / "handler.py"), "H")
    assert (a.cls.value, b.cls.value) == (1.0, 2.0)
    assert a.cls.__module__ != b.cls.__module__


def test_the_module_is_imported_once_per_process() -> None:
    first = load_user_class(HANDLERS, "Scale")
    again = load_user_class(HANDLERS, "Add")
    assert first.cls.__module__ == again.cls.__module__
    assert load_user_class(HANDLERS, "Scale").cls is first.cls


# -- run time ---------------------------------------------------------------------------------


def kernel(cls: str, params: dict[str, Any] | None = None, device: Device = CPU) -> PythonKernel:
    ctx = kernel_context("python", {"path": "handlers.py", "class": cls, "params": params or {}},
                         files={"path": HANDLERS}, device=device, node="user")
    return create(ctx)


def test_runtime_calls_setup_with_the_params_and_runs_batches() -> None:
    k = kernel("Scale", {"factor": 3})
    assert k.per_item is False
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(k({"x": x})["y"], x * 3)


def test_per_item_class_gets_one_item_at_a_time() -> None:
    k = kernel("ByteLength")
    assert k.per_item is True
    assert int(k({"data": b"hello"})["length"]) == 5


def test_ragged_input_comes_as_a_list() -> None:
    k = kernel("MeanColor")
    images = [np.full((2, 3, 3), 10, np.uint8), np.full((5, 1, 3), 20, np.uint8)]
    np.testing.assert_array_equal(k({"image": images})["mean"], [[10, 10, 10], [20, 20, 20]])


def test_setup_may_take_the_kernel_context() -> None:
    k = kernel("Remember")
    assert k.obj.context.node == "user"
    assert k.obj.context.device == Device("cpu")


def test_output_of_the_wrong_dtype_is_an_item_error() -> None:
    with pytest.raises(ValueError, match=r"WrongDtype returned float64\[2, 3\] for output 'y', which it declares as "
                                         r"float32\[N,3\]"):
        kernel("WrongDtype")({"x": np.zeros((2, 3), np.float32)})


def test_missing_output_is_named() -> None:
    with pytest.raises(ValueError, match=r"MissingOutput returned no output\(s\) 'z' \(it returned 'y'\)"):
        kernel("MissingOutput")({"x": np.zeros((2, 3), np.float32)})


def test_failing_setup_is_unrecoverable_and_says_why() -> None:
    with pytest.raises(UnrecoverableError,
                       match=r"SetupFails.setup\(\) failed: FileNotFoundError: vocab.txt \(line \d+\)"):
        kernel("SetupFails")


def test_class_refuses_a_device_it_does_not_declare() -> None:
    with pytest.raises(UnrecoverableError, match=r"placed on cpu but class GpuOnly declares devices \['gpu'\]"):
        kernel("GpuOnly")


def test_user_code_errors_carry_their_diagnostic_code() -> None:
    with pytest.raises(UserCodeError) as info:
        load_user_class(HANDLERS, "Nope")
    assert info.value.code == "E-PARAM"
    assert python_op.OPS[0].name == "python"


def test_a_cpu_only_class_stays_on_the_cpu_under_a_gpu_target(compile_text: Any) -> None:
    result = compile_text(spec("Scale", "{x: inputs.x}", X3), target="gpu")
    assert errors(result) == []
    assert result.plan is not None
    assert result.plan.node("user").device == "cpu"
    assert result.plan.copies == []


def test_asking_a_cpu_only_class_for_the_gpu_is_a_device_error(compile_text: Any) -> None:
    text = spec("Scale", "{x: inputs.x}", X3) + "    device: gpu\n"
    result = compile_text(text, target="gpu")
    assert [code for code, _ in errors(result)] == ["E-DEVICE"]
    assert "runs only on cpu" in errors(result)[0][1]
