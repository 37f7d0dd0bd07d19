"""The served graphs: loading them from the config and looking them up by name for requests."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

import grpc

from local_ovms.config import GraphEntry, ServerConfig
from local_ovms.errors import ServeError
from local_ovms.executor import LoadedGraph
from local_ovms.graph import GraphError, load_graph
from local_ovms.handler import Handler, HandlerError, load_handler, resolve_pyovms

log = logging.getLogger(__name__)

VERSIONS = ("", "1")
"""Graphs have one version; requests may name it ("1") or leave it empty."""


class State(enum.Enum):
    """A servable's life cycle."""

    LOADING = "LOADING"
    AVAILABLE = "AVAILABLE"
    FAILED = "FAILED"
    UNLOADED = "UNLOADED"


@dataclass
class Servable:
    """A name in the config with its state, its failure reason and, once loaded, its graph."""

    name: str
    state: State
    reason: str = ""
    graph: LoadedGraph | None = None


class Registry:
    """Every servable named in the config, by name."""

    def __init__(self, config: ServerConfig) -> None:
        self._entries = list(config.graphs)
        self._servables = {entry.name: Servable(entry.name, State.LOADING) for entry in config.graphs}
        for name, reason in config.refused.items():
            self._servables.setdefault(name, Servable(name, State.FAILED, reason))
            log.error("model %r refused: %s", name, reason)
        self.loaded = False

    @property
    def servables(self) -> list[Servable]:
        """All servables, in config order."""
        return list(self._servables.values())

    def load_all(self) -> None:
        """Load every graph; a graph that fails is marked FAILED with its reason, the others still load."""
        tensor_type = resolve_pyovms().Tensor
        for entry in self._entries:
            self._load(entry, tensor_type)
        self.loaded = True

    def _load(self, entry: GraphEntry, tensor_type: type) -> None:
        servable = self._servables[entry.name]
        handlers: list[Handler] = []
        try:
            graph = load_graph(entry.graph_path)
            for node in graph.nodes:
                handlers.append(load_handler(node))
        except (GraphError, HandlerError) as exc:
            for handler in handlers:
                handler.finalize()
            servable.state, servable.reason = State.FAILED, str(exc)
            log.error("graph %r refused:\n%s", entry.name, exc)
            return
        servable.graph = LoadedGraph(entry.name, graph, handlers, tensor_type)
        servable.state = State.AVAILABLE
        mode = "generative (LOOPBACK)" if graph.generative else "unary and streaming"
        log.info("graph %r loaded from %s: %d node(s), %s", entry.name, entry.graph_path, len(handlers), mode)

    def get(self, name: str, version: str = "") -> Servable:
        """The servable called ``name``; NOT_FOUND for an unknown name or version."""
        servable = self._servables.get(name)
        if servable is None:
            served = ", ".join(repr(n) for n in self._servables) or "none"
            raise ServeError(grpc.StatusCode.NOT_FOUND, f"model {name!r} not found (served: {served})")
        if version not in VERSIONS:
            raise ServeError(grpc.StatusCode.NOT_FOUND, f"model {name!r} has no version {version!r} (only 1)")
        return servable

    def available(self, name: str, version: str = "") -> LoadedGraph:
        """The loaded graph called ``name``; UNAVAILABLE with the reason when it is not serving."""
        servable = self.get(name, version)
        if servable.state is State.AVAILABLE and servable.graph is not None:
            return servable.graph
        reason = {
            State.LOADING: "it is still loading",
            State.FAILED: servable.reason,
            State.UNLOADED: "the server is shutting down",
        }[servable.state]
        raise ServeError(grpc.StatusCode.UNAVAILABLE, f"model {name!r} is not available: {reason}")

    def finalize_all(self) -> None:
        """Unload: call ``finalize()`` on the handlers of every loaded graph."""
        for servable in self._servables.values():
            if servable.state is State.AVAILABLE and servable.graph is not None:
                servable.state = State.UNLOADED
                log.info("graph %r: finalize", servable.name)
                servable.graph.finalize()
