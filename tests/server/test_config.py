"""Reading config.json: where each graph file is looked for, as OVMS does it."""

from __future__ import annotations

import json

from local_ovms.config import load_config


def test_graph_paths_resolve_as_in_ovms(tmp_path):
    root = tmp_path.resolve()
    entries = [
        {"name": "relative_graph", "base_path": "models/a", "graph_path": "a.pbtxt"},
        {"name": "empty_base", "base_path": ""},
        {"name": "no_base"},
        {"name": "dot_base", "base_path": "."},
        {"name": "absolute_graph", "base_path": "elsewhere", "graph_path": str(root / "abs.pbtxt")},
    ]
    config = root / "config.json"
    config.write_text(json.dumps({"model_config_list": [], "mediapipe_config_list": entries}))
    assert {g.name: g.graph_path for g in load_config(config).graphs} == {
        "relative_graph": root / "models" / "a" / "a.pbtxt",
        "empty_base": root / "empty_base" / "graph.pbtxt",
        "no_base": root / "no_base" / "graph.pbtxt",
        "dot_base": root / "graph.pbtxt",
        "absolute_graph": root / "abs.pbtxt",
    }
