"""The executor: builds a running pipeline from a Plan (never from YAML)."""

from dagserve.runtime.pipeline import Pipeline

__all__ = ["Pipeline"]
