"""Prometheus metrics of the server, in prometheus_client's default REGISTRY.

``/metrics`` on the REST port serves that registry, so metrics a servable registers with
prometheus_client show up next to these.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "ovms_requests",
    "Inference requests finished, by model, API (grpc, grpc_stream, rest) and status",
    ["model", "api", "status"],
)
REQUEST_LATENCY = Histogram(
    "ovms_request_latency_seconds",
    "Time from a request's arrival to its last output, by model and API",
    ["model", "api"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
ACTIVE_STREAMS = Gauge("ovms_active_streams", "Open ModelStreamInfer streams, by model", ["model"])
STREAMED_RESPONSES = Counter(
    "ovms_streamed_responses", "Responses sent on ModelStreamInfer streams, by model", ["model"]
)


def observe_request(model: str, api: str, status: str, seconds: float) -> None:
    """Count a finished request and record its latency."""
    REQUESTS.labels(model, api, status).inc()
    REQUEST_LATENCY.labels(model, api).observe(seconds)
