"""dagserve: a declarative pipeline compiler and executor for ML inference.

``dagserve.load(spec_or_plan)`` returns a runnable Pipeline; the CLI is ``dagserve``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Pipeline", "__version__", "load"]

if TYPE_CHECKING:
    from dagserve.api import load
    from dagserve.runtime.pipeline import Pipeline


def __getattr__(name: str) -> Any:
    # Lazy, so `import dagserve` (and the compiler) never pulls in the runtime.
    if name == "load":
        from dagserve.api import load

        return load
    if name == "Pipeline":
        from dagserve.runtime.pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'dagserve' has no attribute {name!r}")
