"""The pipeline compiler: spec -> IR -> passes -> :class:`~dagserve.compiler.plan.Plan`.

The compiler never imports the runtime; the runtime is built from a Plan only.
"""

from dagserve.compiler.driver import CompileResult, compile_file, compile_spec
from dagserve.compiler.plan import Plan

__all__ = ["CompileResult", "Plan", "compile_file", "compile_spec"]
