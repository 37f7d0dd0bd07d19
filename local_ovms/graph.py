"""The graph model: a MediaPipe ``CalculatorGraphConfig`` of Python nodes, checked against the contract.

``load_graph`` parses a ``graph.pbtxt`` and returns a ``Graph`` whose nodes are in topological order,
or raises ``GraphError`` listing every problem found as ``file:line: what is wrong``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from local_ovms import pbtxt

PYTHON_CALCULATOR = "PythonExecutorCalculator"
GRAPH_TAG_PREFIX = "OVMS_PY_TENSOR"
LOOPBACK = "LOOPBACK"
RESOURCES_TAG = "PYTHON_NODE_RESOURCES"
SYNC_SET_HANDLER = "SyncSetInputStreamHandler"

_GRAPH_FIELDS = {
    "node", "packet_factory", "packet_generator", "num_threads", "status_handler", "input_stream",
    "output_stream", "input_side_packet", "output_side_packet", "max_queue_size", "report_deadlock",
    "input_stream_handler", "output_stream_handler", "executor", "profiler_config", "package", "type",
    "options", "graph_options",
}  # fmt: skip
_NODE_FIELDS = {
    "name", "calculator", "input_stream", "output_stream", "input_side_packet", "output_side_packet",
    "options", "node_options", "source_layer", "buffer_size_hint", "input_stream_handler",
    "output_stream_handler", "input_stream_info", "executor", "profiler_config", "max_in_flight",
    "option_value", "external_input",
}  # fmt: skip
_TAG = re.compile(r"[A-Z_][A-Z0-9_]*")
_NAME = re.compile(r"[a-z_][a-z0-9_]*")


@dataclass(frozen=True)
class Stream:
    """A stream reference ``TAG:index:name`` as written on a graph or a node."""

    tag: str
    index: int
    name: str
    line: int

    @property
    def tag_index(self) -> str:
        """``TAG:index``, the key tags must be unique by."""
        return f"{self.tag}:{self.index}"


@dataclass(frozen=True)
class Node:
    """A ``PythonExecutorCalculator`` node; LOOPBACK streams are left out of ``inputs``/``outputs``."""

    name: str
    line: int
    handler_path: Path
    inputs: tuple[Stream, ...]
    outputs: tuple[Stream, ...]
    loopback: bool


@dataclass(frozen=True)
class Graph:
    """A validated graph: its graph-level streams and its nodes in topological order."""

    path: Path
    inputs: tuple[Stream, ...]
    outputs: tuple[Stream, ...]
    nodes: tuple[Node, ...]

    @property
    def generative(self) -> bool:
        """True when a node runs in generative (LOOPBACK) mode."""
        return any(node.loopback for node in self.nodes)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a graph file, at a line."""

    line: int
    reason: str


class GraphError(Exception):
    """A graph refused at load; the message lists ``file:line: reason`` for each problem."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}:{p.line}: {p.reason}" for p in problems))


def parse_stream(text: str, line: int) -> Stream:
    """Parse ``TAG:index:name``, ``TAG:name`` or ``name``; raises ValueError naming the fault."""
    parts = text.split(":")
    if len(parts) > 3 or not all(parts):
        raise ValueError(f"stream {text!r} is not TAG:name, TAG:index:name or name")
    tag = parts[0] if len(parts) > 1 else ""
    index = parts[1] if len(parts) == 3 else "0"
    name = parts[-1]
    if tag and not _TAG.fullmatch(tag):
        raise ValueError(f"stream {text!r}: tag {tag!r} must match [A-Z_][A-Z0-9_]*")
    if not index.isdigit():
        raise ValueError(f"stream {text!r}: index {index!r} is not a number")
    if not _NAME.fullmatch(name):
        raise ValueError(f"stream {text!r}: name {name!r} must match [a-z_][a-z0-9_]*")
    return Stream(tag, int(index), name, line)


class _Checker:
    """Collects the problems of one graph file while building its model."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def fail(self, line: int, reason: str) -> None:
        self.problems.append(Problem(line, reason))

    def string(self, field: pbtxt.Field) -> str | None:
        if isinstance(field.value, str):
            return field.value
        self.fail(field.line, f"{field.name} must be a quoted string")
        return None

    def unknown_fields(self, msg: pbtxt.Message, known: set[str], where: str) -> None:
        for field in msg.fields:
            if field.name not in known:
                self.fail(field.line, f"unknown field {field.name!r} in {where}")

    def streams(self, msg: pbtxt.Message, field_name: str, where: str) -> list[Stream]:
        streams: list[Stream] = []
        seen: dict[str, Stream] = {}
        for field in msg.all(field_name):
            text = self.string(field)
            if text is None:
                continue
            try:
                stream = parse_stream(text, field.line)
            except ValueError as exc:
                self.fail(field.line, f"{where} {field_name}: {exc}")
                continue
            if stream.tag_index in seen:
                self.fail(
                    field.line,
                    f"{where}: duplicate {field_name} tag {stream.tag_index!r} (also on line "
                    f"{seen[stream.tag_index].line})",
                )
                continue
            seen[stream.tag_index] = stream
            streams.append(stream)
        return streams

    def graph_streams(self, msg: pbtxt.Message, field_name: str) -> list[Stream]:
        streams = self.streams(msg, field_name, "graph")
        for stream in streams:
            if not stream.tag.startswith(GRAPH_TAG_PREFIX):
                self.fail(
                    stream.line,
                    f"graph {field_name} {stream.tag_index}:{stream.name}: tag must start with "
                    f"{GRAPH_TAG_PREFIX!r} (e.g. '{GRAPH_TAG_PREFIX}:{stream.name}')",
                )
        return [s for s in streams if s.tag.startswith(GRAPH_TAG_PREFIX)]

    def handler_path(self, msg: pbtxt.Message, where: str) -> Path | None:
        fields = [
            f
            for name in ("node_options", "options")
            for option in msg.all(name)
            if isinstance(option.value, pbtxt.Message)
            for f in option.value.walk()
            if f.name == "handler_path"
        ]
        if not fields:
            self.fail(
                msg.line,
                f"{where}: no handler_path in node_options "
                "([type.googleapis.com/mediapipe.PythonExecutorCalculatorOptions])",
            )
            return None
        text = self.string(fields[0])
        if text is None:
            return None
        path = Path(text) if Path(text).is_absolute() else self.path.parent / text
        if not path.is_file():
            self.fail(fields[0].line, f"{where}: handler file not found: {path}")
            return None
        return path.resolve()

    def loopback(self, msg: pbtxt.Message, inputs: list[Stream], outputs: list[Stream], where: str) -> bool:
        loop_in = [s for s in inputs if s.tag == LOOPBACK]
        loop_out = [s for s in outputs if s.tag == LOOPBACK]
        if not loop_in and not loop_out:
            return False
        if not loop_in or not loop_out:
            have, lack = ("input_stream", "output_stream") if loop_in else ("output_stream", "input_stream")
            self.fail(
                (loop_in or loop_out)[0].line,
                f"{where}: LOOPBACK {have} without a LOOPBACK {lack}: "
                "generative mode needs both sides of the back edge",
            )
            return False
        if loop_in[0].name != loop_out[0].name:
            self.fail(
                loop_in[0].line,
                f"{where}: LOOPBACK input {loop_in[0].name!r} is not the LOOPBACK output "
                f"{loop_out[0].name!r}",
            )
        infos = [f.value for f in msg.all("input_stream_info") if isinstance(f.value, pbtxt.Message)]
        if not any(_is_loopback_tag(i.first("tag_index")) and _is_true(i.first("back_edge")) for i in infos):
            self.fail(
                loop_in[0].line,
                f"{where}: LOOPBACK input needs input_stream_info "
                "{ tag_index: 'LOOPBACK:0', back_edge: true }",
            )
        handlers = [f.value for f in msg.all("input_stream_handler") if isinstance(f.value, pbtxt.Message)]
        if not any(_is_sync_set_on_loopback(h) for h in handlers):
            self.fail(
                loop_in[0].line,
                f"{where}: LOOPBACK needs input_stream_handler {SYNC_SET_HANDLER!r} with a "
                "sync_set { tag_index: 'LOOPBACK:0' }",
            )
        return True

    def node(self, field: pbtxt.Field, index: int) -> Node | None:
        if not isinstance(field.value, pbtxt.Message):
            self.fail(field.line, "node must be a message { ... }")
            return None
        msg = field.value
        name_field = msg.first("name")
        name = self.string(name_field) if name_field else None
        if name_field is None:
            self.fail(msg.line, f"node #{index + 1} has no name (each node needs a unique name)")
        where = f"node {name!r}" if name else f"node #{index + 1}"
        self.unknown_fields(msg, _NODE_FIELDS, where)
        calc_field = msg.first("calculator")
        calculator = self.string(calc_field) if calc_field else None
        if calc_field is None:
            self.fail(msg.line, f"{where} has no calculator")
        elif calculator is not None and calculator != PYTHON_CALCULATOR:
            self.fail(
                calc_field.line,
                f"{where}: unknown calculator {calculator!r} "
                f"(this server runs {PYTHON_CALCULATOR} nodes only)",
            )
        side_packets = self.streams(msg, "input_side_packet", where)
        if not any(s.tag == RESOURCES_TAG for s in side_packets):
            self.fail(msg.line, f"{where}: missing input_side_packet '{RESOURCES_TAG}:py'")
        inputs = self.streams(msg, "input_stream", where)
        outputs = self.streams(msg, "output_stream", where)
        loopback = self.loopback(msg, inputs, outputs, where)
        handler = self.handler_path(msg, where)
        if name is None or calculator != PYTHON_CALCULATOR or handler is None:
            return None
        return Node(
            name=name,
            line=msg.line,
            handler_path=handler,
            inputs=tuple(sorted((s for s in inputs if s.tag != LOOPBACK), key=lambda s: (s.tag, s.index))),
            outputs=tuple(s for s in outputs if s.tag != LOOPBACK),
            loopback=loopback,
        )

    def order(self, inputs: list[Stream], outputs: list[Stream], nodes: list[Node]) -> list[Node]:
        producer: dict[str, str] = {s.name: "the graph input" for s in inputs}
        for node in nodes:
            for stream in node.outputs:
                if stream.name in producer:
                    self.fail(
                        stream.line,
                        f"stream {stream.name!r} is produced twice (by {producer[stream.name]} "
                        f"and by node {node.name!r})",
                    )
                producer[stream.name] = f"node {node.name!r}"
        for node in nodes:
            for stream in node.inputs:
                if stream.name not in producer:
                    self.fail(
                        stream.line,
                        f"node {node.name!r}: input stream {stream.name!r} is produced by no "
                        "node and is not a graph input_stream",
                    )
        for stream in outputs:
            if not producer.get(stream.name, "").startswith("node"):
                self.fail(stream.line, f"graph output_stream {stream.name!r} is not produced by any node")
        ordered: list[Node] = []
        ready = {s.name for s in inputs}
        remaining = list(nodes)
        while remaining:
            runnable = [
                n for n in remaining if all(s.name in ready or s.name not in producer for s in n.inputs)
            ]
            if not runnable:
                names = ", ".join(repr(n.name) for n in remaining)
                self.fail(
                    remaining[0].line, f"nodes {names} form a cycle (only the LOOPBACK back edge may loop)"
                )
                return ordered
            for node in runnable:
                ordered.append(node)
                ready.update(s.name for s in node.outputs)
                remaining.remove(node)
        return ordered


def _is_loopback_tag(field: pbtxt.Field | None) -> bool:
    return field is not None and field.value in (f"{LOOPBACK}:0", LOOPBACK)


def _is_true(field: pbtxt.Field | None) -> bool:
    return field is not None and field.value is True


def _is_sync_set_on_loopback(handler: pbtxt.Message) -> bool:
    kind = handler.first("input_stream_handler")
    if kind is None or kind.value != SYNC_SET_HANDLER:
        return False
    return any(
        f.name == "sync_set"
        and isinstance(f.value, pbtxt.Message)
        and _is_loopback_tag(f.value.first("tag_index"))
        for f in handler.walk()
    )


def load_graph(path: Path) -> Graph:
    """Read, parse and validate a graph file; raises GraphError with every problem found."""
    checker = _Checker(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GraphError(path, [Problem(0, f"cannot read graph file: {exc}")]) from None
    try:
        msg = pbtxt.parse(text)
    except pbtxt.PbtxtError as exc:
        raise GraphError(
            path, [Problem(exc.line, f"syntax error at column {exc.column}: {exc.reason}")]
        ) from None
    checker.unknown_fields(msg, _GRAPH_FIELDS, "the graph")
    inputs = checker.graph_streams(msg, "input_stream")
    outputs = checker.graph_streams(msg, "output_stream")
    for field_name, streams in (("input_stream", inputs), ("output_stream", outputs)):
        if not streams and not msg.all(field_name):
            checker.fail(
                1, f"the graph has no {field_name}: at least one OVMS_PY_TENSOR {field_name} is needed"
            )
    node_fields = msg.all("node")
    if not node_fields:
        checker.fail(1, "the graph has no node")
    nodes = [n for i, f in enumerate(node_fields) if (n := checker.node(f, i)) is not None]
    names: dict[str, Node] = {}
    for node in nodes:
        if node.name in names:
            checker.fail(
                node.line, f"duplicate node name {node.name!r} (also on line {names[node.name].line})"
            )
        names[node.name] = node
    ordered = checker.order(inputs, outputs, nodes) if not checker.problems else []
    if checker.problems:
        raise GraphError(path, checker.problems)
    return Graph(path=path, inputs=tuple(inputs), outputs=tuple(outputs), nodes=tuple(ordered))
