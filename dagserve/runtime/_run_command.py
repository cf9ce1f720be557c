"""``dagserve run``: run a pipeline once (or N times) on inputs from the command line.

Inputs are ``NAME=@FILE`` or ``NAME=VALUE``:

* ``@file.npy`` is a NumPy array, ``@file.json`` a JSON value, any other file is
  read as bytes: one item of a BYTES input;
* a plain value is parsed as JSON (a number or a nested list) and cast to the
  input's dtype; for a BYTES input a plain value is its UTF-8 text (a JSON list
  of strings gives several items).

When the pipeline batches and a value has no batch dimension, one is added. An
input that no node reads (``W-UNUSED-INPUT``) needs no ``--input``: it gets zeros
(or empty bytes) of its type, with the batch size of the others. The
outputs are printed as a table (name, dtype, shape, abbreviated values) or as
JSON; ``--repeat N`` also prints latency percentiles. Errors are one line on
stderr and exit code 1: never a traceback.

This module is imported by ``dagserve.cli`` only when ``run`` is used, so the
compiler's commands do not load the runtime.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from dagserve.compiler.plan import Plan, PlanTensor
from dagserve.errors import CompileError, DagserveError
from dagserve.types import DTYPES

__all__ = ["InputError", "parse_inputs", "read_inputs", "run_command"]

EXIT_OK, EXIT_ERRORS, EXIT_USAGE = 0, 1, 2


class InputError(DagserveError):
    """A ``--input`` the command cannot turn into a tensor."""


def _split(arg: str) -> tuple[str, str]:
    name, sep, value = arg.partition("=")
    if not sep or not name:
        raise InputError(f"--input '{arg}': expected NAME=@FILE or NAME=VALUE")
    return name.strip(), value


def _json_value(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"input '{name}': cannot parse {text!r} as JSON (a number or a nested list): "
                         f"{exc.msg}") from exc


def _numeric(name: str, value: Any, tensor: PlanTensor) -> np.ndarray:
    dtype = np.dtype(DTYPES[tensor.type.dtype][0])
    try:
        raw = np.asarray(value)
    except ValueError as exc:  # ragged nested lists
        raise InputError(f"input '{name}': {exc}") from exc
    if raw.dtype.kind not in "biuf":
        raise InputError(f"input '{name}' is {tensor.type.dtype}: expected numbers, got {raw.dtype} values")
    cast = raw.astype(dtype)
    if dtype.kind in "biu" and raw.size and not np.array_equal(cast.astype(raw.dtype), raw):
        shown = value.tolist() if isinstance(value, np.ndarray) else value
        raise InputError(f"input '{name}' is {tensor.type.dtype}: {shown!r} does not fit without loss")
    return cast


def _bytes_items(name: str, value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.encode("utf-8") for v in value]
    raise InputError(f"input '{name}' is bytes: give text, a JSON list of strings, or @FILE")


def _read(name: str, spec: str, tensor: PlanTensor) -> Any:
    """The value of one ``--input``, before any batch dimension is added."""
    is_bytes = tensor.type.dtype == "bytes"
    if spec.startswith("@"):
        path = Path(spec[1:])
        if not path.is_file():
            raise InputError(f"input '{name}': no such file: {path}")
        if path.suffix == ".npy":
            try:
                array = np.load(path, allow_pickle=False)
            except ValueError as exc:
                raise InputError(f"input '{name}': {path} is not a NumPy array file: {exc}") from exc
            return array if is_bytes else _numeric(name, array, tensor)
        if path.suffix == ".json":
            value = _json_value(name, path.read_text(encoding="utf-8"))
            return _bytes_items(name, value) if is_bytes else _numeric(name, value, tensor)
        if not is_bytes:
            raise InputError(f"input '{name}' is {tensor.type.dtype}: give a .npy or .json file, "
                             f"or a JSON value (raw files are for bytes inputs)")
        return path.read_bytes()
    if is_bytes:
        try:
            value = json.loads(spec)
        except json.JSONDecodeError:
            value = spec
        return _bytes_items(name, value if isinstance(value, (str, list)) else spec)
    return _numeric(name, _json_value(name, spec), tensor)


def _with_batch_dim(value: Any, tensor: PlanTensor) -> Any:
    """Add the batch dimension to a value given as one item (batched pipelines only)."""
    if isinstance(value, bytes):
        return [value]
    if isinstance(value, list):  # bytes items: already a batch
        return value
    if value.ndim == tensor.type.rank:
        return value[None]
    return value


def parse_inputs(plan: Plan, args: Sequence[str]) -> dict[str, Any]:
    """Turn ``NAME=@FILE|VALUE`` arguments into the pipeline's inputs.

    Raises:
        InputError: an unknown, repeated, missing or unreadable input.
    """
    tensors = {t.name: t for t in plan.inputs}
    values: dict[str, Any] = {}
    for arg in args:
        name, spec = _split(arg)
        if name not in tensors:
            raise InputError(f"pipeline '{plan.name}' has no input '{name}'; its inputs are: {', '.join(tensors)}")
        if name in values:
            raise InputError(f"input '{name}' is given twice")
        value = _read(name, spec, tensors[name])
        values[name] = _with_batch_dim(value, tensors[name]) if plan.max_batch_size > 0 else value
    read = read_inputs(plan)
    missing = [n for n in tensors if n not in values and n in read]
    if missing:
        wanted = ", ".join(f"{n} ({tensors[n].type.render(plan.max_batch_size > 0)})" for n in missing)
        raise InputError(f"missing --input for: {wanted}")
    count = next((_batch_of(v) for v in values.values()), 1) if plan.max_batch_size > 0 else 1
    for name, tensor in tensors.items():
        if name not in values:  # read by no node and no output (W-UNUSED-INPUT): the runtime still wants one
            values[name] = _placeholder(tensor, count if plan.max_batch_size > 0 else None)
    return values


def read_inputs(plan: Plan) -> set[str]:
    """The pipeline inputs some node or output reads (the rest need no ``--input``)."""
    refs = [ref for node in plan.nodes for port in node.inputs.values() for ref in port]
    refs += [t.source for t in plan.outputs if t.source]
    return {ref.split(".", 1)[1] for ref in refs if ref.startswith("inputs.")}


def _batch_of(value: Any) -> int:
    return len(value) if isinstance(value, list) else int(np.shape(value)[0])


def _placeholder(tensor: PlanTensor, count: int | None) -> Any:
    """Zeros (or empty bytes) of the input's type for an input nothing reads; symbolic dims are 1."""
    dims = tuple(d if isinstance(d, int) else 1 for d in tensor.type.shape)
    shape = dims if count is None else (count, *dims)
    if tensor.type.dtype == "bytes":
        return np.full(shape, b"", dtype=object)
    return np.zeros(shape, dtype=np.dtype(DTYPES[tensor.type.dtype][0]))


# -- output -------------------------------------------------------------------------------


def _dtype_name(value: Any) -> str:
    if isinstance(value, list):
        return _dtype_name(value[0]) if value else "?"
    kind = np.asarray(value).dtype
    return "bytes" if kind.kind in "OS" else str(kind)


def _shape(value: Any) -> Any:
    if isinstance(value, list):  # ragged: one shape per item
        return [list(np.shape(v)) for v in value]
    return list(np.shape(value))


def _text(value: Any, width: int = 60) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_text(v, 24) for v in value) + "]"
    array = np.asarray(value)
    if array.dtype.kind == "O":
        array = np.vectorize(lambda b: b if not isinstance(b, bytes) or len(b) <= 16 else b[:16] + b"...",
                             otypes=[object])(array) if array.size else array
    text = np.array2string(array, threshold=8, edgeitems=2, precision=4, max_line_width=10**6, separator=", ")
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _jsonable(value: Any) -> Any:
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    array = np.asarray(value)
    if array.dtype.kind in "OS":
        return np.vectorize(
            lambda b: b.decode("utf-8", "backslashreplace") if isinstance(b, bytes) else str(b), otypes=[object]
        )(array).tolist() if array.size else array.tolist()
    return array.tolist()


def _percentiles(latencies: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    return {"runs": len(latencies), "p50": round(float(p50), 4), "p90": round(float(p90), 4),
            "p99": round(float(p99), 4), "min": round(float(ms.min()), 4), "max": round(float(ms.max()), 4)}


def render_table(outputs: dict[str, Any], latencies: list[float], out: TextIO) -> None:
    """Outputs as aligned rows; with several runs, their latency percentiles."""
    rows = [("OUTPUT", "DTYPE", "SHAPE", "VALUES")]
    for name, value in outputs.items():
        shape = _shape(value)
        rows.append((name, _dtype_name(value), ("ragged " if isinstance(value, list) else "") + str(shape),
                     _text(value)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3], file=out)
    if len(latencies) > 1:
        p = _percentiles(latencies)
        print(f"latency over {p['runs']} runs: p50 {p['p50']:.3f} ms  p90 {p['p90']:.3f} ms  "
              f"p99 {p['p99']:.3f} ms  (min {p['min']:.3f}, max {p['max']:.3f})", file=out)


def render_json(outputs: dict[str, Any], latencies: list[float], out: TextIO) -> None:
    doc: dict[str, Any] = {"outputs": {
        name: {"dtype": _dtype_name(value), "shape": _shape(value), "ragged": isinstance(value, list),
               "data": _jsonable(value)}
        for name, value in outputs.items()
    }}
    if len(latencies) > 1:
        doc["latency_ms"] = _percentiles(latencies)
    print(json.dumps(doc, indent=2), file=out)


# -- the command ----------------------------------------------------------------------------


async def _run(plan: Plan, inputs: dict[str, Any], repeat: int) -> tuple[dict[str, Any], list[float]]:
    from dagserve.runtime.pipeline import Pipeline

    latencies: list[float] = []
    outputs: dict[str, Any] = {}
    async with Pipeline(plan) as pipeline:
        for _ in range(repeat):
            t0 = time.perf_counter()
            outputs = await pipeline.infer_async(inputs)
            latencies.append(time.perf_counter() - t0)
    return outputs, latencies


def run_command(spec: str, inputs: Sequence[str], *, repeat: int = 1, fmt: str = "table", target: str = "cpu",
                root: str | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Compile (or read) ``spec``, run it ``repeat`` times on ``inputs``, print the outputs.

    Returns:
        0 on success, 1 when the spec, an input or the run failed, 2 for a bad ``repeat``.
    """
    from dagserve.api import load_plan
    from dagserve.diagnostics import render_text

    out = out or sys.stdout
    err = err or sys.stderr
    if repeat < 1:
        print(f"dagserve run: --repeat must be at least 1, got {repeat}", file=err)
        return EXIT_USAGE
    try:
        plan = load_plan(spec, target=target, root=root)
        values = parse_inputs(plan, inputs)
        outputs, latencies = asyncio.run(_run(plan, values, repeat))
    except CompileError as exc:
        print(render_text(exc.diagnostics), file=err)
        return EXIT_ERRORS
    except (DagserveError, OSError, ValueError) as exc:
        print(f"dagserve run: {exc}", file=err)
        return EXIT_ERRORS
    except Exception as exc:  # e.g. a malformed plan file: still one line, no traceback
        print(f"dagserve run: {type(exc).__name__}: {exc}", file=err)
        return EXIT_ERRORS
    (render_json if fmt == "json" else render_table)(outputs, latencies, out)
    return EXIT_OK
