"""dagserve: a declarative pipeline compiler and executor for ML inference."""

__version__ = "0.1.0"

__all__ = ["__version__"]
