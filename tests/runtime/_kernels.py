"""Small real ops for the runtime tests: NumPy kernels with observable side effects.

Every kernel records what it saw in :data:`SEEN` (node name -> list of records),
so tests can assert what ran, in which batches, and on which memory. The op
definitions live in :data:`TEST_OPS`; :func:`make_registry` returns the built-in
ops plus these. Kernel paths are built from this module's ``__name__``, so they
resolve however pytest imported it.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import numpy as np

from dagserve.ops.base import InferContext, KernelContext, OpDef, PortDef
from dagserve.ops.registry import OpRegistry, default_registry
from dagserve.types import TensorType

__all__ = ["BARRIERS", "GATES", "RECORDING", "SEEN", "TEST_OPS", "make_registry", "open_gate", "reset"]

SEEN: dict[str, list[dict[str, Any]]] = defaultdict(list)
"""node name -> one record per kernel call (batch or item)."""

BARRIERS: dict[str, threading.Barrier] = {}
"""node name -> the barrier its ``test.barrier`` instances meet at."""

GATES: dict[str, threading.Event] = {}
"""node name -> the gate its ``test.gate`` kernel waits at (see :func:`open_gate`)."""

RECORDING = [True]
"""Set ``RECORDING[0] = False`` to stop recording (memory-growth tests)."""

_LOCK = threading.Lock()


def reset() -> None:
    """Forget every record and barrier, and record again (each test starts clean)."""
    with _LOCK:
        for event in GATES.values():  # release any kernel a test left waiting
            event.set()
        GATES.clear()
        SEEN.clear()
        BARRIERS.clear()
        RECORDING[0] = True


def _gate(node: str) -> threading.Event:
    with _LOCK:
        return GATES.setdefault(node, threading.Event())


def open_gate(node: str) -> None:
    """Let the ``test.gate`` kernel of ``node`` finish its batches (now and from now on)."""
    _gate(node).set()


def _record(node: str, **data: Any) -> None:
    if RECORDING[0]:
        with _LOCK:
            SEEN[node].append(data)


def _firsts(x: Any) -> list[float]:
    """The first element of every item of a batch (tests tag items with it)."""
    if isinstance(x, list):
        return [float(np.asarray(v).reshape(-1)[0]) for v in x]
    return [float(v) for v in np.asarray(x).reshape(len(x), -1)[:, 0]]


class _Base:
    per_item = False

    def __init__(self, ctx: KernelContext) -> None:
        self.ctx = ctx
        self.node = ctx.node
        self.params = dict(ctx.params)


class AddKernel(_Base):
    """y = x + value (a new array)."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        x = inputs["x"]
        _record(self.node, n=len(x), firsts=_firsts(x), thread=threading.get_ident())
        return {"y": x + np.asarray(self.params.get("value", 1), dtype=x.dtype)}


class InlineAddKernel(AddKernel):
    """AddKernel that declares itself cheap enough to run on the event loop."""

    inline = True


class MulKernel(_Base):
    """y = x * value."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        x = inputs["x"]
        _record(self.node, n=len(x), firsts=_firsts(x))
        return {"y": x * np.asarray(self.params.get("value", 2), dtype=x.dtype)}


class SumKernel(_Base):
    """y = a + b (fan-in of two producers)."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        a, b = inputs["a"], inputs["b"]
        _record(self.node, n=len(a))
        return {"y": a + b}


class PassKernel(_Base):
    """y = x, the very same object; records the object and (NumPy) the data pointer it was handed."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        x = inputs["x"]
        ptr = x.__array_interface__["data"][0] if hasattr(x, "__array_interface__") else None
        _record(self.node, n=len(x), ptr=ptr, array=x)
        return {"y": x}


class NoopKernel(_Base):
    """y = x without recording anything (benchmarks); ``inline`` param pins it to the loop."""

    def __init__(self, ctx: KernelContext) -> None:
        super().__init__(ctx)
        if self.params.get("inline"):
            self.inline = True

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"y": inputs["x"]}


class FailOnKernel(_Base):
    """y = x, but raises for a batch holding an item whose first element equals ``marker``."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        x = inputs["x"]
        firsts = _firsts(x)
        _record(self.node, n=len(x), firsts=firsts)
        marker = float(self.params.get("marker", -1))
        if marker in firsts:
            raise ValueError(f"item with marker value {marker:g} is not allowed")
        return {"y": x}


class SlowKernel(_Base):
    """y = x after sleeping ``seconds`` in its worker thread (creates queueing)."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        x = inputs["x"]
        _record(self.node, n=len(x), firsts=_firsts(x), start=time.monotonic())
        time.sleep(float(self.params.get("seconds", 0.05)))
        return {"y": x}


class GateKernel(_Base):
    """y = x once the test opens this node's gate: holds an instance busy for as long as a test needs.

    Records the batch after passing the gate, so records are in the order batches ran.
    """

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        x = inputs["x"]
        _gate(self.node).wait(10)
        _record(self.node, n=len(x), firsts=_firsts(x))
        return {"y": x}


class PerItemKernel(_Base):
    """y = x * 3 for one item at a time (no batch dimension); raises on ``marker``."""

    per_item = True

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        x = inputs["x"]
        _record(self.node, ndim=x.ndim, first=float(x.reshape(-1)[0]))
        time.sleep(float(self.params.get("seconds", 0)))
        if float(x.reshape(-1)[0]) == float(self.params.get("marker", -1)):
            raise ValueError("per-item marker")
        return {"y": x * 3}


class RaggedKernel(_Base):
    """y[i] = arange(x[i, 0]) as float32: items of different lengths (a list)."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        x = inputs["x"]
        _record(self.node, n=len(x))
        return {"y": [np.arange(int(v[0]), dtype=np.float32) for v in x]}


class RaggedSumKernel(_Base):
    """y[i] = sum of the ragged item x[i] (ragged in, uniform out)."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        x = inputs["x"]
        _record(self.node, n=len(x), ragged=isinstance(x, list))
        return {"y": np.asarray([[float(np.sum(v))] for v in x], dtype=np.float32)}


class BytesLenKernel(_Base):
    """y[i] = len(x[i]) for a BYTES input."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        x = inputs["x"]
        _record(self.node, n=len(x), items=list(np.asarray(x, dtype=object).reshape(-1)))
        return {"y": np.asarray([len(v) for v in np.asarray(x, dtype=object).reshape(-1)], dtype=np.int64)}


class BarrierKernel(_Base):
    """y = x once two batches are inside the kernel at the same time (proves concurrency)."""

    def __init__(self, ctx: KernelContext) -> None:
        super().__init__(ctx)
        with _LOCK:
            self.barrier = BARRIERS.setdefault(ctx.node, threading.Barrier(2, timeout=5))

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        x = inputs["x"]
        self.barrier.wait()
        _record(self.node, n=len(x), firsts=_firsts(x), thread=threading.get_ident())
        return {"y": x}


class BadSizeKernel(_Base):
    """Returns one item more than it was given (a broken kernel)."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        x = inputs["x"]
        _record(self.node, n=len(x))
        return {"y": np.concatenate([x, x[:1]])}


class MissingPortKernel(_Base):
    """Returns no outputs at all (a broken kernel)."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        _record(self.node, n=len(inputs["x"]))
        return {}


class SleepKernel(_Base):
    """y = x + 0 after sleeping ``seconds`` (an expensive kernel for the adaptive-inline test)."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        time.sleep(float(self.params.get("seconds", 0.001)))
        _record(self.node, thread=threading.get_ident())
        return {"y": inputs["x"]}


class CheapKernel(_Base):
    """y = x; records the thread it ran on (adaptive-inline test)."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        _record(self.node, thread=threading.get_ident())
        return {"y": inputs["x"]}


class Boom(BaseException):
    """Not an ``Exception``: what a kernel hit by e.g. a ``SystemExit`` in a library raises."""


class BoomKernel(_Base):
    """Raises :class:`Boom` for a batch holding ``marker``; y = x otherwise."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        x = inputs["x"]
        _record(self.node, n=len(x), firsts=_firsts(x), thread=threading.get_ident())
        if float(self.params.get("marker", -1)) in _firsts(x):
            raise Boom("boom")
        return {"y": x}


class InlineBoomKernel(BoomKernel):
    inline = True


class KeyErrorKernel(_Base):
    """A kernel with a bug: looks up a key that is not there."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"y": inputs["no_such_port"]}


class VaryingKernel(_Base):
    """Per item: y = zeros(x[0] + 1), a shape that varies although the port is declared uniform."""

    per_item = True

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"y": np.zeros(int(inputs["x"].reshape(-1)[0]) + 1, dtype=np.float32)}


class WidenKernel(_Base):
    """Returns float64 although its type rule says the input's dtype (a broken kernel)."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"y": np.asarray(inputs["x"], dtype=np.float64)}


class ShrinkKernel(_Base):
    """Returns two columns although its type rule says the input's shape (a broken kernel)."""

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        return {"y": np.ascontiguousarray(inputs["x"][:, :2])}


def slow_load(ctx: KernelContext) -> Any:
    """An AddKernel whose creation takes ``seconds`` (a model that loads slowly)."""
    time.sleep(float(ctx.params.get("seconds", 0.2)))
    return AddKernel(ctx)


def failing_factory(ctx: KernelContext) -> Any:
    """A factory that cannot create its kernel (a model that does not load)."""
    raise RuntimeError(f"cannot load the model of node '{ctx.node}'")


def _factory(cls: type) -> Any:
    def make(ctx: KernelContext) -> Any:
        return cls(ctx)

    make.__name__ = cls.__name__
    return make


add = _factory(AddKernel)
inline_add = _factory(InlineAddKernel)
mul = _factory(MulKernel)
sum2 = _factory(SumKernel)
passthrough = _factory(PassKernel)
noop = _factory(NoopKernel)
fail_on = _factory(FailOnKernel)
slow = _factory(SlowKernel)
per_item = _factory(PerItemKernel)
ragged = _factory(RaggedKernel)
ragged_sum = _factory(RaggedSumKernel)
bytes_len = _factory(BytesLenKernel)
barrier = _factory(BarrierKernel)
bad_size = _factory(BadSizeKernel)
missing_port = _factory(MissingPortKernel)
sleep = _factory(SleepKernel)
cheap = _factory(CheapKernel)
boom = _factory(BoomKernel)
inline_boom = _factory(InlineBoomKernel)
key_error = _factory(KeyErrorKernel)
varying = _factory(VaryingKernel)
gate = _factory(GateKernel)
widen = _factory(WidenKernel)
shrink = _factory(ShrinkKernel)


def _same(ctx: InferContext) -> dict[str, TensorType]:
    x = ctx.inputs.get("x")
    return {"y": x} if isinstance(x, TensorType) else {}


def _sum_rule(ctx: InferContext) -> dict[str, TensorType]:
    a = ctx.inputs.get("a")
    return {"y": a} if isinstance(a, TensorType) else {}


def _ragged_rule(ctx: InferContext) -> dict[str, TensorType]:
    return {"y": TensorType("float32", ("L",), None, True)}


def _ragged_sum_rule(ctx: InferContext) -> dict[str, TensorType]:
    return {"y": TensorType("float32", (1,))}


def _len_rule(ctx: InferContext) -> dict[str, TensorType]:
    return {"y": TensorType("int64", ())}


_NUMBER = {"type": "number"}
_PARAMS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"value": _NUMBER, "marker": _NUMBER, "seconds": _NUMBER, "inline": {"type": "boolean"}},
}


def _op(name: str, factory: str, rule: Any = _same, ports: tuple[str, ...] = ("x",)) -> OpDef:
    return OpDef(
        name=f"test.{name}",
        summary=f"runtime test op {name}",
        inputs=tuple(PortDef(p) for p in ports),
        outputs=(PortDef("y"),),
        infer=rule,
        params_schema=_PARAMS,
        kernel=f"{__name__}:{factory}",
    )


TEST_OPS: list[OpDef] = [
    _op("add", "add"),
    _op("inline_add", "inline_add"),
    _op("mul", "mul"),
    _op("sum", "sum2", _sum_rule, ("a", "b")),
    _op("pass", "passthrough"),
    _op("noop", "noop"),
    _op("fail_on", "fail_on"),
    _op("slow", "slow"),
    _op("per_item", "per_item"),
    _op("ragged", "ragged", _ragged_rule),
    _op("ragged_sum", "ragged_sum", _ragged_sum_rule),
    _op("bytes_len", "bytes_len", _len_rule),
    _op("barrier", "barrier"),
    _op("bad_size", "bad_size"),
    _op("missing_port", "missing_port"),
    _op("sleep", "sleep"),
    _op("cheap", "cheap"),
    _op("boom", "boom"),
    _op("inline_boom", "inline_boom"),
    _op("key_error", "key_error"),
    _op("cannot_load", "failing_factory"),
    _op("no_kernel", "no_such_factory"),
    _op("varying", "varying"),
    _op("slow_load", "slow_load"),
    _op("gate", "gate"),
    _op("widen", "widen"),
    _op("shrink", "shrink"),
]


def make_registry() -> OpRegistry:
    """The built-in ops plus :data:`TEST_OPS`."""
    registry = OpRegistry()
    for op in default_registry():
        registry.register(op)
    registry.register_all(TEST_OPS)
    return registry
