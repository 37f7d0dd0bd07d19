"""The KServe gRPC service (``inference.GRPCInferenceService``) over the loaded graphs.

The server is grpcio's thread-pool server. A stream (``ModelStreamInfer``) holds one pool thread
that runs its graph instance and yields each output packet as its own response, so the per-packet
path has no thread hop; a small reader thread per stream takes the client's requests, so new data
arriving while a generator runs is refused at once (RESOURCE_EXHAUSTED) and a cancel or disconnect
is seen between two steps, when the generator is closed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from local_ovms import kserve, metrics
from local_ovms.errors import ALREADY_PROCESSING, ServeError, internal
from local_ovms.executor import ExecutionError, GraphInstance, LoadedGraph
from local_ovms.lifecycle import SHUTTING_DOWN, Activity
from local_ovms.registry import Registry, State
from local_ovms.unary import run_unary, unary_graph

log = logging.getLogger(__name__)

SERVER_NAME = "local_ovms"
SERVER_VERSION = "0.1.0"
UNKNOWN_MODEL = "<unknown>"
_END = object()
_CUT = "the server shut down before the graph finished"


def model_label(registry: Registry, name: str) -> str:
    """The metrics label for a requested model name (unknown names share one label)."""
    return name if name in {s.name for s in registry.servables} else UNKNOWN_MODEL


class StreamSession:
    """One ``ModelStreamInfer`` call: its graph instance, its incoming requests and its cancellation."""

    def __init__(self, registry: Registry, activity: Activity, context: grpc.ServicerContext) -> None:
        self._registry = registry
        self._activity = activity
        self._context = context
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._graph: LoadedGraph | None = None
        self._instance: GraphInstance | None = None
        self._responses_counter: Any = None
        self._cancelled = False
        self._cut = False
        self._half_closed = False
        self._closed = False

    def start(self, requests: Iterator[pb.ModelInferRequest]) -> None:
        """Start reading the client's requests and watching for the end of the call."""
        threading.Thread(target=self._read, args=(requests,), name="stream-reader", daemon=True).start()
        self._context.add_callback(self._on_call_done)

    def _read(self, requests: Iterator[pb.ModelInferRequest]) -> None:
        try:
            for request in requests:
                self._inbox.put(request)
        except Exception:  # a cancel or a lost connection ends the request iterator with an error
            pass
        finally:
            self._inbox.put(_END)

    def _on_call_done(self) -> None:
        if not self._closed:
            self._cancelled = True
            threading.Thread(target=self.close, name="stream-closer", daemon=True).start()

    def _cut_short(self) -> None:
        self._cut = True

    def close(self) -> None:
        """Close the graph instance (its generators get ``GeneratorExit``) and release the stream."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._instance is not None:
                self._instance.close()
            if self._graph is not None:
                metrics.ACTIVE_STREAMS.labels(self._graph.name).dec()

    def responses(self) -> Iterator[pb.ModelStreamInferResponse]:
        """The responses of the call, one per output packet, until the client ends the stream."""
        try:
            while not self._cancelled:
                request = self._inbox.get()
                if request is _END:
                    return
                yield from self._serve(request)
                if self._half_closed or self._cut:
                    return
        finally:
            self.close()

    def _bind(self, request: pb.ModelInferRequest) -> LoadedGraph:
        """The stream's graph, chosen by its first request."""
        if self._graph is None:
            if self._activity.draining:
                raise ServeError(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
            graph = self._registry.available(request.model_name, request.model_version)
            with self._lock:
                if self._closed:
                    raise ServeError(grpc.StatusCode.CANCELLED, "the stream was closed")
                self._graph = graph
                self._instance = GraphInstance(graph)
                metrics.ACTIVE_STREAMS.labels(graph.name).inc()
            self._responses_counter = metrics.STREAMED_RESPONSES.labels(graph.name)
        elif request.model_name != self._graph.name:
            raise ServeError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"this stream serves model {self._graph.name!r}, the request names {request.model_name!r}: "
                "open a new stream for another model",
            )
        return self._graph

    def _serve(self, request: pb.ModelInferRequest) -> Iterator[pb.ModelStreamInferResponse]:
        started = time.perf_counter()
        status = "OK"
        job = None
        graph = self._graph
        try:
            graph = self._bind(request)
            job = self._activity.begin(self._cut_short)
            inputs = kserve.request_inputs(graph, request)
            with self._lock:
                if self._instance is None:
                    self._instance = GraphInstance(graph)
                instance = self._instance
                packets = instance.process(
                    inputs, instance.timestamp_for(kserve.requested_timestamp(request))
                )
            while True:
                for packet in packets:
                    self._responses_counter.inc()
                    yield kserve.stream_response(graph.name, request.id, packet)
                if not instance.busy:
                    break
                if self._cancelled or self._cut:
                    status = "CANCELLED"
                    with self._lock:
                        instance.close()
                    if self._cut and not self._cancelled:
                        yield kserve.error_response(_CUT)
                    return
                with self._lock:
                    packets = instance.step()
                # Requests that came during the step are refused only if the generator still runs: one
                # sent right after the last output is served once the step that ends the generator is done.
                if instance.busy:
                    yield from self._refuse_waiting_requests(graph)
        except ServeError as exc:
            status = exc.status_label
            if self._graph is None:  # the first request chose no usable graph: the call ends with the status
                self._context.abort(exc.code, exc.message)
            yield self._error(exc.message, request.id)
        except ExecutionError as exc:
            status = grpc.StatusCode.INVALID_ARGUMENT.name
            with self._lock:
                self._instance = None
            yield self._error(str(exc), request.id)
        except Exception as exc:  # a bug here must not end the stream: the client gets an error response
            log.exception("stream request to %r failed", request.model_name)
            error = internal(exc)
            status = error.status_label
            with self._lock:
                if self._instance is not None:
                    self._instance.close()
                self._instance = None
            yield self._error(error.message, request.id)
        except GeneratorExit:  # the call ended (cancel, disconnect) while a response was on its way
            status = "CANCELLED"
            raise
        finally:
            if job is not None:
                self._activity.end(job)
            label = graph.name if graph is not None else model_label(self._registry, request.model_name)
            metrics.observe_request(label, "grpc_stream", status, time.perf_counter() - started)

    def _refuse_waiting_requests(self, graph: LoadedGraph) -> Iterator[pb.ModelStreamInferResponse]:
        while True:
            try:
                request = self._inbox.get_nowait()
            except queue.Empty:
                return
            if request is _END:
                self._half_closed = True
                continue
            metrics.observe_request(graph.name, "grpc_stream", grpc.StatusCode.RESOURCE_EXHAUSTED.name, 0.0)
            yield self._error(ALREADY_PROCESSING, request.id)

    @staticmethod
    def _error(message: str, request_id: str) -> pb.ModelStreamInferResponse:
        response = kserve.error_response(message)
        response.infer_response.id = request_id
        return response


class InferenceService(service_pb2_grpc.GRPCInferenceServiceServicer):
    """KServe gRPC: health, metadata, unary infer and streaming infer of the loaded graphs."""

    def __init__(self, registry: Registry, activity: Activity) -> None:
        self._registry = registry
        self._activity = activity

    def ServerLive(
        self, request: pb.ServerLiveRequest, context: grpc.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(
        self, request: pb.ServerReadyRequest, context: grpc.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._registry.loaded and not self._activity.draining)

    def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION)

    def ModelReady(
        self, request: pb.ModelReadyRequest, context: grpc.ServicerContext
    ) -> pb.ModelReadyResponse:
        try:
            servable = self._registry.get(request.name, request.version)
        except ServeError as exc:
            context.abort(exc.code, exc.message)
        return pb.ModelReadyResponse(ready=servable.state is State.AVAILABLE)

    def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.ServicerContext
    ) -> pb.ModelMetadataResponse:
        try:
            return kserve.model_metadata(self._registry.available(request.name, request.version))
        except ServeError as exc:
            context.abort(exc.code, exc.message)

    def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.ServicerContext
    ) -> pb.ModelInferResponse:
        started = time.perf_counter()
        status = "OK"
        try:
            graph = unary_graph(self._registry, request.model_name, request.model_version)
            inputs = kserve.request_inputs(graph, request)
            packets = run_unary(graph, self._activity, inputs, kserve.requested_timestamp(request))
            packets = kserve.selected_outputs(packets, [o.name for o in request.outputs], graph)
            return kserve.infer_response(graph.name, request.id, packets)
        except ServeError as exc:
            status = exc.status_label
            context.abort(exc.code, exc.message)
        except Exception as exc:
            log.exception("infer of %r failed", request.model_name)
            error = internal(exc)
            status = error.status_label
            context.abort(error.code, error.message)
        finally:
            label = model_label(self._registry, request.model_name)
            metrics.observe_request(label, "grpc", status, time.perf_counter() - started)

    def ModelStreamInfer(
        self, request_iterator: Iterator[pb.ModelInferRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ModelStreamInferResponse]:
        session = StreamSession(self._registry, self._activity, context)
        session.start(request_iterator)
        return session.responses()


def start_grpc_server(
    service: InferenceService, address: str, max_streams: int, max_message_bytes: int
) -> tuple[grpc.Server, futures.ThreadPoolExecutor]:
    """Start the gRPC server; returns it with its thread pool (raises RuntimeError when it cannot bind)."""
    workers = max_streams + 8
    executor = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc")
    server = grpc.server(
        executor,
        maximum_concurrent_rpcs=workers,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(service, server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if port == 0:
        raise RuntimeError(f"cannot bind gRPC to {address} (port in use?)")
    server.start()
    return server, executor
