"""State shared by the passes of one compilation."""

from __future__ import annotations

from dataclasses import dataclass, field

from dagserve.compiler.ir import Graph, Node
from dagserve.diagnostics import Diagnostic, DiagnosticBag, Span
from dagserve.ops.registry import OpRegistry
from dagserve.spec.document import PipelineSpec

__all__ = ["CompileContext", "CompileOptions"]


@dataclass(frozen=True)
class CompileOptions:
    """Choices the user makes on the command line.

    Attributes:
        target: ``cpu`` or ``gpu``: where ``device: auto`` nodes go.
        debug: lint the IR after every pass.
    """

    target: str = "cpu"
    debug: bool = False


@dataclass
class CompileContext:
    spec: PipelineSpec
    graph: Graph
    registry: OpRegistry
    options: CompileOptions
    bag: DiagnosticBag = field(default_factory=DiagnosticBag)
    dangling: list[tuple[Diagnostic, str]] = field(default_factory=list)
    """Each ``E-REF`` with the node (or ``inputs.NAME``) it most likely meant: what that
    one reaches is cut off because of it, so the reachability pass folds those warnings
    into the error instead of reporting them one by one."""

    def report(self, code: str, message: str, span: Span | None = None, *,
               hint: str | None = None, node: Node | str | None = None) -> Diagnostic:
        name = node.name if isinstance(node, Node) else node
        diagnostic = Diagnostic(code, message, span, hint=hint, node=name, file=self.spec.file)
        self.bag.add(diagnostic)
        return diagnostic
