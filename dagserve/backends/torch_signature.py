"""Read the signature of a ``model.torch`` file: a ``torch.export`` program or TorchScript.

* ``.pt2`` (``torch.export.save``): the program records its tensors. Inputs are
  the user inputs, named after ``forward``'s arguments, typed from each
  placeholder's ``meta['val']`` (a fake tensor); symbolic dims (``torch.export.Dim``)
  become symbols (``s0``...), shared between inputs and outputs exactly as torch
  tracked them. Outputs are named after the keys when ``forward`` returns a dict,
  else ``output0``, ``output1``, ... (``params.outputs`` may rename them, in order).
* anything else (``.pt``, ``.pth``, ``.ts``) is loaded as TorchScript, which
  records no tensor types: the node must declare ``params.inputs`` and
  ``params.outputs`` as ``{name: {dtype, shape}}`` (full shapes, batch dim
  included, symbols allowed). Input names are checked against ``forward``'s
  arguments; output types are checked when the model is warmed up at load.

Torch is imported only here and only when a ``model.torch`` node is compiled.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

from dagserve.backends.base import ModelSignature, SignatureError
from dagserve.types import UNKNOWN, Dim, TensorType, parse_dtype

__all__ = ["EXPORT_SUFFIXES", "declared_types", "import_torch", "load_torchscript", "read_torch_signature"]

EXPORT_SUFFIXES = (".pt2",)
"""File suffixes read with ``torch.export.load``; every other file is TorchScript."""

_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def import_torch() -> Any:
    """``torch``, or a ``SignatureError`` (``E-EXTRA``) that names the extra to install."""
    try:
        import torch
    except ImportError as exc:
        raise SignatureError("E-EXTRA", "model.torch needs torch: pip install 'dagserve[torch]'",
                             hint="pip install 'dagserve[torch]'") from exc
    return torch


def load_torchscript(torch: Any, path: str, device: Any) -> Any:
    """``torch.jit.load`` without its deprecation warning (torch >= 2.10 deprecates TorchScript,
    but models exported that way are still served; the docs recommend .pt2 for new ones)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(path, map_location=device)


def _dim(d: Any) -> Dim:
    if isinstance(d, int):
        return d
    text = str(d)
    if text.isdigit():
        return int(text)
    return text if _SYMBOL.match(text) else UNKNOWN


def _fake_type(value: Any, what: str, path: str) -> TensorType:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is None or dtype is None:
        raise SignatureError("E-MODEL", f"{what} of '{path}' is not a tensor ({type(value).__name__}); "
                             "model.torch passes tensors only")
    return TensorType(str(dtype).removeprefix("torch."), tuple(_dim(d) for d in shape))


def declared_types(params: Mapping[str, Any], key: str) -> dict[str, TensorType] | None:
    """``params[key]`` (``{name: {dtype, shape}}``) as types; ``None`` when not declared.

    Raises:
        SignatureError: ``E-PARAM`` for a malformed declaration.
    """
    declared = params.get(key)
    if declared is None:
        return None
    if not isinstance(declared, Mapping) or not declared:
        raise SignatureError("E-PARAM", f"param '{key}' must map each tensor name to {{dtype, shape}}")
    out: dict[str, TensorType] = {}
    for name, spec in declared.items():
        where = f"param '{key}.{name}'"
        if not isinstance(spec, Mapping) or "dtype" not in spec or "shape" not in spec:
            raise SignatureError("E-PARAM", f"{where} must be {{dtype: ..., shape: [...]}}, got {spec!r}")
        try:
            dtype = parse_dtype(str(spec["dtype"]))
        except ValueError as exc:
            raise SignatureError("E-PARAM", f"{where}: {exc}") from exc
        shape = spec["shape"]
        if not isinstance(shape, list) or not all(
            (isinstance(d, int) and not isinstance(d, bool) and d >= 0) or (isinstance(d, str) and d) for d in shape
        ):
            raise SignatureError("E-PARAM", f"{where}: shape must be a list of sizes (ints >= 0) or symbols "
                                 f"(e.g. [N, 3, 224, 224]), got {shape!r}")
        out[str(name)] = TensorType(dtype, tuple(shape))
    return out


def _read_exported(path: str, params: Mapping[str, Any]) -> ModelSignature:
    torch = import_torch()
    from torch.export.graph_signature import InputKind, OutputKind

    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.ERROR)  # torch logs a traceback per failed attempt before raising
    try:
        program = torch.export.load(path)
    except Exception as exc:
        raise SignatureError("E-MODEL", f"'{path}' is not a readable torch.export program: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                             hint="save it with torch.export.save(torch.export.export(model, args), 'model.pt2')"
                             ) from exc
    finally:
        export_log.setLevel(level)
    nodes = {n.name: n for n in program.graph_module.graph.nodes}
    user_inputs = [s.arg.name for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    arg_names = list(getattr(program.module_call_graph[0].signature, "forward_arg_names", None) or [])
    names = arg_names if len(arg_names) == len(user_inputs) else user_inputs
    inputs = {name: _fake_type(nodes[node].meta.get("val"), f"input '{name}'", path)
              for name, node in zip(names, user_inputs)}
    out_specs = [s for s in program.graph_signature.output_specs if s.kind == OutputKind.USER_OUTPUT]
    out_types = [_fake_type(nodes[s.arg.name].meta.get("val") if s.arg.name in nodes else None,
                            f"output {i}", path) for i, s in enumerate(out_specs)]
    spec = program.call_spec.out_spec
    keys = list(spec.context) if spec is not None and spec.type is dict else []
    out_names = [str(k) for k in keys] if len(keys) == len(out_types) else [f"output{i}" for i in range(len(out_types))]
    declared_out = declared_types(params, "outputs")
    if declared_out is not None:
        if len(declared_out) != len(out_types):
            raise SignatureError("E-PARAM", f"param 'outputs' names {len(declared_out)} outputs but '{path}' "
                                 f"returns {len(out_types)}")
        out_names = list(declared_out)
    declared_in = declared_types(params, "inputs")
    if declared_in is not None and set(declared_in) != set(inputs):
        raise SignatureError("E-PARAM", f"param 'inputs' declares {sorted(declared_in)} but '{path}' takes "
                             f"{list(inputs)}", hint="a .pt2 program records its inputs; 'inputs' may be left out")
    return ModelSignature(inputs, dict(zip(out_names, out_types)), "torch.export")


def _read_torchscript(path: str, params: Mapping[str, Any]) -> ModelSignature:
    inputs = declared_types(params, "inputs")
    outputs = declared_types(params, "outputs")
    if inputs is None or outputs is None:
        raise SignatureError(
            "E-PARAM",
            f"'{path}' is TorchScript, which records no tensor types: declare params 'inputs' and 'outputs' "
            "as {name: {dtype, shape}}",
            hint="e.g. params: {inputs: {x: {dtype: float32, shape: [N, 3, 224, 224]}}, "
                 "outputs: {logits: {dtype: float32, shape: [N, 1000]}}}; or save a .pt2 with torch.export",
        )
    torch = import_torch()
    try:
        module = load_torchscript(torch, path, "cpu")
    except Exception as exc:
        raise SignatureError("E-MODEL", f"'{path}' is not a readable TorchScript model: "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    try:
        arguments = [a.name for a in module.forward.schema.arguments][1:]  # drop 'self'
    except AttributeError as exc:
        raise SignatureError("E-MODEL", f"TorchScript model '{path}' has no forward method") from exc
    if list(inputs) != arguments:
        raise SignatureError(
            "E-PARAM",
            f"param 'inputs' declares {list(inputs)} but forward() of '{path}' takes {arguments}",
            hint="declare one entry per forward() argument, in the same order",
        )
    return ModelSignature(inputs, outputs, "torchscript")


def read_torch_signature(path: str, params: Mapping[str, Any]) -> ModelSignature:
    """Inputs and outputs of the torch model at ``path`` (see the module docstring).

    Raises:
        SignatureError: ``E-MODEL-FILE`` (missing file), ``E-EXTRA`` (no torch),
            ``E-MODEL`` (unreadable file), ``E-PARAM`` (missing or wrong declared types).
    """
    if not os.path.isfile(path):
        raise SignatureError("E-MODEL-FILE", f"model file '{path}' does not exist")
    if path.lower().endswith(EXPORT_SUFFIXES):
        return _read_exported(path, params)
    return _read_torchscript(path, params)
