"""Graphs that break the contract are refused with file, line and reason; good graphs still load."""

import re
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from local_ovms.graph import GraphError, load_graph
from tests.server.graphs import HANDLERS, STANDARD_GRAPHS, write_config

BAD_GRAPHS = sorted((HANDLERS / "bad_graphs").glob("*.pbtxt"))


def expectation(path: Path) -> tuple[int, str]:
    """The line marked ``# <- error`` and the reason named on the file's first line."""
    lines = path.read_text().splitlines()
    reason = re.fullmatch(r"# expect: (.*)", lines[0]).group(1)
    line = next(i for i, text in enumerate(lines, 1) if text.endswith("# <- error"))
    return line, reason


@pytest.mark.parametrize("path", BAD_GRAPHS, ids=[p.stem for p in BAD_GRAPHS])
def test_bad_graph_is_refused_naming_file_line_and_reason(path):
    line, reason = expectation(path)
    with pytest.raises(GraphError) as info:
        load_graph(path)
    assert f"{path}:{line}: " in str(info.value)
    assert reason in str(info.value)


def test_the_standard_test_graphs_are_valid(tmp_path):
    write_config(tmp_path, STANDARD_GRAPHS)
    for name in STANDARD_GRAPHS:
        assert load_graph(tmp_path / name / "graph.pbtxt").nodes


def test_server_refuses_bad_graphs_and_serves_the_others(tmp_path, ovms_server):
    graphs = {p.stem: p for p in BAD_GRAPHS} | {"increment": STANDARD_GRAPHS["increment"]}
    config = write_config(tmp_path, graphs)
    server = ovms_server(config)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_ready()
    assert client.is_model_ready("increment")
    log = server.log_text()
    for path in BAD_GRAPHS:
        line, reason = expectation(path)
        assert not client.is_model_ready(path.stem)
        assert f"{path}:{line}: " in log
        assert reason in log
        with pytest.raises(grpcclient.InferenceServerException) as info:
            client.infer(path.stem, [])
        assert info.value.status() == "StatusCode.UNAVAILABLE"
        assert reason in info.value.message()


def test_model_config_list_is_refused_while_graphs_load(tmp_path, ovms_server):
    config = write_config(tmp_path, {"increment": STANDARD_GRAPHS["increment"]})
    config.write_text(
        config.read_text().replace(
            '"model_config_list": []', '"model_config_list": [{"config": {"name": "resnet"}}]'
        )
    )
    server = ovms_server(config)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_model_ready("increment")
    assert not client.is_model_ready("resnet")
    assert "serves MediaPipe graphs only" in server.log_text()
