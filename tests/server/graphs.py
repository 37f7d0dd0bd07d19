"""Writing graphs and configs for the test servables in tests/handlers/.

Each handler file there has a unique name because OVMS imports handlers by file name
(``collision/increment_model.py`` collides on purpose). ``tests/handlers/bad_graphs/`` holds graph
files that break the contract: their first line says what the server must report, and the line
marked ``# <- error`` is the line it must name.
"""

from __future__ import annotations

import json
from pathlib import Path

HANDLERS = Path(__file__).resolve().parents[1] / "handlers"
SERVER_HANDLERS = Path(__file__).resolve().parent / "handlers"  # those only the server tests use

_LOOPBACK = """\
  input_stream: "LOOPBACK:loopback"
  output_stream: "LOOPBACK:loopback"
  input_stream_info: { tag_index: 'LOOPBACK:0', back_edge: true }
  input_stream_handler {
    input_stream_handler: "SyncSetInputStreamHandler",
    options { [mediapipe.SyncSetInputStreamHandlerOptions.ext] { sync_set { tag_index: "LOOPBACK:0" } } }
  }
"""


def node(name: str, handler: str, inputs: list[str], outputs: list[str], loopback: bool = False) -> str:
    """A PythonExecutorCalculator node running `handler` (a path in tests/handlers/, or an absolute
    one); streams get node tags from their upper-cased names."""
    streams = [f'  input_stream: "{s.upper()}:{s}"' for s in inputs]
    streams += [f'  output_stream: "{s.upper()}:{s}"' for s in outputs]
    return (
        f'node {{\n  name: "{name}"\n  calculator: "PythonExecutorCalculator"\n'
        '  input_side_packet: "PYTHON_NODE_RESOURCES:py"\n'
        + "\n".join(streams)
        + "\n"
        + (_LOOPBACK if loopback else "")
        + "  node_options: { [type.googleapis.com / mediapipe.PythonExecutorCalculatorOptions]: "
        + f'{{ handler_path: "{HANDLERS / handler}" }} }}\n}}\n'
    )


def graph(inputs: list[str], outputs: list[str], nodes: list[str]) -> str:
    """A graph text: graph-level streams tagged OVMS_PY_TENSOR_<NAME>, then the nodes."""
    lines = [f'input_stream: "OVMS_PY_TENSOR_{s.upper()}:{s}"' for s in inputs]
    lines += [f'output_stream: "OVMS_PY_TENSOR_{s.upper()}:{s}"' for s in outputs]
    return "\n".join(lines) + "\n" + "".join(nodes)


def single_node(handler: str, inputs: list[str], outputs: list[str], loopback: bool = False) -> str:
    """A graph of one node whose streams are all graph streams."""
    return graph(inputs, outputs, [node("python_node", handler, inputs, outputs, loopback)])


def write_config(directory: Path, graphs: dict[str, str | Path]) -> Path:
    """Write each graph (text, or the path of an existing file) and a config.json serving them all."""
    entries = []
    for name, text_or_path in graphs.items():
        if isinstance(text_or_path, Path):
            path = text_or_path
        else:
            path = directory / name / "graph.pbtxt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text_or_path)
        entries.append({"name": name, "base_path": str(path.parent), "graph_path": str(path)})
    config = directory / "config.json"
    config.write_text(json.dumps({"model_config_list": [], "mediapipe_config_list": entries}, indent=2))
    return config


STANDARD_GRAPHS: dict[str, str] = {
    "increment": single_node("increment_model.py", ["input"], ["output", "kwargs"]),
    "concat": graph(
        ["second", "first"],
        ["joined", "order"],
        [
            'node {\n  name: "concat"\n  calculator: "PythonExecutorCalculator"\n'
            '  input_side_packet: "PYTHON_NODE_RESOURCES:py"\n'
            '  input_stream: "B:second"\n  input_stream: "A:first"\n'
            '  output_stream: "JOINED:joined"\n  output_stream: "ORDER:order"\n'
            f"  node_options: {{ [type.googleapis.com / mediapipe.PythonExecutorCalculatorOptions]: "
            f'{{ handler_path: "{HANDLERS / "concat_model.py"}" }} }}\n}}\n'
        ],
    ),
    "count": single_node("count_model.py", ["count"], ["number", "done"], loopback=True),
    "chain": graph(
        ["text"],
        ["upper", "finished"],
        [
            node("words", "chain_words_model.py", ["text"], ["word", "finished"], loopback=True),
            node("upper", "chain_upper_model.py", ["word"], ["upper"]),
        ],
    ),
    "helper": single_node("helper_user_model.py", ["input"], ["output"]),
    "no_class": single_node("no_class_model.py", ["input"], ["output"]),
    "no_execute": single_node("no_execute_model.py", ["input"], ["output"]),
    "init_raises": single_node("init_raises_model.py", ["input"], ["output"]),
    "import_exits": single_node("import_exits_model.py", ["input"], ["output"]),
    "execute_raises": single_node("execute_raises_model.py", ["input"], ["output"]),
    "wrong_return": single_node("wrong_return_model.py", ["input"], ["output"]),
    "unknown_output": single_node("unknown_output_model.py", ["input"], ["output"]),
    "yields_no_loopback": single_node("yields_no_loopback_model.py", ["input"], ["output"]),
    "collision": single_node("collision/increment_model.py", ["input"], ["output"]),
}
"""Every test servable, by model name."""

GATE_GRAPH = single_node(str(SERVER_HANDLERS / "gate_model.py"), ["gate"], ["number", "done"], loopback=True)
"""A stream that ends when the test creates the file it names (tests/server/handlers/gate_model.py)."""
