"""What an op is: ports, a params schema, a type rule, devices, and a kernel factory.

An :class:`OpDef` is everything the compiler and the runtime need to know about one
op, and nothing about either of them:

* the **compiler** reads ``inputs``/``outputs``, validates ``params`` against
  ``params_schema`` (defaults filled in), checks ``devices``, and calls ``infer``
  with an :class:`InferContext` to type the outputs. Type rules report problems
  through the context (``ctx.mismatch``, ``ctx.problem``); the compiler turns them
  into diagnostics with source spans. Ops never see YAML or spans.
* the **runtime** imports ``kernel`` (``"module:factory"``) lazily and calls
  ``factory(KernelContext)`` once per instance to get a :class:`Kernel`.

Kernel calling convention (see :class:`Kernel`): a *per-item* kernel is called once
per batch item with arrays of that item alone (no batch dimension) and the runtime
isolates a failing item; a *batched* kernel is called with the whole batch, each
input being an array with a leading batch dimension (uniform ports) or a list of
per-item arrays (ragged ports), and must return outputs in the same form.

Hand-offs are zero-copy, so a kernel must treat its inputs as read-only (they
may be the caller's request buffer or another node's output) and must return
fresh arrays, or views of its inputs, never a buffer it reuses on its next call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from dagserve.types import Device, Dim, DType, TensorType, dims_compatible, render_shape

__all__ = [
    "InferContext",
    "Kernel",
    "KernelContext",
    "OpDef",
    "PortDef",
    "TypeProblem",
    "ragged_rows_hint",
]


@dataclass(frozen=True)
class PortDef:
    """One input or output port of an op."""

    name: str
    doc: str = ""
    optional: bool = False
    variadic: bool = False
    """An input port fed by a list of references (e.g. ``tensor.concat``)."""
    host: bool = False
    """An input port read from host memory wherever the node runs (e.g. encoded
    bytes that a GPU decoder reads from the host): no upload is inserted for it."""


@dataclass(frozen=True)
class TypeProblem:
    """A problem a type rule found; the compiler adds the source span."""

    code: str
    message: str
    port: str | None = None
    hint: str | None = None
    index: int = 0
    """For a variadic port, which of its references is at fault."""
    param: str | None = None
    """The param at fault, when the problem is a param's value (the span points at it)."""


@dataclass
class InferContext:
    """What a type rule sees: its node's params and input types; where it reports.

    Attributes:
        node: the node's name (for messages).
        op: the op's name.
        params: the node's params, validated, with schema defaults filled in.
        inputs: port -> type (a list of types for a variadic port). A port that
            is optional and unfed is absent.
        sources: port -> the reference text(s) that feed it, for messages.
        batched: the pipeline has a batch dimension (``max_batch_size > 0``).
        files: params that are paths, resolved to absolute paths by the compiler.
    """

    node: str
    op: str
    params: dict[str, Any]
    inputs: dict[str, Any]
    sources: dict[str, Any]
    batched: bool
    files: dict[str, str] = field(default_factory=dict)
    problems: list[TypeProblem] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    """Facts a rule learns for later passes (e.g. a model's batch limit)."""

    def problem(self, code: str, message: str, port: str | None = None, hint: str | None = None,
                index: int = 0, param: str | None = None) -> None:
        self.problems.append(TypeProblem(code, message, port, hint, index, param))

    def source(self, port: str, index: int = 0) -> str:
        src = self.sources.get(port, "?")
        return src[index] if isinstance(src, (list, tuple)) else str(src)

    def mismatch(self, code: str, port: str, produced: TensorType, expected: str,
                 hint: str | None = None, index: int = 0) -> None:
        """Report that ``port`` expects ``expected`` but its producer gives ``produced``."""
        self.problem(
            code,
            f"input '{port}' of node '{self.node}' expects {expected} "
            f"but '{self.source(port, index)}' produces {produced.render(self.batched)}",
            port,
            hint,
            index,
        )

    def expect(
        self,
        port: str,
        *,
        dtypes: tuple[DType, ...] | None = None,
        ranks: tuple[int, ...] | None = None,
        shape: tuple[Dim | None, ...] | None = None,
        layouts: tuple[str, ...] | None = None,
        uniform: bool = False,
        expected: str | None = None,
        hint: str | None = None,
        index: int = 0,
    ) -> bool:
        """Check an input's type; report every mismatch; True when it fits.

        ``shape`` entries of ``None`` accept any dim; ``expected`` is the phrase
        used in messages (default: built from the constraints).
        """
        value = self.inputs.get(port)
        t = value[index] if isinstance(value, list) else value
        if t is None:
            return False
        want = expected or _describe(dtypes, ranks, shape, layouts, self.batched)
        code = self._first_mismatch(t, dtypes, ranks, shape, layouts)
        if code is not None:
            if hint is None and code == "E-RANK" and shape is not None:
                hint = ragged_rows_hint(t, shape, self.source(port, index), port)
            self.mismatch(code, port, t, want, hint, index)
            return False
        if uniform and t.ragged:
            self.mismatch(
                "E-RAGGED", port, t, want + " with the same size for every item",
                hint or "insert an 'image.resize' or 'image.letterbox' node to make items uniform",
                index,
            )
            return False
        return True

    @staticmethod
    def _first_mismatch(t: TensorType, dtypes: tuple[DType, ...] | None, ranks: tuple[int, ...] | None,
                        shape: tuple[Dim | None, ...] | None, layouts: tuple[str, ...] | None) -> str | None:
        """The code of the most basic way ``t`` misses: rank, then shape, dtype, layout."""
        if shape is not None and t.rank != len(shape):
            return "E-RANK"
        if ranks is not None and t.rank not in ranks:
            return "E-RANK"
        if shape is not None and not all(w is None or dims_compatible(d, w) for d, w in zip(t.shape, shape)):
            return "E-SHAPE"
        if dtypes is not None and t.dtype not in dtypes:
            return "E-DTYPE"
        if layouts is not None and t.layout is not None and t.layout not in layouts:
            return "E-LAYOUT"
        return None


def ragged_rows_hint(produced: TensorType, shape: tuple[Dim | None, ...], source: str, port: str) -> str | None:
    """The hint for K rows per item (detections) reaching a port that takes one row per item.

    ``detect.nms`` gives each image its own number of boxes, ``float32[K,4]`` (ragged);
    a port such as ``image.crop``'s ``box`` takes one ``float32[4]``. The ranks differ by
    exactly that leading ``K``, and no batching setting fixes it, so say what does.
    """
    if not produced.ragged or produced.rank != len(shape) + 1:
        return None
    if not all(w is None or dims_compatible(d, w) for d, w in zip(produced.shape[1:], shape)):
        return None
    row = render_shape(produced.shape[1:])
    return (f"'{source}' has a varying number of {row} rows per item ({produced.dtype}"
            f"{render_shape(produced.shape)}, ragged: e.g. K detections per image), but input '{port}' takes "
            f"exactly one {row} per item: pick one row per item in a 'python' op (e.g. the best detection), "
            "or feed a port that takes all the rows")


def _describe(dtypes: tuple[DType, ...] | None, ranks: tuple[int, ...] | None,
              shape: tuple[Dim | None, ...] | None, layouts: tuple[str, ...] | None,
              batched: bool) -> str:
    dt = "|".join(dtypes) if dtypes else "any dtype"
    if shape is not None:
        dims = ["N"] if batched else []
        dims += ["?" if d is None else str(d) for d in shape]
        text = f"{dt}[{','.join(dims)}]"
    elif ranks is not None:
        text = f"{dt} of rank {'/'.join(map(str, ranks))} per item"
    else:
        text = dt
    if layouts:
        text += f" ({'/'.join(layouts)})"
    return text


@dataclass(frozen=True)
class KernelContext:
    """What a kernel factory gets when the runtime creates one instance of a node."""

    node: str
    op: str
    params: Mapping[str, Any]
    device: Device
    batched: bool
    input_types: Mapping[str, TensorType]
    output_types: Mapping[str, TensorType]
    files: Mapping[str, str] = field(default_factory=dict)
    """Path params resolved to absolute paths."""
    instance: int = 0
    stream: Any = None
    """On a GPU: this instance's CUDA stream (a ``cupy.cuda.Stream``); kernels that
    launch work (ONNX Runtime, torch, TensorRT) must order it on this stream."""


class Kernel(Protocol):
    """A node's computation, created once per instance.

    ``per_item`` says how it is called (see the module docstring). Any exception
    fails only the items it was raised for; the runtime names the node and op.
    """

    per_item: bool

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]: ...


TypeRule = Callable[[InferContext], dict[str, TensorType]]


@dataclass(frozen=True)
class OpDef:
    """One op: its contract with the compiler and its kernel for the runtime."""

    name: str
    summary: str
    inputs: tuple[PortDef, ...]
    outputs: tuple[PortDef, ...]
    infer: TypeRule
    params_schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "additionalProperties": False})
    devices: frozenset[str] = frozenset({"cpu"})
    kernel: str | None = None
    """``"module:factory"``, imported by the runtime only."""
    path_params: tuple[str, ...] = ()
    """Params holding file paths, resolved against the spec and checked by the compiler."""
    dynamic_ports: bool = False
    """Ports come from the model or class the node loads, not from this definition."""
    kind: str = "op"
    """``op`` or ``model`` (the IR node kind)."""

    def input_port(self, name: str) -> PortDef | None:
        return next((p for p in self.inputs if p.name == name), None)

    def output_port(self, name: str) -> PortDef | None:
        return next((p for p in self.outputs if p.name == name), None)
