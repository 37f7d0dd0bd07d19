"""KServe v2 REST (JSON, BYTES included, and the binary-data extension for inputs) and ``/metrics``,
served by starlette on uvicorn in a thread of the server process."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import uvicorn
from google.protobuf.json_format import MessageToDict
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from local_ovms import kserve, metrics
from local_ovms.errors import ServeError, internal, invalid
from local_ovms.executor import LoadedGraph, Packet
from local_ovms.grpc_service import SERVER_NAME, SERVER_VERSION, model_label
from local_ovms.lifecycle import Activity
from local_ovms.pyovms import DATATYPE_TO_DTYPE
from local_ovms.registry import Registry, State
from local_ovms.unary import run_unary, unary_graph

log = logging.getLogger(__name__)

BINARY_HEADER = "inference-header-content-length"


class KServeJSON(JSONResponse):
    """JSON that may hold NaN and Infinity: float outputs are not always finite."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _error(exc: ServeError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.http_status)


def _flatten(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flatten(item)
    else:
        yield data


def _json_data_bytes(name: str, datatype: str, data: Any) -> bytes:
    values = list(_flatten(data))
    if datatype == "BYTES":
        if not all(isinstance(v, str) for v in values):
            raise invalid(f"input {name!r}: BYTES data must be strings")
        return kserve.serialize_bytes_elements(v.encode("utf-8") for v in values)
    dtype = DATATYPE_TO_DTYPE.get(datatype)
    if dtype is None:
        raise invalid(f"input {name!r}: datatype {datatype!r} cannot be sent as JSON data")
    if not all(isinstance(v, int | float) for v in values):
        raise invalid(f"input {name!r}: {datatype} data must be numbers")
    try:
        return np.asarray(values, dtype=dtype).tobytes()
    except (OverflowError, ValueError) as exc:
        raise invalid(f"input {name!r}: data does not fit {datatype}: {exc}") from None


def _parameters(doc: dict[str, Any], where: str = "") -> dict[str, Any]:
    """The object's 'parameters' (an empty dict when absent)."""
    parameters = doc.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise invalid(f"{where}'parameters' must be an object")
    return parameters


def _requested_outputs(doc: dict[str, Any]) -> list[str]:
    """The names in 'outputs' (empty when absent: then every output is sent)."""
    outputs = doc.get("outputs")
    if outputs is None:
        return []
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise invalid("'outputs' must be a list of objects with a 'name'")
    return [o["name"] for o in outputs]


def _json_inputs(graph: LoadedGraph, doc: dict[str, Any], binary: bytes) -> dict[str, Any]:
    specs = doc.get("inputs")
    if not isinstance(specs, list) or not all(
        isinstance(s, dict) and isinstance(s.get("name"), str) for s in specs
    ):
        raise invalid("'inputs' must be a list of objects with a 'name'")
    kserve.check_input_names(graph, [s["name"] for s in specs])
    tensors, offset = {}, 0
    for spec in specs:
        name, datatype, shape = spec["name"], spec.get("datatype"), spec.get("shape")
        if not isinstance(datatype, str):
            raise invalid(f"input {name!r}: 'datatype' must be a string")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in shape
        ):
            raise invalid(f"input {name!r}: 'shape' must be a list of integers")
        size = _parameters(spec, f"input {name!r}: ").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise invalid(f"input {name!r}: binary_data_size {size!r} does not fit the binary data")
            raw, offset = binary[offset : offset + size], offset + size
        elif "data" in spec:
            raw = _json_data_bytes(name, datatype, spec["data"])
        else:
            raise invalid(f"input {name!r} has no 'data'")
        tensors[name] = kserve.make_tensor(graph.tensor_type, name, datatype, shape, raw)
    return tensors


def _json_output(name: str, tensor: Any) -> dict[str, Any]:
    raw, datatype = bytes(tensor), tensor.datatype
    dtype = DATATYPE_TO_DTYPE.get(datatype)
    if datatype == "BYTES":
        elements = kserve.split_bytes_elements(raw)
        data: list[Any] = [
            e.decode("utf-8", errors="replace") for e in (elements if elements is not None else [raw])
        ]
    elif dtype is not None and len(raw) % dtype.itemsize == 0:
        data = np.frombuffer(raw, dtype=dtype).tolist()
    else:
        data = list(raw)
    return {"name": name, "datatype": datatype, "shape": list(tensor.shape), "data": data}


def _parse_body(request: Request, body: bytes) -> tuple[dict[str, Any], bytes]:
    header_length = request.headers.get(BINARY_HEADER)
    split = len(body)
    if header_length is not None:
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
            raise invalid(f"bad {BINARY_HEADER} header {header_length!r}")
        split = int(header_length)
    try:
        doc = json.loads(body[:split])
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(f"request body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid("request body must be a JSON object")
    return doc, body[split:]


async def _read_body(request: Request, limit: int) -> bytes:
    too_big = ServeError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"request body exceeds the limit of {limit} bytes (--max_message_mb)",
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_big
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(registry: Registry, activity: Activity, max_body_bytes: int) -> Starlette:
    """The starlette app of the KServe v2 REST API and ``/metrics``."""

    async def live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(request: Request) -> Response:
        is_ready = registry.loaded and not activity.draining
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": []})

    async def model_ready(request: Request) -> Response:
        try:
            servable = registry.get(request.path_params["name"], request.path_params.get("version", ""))
        except ServeError as exc:
            return _error(exc)
        is_ready = servable.state is State.AVAILABLE
        body: dict[str, Any] = {"name": servable.name, "ready": is_ready}
        if servable.reason:
            body["error"] = servable.reason
        return JSONResponse(body, status_code=200 if is_ready else 503)

    async def model_metadata(request: Request) -> Response:
        try:
            graph = registry.available(request.path_params["name"], request.path_params.get("version", ""))
        except ServeError as exc:
            return _error(exc)
        return JSONResponse(
            MessageToDict(
                kserve.model_metadata(graph),
                preserving_proto_field_name=True,
                always_print_fields_with_no_presence=True,
            )
        )

    async def infer(request: Request) -> Response:
        name, version = request.path_params["name"], request.path_params.get("version", "")
        started, status = time.perf_counter(), "OK"
        try:
            body = await _read_body(request, max_body_bytes)
            graph = unary_graph(registry, name, version)
            doc, binary = _parse_body(request, body)
            inputs = _json_inputs(graph, doc, binary)
            timestamp = _parameters(doc).get(kserve.TIMESTAMP_PARAM)
            if timestamp is not None and (not isinstance(timestamp, int) or isinstance(timestamp, bool)):
                raise invalid(f"parameter {kserve.TIMESTAMP_PARAM} must be an integer")
            packets: list[Packet] = await run_in_threadpool(run_unary, graph, activity, inputs, timestamp)
            packets = kserve.selected_outputs(packets, _requested_outputs(doc), graph)
            response: dict[str, Any] = {"model_name": graph.name, "model_version": kserve.MODEL_VERSION}
            if isinstance(doc.get("id"), str):
                response["id"] = doc["id"]
            response["outputs"] = [_json_output(n, t) for n, t, _ in packets]
            return KServeJSON(response)
        except ServeError as exc:
            status = exc.status_label
            return _error(exc)
        except Exception as exc:
            log.exception("REST infer of %r failed", name)
            error = internal(exc)
            status = error.status_label
            return _error(error)
        finally:
            metrics.observe_request(
                model_label(registry, name), "rest", status, time.perf_counter() - started
            )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    model = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    return Starlette(
        routes=[
            Route("/v2/health/live", live),
            Route("/v2/health/ready", ready),
            Route("/v2", server_metadata),
            *(Route(prefix + "/ready", model_ready) for prefix in (model, versioned)),
            *(Route(prefix, model_metadata) for prefix in (model, versioned)),
            *(Route(prefix + "/infer", infer, methods=["POST"]) for prefix in (model, versioned)),
            Route("/metrics", metrics_endpoint),
        ]
    )


class RestServer:
    """uvicorn serving the app from a background thread."""

    def __init__(self, app: Starlette, host: str, port: int) -> None:
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="rest", daemon=True)
        self.address = f"{host}:{port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; raises RuntimeError when uvicorn cannot start (e.g. the port is taken)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"cannot bind REST to {self.address} (port in use?)")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving and wait for the thread."""
        self._server.should_exit = True
        self._thread.join(timeout=5)
