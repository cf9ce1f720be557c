"""``dagserve.load``: a spec or a compiled plan in, a runnable :class:`Pipeline` out."""

from __future__ import annotations

import os
from pathlib import Path

from dagserve.compiler.context import CompileOptions
from dagserve.compiler.driver import compile_file
from dagserve.compiler.plan import Plan
from dagserve.errors import CompileError
from dagserve.runtime.pipeline import Pipeline

__all__ = ["load", "load_plan"]


def load_plan(spec_or_plan: str | os.PathLike[str], *, target: str = "cpu", root: str | None = None) -> Plan:
    """Compile a spec (``.yaml``/``.yml``) or read a plan (``.json``).

    Raises:
        CompileError: the spec has errors; ``.diagnostics`` lists all of them.
        ValueError: the plan file is malformed or was edited by hand.
    """
    path = Path(spec_or_plan)
    if path.suffix == ".json":
        plan = Plan.from_json(path.read_text(encoding="utf-8"))
        if not plan.root:
            plan = Plan(**{**plan.__dict__, "root": str(path.parent.resolve())})
        return plan
    result = compile_file(path, CompileOptions(target=target), root=root)
    if result.plan is None:
        raise CompileError(result.diagnostics)
    return result.plan


def load(spec_or_plan: str | os.PathLike[str] | Plan, *, target: str = "cpu", root: str | None = None,
         threads: int | None = None) -> Pipeline:
    """A :class:`Pipeline` for a spec, a plan file, or a :class:`Plan`.

    The pipeline starts on first use: ``pipeline.infer(inputs)`` from plain code, or
    ``await pipeline.infer_async(inputs)`` (or ``async with pipeline:``) from asyncio.
    """
    plan = spec_or_plan if isinstance(spec_or_plan, Plan) else load_plan(spec_or_plan, target=target, root=root)
    return Pipeline(plan, threads=threads)
