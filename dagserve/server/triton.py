"""A Plan and a pipeline's statistics, in the shapes of Triton's protocol messages.

Kept apart from the transports so gRPC and HTTP answer with the same content:
these functions build the gRPC messages, and the HTTP layer turns them into the
v2 JSON with ``MessageToDict``-like helpers of its own.
"""

from __future__ import annotations

from typing import Any

from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb

from dagserve import __version__
from dagserve.compiler.plan import Plan, PlanTensor
from dagserve.runtime.pipeline import Pipeline
from dagserve.server.codec import triton_dtype

__all__ = ["EXTENSIONS", "SERVER_NAME", "model_config", "model_metadata", "model_statistics", "wire_shape"]

SERVER_NAME = "dagserve"
EXTENSIONS = [
    "model_configuration",
    "model_repository",
    "model_repository(unload_dependents)",
    "schedule_policy",
    "statistics",
    "binary_tensor_data",
]
"""Protocol extensions this server really implements (reported by ServerMetadata)."""

IMAGE_FORMATS: dict[str, int] = {"chw": mc.ModelInput.FORMAT_NCHW, "hwc": mc.ModelInput.FORMAT_NHWC}
"""A spec input's ``layout`` as the config's ``format``: clients such as Triton's image_client
read it to lay out the pixels they send (and refuse an image model without one)."""


def wire_shape(plan: Plan, tensor: PlanTensor, is_input: bool = False) -> list[int]:
    """The shape clients see: -1 for the batch and for every non-fixed dimension.

    An input that is one scalar per batch item (e.g. ``image: {dtype: bytes, shape: []}``)
    is ``[-1, 1]`` on the wire, as in Triton, whose configs cannot declare empty dims
    for a batched model (they use ``dims: [1]`` with ``reshape: {shape: []}``);
    perf_analyzer refuses an input whose per-item shape is empty. Requests may send
    either ``[N]`` or ``[N, 1]`` (see :func:`dagserve.server.inference.run_call`).
    """
    dims = [d if isinstance(d, int) else -1 for d in tensor.type.shape]
    if is_input and not dims and plan.max_batch_size > 0:
        dims = [1]
    return ([-1] if plan.max_batch_size > 0 else []) + dims


def model_metadata(plan: Plan) -> pb.ModelMetadataResponse:
    def meta(t: PlanTensor, is_input: bool) -> pb.ModelMetadataResponse.TensorMetadata:
        return pb.ModelMetadataResponse.TensorMetadata(
            name=t.name, datatype=triton_dtype(t.type.dtype), shape=wire_shape(plan, t, is_input))

    return pb.ModelMetadataResponse(
        name=plan.name,
        versions=[str(plan.version)],
        platform="dagserve",
        inputs=[meta(t, True) for t in plan.inputs],
        outputs=[meta(t, False) for t in plan.outputs],
    )


def model_config(plan: Plan) -> mc.ModelConfig:
    """Triton's ModelConfig for a pipeline. Not an ensemble: clients see one model."""
    def dims(t: PlanTensor) -> list[int]:
        return [d if isinstance(d, int) else -1 for d in t.type.shape]

    config = mc.ModelConfig(
        name=plan.name,
        platform="dagserve",
        backend="dagserve",
        max_batch_size=plan.max_batch_size,
        input=[_config_input(plan, t, dims(t)) for t in plan.inputs],
        output=[
            mc.ModelOutput(name=t.name, data_type=mc.DataType.Value(f"TYPE_{_config_type(t)}"), dims=dims(t))
            for t in plan.outputs
        ],
    )
    config.parameters["plan_hash"].string_value = plan.hash
    config.parameters["dagserve_version"].string_value = __version__
    config.parameters["nodes"].string_value = ",".join(n.name for n in plan.nodes)
    first = next((n for n in plan.nodes if n.kind != "copy"), None)
    if plan.max_batch_size > 0 and first is not None:
        q = first.batching
        config.dynamic_batching.max_queue_delay_microseconds = int(q["max_queue_delay_us"])
        config.dynamic_batching.preferred_batch_size.extend(q["preferred_batch_sizes"])
        if q["priority_levels"] > 1:
            config.dynamic_batching.priority_levels = q["priority_levels"]
            config.dynamic_batching.default_priority_level = q["default_priority"]
    return config


def _config_input(plan: Plan, t: PlanTensor, dims: list[int]) -> mc.ModelInput:
    """One config input; a scalar per batch item is ``dims: [1]`` + ``reshape: {shape: []}``, as in Triton.

    An image input (``layout: chw`` or ``hwc``, three dims) reports its ``format``.
    """
    scalar_item = not dims and plan.max_batch_size > 0
    model_input = mc.ModelInput(name=t.name, data_type=mc.DataType.Value(f"TYPE_{_config_type(t)}"),
                                dims=[1] if scalar_item else dims, allow_ragged_batch=t.type.ragged)
    if scalar_item:
        model_input.reshape.SetInParent()  # reshape {shape: []}
    image_format = IMAGE_FORMATS.get(t.type.layout or "")
    if image_format is not None and len(dims) == 3:  # Triton allows a format only on 3-dim (image) inputs
        model_input.format = image_format
    return model_input


def _config_type(t: PlanTensor) -> str:
    name = triton_dtype(t.type.dtype)
    return "STRING" if name == "BYTES" else name


def _duration(count: int, ns: int) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=count, ns=ns)


def model_statistics(pipeline: Pipeline) -> pb.ModelStatistics:
    """Triton's ModelStatistics: request outcomes, and queue/compute time summed over nodes."""
    stats = pipeline.stats
    failures = sum(stats.failure.values())
    queue_ns = sum(r.stats.queue_ns for r in pipeline.runners.values())
    compute_ns = sum(r.stats.compute_ns for r in pipeline.runners.values())
    items = stats.items
    out = pb.ModelStatistics(
        name=pipeline.name,
        version=str(pipeline.plan.version),
        last_inference=stats.last_inference_ms,
        inference_count=items,
        execution_count=stats.success,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success, stats.request_ns),
            fail=_duration(failures, 0),
            queue=_duration(stats.success, queue_ns),
            compute_input=_duration(stats.success, 0),
            compute_infer=_duration(stats.success, compute_ns),
            compute_output=_duration(stats.success, 0),
        ),
    )
    sizes: dict[int, tuple[int, int]] = {}
    models = [r for r in pipeline.runners.values() if r.node.kind == "model"] or list(pipeline.runners.values())
    for runner in models:
        for size, count in runner.stats.batch_sizes.items():
            c, ns = sizes.get(size, (0, 0))
            sizes[size] = (c + count, ns)
    for size in sorted(sizes):
        count, _ = sizes[size]
        out.batch_stats.append(pb.InferBatchStatistics(
            batch_size=size, compute_infer=_duration(count, 0)))
    return out


def parameter_value(param: Any) -> Any:
    """The Python value of an ``InferParameter``."""
    kind = param.WhichOneof("parameter_choice")
    return getattr(param, kind) if kind else None
