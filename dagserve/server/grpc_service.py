"""``inference.GRPCInferenceService``, wire-compatible with Triton's, on ``grpc.aio``.

The message classes and the service stub come from the ``tritonclient`` package
(its generated ``service_pb2``), so the wire format is Triton's own. Each RPC
maps dagserve's errors to the status Triton would send: INVALID_ARGUMENT,
NOT_FOUND, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, UNAVAILABLE. Anything
unexpected is INTERNAL with the exception's message, never a bare "internal error".
A message that does not parse is INVALID_ARGUMENT (the handlers are built here,
with deserializers that never raise), and every call is logged once through
:class:`~dagserve.server.requestlog.RequestLog`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from dagserve import __version__
from dagserve.errors import DagserveError, InvalidInputError, RequestError, UnavailableError
from dagserve.server.codec import from_contents, from_raw, to_raw
from dagserve.server.control import ModelControl, parse_load_parameters
from dagserve.server.inference import InferCall, InferReply, parse_priority_timeout, resolve, run_call
from dagserve.server.repository import Repository
from dagserve.server.requestlog import RequestLog
from dagserve.server.triton import (
    EXTENSIONS,
    SERVER_NAME,
    model_config,
    model_metadata,
    model_statistics,
    parameter_value,
)

__all__ = ["InferenceService", "Unparsable", "decode_request", "encode_response", "status_of"]


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
    if raw:
        for tensor in request.inputs:
            if tensor.HasField("contents"):  # Triton's message for the mix
                raise InvalidInputError(
                    f"contents field must not be specified when using raw_input_contents for '{tensor.name}' "
                    f"for model '{request.model_name}'")
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


def _repository_parameter(value: pb.ModelRepositoryParameter) -> Any:
    """The set value of a ModelRepositoryParameter (None when none is set)."""
    which = value.WhichOneof("parameter_choice")
    return getattr(value, which) if which else None


@dataclass(frozen=True)
class Unparsable:
    """Stands for a message that did not parse, so the RPC answers INVALID_ARGUMENT (not INTERNAL + traceback)."""

    type_name: str
    error: str

    def message(self) -> str:
        return f"the request is not a valid {self.type_name} message: {self.error}"


def _deserializer(cls: type[Message]) -> Callable[[bytes], Message | Unparsable]:
    def parse(data: bytes) -> Message | Unparsable:
        try:
            return cls.FromString(data)
        except DecodeError as exc:
            return Unparsable(cls.DESCRIPTOR.full_name, str(exc) or "malformed protobuf")
    return parse


def _model_and_id(request: Any) -> tuple[str, str]:
    model = getattr(request, "model_name", "") or getattr(request, "name", "")
    return str(model), str(getattr(request, "id", ""))


Behaviour = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _rpc(method: Behaviour) -> Behaviour:
    """One unary RPC: refuse an unparsable message, map failures to statuses, log how it ended."""
    name = method.__name__

    @functools.wraps(method)
    async def call(self: InferenceService, request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        model, request_id = _model_and_id(request)
        try:
            if isinstance(request, Unparsable):
                raise InvalidInputError(request.message())
            response = await method(self, request, context)
        except asyncio.CancelledError:
            self.requests.finished("grpc", name, model, request_id, started, "CANCELLED",
                                   "the client went away (cancelled or past its deadline)")
            raise
        except Exception as exc:
            code, message = status_of(exc)
            self.requests.finished("grpc", name, model, request_id, started, code.name, message, exc)
            await context.abort(code, message)
        self.requests.finished("grpc", name, model, request_id, started)
        return response

    return call


class InferenceService(pb_grpc.GRPCInferenceServiceServicer):
    """The KServe v2 gRPC service over a :class:`Repository`.

    Args:
        model_control: load/unload over the protocol (refused unless explicit).
        requests: where finished requests are logged.
    """

    def __init__(self, repository: Repository, live: asyncio.Event, draining: asyncio.Event,
                 model_control: ModelControl | None = None, requests: RequestLog | None = None) -> None:
        self.repository = repository
        self._live = live
        self._draining = draining
        self.model_control = model_control or ModelControl(repository, explicit=False)
        self.requests = requests or RequestLog()

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's handlers, built from its descriptor with deserializers that never raise.

        ``service_pb2_grpc``'s own registration parses with ``FromString``; a
        message that fails to parse then becomes INTERNAL and a full traceback in
        the log (one per fuzzed message), instead of the client's INVALID_ARGUMENT.
        """
        service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method in service.methods:
            request_cls = getattr(pb, method.input_type.name)
            response_cls = getattr(pb, method.output_type.name)
            behaviour = getattr(self, method.name)
            kwargs = {"request_deserializer": _deserializer(request_cls),
                      "response_serializer": response_cls.SerializeToString}
            if method.client_streaming and method.server_streaming:
                handlers[method.name] = grpc.stream_stream_rpc_method_handler(behaviour, **kwargs)
            else:
                handlers[method.name] = grpc.unary_unary_rpc_method_handler(behaviour, **kwargs)
        return grpc.method_handlers_generic_handler(service.full_name, handlers)

    # -- health and metadata ----------------------------------------------------------------

    @_rpc
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._live.is_set())

    @_rpc
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.repository.ready and not self._draining.is_set())

    @_rpc
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        try:
            resolve(self.repository, request.name, request.version)
        except RequestError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=not self._draining.is_set())

    @_rpc
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=__version__, extensions=EXTENSIONS)

    @_rpc
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        return model_metadata(resolve(self.repository, request.name, request.version).plan)

    @_rpc
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        plan = resolve(self.repository, request.name, request.version).plan
        return pb.ModelConfigResponse(config=model_config(plan))

    @_rpc
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        if request.name:
            pipelines = [resolve(self.repository, request.name, request.version)]
        else:
            pipelines = [e.pipeline for e in self.repository.entries.values() if e.pipeline is not None]
        return pb.ModelStatisticsResponse(model_stats=[model_statistics(p) for p in pipelines])

    # -- repository ---------------------------------------------------------------------------

    @_rpc
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Any) -> pb.RepositoryIndexResponse:
        models = []
        for entry in sorted(self.repository.entries.values(), key=lambda e: e.name):
            if request.ready and entry.state != "READY":
                continue
            version = str(entry.pipeline.plan.version) if entry.pipeline else ""
            models.append(pb.RepositoryIndexResponse.ModelIndex(
                name=entry.name, version=version, state=entry.state, reason=entry.reason))
        return pb.RepositoryIndexResponse(models=models)

    @_rpc
    async def RepositoryModelLoad(
        self, request: pb.RepositoryModelLoadRequest, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        self.model_control.check()
        params = {k: _repository_parameter(v) for k, v in request.parameters.items()}
        override = parse_load_parameters(request.model_name, params, base64_files=False)
        await self.model_control.load(request.model_name, override)
        return pb.RepositoryModelLoadResponse()

    @_rpc
    async def RepositoryModelUnload(
        self, request: pb.RepositoryModelUnloadRequest, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        await self.model_control.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    # -- inference ----------------------------------------------------------------------------

    async def _infer(self, request: pb.ModelInferRequest, deadline: float | None) -> pb.ModelInferResponse:
        if self._draining.is_set():
            raise UnavailableError("the server is shutting down and accepts no new requests")
        call = decode_request(request, deadline)
        reply = await run_call(self.repository, call)
        return encode_response(reply)

    @_rpc
    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        return await self._infer(request, context.time_remaining())

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest | Unparsable], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests of one stream run concurrently; responses go back as they finish.

        Each message is logged as a request of its own; a message that does not
        parse answers with an ``error_message`` and the stream goes on.
        """
        results: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def one(request: pb.ModelInferRequest | Unparsable) -> None:
            started = time.perf_counter()
            model, request_id = _model_and_id(request)
            try:
                if isinstance(request, Unparsable):
                    raise InvalidInputError(request.message())
                response = await self._infer(request, None)
            except asyncio.CancelledError:
                self.requests.finished("grpc", "ModelStreamInfer", model, request_id, started, "CANCELLED",
                                       "the client closed the stream")
                raise
            except Exception as exc:
                code, message = status_of(exc)
                self.requests.finished("grpc", "ModelStreamInfer", model, request_id, started, code.name,
                                       message, exc)
                await results.put(pb.ModelStreamInferResponse(
                    error_message=message,
                    infer_response=pb.ModelInferResponse(model_name=model, id=request_id, model_version=getattr(
                        request, "model_version", ""))))
                return
            self.requests.finished("grpc", "ModelStreamInfer", model, request_id, started)
            await results.put(pb.ModelStreamInferResponse(infer_response=response))

        async def read() -> None:
            try:
                async for request in request_iterator:
                    task = asyncio.ensure_future(one(request))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*list(tasks), return_exceptions=True)
            except (asyncio.CancelledError, grpc.aio.AioRpcError, grpc.RpcError):
                pass  # the client left: its requests end with it, logged as CANCELLED
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
