"""``inference.GRPCInferenceService``, wire-compatible with Triton's, on ``grpc.aio``.

The message classes and the service stub come from the ``tritonclient`` package
(its generated ``service_pb2``), so the wire format is Triton's own. Each RPC
maps dagserve's errors to the status Triton would send: INVALID_ARGUMENT,
NOT_FOUND, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, UNAVAILABLE. Anything
unexpected is INTERNAL with the exception's message, never a bare "internal error".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from dagserve import __version__
from dagserve.errors import DagserveError, InvalidInputError, RequestError
from dagserve.server.codec import from_contents, from_raw, to_raw
from dagserve.server.inference import InferCall, InferReply, parse_priority_timeout, resolve, run_call
from dagserve.server.repository import Repository
from dagserve.server.triton import (
    EXTENSIONS,
    SERVER_NAME,
    model_config,
    model_metadata,
    model_statistics,
    parameter_value,
)

__all__ = ["InferenceService", "decode_request", "encode_response"]

log = logging.getLogger("dagserve.server")

_STATUS = {
    "INVALID_ARGUMENT": grpc.StatusCode.INVALID_ARGUMENT,
    "NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "RESOURCE_EXHAUSTED": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "DEADLINE_EXCEEDED": grpc.StatusCode.DEADLINE_EXCEEDED,
    "UNAVAILABLE": grpc.StatusCode.UNAVAILABLE,
    "INTERNAL": grpc.StatusCode.INTERNAL,
}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, RequestError):
        return _STATUS.get(exc.status, grpc.StatusCode.INTERNAL), str(exc)
    if isinstance(exc, DagserveError):
        return grpc.StatusCode.INTERNAL, str(exc)
    return grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}"


def decode_request(request: pb.ModelInferRequest, deadline: float | None) -> InferCall:
    """Parse a ModelInferRequest, checking every size before building arrays."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidInputError(
            f"expected {len(request.inputs)} raw input buffers (one per input) but got {len(raw)}")
    inputs: dict[str, Any] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise InvalidInputError(f"input '{tensor.name}' is given twice")
        if raw:
            inputs[tensor.name] = from_raw(tensor.name, tensor.datatype, tensor.shape, raw[i])
        else:
            inputs[tensor.name] = from_contents(tensor.name, tensor.datatype, tensor.shape, tensor.contents)
    priority = timeout = None
    if request.parameters:
        params = {k: parameter_value(v) for k, v in request.parameters.items()}
        priority, timeout = parse_priority_timeout(params)
    if deadline is not None:
        timeout = deadline if timeout is None else min(timeout, deadline)
    outputs: list[str] = []
    for out in request.outputs:
        if "classification" in out.parameters:
            raise InvalidInputError(f"output '{out.name}': the classification extension is not supported; "
                                    "use a classify.topk node")
        outputs.append(out.name)
    return InferCall(request.model_name, request.model_version, request.id, inputs, outputs, priority, timeout)


def encode_response(reply: InferReply) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=reply.model, model_version=reply.version, id=reply.request_id)
    for name, array in reply.outputs.items():
        datatype, shape, data = to_raw(array)
        response.outputs.append(pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=shape))
        response.raw_output_contents.append(data)
    return response


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The KServe v2 gRPC service over a :class:`Repository`."""

    def __init__(self, repository: Repository, live: asyncio.Event, draining: asyncio.Event) -> None:
        self.repository = repository
        self._live = live
        self._draining = draining

    async def _fail(self, context: grpc.aio.ServicerContext, exc: BaseException) -> None:
        code, message = status_of(exc)
        if code is grpc.StatusCode.INTERNAL:
            log.exception("internal error serving a request", exc_info=exc)
        await context.abort(code, message)

    # -- health and metadata ----------------------------------------------------------------

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._live.is_set())

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.repository.ready and not self._draining.is_set())

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            resolve(self.repository, request.name, request.version)
        except RequestError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=not self._draining.is_set())

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        try:
            return model_metadata(resolve(self.repository, request.name, request.version).plan)
        except Exception as exc:
            await self._fail(context, exc)
            raise

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        try:
            plan = resolve(self.repository, request.name, request.version).plan
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return pb.ModelConfigResponse(config=model_config(plan))

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        try:
            if request.name:
                pipelines = [resolve(self.repository, request.name, request.version)]
            else:
                pipelines = [e.pipeline for e in self.repository.entries.values() if e.pipeline is not None]
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return pb.ModelStatisticsResponse(model_stats=[model_statistics(p) for p in pipelines])

    # -- repository ---------------------------------------------------------------------------

    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        models = []
        for entry in sorted(self.repository.entries.values(), key=lambda e: e.name):
            if request.ready and entry.state != "READY":
                continue
            version = str(entry.pipeline.plan.version) if entry.pipeline else ""
            models.append(pb.RepositoryIndexResponse.ModelIndex(
                name=entry.name, version=version, state=entry.state, reason=entry.reason))
        return pb.RepositoryIndexResponse(models=models)

    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        try:
            await self.repository.load(request.model_name)
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        try:
            await self.repository.unload(request.model_name)
        except Exception as exc:
            await self._fail(context, exc)
            raise
        return pb.RepositoryModelUnloadResponse()

    # -- inference ----------------------------------------------------------------------------

    async def _infer(self, request: pb.ModelInferRequest, deadline: float | None) -> pb.ModelInferResponse:
        if self._draining.is_set():
            from dagserve.errors import UnavailableError

            raise UnavailableError("the server is shutting down and accepts no new requests")
        call = decode_request(request, deadline)
        reply = await run_call(self.repository, call)
        return encode_response(reply)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        try:
            return await self._infer(request, context.time_remaining())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._fail(context, exc)
            raise

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests of one stream run concurrently; responses go back as they finish."""
        results: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def one(request: pb.ModelInferRequest) -> None:
            try:
                response = await self._infer(request, None)
                await results.put(pb.ModelStreamInferResponse(infer_response=response))
            except Exception as exc:
                _, message = status_of(exc)
                await results.put(pb.ModelStreamInferResponse(
                    error_message=message,
                    infer_response=pb.ModelInferResponse(
                        model_name=request.model_name, model_version=request.model_version, id=request.id)))

        async def read() -> None:
            try:
                async for request in request_iterator:
                    task = asyncio.ensure_future(one(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*list(tasks), return_exceptions=True)
            finally:
                await results.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while True:
                item = await results.get()
                if item is None:
                    break
                yield item
        finally:
            reader.cancel()
            for task in list(tasks):
                task.cancel()
