"""The protocol floor: a bare ``grpc.aio`` Triton-protocol server with one identity model.

It implements exactly what perf_analyzer calls — ServerMetadata, ModelMetadata,
ModelConfig, ModelStatistics, ModelInfer (plus ServerLive/ServerReady/ModelReady for
readiness checks) — with the message classes of ``tritonclient`` (Triton's own
generated protobufs), and nothing behind ModelInfer but turning the raw input
bytes into a NumPy array and back. Whatever a real server does more than this is
its overhead: ``dagserve serve pipelines/identity.yaml`` is measured against it.

The model matches ``pipelines/identity.yaml``: ``identity``, ``max_batch_size`` 64,
``INPUT0`` FP32 ``[-1]`` in, ``OUTPUT0`` the same tensor out.

Usage::

    python benchmarks/bare_grpc_server.py --port 0 --ready-file /tmp/ready   # writes 'grpc=PORT'
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import model_config_pb2 as mc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

MODEL = "identity"
MAX_BATCH = 64
_DTYPES = {"FP32": np.float32}


class BareService(pb_grpc.GRPCInferenceServiceServicer):
    """The identity model behind Triton's gRPC service, and nothing else."""

    def __init__(self) -> None:
        self.success = 0
        self.items = 0
        self.ns = 0

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=request.name == MODEL)

    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="bare-grpc", version="0", extensions=["model_configuration",
                                                                                     "statistics"])

    async def _check(self, name: str, context: grpc.aio.ServicerContext) -> None:
        if name != MODEL:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' is not found")

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        await self._check(request.name, context)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=MODEL, versions=["1"], platform="bare",
            inputs=[tensor(name="INPUT0", datatype="FP32", shape=[-1, -1])],
            outputs=[tensor(name="OUTPUT0", datatype="FP32", shape=[-1, -1])])

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        await self._check(request.name, context)
        config = mc.ModelConfig(
            name=MODEL, platform="bare", backend="bare", max_batch_size=MAX_BATCH,
            input=[mc.ModelInput(name="INPUT0", data_type=mc.TYPE_FP32, dims=[-1])],
            output=[mc.ModelOutput(name="OUTPUT0", data_type=mc.TYPE_FP32, dims=[-1])])
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Any) -> pb.ModelStatisticsResponse:
        if request.name:
            await self._check(request.name, context)
        duration = pb.StatisticDuration
        stats = pb.ModelStatistics(
            name=MODEL, version="1", inference_count=self.items, execution_count=self.success,
            inference_stats=pb.InferStatistics(
                success=duration(count=self.success, ns=self.ns), fail=duration(),
                queue=duration(count=self.success), compute_input=duration(count=self.success),
                compute_infer=duration(count=self.success), compute_output=duration(count=self.success)))
        return pb.ModelStatisticsResponse(model_stats=[stats])

    async def ModelInfer(self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
                         ) -> pb.ModelInferResponse:
        if request.model_name != MODEL:
            await self._check(request.model_name, context)
        if len(request.inputs) != 1 or len(request.raw_input_contents) != 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected one input in raw_input_contents")
        tensor = request.inputs[0]
        dtype = _DTYPES.get(tensor.datatype)
        if dtype is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported datatype {tensor.datatype}")
        shape = tuple(tensor.shape)
        array = np.frombuffer(request.raw_input_contents[0], dtype=dtype).reshape(shape)
        response = pb.ModelInferResponse(model_name=MODEL, model_version="1", id=request.id)
        response.outputs.append(pb.ModelInferResponse.InferOutputTensor(
            name="OUTPUT0", datatype=tensor.datatype, shape=shape))
        response.raw_output_contents.append(array.tobytes())
        self.success += 1
        self.items += shape[0] if shape else 1
        return response


async def serve(host: str, port: int, ready_file: str | None) -> None:
    """Serve until SIGTERM/SIGINT."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                      ("grpc.max_send_message_length", 64 << 20),
                                      ("grpc.so_reuseport", 0)])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(BareService(), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise SystemExit(f"cannot listen on {host}:{port}")
    await server.start()
    if ready_file:
        with open(ready_file, "w", encoding="utf-8") as fh:
            fh.write(f"grpc={bound}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--host`` (loopback only by default), ``--port`` (0: any), ``--ready-file``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.ready_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
