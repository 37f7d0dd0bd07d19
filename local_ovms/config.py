"""Reading an OVMS ``config.json``: the MediaPipe graphs to serve.

Only ``mediapipe_config_list`` entries are served. Entries of a non-empty ``model_config_list`` are
kept as refused models (their infer calls say why) so the graphs of the same file still load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ONLY_GRAPHS = (
    "model_config_list entries are not served: this server serves MediaPipe graphs only "
    "(mediapipe_config_list)"
)


class ConfigError(Exception):
    """The config file cannot be used at all (unreadable, not JSON, wrong shape)."""


@dataclass(frozen=True)
class GraphEntry:
    """One ``mediapipe_config_list`` entry with its paths resolved."""

    name: str
    graph_path: Path


@dataclass
class ServerConfig:
    """What a config file asks for: graphs to load, model names refused, and entries skipped."""

    graphs: list[GraphEntry] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _resolve(root: Path, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else root / path


def _graph_entry(root: Path, index: int, entry: Any, problems: list[str]) -> GraphEntry | None:
    where = f"mediapipe_config_list[{index}]"
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be an object, got {type(entry).__name__}")
        return None
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        problems.append(f"{where}: missing or empty 'name'")
        return None
    for key in ("base_path", "graph_path"):
        if key in entry and not isinstance(entry[key], str):
            problems.append(f"{where} ({name!r}): '{key}' must be a string")
            return None
    # As OVMS: an empty or missing base_path is the graph's name, and a relative graph_path is
    # relative to the base path.
    base_path = _resolve(root, entry.get("base_path") or name)
    graph_path = _resolve(base_path, entry.get("graph_path") or "graph.pbtxt")
    return GraphEntry(name=name, graph_path=graph_path.resolve())


def load_config(path: Path) -> ServerConfig:
    """Read ``config.json``; a relative base_path is relative to its directory."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: the top level must be a JSON object")
    graphs = data.get("mediapipe_config_list", [])
    models = data.get("model_config_list", [])
    if not isinstance(graphs, list) or not isinstance(models, list):
        raise ConfigError(f"config file {path}: mediapipe_config_list and model_config_list must be lists")
    config = ServerConfig()
    root = path.resolve().parent
    for index, entry in enumerate(graphs):
        graph = _graph_entry(root, index, entry, config.problems)
        if graph is None:
            continue
        if graph.name in {g.name for g in config.graphs}:
            config.problems.append(f"mediapipe_config_list[{index}]: duplicate name {graph.name!r}")
            continue
        config.graphs.append(graph)
    for index, entry in enumerate(models):
        model = entry.get("config", entry) if isinstance(entry, dict) else None
        name = model.get("name") if isinstance(model, dict) else None
        config.refused[name if isinstance(name, str) and name else f"model_config_list[{index}]"] = (
            ONLY_GRAPHS
        )
    return config
