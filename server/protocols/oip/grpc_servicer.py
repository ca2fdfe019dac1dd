"""The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`): decode the
request, call the protocol's model (`model.py`), encode the answer. Nothing else.

It runs in the onnxplain gRPC server (`protocols/grpc/app.py`), behind the same token
check, limits, drain gate and error mapping as the Explain RPC: errors propagate as the
core's own and become the same status codes.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from onnxplain.inference import grpc_service_pb2 as pb
from onnxplain.inference import grpc_service_pb2_grpc

from ...core.errors import InvalidInput
from ...core.explainer import Explainer
from . import model
from .datatypes import datatype_of, from_raw, from_values, to_raw

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
# The typed-contents field of each data type (FP16 has none: raw contents only).
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


class InferenceServicer(grpc_service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, core: Explainer) -> None:
        self.core = core

    def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=model.server_ready(self.core))

    def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(
            ready=model.model_ready(self.core, request.name, request.version)
        )

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(
            name=model.SERVER_NAME, version=model.server_version(), extensions=[]
        )

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        meta = model.model_metadata(self.core, request.name, request.version)
        tensor = pb.ModelMetadataResponse.TensorMetadata
        return pb.ModelMetadataResponse(
            name=meta.name,
            versions=meta.versions,
            platform=meta.platform,
            inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.inputs],
            outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in meta.outputs],
            properties=meta.properties,
        )

    def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        # The call's deadline and cancellation reach the queue, as the Explain RPC's do.
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        result = model.infer(
            self.core,
            request.model_name,
            request.model_version,
            decode_inputs(request),
            decode_parameters(request.parameters),
            [o.name for o in request.outputs],
            deadline,
            context.add_callback,
        )
        response = pb.ModelInferResponse(
            model_name=result.model_name, model_version=model.VERSION, id=request.id
        )
        for key, value in result.parameters.items():
            response.parameters[key].CopyFrom(encode_parameter(value))
        # Raw contents for every output: tritonclient reads only those for numeric tensors.
        for name, array in result.outputs:
            response.outputs.add(name=name, datatype=datatype_of(array.dtype), shape=array.shape)
            response.raw_output_contents.append(to_raw(array))
        return response


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray]:
    """Each input as an array, from raw_input_contents or from its typed contents."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: give one per input"
        )
    arrays: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        what = f"input {tensor.name!r}"
        if tensor.name in arrays:
            raise InvalidInput(f"{what} is given twice")
        has_contents = tensor.HasField("contents") and tensor.contents.ByteSize() > 0
        if raw and has_contents:
            raise InvalidInput(f"{what} has contents, but the request uses raw_input_contents")
        if raw:
            arrays[tensor.name] = from_raw(raw[i], tensor.datatype, list(tensor.shape), what)
            continue
        arrays[tensor.name] = from_contents(tensor, what)
    return arrays


def from_contents(tensor: pb.ModelInferRequest.InferInputTensor, what: str) -> np.ndarray:
    wanted = _CONTENTS.get(tensor.datatype)
    if wanted is None:
        # from_raw's checks name the unknown type; FP16 exists but only as raw bytes
        if tensor.datatype == "FP16":
            raise InvalidInput(f"{what} is FP16, which travels only as raw_input_contents")
        return from_raw(b"", tensor.datatype, list(tensor.shape), what)
    present = [f.name for f, _ in tensor.contents.ListFields()]
    stray = [name for name in present if name != wanted]
    if stray:
        raise InvalidInput(f"{what} is {tensor.datatype} but carries {stray[0]}; use {wanted}")
    values = list(getattr(tensor.contents, wanted))
    return from_values(values, tensor.datatype, list(tensor.shape), what)


def decode_parameters(parameters: Any) -> dict[str, Any]:
    """The request's parameters as Python values (bool, int, float or str)."""
    decoded: dict[str, Any] = {}
    for key, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")
        if kind is None:
            raise InvalidInput(f"parameter {key!r} has no value")
        decoded[key] = getattr(value, kind)
    return decoded


def encode_parameter(value: Any) -> pb.InferParameter:
    if isinstance(value, bool):
        return pb.InferParameter(bool_param=value)
    if isinstance(value, int):
        if value < 0 or value < (1 << 63):
            return pb.InferParameter(int64_param=value)
        return pb.InferParameter(uint64_param=value)
    if isinstance(value, float):
        return pb.InferParameter(double_param=value)
    return pb.InferParameter(string_param=str(value))
