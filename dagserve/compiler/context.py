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

    def report(self, code: str, message: str, span: Span | None = None, *,
               hint: str | None = None, node: Node | str | None = None) -> None:
        name = node.name if isinstance(node, Node) else node
        self.bag.add(Diagnostic(code, message, span, hint=hint, node=name, file=self.spec.file))
