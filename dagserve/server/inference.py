"""One inference call, transport-neutral: decoded tensors in, encoded tensors out.

Both the gRPC and the HTTP front ends parse their wire format into an
:class:`InferCall`, hand it to :func:`run_call`, and encode the
:class:`InferReply`; validation, timeouts, priorities and output selection live
here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dagserve.errors import InvalidInputError, NotFoundError
from dagserve.runtime.pipeline import Pipeline
from dagserve.server.repository import Repository

__all__ = ["InferCall", "InferReply", "check_no_sequence", "parse_priority_timeout", "resolve", "run_call"]


@dataclass
class InferCall:
    """A decoded request.

    Attributes:
        outputs: names the client asked for (empty: all).
        timeout: seconds, from the request's ``timeout`` parameter (µs on the wire)
            or the transport's deadline, whichever is sooner.
    """

    model: str
    version: str
    request_id: str
    inputs: dict[str, np.ndarray[Any, Any]]
    outputs: list[str] = field(default_factory=list)
    priority: int | None = None
    timeout: float | None = None


@dataclass
class InferReply:
    model: str
    version: str
    request_id: str
    outputs: dict[str, np.ndarray[Any, Any]]


def resolve(repository: Repository, model: str, version: str) -> Pipeline:
    """The READY pipeline for (model, version); a version other than the plan's is NOT_FOUND."""
    pipeline = repository.get(model)
    if version and version != str(pipeline.plan.version):
        raise NotFoundError(f"Request for unknown model: '{model}' version {version} is not found")
    return pipeline


def _integer_parameter(parameters: dict[str, Any], key: str, unit: str) -> int | None:
    """An integer request parameter (JSON number, gRPC int64/uint64, or a string of digits); 0 means unset.

    A boolean is refused rather than read as 0 or 1, and so is a fraction or a
    non-finite number: ``"timeout": true`` must not become a 1 µs deadline.
    """
    value = parameters.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float, str)):
        if value is None:
            return None
        raise InvalidInputError(f"invalid '{key}' parameter {value!r}: must be an integer ({unit})")
    if isinstance(value, float):
        if not value.is_integer():  # also NaN and infinity
            raise InvalidInputError(f"invalid '{key}' parameter {value!r}: must be an integer ({unit})")
        value = int(value)
    elif isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = int(value)
        except ValueError:
            raise InvalidInputError(f"invalid '{key}' parameter {value!r}: must be an integer ({unit})") from None
    if value < 0:
        raise InvalidInputError(f"invalid '{key}' parameter {value}: must be >= 0 ({unit})")
    return value or None


def parse_priority_timeout(parameters: dict[str, Any]) -> tuple[int | None, float | None]:
    """Triton's ``priority`` and ``timeout`` (µs) request parameters; also refuses sequence parameters.

    Raises:
        InvalidInputError: a parameter that is not a non-negative integer, or
            ``sequence_id``/``sequence_start``/``sequence_end`` (no sequence batching yet).
    """
    check_no_sequence(parameters)
    priority = _integer_parameter(parameters, "priority", "1 is the highest priority")
    timeout_us = _integer_parameter(parameters, "timeout", "microseconds")
    return priority, timeout_us / 1e6 if timeout_us is not None else None


def check_no_sequence(parameters: dict[str, Any]) -> None:
    """Refuse Triton's sequence parameters: silently ignoring them would break a stateful client.

    ``sequence_id`` 0 or ``""`` and false start/end flags mean "no sequence" (what
    clients send by default) and pass.
    """
    used = [key for key in ("sequence_id", "sequence_start", "sequence_end")
            if parameters.get(key) not in (None, 0, "", False)]
    if used:
        raise InvalidInputError(
            f"the request sets {', '.join(used)}, but dagserve has no sequence batching: pipelines are "
            "stateless and every request stands alone; send the request without sequence parameters")


def _scalar_items(pipeline: Pipeline, inputs: dict[str, np.ndarray[Any, Any]]) -> dict[str, np.ndarray[Any, Any]]:
    """Accept ``[N, 1]`` for an input that is one scalar per batch item (``shape: []``).

    That is the shape the model metadata advertises (Triton's ``dims: [1]`` +
    ``reshape: {shape: []}`` convention, see :func:`dagserve.server.triton.wire_shape`);
    ``[N]`` keeps working.
    """
    if pipeline.plan.max_batch_size <= 0:
        return inputs
    out = inputs
    for t in pipeline.plan.inputs:
        value = inputs.get(t.name)
        if value is not None and not t.type.shape and value.ndim == 2 and value.shape[1] == 1:
            if out is inputs:
                out = dict(inputs)
            out[t.name] = value.reshape(value.shape[0])
    return out


async def run_call(repository: Repository, call: InferCall) -> InferReply:
    """Validate the call against the pipeline, run it, and select the outputs asked for."""
    pipeline = resolve(repository, call.model, call.version)
    names = [t.name for t in pipeline.plan.outputs]
    for name in call.outputs:
        if name not in names:
            raise InvalidInputError(
                f"unexpected inference output '{name}' for model '{call.model}'; its outputs are: {', '.join(names)}")
    inputs = _scalar_items(pipeline, call.inputs)
    result = await pipeline.infer_async(inputs, priority=call.priority, timeout=call.timeout,
                                        request_id=call.request_id or None)
    wanted = call.outputs or names
    outputs: dict[str, np.ndarray[Any, Any]] = {}
    for name in wanted:
        value = result[name]
        if isinstance(value, list):
            shapes = sorted({tuple(v.shape) for v in value})
            raise InvalidInputError(
                f"output '{name}' of model '{call.model}' has a different shape for each batch item ({shapes}); "
                "a v2 response tensor must be rectangular: send one item per request, or make the node pad "
                "its output (e.g. detect.nms 'pad: true')")
        outputs[name] = value
    return InferReply(call.model, str(pipeline.plan.version), call.request_id, outputs)
