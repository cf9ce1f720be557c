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

__all__ = ["InferCall", "InferReply", "run_call"]


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


def parse_priority_timeout(parameters: dict[str, Any]) -> tuple[int | None, float | None]:
    """Triton's ``priority`` and ``timeout`` (µs) request parameters."""
    priority = parameters.get("priority")
    timeout_us = parameters.get("timeout")
    try:
        p = int(priority) if priority not in (None, 0, "") else None
        t = int(timeout_us) / 1e6 if timeout_us not in (None, 0, "") else None
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"invalid 'priority' or 'timeout' parameter: {exc}") from exc
    if p is not None and p < 0:
        raise InvalidInputError(f"invalid 'priority' parameter {p}: must be >= 0")
    if t is not None and t < 0:
        raise InvalidInputError(f"invalid 'timeout' parameter {timeout_us}: must be >= 0 (microseconds)")
    return p, t


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
