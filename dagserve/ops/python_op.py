"""The ``python`` op: a user class from the pipeline repository, typed and batched.

TorchServe's handler idea, with two differences: the class declares the types of
its ports, so the compiler checks the edges around it like any other node's, and
it is called with a whole batch. A class looks like this::

    class Tokenize:
        inputs = {"text": {"dtype": "bytes", "shape": []}}
        outputs = {"ids": {"dtype": "int64", "shape": [64]}}
        per_item = False          # default: __call__ gets the whole batch
        devices = ["cpu"]         # default; add "gpu" if it takes CuPy arrays

        def setup(self, params):  # once per instance, with the node's params.params
            self.vocab = ...

        def __call__(self, inputs):   # {"text": array of N items} -> {"ids": int64[N,64]}
            ...

Port declarations are per item (without the batch dimension): ``dtype`` (a
dagserve dtype), ``shape`` (ints, or symbols such as ``"T"`` that bind to the
producer's dims and may be reused in ``outputs``), and optionally ``layout``
(``hwc``/``chw``/``hw``), ``ragged: true`` (items may differ in size, so a batch
is a list of arrays) and, for inputs, ``optional: true``. An output that does not
say ``ragged`` is ragged when a dim is ``?``, unbound, or bound to a ragged input.

Compile time: the module is imported from its file (a unique module name, so two
pipelines' ``handler.py`` never collide), the class is looked up and its
declarations validated; any problem is a diagnostic (``E-MODEL`` for the module
or class, ``E-PARAM`` for the node's params) with the exception's message,
never a traceback. Run time: :func:`create` imports the same module (once per
process and file version), instantiates the class, calls ``setup`` and wraps it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from dagserve.diagnostics import did_you_mean
from dagserve.errors import UnrecoverableError
from dagserve.ops.base import InferContext, KernelContext, OpDef
from dagserve.types import LAYOUTS, UNKNOWN, Dim, TensorType, dims_compatible, parse_dtype

__all__ = ["OPS", "PortSpec", "PythonKernel", "UserClass", "UserCodeError", "create", "load_user_class"]

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PORT_KEYS = frozenset({"dtype", "shape", "layout", "ragged", "optional", "doc"})


class UserCodeError(Exception):
    """The user's module or class cannot be used; ``code`` is the diagnostic code."""

    def __init__(self, code: str, message: str, hint: str | None = None) -> None:
        self.code, self.hint = code, hint
        super().__init__(message)


@dataclass(frozen=True)
class PortSpec:
    """One declared port: its per-item type, and whether an input may be left unfed.

    ``ragged`` is what the class said (``None``: not said); for an output left
    unsaid the compiler infers it from the inputs (see :func:`_output_ragged`).
    """

    type: TensorType
    optional: bool = False
    ragged: bool | None = None


@dataclass(frozen=True)
class UserClass:
    """A validated user class and what it declares."""

    cls: type
    name: str
    path: str
    inputs: dict[str, PortSpec]
    outputs: dict[str, PortSpec]
    per_item: bool
    devices: tuple[str, ...]


# -- importing the user's module --------------------------------------------------------------

_modules: dict[tuple[str, int, int], ModuleType] = {}
_lock = threading.Lock()


def _where(exc: BaseException, path: str) -> str:
    """`` (line N)`` of the deepest frame of ``exc`` inside the user's file, if any."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if os.path.realpath(tb.tb_frame.f_code.co_filename) == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f" (line {line})" if line else ""


def _import_module(path: str) -> ModuleType:
    """Import the module at ``path`` once per process and file version.

    Raises:
        UserCodeError: ``E-MODEL`` when importing it raises anything (the message
            is the exception's, with the line in the user's file).
    """
    real = os.path.realpath(path)
    stat = os.stat(real)
    key = (real, stat.st_mtime_ns, stat.st_size)
    with _lock:
        if key in _modules:
            return _modules[key]
        stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(real))[0])
        digest = hashlib.sha1(f"{real}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        name = f"dagserve_user_{digest}_{stem}"
        spec = importlib.util.spec_from_file_location(name, real)
        if spec is None or spec.loader is None:
            raise UserCodeError("E-MODEL", f"'{path}' cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # so dataclasses, pickle and typing can find it
        try:
            spec.loader.exec_module(module)
        except BaseException as exc:  # SyntaxError, ImportError, anything the module body raises
            sys.modules.pop(name, None)
            if isinstance(exc, KeyboardInterrupt):
                raise
            if isinstance(exc, SyntaxError):
                detail = f"SyntaxError: {exc.msg} (line {exc.lineno})"
            else:
                detail = f"{type(exc).__name__}: {exc}{_where(exc, real)}"
            hint = None
            if isinstance(exc, ModuleNotFoundError):
                hint = f"install '{exc.name}' in the environment that runs dagserve"
            raise UserCodeError("E-MODEL", f"importing '{path}' failed: {detail}", hint) from exc
        _modules[key] = module
        return module


# -- validating the class ---------------------------------------------------------------------


def _port(owner: str, kind: str, name: Any, spec: Any) -> PortSpec:
    where = f"{owner}.{kind}['{name}']"
    if not isinstance(name, str) or not name:
        raise UserCodeError("E-MODEL", f"{owner}.{kind} has a port named {name!r}; port names are strings")
    if not isinstance(spec, Mapping):
        raise UserCodeError("E-MODEL", f"{where} must be a dict like {{'dtype': 'float32', 'shape': [3]}}, "
                            f"got {spec!r}")
    unknown = sorted(set(spec) - _PORT_KEYS)
    if unknown:
        raise UserCodeError("E-MODEL", f"{where} has unknown key(s) {', '.join(map(repr, unknown))}"
                            f"{did_you_mean(str(unknown[0]), _PORT_KEYS)}")
    if "dtype" not in spec or "shape" not in spec:
        raise UserCodeError("E-MODEL", f"{where} must declare 'dtype' and 'shape'")
    try:
        dtype = parse_dtype(str(spec["dtype"]))
    except ValueError as exc:
        raise UserCodeError("E-MODEL", f"{where}: {exc}") from exc
    shape = spec["shape"]
    if not isinstance(shape, (list, tuple)):
        raise UserCodeError("E-MODEL", f"{where}: shape must be a list (per item, no batch dim), got {shape!r}")
    dims: list[Dim] = []
    for d in shape:
        if isinstance(d, int) and not isinstance(d, bool) and d >= 0:
            dims.append(d)
        elif isinstance(d, str) and (d == UNKNOWN or _IDENT.match(d)):
            dims.append(d)
        else:
            raise UserCodeError("E-MODEL", f"{where}: shape entries are sizes (ints >= 0), symbols like 'T', "
                                f"or '?'; got {d!r}")
    layout = spec.get("layout")
    if layout is not None and layout not in LAYOUTS:
        raise UserCodeError("E-MODEL", f"{where}: layout must be one of {', '.join(sorted(LAYOUTS))}, got {layout!r}")
    for flag in ("ragged", "optional"):
        if flag in spec and not isinstance(spec[flag], bool):
            raise UserCodeError("E-MODEL", f"{where}: '{flag}' must be true or false")
    if kind == "outputs" and spec.get("optional"):
        raise UserCodeError("E-MODEL", f"{where}: outputs cannot be optional")
    ragged = spec.get("ragged")
    return PortSpec(TensorType(dtype, tuple(dims), layout, bool(ragged)), bool(spec.get("optional", False)), ragged)


def _ports(cls: type, owner: str, kind: str) -> dict[str, PortSpec]:
    declared = getattr(cls, kind, None)
    if not isinstance(declared, Mapping) or not declared:
        raise UserCodeError("E-MODEL", f"class {owner} must declare class attribute '{kind}' as a non-empty dict "
                            f"of ports, e.g. {kind} = {{'x': {{'dtype': 'float32', 'shape': [3]}}}}")
    return {str(name): _port(owner, kind, name, spec) for name, spec in declared.items()}


def load_user_class(path: str, class_name: str) -> UserClass:
    """Import ``path``, find ``class_name`` in it and validate its declarations.

    Raises:
        UserCodeError: ``E-PARAM`` when the file is not a ``.py`` module or the class is
            missing; ``E-MODEL`` when the module fails to import or the class is malformed.
    """
    if not path.endswith(".py"):
        raise UserCodeError("E-PARAM", f"param 'path' must name a Python file (.py), got '{path}'")
    module = _import_module(path)
    cls = getattr(module, class_name, None)
    if cls is None:
        classes = [n for n, v in vars(module).items() if inspect.isclass(v) and v.__module__ == module.__name__]
        raise UserCodeError("E-PARAM", f"'{path}' has no class '{class_name}'{did_you_mean(class_name, classes)}",
                            hint=f"classes defined there: {', '.join(classes) or 'none'}")
    if not inspect.isclass(cls):
        raise UserCodeError("E-PARAM", f"'{class_name}' in '{path}' is a {type(cls).__name__}, not a class")
    if not any("__call__" in vars(k) for k in cls.__mro__[:-1]):
        raise UserCodeError("E-MODEL", f"class {class_name} must define __call__(self, inputs) -> dict")
    setup = getattr(cls, "setup", None)
    if setup is not None and not callable(setup):
        raise UserCodeError("E-MODEL", f"{class_name}.setup must be a method setup(self, params)")
    per_item = getattr(cls, "per_item", False)
    if not isinstance(per_item, bool):
        raise UserCodeError("E-MODEL", f"{class_name}.per_item must be True or False, got {per_item!r}")
    devices = getattr(cls, "devices", ["cpu"])
    if (not isinstance(devices, (list, tuple)) or not devices
            or not all(isinstance(d, str) and d in ("cpu", "gpu") for d in devices)):
        raise UserCodeError("E-MODEL", f"{class_name}.devices must be a non-empty list of 'cpu' and/or 'gpu', "
                            f"got {devices!r}")
    return UserClass(cls, class_name, path, _ports(cls, class_name, "inputs"), _ports(cls, class_name, "outputs"),
                     per_item, tuple(devices))


# -- compile time -----------------------------------------------------------------------------


def _infer(ctx: InferContext) -> dict[str, TensorType]:
    """Import and validate the class, check every fed port against it, type its outputs."""
    path = ctx.files.get("path")
    if path is None:
        return {}
    try:
        user = load_user_class(path, ctx.params["class"])
    except UserCodeError as exc:
        message = str(exc).replace(path, str(ctx.params.get("path", path)))
        ctx.problem(exc.code, f"node '{ctx.node}': {message}", hint=exc.hint)
        return {}
    ctx.meta["devices"] = user.devices
    ctx.meta["per_item"] = user.per_item
    for port in ctx.inputs:
        if port not in user.inputs:
            ctx.problem("E-PORT", f"node '{ctx.node}' feeds input '{port}' but class {user.name} has no such input"
                        f"{did_you_mean(port, user.inputs)}", port,
                        hint=f"inputs of {user.name}: {', '.join(user.inputs)}")
    unfed = [n for n, p in user.inputs.items() if n not in ctx.inputs and not p.optional]
    if unfed:
        ctx.problem("E-PORT", f"node '{ctx.node}' leaves input(s) {', '.join(map(repr, unfed))} of class "
                    f"{user.name} unfed", hint=f"add them under the node's 'inputs:', e.g. {unfed[0]}: NODE.PORT")
    bindings: dict[str, Dim] = {}
    bound_from: dict[str, str] = {}
    for name, spec in user.inputs.items():
        if name not in ctx.inputs:
            continue
        want = spec.type
        if not ctx.expect(
            name,
            dtypes=(want.dtype,),
            shape=tuple(d if isinstance(d, int) else None for d in want.shape),
            layouts=(want.layout,) if want.layout else None,
            expected=want.render(ctx.batched),
        ):
            continue
        produced: TensorType = ctx.inputs[name]
        if produced.ragged and ctx.batched and not user.per_item and not want.ragged:
            ctx.mismatch("E-RAGGED", name, produced, f"{want.render(ctx.batched)} with the same size for every item",
                         hint=f"declare 'ragged': True on {user.name}.inputs['{name}'] (the batch then comes as a "
                              "list of arrays), make the class per_item, or make items uniform upstream")
            continue
        for d, p in zip(want.shape, produced.shape):
            if not isinstance(d, str) or d == UNKNOWN:
                continue
            if d in bindings and not dims_compatible(bindings[d], p):
                ctx.problem("E-SHAPE", f"input '{name}' of node '{ctx.node}' has {d}={p} but input "
                            f"'{bound_from[d]}' has {d}={bindings[d]} (class {user.name} declares them equal)", name)
            elif d not in bindings or not isinstance(bindings[d], int):
                bindings[d], bound_from[d] = p, name
    ragged_symbols = {d for d, src in bound_from.items() if ctx.inputs[src].ragged}
    return {
        name: TensorType(spec.type.dtype, tuple(bindings.get(d, d) if isinstance(d, str) else d
                                                for d in spec.type.shape),
                         spec.type.layout, _output_ragged(spec, bindings, ragged_symbols))
        for name, spec in user.outputs.items()
    }


def _output_ragged(spec: PortSpec, bindings: dict[str, Dim], ragged_symbols: set[str]) -> bool:
    """Whether an output's items may differ in size (then a batch of them is a list).

    As declared when the class says ``ragged``; otherwise ragged when a dim is a
    symbol bound to a ragged input's dim, or not bound at all (``"?"`` or a symbol
    no input has), since nothing then says two items have the same size.
    """
    if spec.ragged is not None:
        return spec.ragged
    for d in spec.type.shape:
        if not isinstance(d, str):
            continue
        if d == UNKNOWN or d not in bindings or (d in ragged_symbols and not isinstance(bindings[d], int)):
            return True
    return False


# -- run time ---------------------------------------------------------------------------------


def _check_output(user: UserClass, name: str, want: TensorType, value: Any, batched_call: bool) -> None:
    from dagserve.backends._arrays import dtype_name

    if batched_call and want.ragged:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{user.name} returned a {type(value).__name__} for ragged output '{name}'; return a "
                             "list with one array per item")
        items, extra_rank = list(value), 0
    else:
        items, extra_rank = [value], 1 if batched_call else 0
    for item in items:
        if not hasattr(item, "dtype") or not hasattr(item, "shape"):
            raise ValueError(f"{user.name} returned a {type(item).__name__} for output '{name}'; return arrays "
                             f"({want.render(batched_call)})")
        got = dtype_name(item)
        if got != want.dtype or len(item.shape) != want.rank + extra_rank:
            raise ValueError(f"{user.name} returned {got}{list(item.shape)} for output '{name}', which it declares "
                             f"as {want.render(batched_call and not want.ragged)}")


class PythonKernel:
    """One instance of a ``python`` node: the user's object, set up, with its results checked."""

    def __init__(self, ctx: KernelContext) -> None:
        path = ctx.files.get("path") or ctx.params["path"]
        try:
            self.user = load_user_class(path, ctx.params["class"])
        except UserCodeError as exc:
            raise UnrecoverableError(f"python node '{ctx.node}': {exc}") from exc
        if ctx.device.kind not in self.user.devices:
            raise UnrecoverableError(
                f"python node '{ctx.node}' is placed on {ctx.device} but class {self.user.name} declares devices "
                f"{list(self.user.devices)}; set 'device: cpu' on the node or add '{ctx.device.kind}' to its devices")
        self.per_item = self.user.per_item
        self.node = ctx.node
        # The compiled types say which outputs are ragged (inferred from the inputs); the
        # declarations say the rest.
        self.output_types = {n: ctx.output_types.get(n) or p.type for n, p in self.user.outputs.items()}
        try:
            self.obj = self.user.cls()
        except Exception as exc:
            raise UnrecoverableError(f"python node '{ctx.node}': {self.user.name}() failed: "
                                     f"{type(exc).__name__}: {exc}") from exc
        setup = getattr(self.obj, "setup", None)
        if setup is not None:
            params = dict(ctx.params.get("params") or {})
            try:
                takes_context = len(inspect.signature(setup).parameters) >= 2
                setup(params, ctx) if takes_context else setup(params)
            except Exception as exc:
                raise UnrecoverableError(f"python node '{ctx.node}': {self.user.name}.setup() failed: "
                                         f"{type(exc).__name__}: {exc}{_where(exc, os.path.realpath(path))}") from exc

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Call the user's object and check that it returned every declared output, typed as declared.

        Raises:
            ValueError: a missing output, or one of another dtype or rank than declared.
        """
        result = self.obj(inputs)
        if not isinstance(result, Mapping):
            raise ValueError(f"{self.user.name}.__call__ returned a {type(result).__name__}; it must return a dict "
                             f"of its outputs ({', '.join(self.user.outputs)})")
        missing = [n for n in self.user.outputs if n not in result]
        if missing:
            raise ValueError(f"{self.user.name} returned no output(s) {', '.join(map(repr, missing))} "
                             f"(it returned {', '.join(map(repr, result)) or 'nothing'})")
        for name in self.user.outputs:
            _check_output(self.user, name, self.output_types[name], result[name], not self.per_item)
        return {name: result[name] for name in self.user.outputs}


def create(ctx: KernelContext) -> PythonKernel:
    """Kernel factory of the ``python`` op (``OpDef.kernel``)."""
    return PythonKernel(ctx)


OPS = [
    OpDef(
        name="python",
        summary="Run a user class from the pipeline repository (typed ports, batched __call__).",
        inputs=(),
        outputs=(),
        infer=_infer,
        params_schema={
            "type": "object",
            "additionalProperties": False,
            "required": ["path", "class"],
            "properties": {
                "path": {"description": "The .py file defining the class, relative to the spec.", "type": "string"},
                "class": {"description": "The class's name in that file.", "type": "string",
                          "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                "params": {"description": "Passed to the class's setup(params).", "type": "object", "default": {}},
            },
        },
        devices=frozenset({"cpu", "gpu"}),
        kernel="dagserve.ops.python_op:create",
        path_params=("path",),
        dynamic_ports=True,
    ),
]
