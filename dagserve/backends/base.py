"""The signature of a model file, as backends report it to the compiler."""

from __future__ import annotations

from dataclasses import dataclass

from dagserve.types import TensorType

__all__ = ["ModelSignature", "SignatureError"]


@dataclass(frozen=True)
class ModelSignature:
    """A model's inputs and outputs with full shapes (the batch dimension included).

    Attributes:
        inputs: name -> type, in the model's declared order.
        outputs: name -> type, in the model's declared order.
        format: a short name of the file format (``onnx``, ``torchscript``, ...).
    """

    inputs: dict[str, TensorType]
    outputs: dict[str, TensorType]
    format: str


class SignatureError(Exception):
    """The signature cannot be read; ``code`` is the diagnostic code to report."""

    def __init__(self, code: str, message: str, hint: str | None = None) -> None:
        self.code, self.hint = code, hint
        super().__init__(message)
