"""HTTP/REST v2 (KServe v2 / Triton) on aiohttp, with Triton's binary tensor extension.

Same semantics as the gRPC service: both decode into an
:class:`~dagserve.server.inference.InferCall`, run it with
:func:`~dagserve.server.inference.run_call`, and answer metadata, config and
statistics from the same :mod:`dagserve.server.triton` messages, turned into
JSON here (64-bit integers stay JSON numbers, as Triton sends them).

Inference bodies are either pure JSON (``data`` arrays; BYTES elements as UTF-8
strings, or base64 with the input parameter ``content_type: "base64"``) or
Triton's binary form: the ``Inference-Header-Content-Length`` header gives the
size of the JSON header, and each input with the parameter ``binary_data_size``
takes that many bytes, in input order, from what follows it. Outputs go back as
binary when the output asks ``binary_data: true`` or the request sets
``binary_data_output: true`` (tritonclient's default), else as JSON ``data``.

Errors are ``{"error": "..."}`` with the HTTP status of the error's gRPC status
(:data:`HTTP_STATUS`). A body over the size limit is 413; one that does not
arrive within the read timeout 408, one with an unknown Content-Encoding 415, and
one that does not decode 400 (these three close the connection). JSON is strict
both ways: no NaN or Infinity in, none out.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from dagserve import __version__
from dagserve.errors import DagserveError, InvalidInputError, RequestError, UnavailableError
from dagserve.server.codec import TRITON_TO_SPEC, check_shape, from_raw, to_raw
from dagserve.server.control import ModelControl, parse_load_parameters
from dagserve.server.inference import InferCall, InferReply, parse_priority_timeout, resolve, run_call
from dagserve.server.repository import Repository
from dagserve.server.requestlog import RequestLog, failure_status
from dagserve.server.triton import EXTENSIONS, SERVER_NAME, model_config, model_metadata, model_statistics
from dagserve.types import DTYPES

__all__ = [
    "HEADER_LENGTH",
    "HTTP_STATUS",
    "CappedAppRunner",
    "build_http_app",
    "decode_infer",
    "encode_infer",
    "proto_to_json",
]


HEADER_LENGTH = "Inference-Header-Content-Length"
"""Triton's binary tensor extension: the byte length of the JSON header that starts the body."""

HTTP_STATUS: dict[str, int] = {
    "INVALID_ARGUMENT": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "DEADLINE_EXCEEDED": 504,
    "UNAVAILABLE": 503,
    "INTERNAL": 500,
}
"""HTTP status of each gRPC status name a :class:`RequestError` carries."""

_INT64_TYPES = frozenset({
    FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64,
})

_JSON_KINDS: dict[str, str] = {"b": "b", "i": "iu", "u": "iu", "f": "iuf"}
"""NumPy kind of a dtype -> the kinds JSON ``data`` may have for it (no silent float -> int)."""


# -- JSON of protocol messages ---------------------------------------------------------------


def proto_to_json(message: Message) -> dict[str, Any]:
    """A message as Triton's HTTP JSON: proto field names, defaults printed, int64 as numbers.

    ``MessageToDict`` writes 64-bit integers as strings (the proto3 JSON rule);
    Triton's HTTP endpoints and clients (and perf_analyzer) expect numbers.
    """
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    _numbers(data, message.DESCRIPTOR)
    return data


def _numbers(data: dict[str, Any], descriptor: Descriptor) -> None:
    """Turn the int64 fields of ``data`` (a MessageToDict of ``descriptor``) back into ints, in place."""
    for f in descriptor.fields:
        if f.name not in data:
            continue
        value = data[f.name]
        if f.type in _INT64_TYPES:
            data[f.name] = [int(v) for v in value] if isinstance(value, list) else int(value)
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            sub = f.message_type
            if sub.GetOptions().map_entry:
                vf = sub.fields_by_name["value"]
                for key, item in value.items():
                    if vf.type in _INT64_TYPES:
                        value[key] = int(item)
                    elif vf.type == FieldDescriptor.TYPE_MESSAGE:
                        _numbers(item, vf.message_type)
            elif isinstance(value, list):
                for item in value:
                    _numbers(item, sub)
            elif isinstance(value, dict):
                _numbers(value, sub)


# -- inference: body -> InferCall ------------------------------------------------------------


def _split_body(body: bytes, header_length: str | None) -> tuple[bytes | memoryview, memoryview]:
    """(JSON header, binary part) of an inference body."""
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view):]
    try:
        n = int(header_length)
    except ValueError:
        raise InvalidInputError(f"header {HEADER_LENGTH} must be an integer, got '{header_length}'") from None
    if not 0 < n <= len(body):
        raise InvalidInputError(
            f"header {HEADER_LENGTH} is {n} but the request body has {len(body)} bytes; "
            "it must give the length of the JSON header at the start of the body")
    return view[:n], view[n:]


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (JSON has no NaN or Infinity)")


def _parse_json(raw: bytes | memoryview) -> Any:
    """Strict JSON: ``NaN``/``Infinity`` (which Python's parser accepts) and runaway nesting are refused."""
    try:
        return json.loads(bytes(raw), parse_constant=_no_constant)
    except RecursionError:
        raise InvalidInputError("the request's JSON is nested too deeply for the server to parse") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInputError(f"the request's JSON is malformed: {exc}") from None


def _python(value: Any) -> Any:
    """A NumPy scalar as the Python value; an object array's element (a dict, None, a huge int) as it is."""
    return value.item() if isinstance(value, np.generic) else value


def _brief(value: Any, limit: int = 200) -> str:
    """``value`` as short JSON for a message (a client's value may be huge or deeply nested)."""
    try:
        text = json.dumps(value)
    except (RecursionError, TypeError, ValueError):
        text = repr(type(value).__name__)
    return text if len(text) <= limit else text[:limit] + "..."


def _require(obj: Any, key: str, kind: type, where: str) -> Any:
    """``obj[key]``, which must exist and be a ``kind`` (a JSON bool is not an int)."""
    if not isinstance(obj, dict):
        raise InvalidInputError(f"{where}: must be a JSON object, got {type(obj).__name__}")
    if key not in obj:
        raise InvalidInputError(f"{where}: missing field '{key}'")
    value = obj[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise InvalidInputError(f"{where}: field '{key}' must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _parameters(obj: dict[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters", {})
    if not isinstance(params, dict):
        raise InvalidInputError(f"{where}: 'parameters' must be an object, got {type(params).__name__}")
    return params


def _shape(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise InvalidInputError(f"input '{name}': 'shape' must be a list of integers, got {_brief(value)}")
    check_shape(name, value)
    return value


def _from_json_data(name: str, datatype: str, shape: list[int], data: Any,
                    params: dict[str, Any]) -> np.ndarray[Any, Any]:
    """An array from an input's JSON ``data`` (flat or nested, row-major)."""
    count = math.prod(shape)  # Python ints, and check_shape bounded them
    if datatype == "BYTES":
        flat = _flatten(data, name)
        if len(flat) != count:
            raise InvalidInputError(
                f"input '{name}': shape {shape} needs {count} elements but 'data' has {len(flat)}")
        b64 = params.get("content_type") == "base64"
        out = np.empty(count, dtype=object)
        for i, item in enumerate(flat):
            if not isinstance(item, str):
                raise InvalidInputError(
                    f"input '{name}': BYTES element {i} must be a string in JSON, got {type(item).__name__}")
            if b64:
                try:
                    out[i] = base64.b64decode(item, validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise InvalidInputError(f"input '{name}': BYTES element {i} is not valid base64: {exc}") from None
            else:
                out[i] = item.encode("utf-8")
        return out.reshape(shape)
    spec = TRITON_TO_SPEC.get(datatype)
    if spec is None or spec == "bytes":
        raise InvalidInputError(f"input '{name}': unsupported datatype '{datatype}'; "
                                f"expected one of {', '.join(t for _, t in DTYPES.values())}")
    dtype = np.dtype(DTYPES[spec][0])
    if dtype == np.float16:
        raise InvalidInputError(f"input '{name}': FP16 has no JSON form; send it as binary data "
                                "(parameter binary_data_size)")
    try:
        loose = np.asarray(data)
    except ValueError as exc:
        raise InvalidInputError(f"input '{name}': 'data' is not a rectangular array: {exc}") from None
    if loose.size != count:
        raise InvalidInputError(f"input '{name}': shape {shape} needs {count} elements but 'data' has {loose.size}")
    if loose.size and loose.dtype.kind not in _JSON_KINDS[dtype.kind]:
        what = {"b": "true/false", "iu": "integers", "iuf": "numbers"}[_JSON_KINDS[dtype.kind]]
        raise InvalidInputError(f"input '{name}': {datatype} 'data' must be {what}, got {loose.dtype.kind!r}-kind "
                                f"values such as {_brief(_python(loose.reshape(-1)[0]))}")
    try:
        with np.errstate(over="ignore"):
            array = np.asarray(loose.reshape(-1).tolist() if dtype.kind in "iu" else loose, dtype=dtype).reshape(shape)
    except OverflowError as exc:
        raise InvalidInputError(f"input '{name}': a value does not fit {datatype}: {exc}") from None
    if dtype.kind == "f" and array.size:
        overflow = np.isinf(array)
        if overflow.any():  # JSON has no infinity, so every inf here is a finite number too large for the type
            value = _python(loose.reshape(-1)[int(np.flatnonzero(overflow.reshape(-1))[0])])
            raise InvalidInputError(f"input '{name}': {value!r} is out of range for {datatype} "
                                    f"(largest finite value {float(np.finfo(dtype).max):.7g})")
    return array


def _flatten(data: Any, name: str) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def decode_infer(model: str, version: str, body: bytes, header_length: str | None,
                 on_request_id: Callable[[str], None] | None = None) -> tuple[InferCall, set[str], bool]:
    """Parse an inference body into (call, outputs to send as binary, binary by default).

    ``on_request_id`` is told the request's ``id`` as soon as it is read, so that
    a request failing later in decoding is still logged with its id.

    Raises:
        InvalidInputError: malformed JSON, missing or mistyped fields, binary sizes
            that do not add up, data that does not match its shape or datatype.
    """
    header, binary = _split_body(body, header_length)
    request = _parse_json(header)
    if not isinstance(request, dict):
        raise InvalidInputError(f"the request's JSON must be an object, got {type(request).__name__}")
    request_id = request.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidInputError(f"field 'id' must be a string, got {type(request_id).__name__}")
    if on_request_id is not None:
        on_request_id(request_id)
    inputs_json = _require(request, "inputs", list, "inference request")
    params = _parameters(request, "inference request")
    offset = 0
    inputs: dict[str, Any] = {}
    for i, tensor in enumerate(inputs_json):
        where = f"input {i}"
        name = _require(tensor, "name", str, where)
        where = f"input '{name}'"
        if name in inputs:
            raise InvalidInputError(f"input '{name}' is given twice")
        datatype = _require(tensor, "datatype", str, where)
        shape = _shape(_require(tensor, "shape", list, where), name)
        tparams = _parameters(tensor, where)
        if "shared_memory_region" in tparams:
            raise InvalidInputError(f"{where}: the shared-memory extension is not supported; send the data "
                                    "in the request")
        size = tparams.get("binary_data_size")
        if size is not None:
            if "data" in tensor:
                raise InvalidInputError(f"{where}: has both 'data' and the parameter binary_data_size")
            if header_length is None:
                raise InvalidInputError(f"{where}: has binary_data_size but the request has no {HEADER_LENGTH} header")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise InvalidInputError(f"{where}: binary_data_size must be a non-negative integer, got {size!r}")
            if offset + size > len(binary):
                raise InvalidInputError(
                    f"{where}: binary_data_size {size} runs past the end of the body (bytes {offset}..{offset + size} "
                    f"of {len(binary)} binary bytes)")
            inputs[name] = from_raw(name, datatype, shape, binary[offset:offset + size])
            offset += size
        elif "data" in tensor:
            inputs[name] = _from_json_data(name, datatype, shape, tensor["data"], tparams)
        else:
            raise InvalidInputError(f"{where}: has neither 'data' nor the parameter binary_data_size")
    if offset != len(binary):
        raise InvalidInputError(
            f"the request body has {len(binary) - offset} bytes after the JSON header that no input claims "
            f"(inputs' binary_data_size add up to {offset}, {len(binary)} binary bytes were sent)")
    binary_default = params.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise InvalidInputError(f"parameter 'binary_data_output' must be true or false, got {binary_default!r}")
    outputs: list[str] = []
    binary_outputs: set[str] = set()
    outputs_json = request.get("outputs", [])
    if not isinstance(outputs_json, list):
        raise InvalidInputError(f"field 'outputs' must be a list, got {type(outputs_json).__name__}")
    for i, out in enumerate(outputs_json):
        oname = _require(out, "name", str, f"output {i}")
        oparams = _parameters(out, f"output '{oname}'")
        if "classification" in oparams:
            raise InvalidInputError(f"output '{oname}': the classification extension is not supported; "
                                    "use a classify.topk node")
        if "shared_memory_region" in oparams:
            raise InvalidInputError(f"output '{oname}': the shared-memory extension is not supported")
        if oparams.get("binary_data", binary_default):
            binary_outputs.add(oname)
        outputs.append(oname)
    priority, timeout = parse_priority_timeout(params)
    call = InferCall(model, version, request_id, inputs, outputs, priority, timeout)
    return call, binary_outputs, binary_default


def _json_data(name: str, array: np.ndarray[Any, Any]) -> tuple[list[Any], dict[str, Any]]:
    """(JSON ``data``, output parameters) of an output sent as JSON."""
    arr = np.asarray(array)
    if arr.dtype.kind in ("O", "S", "U"):
        items = [x if isinstance(x, (bytes, bytearray)) else str(x).encode() for x in arr.reshape(-1)]
        try:
            return [bytes(x).decode("utf-8") for x in items], {}
        except UnicodeDecodeError:
            # Not text: base64 (MLServer's convention) rather than lose or mangle data.
            return [base64.b64encode(bytes(x)).decode("ascii") for x in items], {"content_type": "base64"}
    if arr.dtype == np.float16:
        raise InvalidInputError(f"output '{name}' is FP16, which has no JSON form; ask for it as binary "
                                "(output parameter binary_data: true)")
    if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
        raise InvalidInputError(f"output '{name}' holds NaN or infinity, which JSON cannot carry; ask for it as "
                                "binary (output parameter binary_data: true)")
    return arr.reshape(-1).tolist(), {}


def encode_infer(reply: InferReply, binary_outputs: set[str], binary_default: bool,
                 asked: list[str]) -> tuple[bytes, int | None]:
    """(body, JSON header length or None) of an inference response."""
    outputs_json: list[dict[str, Any]] = []
    buffers: list[bytes] = []
    for name, array in reply.outputs.items():
        binary = name in binary_outputs if asked else binary_default
        if binary:
            datatype, shape, data = to_raw(array)
            outputs_json.append({"name": name, "datatype": datatype, "shape": shape,
                                 "parameters": {"binary_data_size": len(data)}})
            buffers.append(data)
        else:
            arr = np.asarray(array)
            datatype = "BYTES" if arr.dtype.kind in ("O", "S", "U") else DTYPES[arr.dtype.name][1]
            data_json, params = _json_data(name, arr)
            entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape), "data": data_json}
            if params:
                entry["parameters"] = params
            outputs_json.append(entry)
    response: dict[str, Any] = {"model_name": reply.model, "model_version": reply.version, "outputs": outputs_json}
    if reply.request_id:
        response["id"] = reply.request_id
    header = json.dumps(response, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if not buffers:
        return header, None
    return b"".join([header, *buffers]), len(header)


# -- the application -------------------------------------------------------------------------


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _error_of(exc: BaseException) -> web.Response:
    if isinstance(exc, RequestError):
        return _error(HTTP_STATUS.get(exc.status, 500), str(exc))
    if isinstance(exc, DagserveError):
        return _error(500, str(exc))
    return _error(500, f"{type(exc).__name__}: {exc}")


_STATUS_OF_HTTP: dict[int, str] = {**{v: k for k, v in HTTP_STATUS.items()}, 413: "RESOURCE_EXHAUSTED",
                                   408: "DEADLINE_EXCEEDED", 415: "INVALID_ARGUMENT", 405: "INVALID_ARGUMENT"}
"""The gRPC status name logged for an HTTP status that dagserve's errors do not map from."""


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_REQUEST_ID = "dagserve.request_id"
"""Key of the request id on an aiohttp request, once its body is parsed (for the log)."""

_ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate"})
"""Content-Encodings of request bodies that aiohttp decodes (and that tritonclient sends)."""


def _json_error(cls: type[web.HTTPException], message: str, **kwargs: Any) -> web.HTTPException:
    """An aiohttp HTTP exception whose body is dagserve's ``{"error": ...}``."""
    return cls(text=json.dumps({"error": message}), content_type="application/json", **kwargs)


class _UnreadableBody(Exception):
    """A body that cannot be read to its end: answered, then the connection is closed.

    Left open, aiohttp would try to read (and fail on) the rest of the body after
    the answer, and log that failure with a traceback.
    """

    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status


class _Api:
    """The v2 routes over one repository."""

    def __init__(self, repository: Repository, live: asyncio.Event, draining: asyncio.Event,
                 max_message_bytes: int, read_timeout: float | None = None,
                 model_control: ModelControl | None = None) -> None:
        self.repository = repository
        self.live = live
        self.draining = draining
        self.max_message_bytes = max_message_bytes
        self.read_timeout = read_timeout
        self.model_control = model_control or ModelControl(repository, explicit=False)

    async def body(self, request: web.Request) -> bytes:
        """The whole (decoded) body; 413 when too large, 415 for an unknown Content-Encoding,
        400 for a body that does not decode, 408 when it does not arrive within the read timeout."""
        limit = self.max_message_bytes
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in _ENCODINGS:
            # Closing the connection: aiohttp would otherwise read the rest of the body and fail on it.
            raise _UnreadableBody(415, f"Content-Encoding '{encoding}' is not supported; send the body "
                                       "uncompressed, or compressed with gzip or deflate")
        if request.content_length is not None and request.content_length > limit:
            raise _json_error(web.HTTPRequestEntityTooLarge, self._too_large(request.content_length),
                              max_size=limit, actual_size=request.content_length)
        try:
            return await asyncio.wait_for(request.read(), self.read_timeout)
        except web.HTTPRequestEntityTooLarge:
            raise _json_error(web.HTTPRequestEntityTooLarge, self._too_large(None),
                              max_size=limit, actual_size=limit + 1) from None
        except asyncio.TimeoutError:
            raise _UnreadableBody(408, f"the request body did not arrive within {self.read_timeout:g} s "
                                       "(--http-read-timeout); the connection is closed") from None
        except web.RequestPayloadError as err:
            cause: BaseException = err
            while cause.__cause__ is not None or cause.__context__ is not None:  # down to zlib's own error
                cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
            raise _UnreadableBody(400, f"the request body is not valid {encoding or 'identity'} data "
                                       f"(Content-Encoding: {encoding or 'identity'}): {cause}") from None

    def _too_large(self, size: int | None) -> str:
        got = f"of {size} bytes " if size is not None else ""
        return (f"the request body {got}is larger than the server's limit of {self.max_message_bytes} bytes "
                f"({self.max_message_bytes / 2**20:g} MiB, set with --max-message-mb)")

    async def json_body(self, request: web.Request) -> dict[str, Any]:
        """A small JSON object body (repository calls); empty means {}."""
        raw = await self.body(request)
        if not raw.strip():
            return {}
        data = _parse_json(raw)
        if not isinstance(data, dict):
            raise InvalidInputError(f"the request's JSON must be an object, got {type(data).__name__}")
        return data

    # -- health and metadata

    async def live_(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.live.is_set() else 503)

    async def ready_(self, request: web.Request) -> web.Response:
        ok = self.repository.ready and not self.draining.is_set()
        return web.Response(status=200 if ok else 503)

    async def server_metadata(self, request: web.Request) -> web.Response:
        return web.json_response({"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS})

    async def model_metadata(self, request: web.Request) -> web.Response:
        pipeline = resolve(self.repository, request.match_info["model"], request.match_info.get("version", ""))
        return web.json_response(proto_to_json(model_metadata(pipeline.plan)))

    async def model_ready(self, request: web.Request) -> web.Response:
        resolve(self.repository, request.match_info["model"], request.match_info.get("version", ""))
        if self.draining.is_set():
            raise UnavailableError("the server is shutting down")
        return web.Response(status=200)

    async def model_config(self, request: web.Request) -> web.Response:
        pipeline = resolve(self.repository, request.match_info["model"], request.match_info.get("version", ""))
        return web.json_response(proto_to_json(model_config(pipeline.plan)))

    async def model_stats(self, request: web.Request) -> web.Response:
        name = request.match_info.get("model", "")
        if name:
            pipelines = [resolve(self.repository, name, request.match_info.get("version", ""))]
        else:
            pipelines = [e.pipeline for e in sorted(self.repository.entries.values(), key=lambda e: e.name)
                         if e.pipeline is not None]
        return web.json_response({"model_stats": [proto_to_json(model_statistics(p)) for p in pipelines]})

    # -- repository

    async def repository_index(self, request: web.Request) -> web.Response:
        body = await self.json_body(request)
        ready_only = body.get("ready", False)
        models = []
        for entry in sorted(self.repository.entries.values(), key=lambda e: e.name):
            if ready_only and entry.state != "READY":
                continue
            item = {"name": entry.name, "state": entry.state, "reason": entry.reason}
            if entry.pipeline is not None:
                item["version"] = str(entry.pipeline.plan.version)
            models.append(item)
        return web.json_response(models)

    async def load(self, request: web.Request) -> web.Response:
        self.model_control.check()
        body = await self.json_body(request)
        override = parse_load_parameters(request.match_info["model"], _parameters(body, "load request"),
                                         base64_files=True)
        await self.model_control.load(request.match_info["model"], override)
        return web.Response(status=200)

    async def unload(self, request: web.Request) -> web.Response:
        self.model_control.check()
        await self.json_body(request)
        await self.model_control.unload(request.match_info["model"])
        return web.Response(status=200)

    # -- inference

    async def infer(self, request: web.Request) -> web.Response:
        if self.draining.is_set():
            raise UnavailableError("the server is shutting down and accepts no new requests")
        body = await self.body(request)

        def remember(request_id: str) -> None:
            request[_REQUEST_ID] = request_id

        call, binary_outputs, binary_default = decode_infer(
            request.match_info["model"], request.match_info.get("version", ""), body,
            request.headers.get(HEADER_LENGTH), on_request_id=remember)
        reply = await run_call(self.repository, call)
        data, header_length = encode_infer(reply, binary_outputs, binary_default, call.outputs)
        if len(data) > self.max_message_bytes:
            return _error(500, f"the response ({len(data)} bytes) is larger than the server's limit of "
                               f"{self.max_message_bytes} bytes (--max-message-mb)")
        if header_length is None:
            return web.Response(body=data, content_type="application/json")
        return web.Response(body=data, content_type="application/octet-stream",
                            headers={HEADER_LENGTH: str(header_length)})


def _error_middleware(requests: RequestLog) -> Any:
    """Every failure as ``{"error": ...}`` with the mapped status (aiohttp's own errors too), and one log
    line per finished request."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        failure: BaseException | None = None
        try:
            response: web.StreamResponse = await handler(request)
        except web.HTTPException as exc:
            if exc.content_type == "application/json" or exc.status < 400:
                response = exc
            else:
                reason = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
                if exc.status == 404:
                    reason = f"no route for {request.method} {request.path}"
                elif exc.status == 405:
                    reason = f"method {request.method} is not allowed on {request.path}"
                response = _error(exc.status, reason)
        except _UnreadableBody as exc:
            response = _error(exc.http_status, str(exc))
            response.force_close()
            await response.prepare(request)
            await response.write_eof()
            if request.protocol is not None:
                request.protocol.force_close()  # no lingering read of the rest of the body
        except asyncio.CancelledError:
            requests.finished("http", f"{request.method} {request.path}", request.match_info.get("model", ""),
                              request.get(_REQUEST_ID, ""), started, "CANCELLED", "the client went away")
            raise
        except Exception as exc:
            failure = exc
            response = _error_of(exc)
        if response.status < 400:
            requests.finished("http", f"{request.method} {request.path}", request.match_info.get("model", ""),
                              request.get(_REQUEST_ID, ""), started, extra=f"http={response.status}")
        else:
            status = failure_status(failure) if failure is not None else _STATUS_OF_HTTP.get(
                response.status, f"HTTP_{response.status}")
            message = _message_of(response)
            requests.finished("http", f"{request.method} {request.path}", request.match_info.get("model", ""),
                              request.get(_REQUEST_ID, ""), started, status, message, failure,
                              extra=f"http={response.status}")
        if isinstance(response, web.HTTPException):
            raise response
        return response

    return errors


def _message_of(response: web.StreamResponse) -> str:
    body = getattr(response, "text", None)
    try:
        return str(json.loads(body)["error"]) if body else ""
    except (ValueError, KeyError, TypeError):
        return str(body)


class _Refuse(asyncio.Protocol):
    """A connection over the cap: answered 503 at once, closed once the client has read it (or after 1 s)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        body = json.dumps({"error": f"the server has its maximum of {self.cap} HTTP connections open "
                                    "(--http-max-connections); retry later"}).encode()
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
        if transport.can_write_eof():
            transport.write_eof()
        asyncio.get_running_loop().call_later(1.0, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the request is not served


class _ConnectionCap:
    """A protocol factory over aiohttp's: its handler while fewer than ``cap`` connections are open."""

    def __init__(self, server: web.Server, cap: int) -> None:
        self.server = server
        self.cap = cap

    def __call__(self) -> asyncio.BaseProtocol:
        if len(self.server.connections) >= self.cap:
            return _Refuse(self.cap)
        return self.server()


class CappedAppRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose sites accept at most ``max_connections`` connections at once;
    more are answered 503 and closed. ``max_connections`` 0: no cap."""

    def __init__(self, app: web.Application, max_connections: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.max_connections = max_connections

    @property
    def server(self) -> Any:
        """What sites use as their protocol factory (aiohttp's own server when there is no cap)."""
        server = super().server
        if server is None or self.max_connections <= 0:
            return server
        return _ConnectionCap(server, self.max_connections)


def build_http_app(repository: Repository, live: asyncio.Event, draining: asyncio.Event,
                   max_message_bytes: int, read_timeout: float | None = None,
                   model_control: ModelControl | None = None, requests: RequestLog | None = None) -> web.Application:
    """The HTTP/REST v2 application.

    Args:
        repository: the pipelines served (shared with the gRPC service).
        live: set once the server has started.
        draining: set on shutdown; inference then answers 503 (UNAVAILABLE).
        max_message_bytes: largest request body (larger: 413) and response.
        read_timeout: seconds a request body may take to arrive (then 408); None: no limit.
        model_control: load/unload (refused unless explicit, the default).
        requests: where finished requests are logged.
    """
    api = _Api(repository, live, draining, max_message_bytes, read_timeout, model_control)
    app = web.Application(client_max_size=max_message_bytes,
                          middlewares=[_error_middleware(requests or RequestLog())])
    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    app.router.add_get("/v2/health/live", api.live_)
    app.router.add_get("/v2/health/ready", api.ready_)
    app.router.add_get("/v2", api.server_metadata)
    app.router.add_get("/v2/models/stats", api.model_stats)
    for prefix in (model, versioned):
        app.router.add_get(prefix, api.model_metadata)
        app.router.add_get(prefix + "/ready", api.model_ready)
        app.router.add_get(prefix + "/config", api.model_config)
        app.router.add_get(prefix + "/stats", api.model_stats)
        app.router.add_post(prefix + "/infer", api.infer)
    app.router.add_post("/v2/repository/index", api.repository_index)
    app.router.add_post("/v2/repository/models/{model}/load", api.load)
    app.router.add_post("/v2/repository/models/{model}/unload", api.unload)
    return app
