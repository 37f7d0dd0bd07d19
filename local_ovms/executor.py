"""Running a loaded graph: one ``GraphInstance`` per stream (or per unary call).

A request's tensors enter at a timestamp and flow through the nodes in topological order, each node
running when data reaches its inputs. A node whose ``execute`` returns a generator (generative mode,
LOOPBACK) is stepped by ``GraphInstance.step``: one ``next()`` per step, its outputs at a timestamp
one higher than the previous step, until the generator is exhausted. Everything runs on the caller's
thread: no lock is held across handler calls, so streams run side by side.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from local_ovms.errors import ALREADY_PROCESSING, ServeError, describe, invalid
from local_ovms.graph import Graph
from local_ovms.handler import HANDLER_FAILURES, Handler

log = logging.getLogger(__name__)

# MediaPipe's range of packet timestamps (Timestamp::Min() and Timestamp::Max()).
TIMESTAMP_MIN = -(2**63) + 3
TIMESTAMP_MAX = 2**63 - 4

Packet = tuple[str, Any, int]
"""A graph output packet: (output name, tensor, timestamp)."""


class ExecutionError(Exception):
    """A request failed inside the graph; the message is what the client is told, ``detail`` what is
    logged (which node, which exception)."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message


@dataclass(frozen=True)
class _NodeRuntime:
    index: int
    name: str
    execute: Callable[[list[Any]], Any]
    input_streams: tuple[str, ...]
    output_names: frozenset[str]
    graph_outputs: frozenset[str]
    loopback: bool


class LoadedGraph:
    """A graph definition with its initialized handlers; shared by all its graph instances."""

    def __init__(self, name: str, graph: Graph, handlers: list[Handler], tensor_type: type) -> None:
        self.name = name
        self.graph = graph
        self.handlers = handlers
        self.tensor_type = tensor_type
        self.input_names = tuple(s.name for s in graph.inputs)
        self.output_names = tuple(s.name for s in graph.outputs)
        graph_outputs = frozenset(self.output_names)
        self.nodes = tuple(
            _NodeRuntime(
                index=i,
                name=h.node.name,
                execute=h.model.execute,
                input_streams=tuple(s.name for s in h.node.inputs),
                output_names=frozenset(s.name for s in h.node.outputs),
                graph_outputs=graph_outputs & {s.name for s in h.node.outputs},
                loopback=h.node.loopback,
            )
            for i, h in enumerate(handlers)
        )

    @property
    def generative(self) -> bool:
        """True when the graph runs in generative (LOOPBACK) mode: streaming gRPC only."""
        return self.graph.generative

    def finalize(self) -> None:
        """Call ``finalize()`` on every handler of the graph."""
        for handler in self.handlers:
            handler.finalize()


class GraphInstance:
    """The run-time state of one graph for one stream: its timestamps and running generators."""

    def __init__(self, graph: LoadedGraph) -> None:
        self.graph = graph
        self.last_timestamp: int | None = None
        self._generators: dict[int, Iterator[Any]] = {}

    @property
    def busy(self) -> bool:
        """True while a node's generator is still running."""
        return bool(self._generators)

    def timestamp_for(self, requested: int | None) -> int:
        """The timestamp of the next request: the client's ``OVMS_MP_TIMESTAMP`` or the next free one."""
        if requested is None:
            return 0 if self.last_timestamp is None else self._next_timestamp()
        if not TIMESTAMP_MIN <= requested <= TIMESTAMP_MAX:
            raise invalid(f"OVMS_MP_TIMESTAMP {requested} is outside [{TIMESTAMP_MIN}, {TIMESTAMP_MAX}]")
        if self.last_timestamp is not None and requested <= self.last_timestamp:
            raise invalid(
                f"OVMS_MP_TIMESTAMP must increase on a stream: got {requested} after {self.last_timestamp}"
            )
        return requested

    def process(self, inputs: dict[str, Any], timestamp: int) -> list[Packet]:
        """Feed a request's tensors at ``timestamp``; returns the graph output packets it produced."""
        if self._generators:
            raise ServeError(grpc.StatusCode.RESOURCE_EXHAUSTED, ALREADY_PROCESSING)
        self.last_timestamp = timestamp
        return self._run(dict(inputs), timestamp, frozenset())

    def step(self) -> list[Packet]:
        """Advance every running generator once, at the next timestamp."""
        try:
            self.last_timestamp = self._next_timestamp()
        except ServeError as exc:
            self.close()
            raise ExecutionError(exc.message) from None
        return self._run({}, self.last_timestamp, frozenset(self._generators))

    def _next_timestamp(self) -> int:
        if self.last_timestamp >= TIMESTAMP_MAX:
            raise invalid(f"the stream's timestamps reached their maximum ({TIMESTAMP_MAX})")
        return self.last_timestamp + 1

    def close(self) -> None:
        """Close running generators (``GeneratorExit`` at their ``yield``); the instance can be reused."""
        generators, self._generators = self._generators, {}
        for gen in generators.values():
            try:
                close = getattr(gen, "close", None)
                if close is not None:
                    close()
            except HANDLER_FAILURES as exc:
                log.warning("graph %r: closing a generator raised %s", self.graph.name, describe(exc))

    def _run(self, pending: dict[str, Any], timestamp: int, stepping: frozenset[int]) -> list[Packet]:
        out: list[Packet] = []
        try:
            for node in self.graph.nodes:
                inputs = [pending[s] for s in node.input_streams if s in pending]
                if node.index in stepping or (inputs and node.index in self._generators):
                    if inputs:
                        raise ExecutionError(f"node {node.name!r}: {ALREADY_PROCESSING}")
                    self._advance(node, timestamp, pending, out)
                elif inputs:
                    self._start(node, inputs, timestamp, pending, out)
        except ExecutionError as exc:
            log.warning("graph %r: request failed: %s", self.graph.name, exc.detail)
            self.close()
            raise
        except BaseException:
            self.close()
            raise
        return out

    def _start(
        self, node: _NodeRuntime, inputs: list[Any], ts: int, pending: dict, out: list[Packet]
    ) -> None:
        try:
            result = node.execute(inputs)
        except HANDLER_FAILURES as exc:
            raise self._failed(node, "execute", exc) from exc
        if isinstance(result, list):
            self._route(node, result, ts, pending, out)
        elif isinstance(result, Iterator):
            if not node.loopback:
                getattr(result, "close", lambda: None)()
                raise ExecutionError(
                    f"node {node.name!r}: execute yielded (returned a generator) but the node has no "
                    "LOOPBACK input and output streams; generative mode needs them"
                )
            self._generators[node.index] = result
            self._advance(node, ts, pending, out)
        else:
            raise ExecutionError(
                f"node {node.name!r}: execute must return or yield a list of pyovms.Tensor, "
                f"got {type(result).__name__}"
            )

    def _advance(self, node: _NodeRuntime, ts: int, pending: dict, out: list[Packet]) -> None:
        try:
            result = next(self._generators[node.index])
        except StopIteration:
            del self._generators[node.index]
            return
        except HANDLER_FAILURES as exc:
            del self._generators[node.index]
            raise self._failed(node, "the generator", exc) from exc
        if not isinstance(result, list):
            raise ExecutionError(
                f"node {node.name!r}: the generator must yield a list of pyovms.Tensor, "
                f"got {type(result).__name__}"
            )
        self._route(node, result, ts, pending, out)

    def _route(
        self, node: _NodeRuntime, tensors: list[Any], ts: int, pending: dict, out: list[Packet]
    ) -> None:
        tensor_type = self.graph.tensor_type
        for tensor in tensors:
            if not isinstance(tensor, tensor_type):
                raise ExecutionError(
                    f"node {node.name!r}: execute must return or yield a list of pyovms.Tensor, "
                    f"got a list holding {type(tensor).__name__}"
                )
            name = tensor.name
            if name not in node.output_names:
                raise ExecutionError(
                    f"node {node.name!r}: output {name!r} is not one of the node's outputs "
                    f"({', '.join(sorted(node.output_names)) or 'none'})"
                )
            if name in pending:
                raise ExecutionError(f"node {node.name!r}: output {name!r} appears twice in one step")
            pending[name] = tensor
            if name in node.graph_outputs:
                out.append((name, tensor, ts))

    def _failed(self, node: _NodeRuntime, what: str, exc: Exception) -> ExecutionError:
        log.debug("traceback:\n%s", traceback.format_exc())
        return ExecutionError(
            str(exc) or type(exc).__name__, f"node {node.name!r}: {what} raised {describe(exc)}"
        )
