"""Model nodes: ``model.onnx``, ``model.torch``, ``model.tensorrt``.

A model node's ports are the model's own inputs and outputs, read from the file at
compile time by its backend. When the pipeline batches, the model's first
dimension is the batch dimension: a fixed first dimension ``k`` limits the node's
batches to ``k`` items (``ctx.meta["max_batch"]``), which the batching pass checks.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from dagserve.backends.base import ModelSignature, SignatureError
from dagserve.diagnostics import did_you_mean
from dagserve.errors import MissingExtraError
from dagserve.ops.base import InferContext, OpDef
from dagserve.types import UNKNOWN, Dim, TensorType, dims_compatible, render_shape

__all__ = ["OPS", "infer_model"]


def _onnx_signature(path: str, params: dict[str, Any]) -> ModelSignature:
    from dagserve.backends.onnx_signature import read_onnx_signature

    return read_onnx_signature(path)


def _torch_signature(path: str, params: dict[str, Any]) -> ModelSignature:
    from dagserve.backends.torch_signature import read_torch_signature

    return read_torch_signature(path, params)


def _tensorrt_signature(path: str, params: dict[str, Any]) -> ModelSignature:
    from dagserve.backends.tensorrt_signature import read_tensorrt_signature

    return read_tensorrt_signature(path)


def _layout_hint(produced: TensorType, expected: tuple[Dim, ...], want_dtype: str, source: str) -> str | None:
    """Suggest the fix for the classic HWC-uint8 -> CHW-float mistake, naming the producer."""
    looks_chw = len(expected) == 3 and expected[0] in (1, 3) and produced.layout == "hwc"
    if looks_chw or produced.dtype != want_dtype:
        parts = []
        if looks_chw:
            parts.append("'layout: chw'")
        if produced.dtype != want_dtype:
            parts.append(f"'dtype: {want_dtype}'")
        if source.startswith("inputs."):
            return (f"declare pipeline input '{source[len('inputs.'):]}' as the model expects it, "
                    f"or insert an 'image.normalize' node")
        producer = source.partition(".")[0]
        return (f"add {' and '.join(parts)} to the params of node '{producer}' (if it is an image.letterbox), "
                f"or insert an 'image.normalize' node")
    return None


def _batch_hint(produced: TensorType, model_type: TensorType, batched: bool, source: str) -> str | None:
    """When the ranks differ by exactly the batch dimension, say which side has it: the fix
    is the pipeline's max_batch_size or the producer, depending on whether the model has one."""
    def fits(model_dims: tuple[Dim, ...]) -> bool:
        return len(model_dims) == produced.rank and all(map(dims_compatible, model_dims, produced.shape))

    if (not batched and model_type.rank == produced.rank + 1 and not isinstance(model_type.shape[0], int)
            and fits(model_type.shape[1:])):
        return (f"the model's first dimension '{model_type.shape[0]}' looks like a batch dimension: set the "
                "pipeline's max_batch_size (e.g. 8) so requests carry one")
    if batched and fits(model_type.shape):
        first = model_type.shape[0]
        if isinstance(first, int):
            return ("the model has no batch dimension (its rank equals the item's): set the pipeline's "
                    "max_batch_size to 0, or export the model with a batch dimension")
        if produced.ragged:
            return None  # K rows per item: the generic ragged-rows hint says what to do
        item = render_shape(model_type.shape[1:])
        return (f"the model's first dimension '{first}' is its batch dimension, which the pipeline supplies "
                f"(max_batch_size > 0): each item must be {item}, but the items of '{source}' carry one more "
                f"leading dimension ({render_shape(produced.shape)})")
    return None


def _bind(dims: tuple[Dim, ...], bindings: dict[str, Dim]) -> tuple[Dim, ...]:
    return tuple(bindings.get(d, d) if isinstance(d, str) and d != UNKNOWN else d for d in dims)


def infer_model(ctx: InferContext, signature: ModelSignature) -> dict[str, TensorType]:
    """Check every fed port against the model's signature and type its outputs."""
    model_file = ctx.params.get("path", "?")  # as the spec wrote it
    ctx.meta["signature"] = signature
    layouts: dict[str, str] = ctx.params.get("layouts") or {}
    meant: set[str] = set()  # model inputs a misnamed port was probably meant for
    for port in ctx.inputs:
        if port not in signature.inputs:
            guess = difflib.get_close_matches(port, list(signature.inputs), n=1, cutoff=0.6)
            meant.update(guess)
            ctx.problem(
                "E-MODEL-INPUT",
                f"node '{ctx.node}' feeds input '{port}' but model '{model_file}' has no such input"
                f"{did_you_mean(port, signature.inputs)}",
                port,
                hint=f"the model's inputs are: {', '.join(signature.inputs)}",
            )
    # an input the misnamed port was meant for is not reported again as unfed
    unfed = [name for name in signature.inputs if name not in ctx.inputs and name not in meant]
    if unfed:
        ctx.problem(
            "E-MODEL-INPUT",
            f"node '{ctx.node}' leaves model input(s) {', '.join(repr(u) for u in unfed)} of "
            f"'{model_file}' unfed",
            hint=f"add them under the node's 'inputs:', e.g. {unfed[0]}: inputs.{unfed[0]}",
        )
    for name in layouts:
        if name not in signature.inputs:
            ctx.problem("E-PARAM", f"node '{ctx.node}' param 'layouts' names '{name}' but model '{model_file}' "
                        f"has no such input{did_you_mean(name, signature.inputs)}", param="layouts",
                        hint=f"the model's inputs are: {', '.join(signature.inputs)}")
    bindings: dict[str, Dim] = {}
    max_batch: int | None = None
    for name, model_type in signature.inputs.items():
        if name not in ctx.inputs:
            continue
        dims = model_type.shape
        if ctx.batched:
            if not dims:
                ctx.problem("E-RANK", f"model input '{name}' of '{model_file}' is a scalar, so it has no "
                            f"batch dimension, but the pipeline batches (max_batch_size > 0)", name,
                            hint="set the pipeline's max_batch_size to 0, or export the model with a batch dimension")
                continue
            batch, dims = dims[0], dims[1:]
            if isinstance(batch, int):
                max_batch = batch if max_batch is None else min(max_batch, batch)
        produced: TensorType = ctx.inputs[name]
        expected = TensorType(model_type.dtype, dims).render(ctx.batched)
        layout = layouts.get(name)
        if layout:
            expected += f" ({layout})"
        expected_shape = tuple(None if not isinstance(d, int) else d for d in dims)
        if ctx.expect(
            name,
            dtypes=(model_type.dtype,),
            shape=expected_shape,
            layouts=(layout,) if layout else None,
            uniform=ctx.batched,
            expected=expected,
            hint=_batch_hint(produced, model_type, ctx.batched, ctx.source(name))
            or _layout_hint(produced, dims, model_type.dtype, ctx.source(name)),
        ):
            for d, p in zip(dims, produced.shape):
                if isinstance(d, str) and d != UNKNOWN:
                    bindings.setdefault(d, p)
    ctx.meta["max_batch"] = max_batch
    outputs = {}
    for name, model_type in signature.outputs.items():
        dims = model_type.shape[1:] if ctx.batched and model_type.shape else model_type.shape
        outputs[name] = TensorType(model_type.dtype, _bind(dims, bindings))
    return outputs


def _model_rule(
    read: Callable[[str, dict[str, Any]], ModelSignature], extra: str | None
) -> Callable[[InferContext], dict[str, TensorType]]:
    """The type rule of a model op; ``extra`` is the pip extra its reader needs (None: base install)."""
    install = f"pip install 'dagserve[{extra}]'" if extra else "reinstall dagserve: pip install dagserve"

    def infer(ctx: InferContext) -> dict[str, TensorType]:
        path = ctx.files.get("path")
        if path is None:
            return {}
        try:
            signature = read(path, ctx.params)
        except SignatureError as exc:
            message = str(exc).replace(path, str(ctx.params.get("path", path)))
            ctx.problem(exc.code, f"node '{ctx.node}': {message}", hint=exc.hint, param="path")
            return {}
        except MissingExtraError as exc:
            ctx.problem("E-EXTRA", f"node '{ctx.node}': {exc}", hint=f"pip install 'dagserve[{exc.extra}]'")
            return {}
        except ImportError as exc:
            ctx.problem("E-EXTRA", f"node '{ctx.node}': op {ctx.op} needs the Python module "
                        f"'{exc.name or exc}' to read its model, and it is not installed",
                        hint=install)
            return {}
        return infer_model(ctx, signature)

    return infer


_COMMON_PROPS: dict[str, Any] = {
    "path": {"description": "The model file, relative to the spec.", "type": "string"},
    "layouts": {
        "description": "Layout of image inputs, e.g. {images: chw}, checked against producers.",
        "type": "object",
        "additionalProperties": {"enum": ["hwc", "chw", "hw"]},
    },
    "warmup": {"description": "Run a batch of zeros at load time.", "type": "boolean", "default": True},
}

OPS = [
    OpDef(
        name="model.onnx",
        summary="Run an ONNX model with ONNX Runtime (CPU, CUDA or TensorRT provider).",
        inputs=(),
        outputs=(),
        infer=_model_rule(_onnx_signature, None),
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "required": ["path"],
            "properties": {
                **_COMMON_PROPS,
                "intra_op_threads": {"type": "integer", "minimum": 0, "default": 1},
                "inter_op_threads": {"type": "integer", "minimum": 0, "default": 1},
                "optimization_level": {"enum": ["disable", "basic", "extended", "all"], "default": "all"},
                "providers": {"description": "Override execution providers, in order of preference.",
                              "type": "array", "items": {"type": "string"}},
            },
        },
        devices=frozenset({"cpu", "gpu"}),
        kernel="dagserve.backends.onnxruntime_backend:create",
        path_params=("path",),
        dynamic_ports=True,
        kind="model",
    ),
    OpDef(
        name="model.torch",
        summary="Run a TorchScript (.pt) or torch.export (.pt2) program (extra: torch).",
        inputs=(),
        outputs=(),
        infer=_model_rule(_torch_signature, "torch"),
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "required": ["path"],
            "properties": {
                **_COMMON_PROPS,
                "inputs": {"description": "Input types, needed for TorchScript (it records none).",
                           "type": "object"},
                "outputs": {"description": "Output types, needed for TorchScript.", "type": "object"},
            },
        },
        devices=frozenset({"cpu", "gpu"}),
        kernel="dagserve.backends.torch_backend:create",
        path_params=("path",),
        dynamic_ports=True,
        kind="model",
    ),
    OpDef(
        name="model.tensorrt",
        summary="Run a serialized TensorRT engine (GPU only; extra: gpu).",
        inputs=(),
        outputs=(),
        infer=_model_rule(_tensorrt_signature, "gpu"),
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "required": ["path"],
            "properties": dict(_COMMON_PROPS),
        },
        devices=frozenset({"gpu"}),
        kernel="dagserve.backends.tensorrt_backend:create",
        path_params=("path",),
        dynamic_ports=True,
        kind="model",
    ),
]
