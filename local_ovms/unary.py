"""Unary inference (gRPC ModelInfer and REST infer) of a non-generative graph."""

from __future__ import annotations

from typing import Any

import grpc

from local_ovms.errors import ServeError
from local_ovms.executor import ExecutionError, GraphInstance, LoadedGraph, Packet
from local_ovms.lifecycle import Activity
from local_ovms.registry import Registry


def unary_graph(registry: Registry, name: str, version: str) -> LoadedGraph:
    """The graph to run; INVALID_ARGUMENT for a generative graph, which only streaming can serve."""
    graph = registry.available(name, version)
    if graph.generative:
        raise ServeError(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"model {name!r} runs in generative mode (LOOPBACK) and streams its outputs: use the "
            "streaming gRPC call ModelStreamInfer; unary infer (gRPC ModelInfer, REST /infer) can't serve it",
        )
    return graph


def run_unary(
    graph: LoadedGraph, activity: Activity, inputs: dict[str, Any], timestamp: int | None
) -> list[Packet]:
    """Run one request through a fresh graph instance and return its output packets."""
    job = activity.begin()
    instance = GraphInstance(graph)
    try:
        return instance.process(inputs, instance.timestamp_for(timestamp))
    except ExecutionError as exc:
        raise ServeError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
    finally:
        instance.close()
        activity.end(job)
