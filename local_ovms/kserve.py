"""KServe v2 conversions: request inputs to ``pyovms.Tensor`` and output packets to responses."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from local_ovms.errors import invalid
from local_ovms.executor import LoadedGraph, Packet
from local_ovms.pyovms import DATATYPE_TO_DTYPE

TIMESTAMP_PARAM = "OVMS_MP_TIMESTAMP"
MODEL_VERSION = "1"
_CONTENTS_FIELD = {
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
}


def serialize_bytes_elements(elements: Iterable[bytes]) -> bytes:
    """BYTES elements as one buffer, each preceded by its 4-byte little-endian length."""
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def split_bytes_elements(buffer: bytes) -> list[bytes] | None:
    """The elements of a length-prefixed BYTES buffer, or None when it is not exactly one."""
    elements, pos = [], 0
    while pos < len(buffer):
        if pos + 4 > len(buffer):
            return None
        (length,) = struct.unpack_from("<I", buffer, pos)
        if pos + 4 + length > len(buffer):
            return None
        elements.append(buffer[pos + 4 : pos + 4 + length])
        pos += 4 + length
    return elements


def check_input_names(graph: LoadedGraph, names: Sequence[str]) -> None:
    """INVALID_ARGUMENT naming the input when one is missing, unknown or given twice."""
    expected = ", ".join(repr(n) for n in graph.input_names)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise invalid(f"input {name!r} is given twice")
        seen.add(name)
        if name not in graph.input_names:
            raise invalid(f"unexpected input {name!r}: model {graph.name!r} takes {expected}")
    for name in graph.input_names:
        if name not in seen:
            raise invalid(f"missing input {name!r}: model {graph.name!r} takes {expected}")


def make_tensor(tensor_type: type, name: str, datatype: str, shape: Sequence[int], raw: bytes) -> Any:
    """An input tensor as the contract says: known datatypes get their format and shape, BYTES and
    unknown datatypes a flat ``B`` buffer with the request's shape and datatype."""
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise invalid(f"input {name!r}: shape {list(shape)} has a negative dimension")
    dtype = DATATYPE_TO_DTYPE.get(datatype)
    if dtype is None:
        return tensor_type(name, np.frombuffer(raw, dtype=np.uint8), shape=shape, datatype=datatype)
    expected = math.prod(shape) * dtype.itemsize
    if expected != len(raw):
        raise invalid(
            f"input {name!r}: datatype {datatype} with shape {list(shape)} needs {expected} bytes, "
            f"got {len(raw)}"
        )
    return tensor_type(name, np.frombuffer(raw, dtype=dtype).reshape(shape), datatype=datatype)


def _contents_bytes(spec: pb.ModelInferRequest.InferInputTensor) -> bytes:
    if spec.datatype == "BYTES":
        if not spec.contents.bytes_contents:
            raise invalid(f"input {spec.name!r} has no data (raw_input_contents or contents)")
        return serialize_bytes_elements(spec.contents.bytes_contents)
    field = _CONTENTS_FIELD.get(spec.datatype)
    values = getattr(spec.contents, field) if field else ()
    if not values:
        raise invalid(f"input {spec.name!r} has no data (raw_input_contents or contents)")
    try:
        return np.asarray(values, dtype=DATATYPE_TO_DTYPE[spec.datatype]).tobytes()
    except (OverflowError, ValueError) as exc:
        raise invalid(f"input {spec.name!r}: contents do not fit {spec.datatype}: {exc}") from None


def request_inputs(graph: LoadedGraph, request: pb.ModelInferRequest) -> dict[str, Any]:
    """The request's inputs as tensors, checked against the graph's inputs."""
    check_input_names(graph, [spec.name for spec in request.inputs])
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise invalid(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs")
    return {
        spec.name: make_tensor(
            graph.tensor_type, spec.name, spec.datatype, spec.shape, raw[i] if raw else _contents_bytes(spec)
        )
        for i, spec in enumerate(request.inputs)
    }


def requested_timestamp(request: pb.ModelInferRequest) -> int | None:
    """The client's ``OVMS_MP_TIMESTAMP`` parameter, if it set one."""
    if TIMESTAMP_PARAM not in request.parameters:
        return None
    param = request.parameters[TIMESTAMP_PARAM]
    if param.WhichOneof("parameter_choice") != "int64_param":
        raise invalid(f"parameter {TIMESTAMP_PARAM} must be an int64_param")
    return param.int64_param


def stream_response(model: str, request_id: str, packet: Packet) -> pb.ModelStreamInferResponse:
    """One output packet as its own stream response, with its ``OVMS_MP_TIMESTAMP``."""
    name, tensor, timestamp = packet
    response = pb.ModelStreamInferResponse()
    infer = response.infer_response
    infer.model_name = model
    infer.model_version = MODEL_VERSION
    infer.id = request_id
    output = infer.outputs.add()
    output.name = name
    output.datatype = tensor.datatype
    output.shape.extend(tensor.shape)
    infer.raw_output_contents.append(bytes(tensor))
    infer.parameters[TIMESTAMP_PARAM].int64_param = timestamp
    return response


def error_response(message: str) -> pb.ModelStreamInferResponse:
    """A stream response carrying an error for one request."""
    return pb.ModelStreamInferResponse(error_message=message)


def selected_outputs(packets: list[Packet], requested: Sequence[str], graph: LoadedGraph) -> list[Packet]:
    """The packets of the outputs the client asked for (all when it named none)."""
    for name in requested:
        if name not in graph.output_names:
            raise invalid(
                f"unknown output {name!r}: model {graph.name!r} gives {', '.join(graph.output_names)}"
            )
    return [p for p in packets if not requested or p[0] in requested]


def infer_response(model: str, request_id: str, packets: list[Packet]) -> pb.ModelInferResponse:
    """A unary response holding every output packet."""
    response = pb.ModelInferResponse(model_name=model, model_version=MODEL_VERSION, id=request_id)
    for name, tensor, _ in packets:
        output = response.outputs.add()
        output.name = name
        output.datatype = tensor.datatype
        output.shape.extend(tensor.shape)
        response.raw_output_contents.append(bytes(tensor))
    return response


def model_metadata(graph: LoadedGraph) -> pb.ModelMetadataResponse:
    """KServe metadata of a graph: its input and output stream names, datatype and shape unspecified
    (as OVMS reports Python-node graphs)."""
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=graph.name,
        versions=[MODEL_VERSION],
        platform="OpenVINO",
        inputs=[tensor(name=n, datatype="INVALID") for n in graph.input_names],
        outputs=[tensor(name=n, datatype="INVALID") for n in graph.output_names],
    )
