"""KServe v2 REST (JSON, BYTES, binary extension) and /metrics against a real local_ovms subprocess."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import requests

from tests.server.graphs import STANDARD_GRAPHS, write_config

MAX_MESSAGE_MB = 1


@pytest.fixture(scope="module")
def url(ovms_server_module, tmp_path_factory):
    config = write_config(tmp_path_factory.mktemp("graphs"), STANDARD_GRAPHS)
    return ovms_server_module(config, args=["--max_message_mb", str(MAX_MESSAGE_MB)]).rest_url


def infer(url: str, model: str, inputs: list[dict], **extra) -> requests.Response:
    return requests.post(f"{url}/v2/models/{model}/infer", json={"inputs": inputs, **extra}, timeout=10)


def test_health_and_metadata(url):
    assert requests.get(f"{url}/v2/health/live", timeout=5).status_code == 200
    assert requests.get(f"{url}/v2/health/ready", timeout=5).status_code == 200
    assert requests.get(f"{url}/v2/models/increment/ready", timeout=5).status_code == 200
    assert requests.get(f"{url}/v2/models/increment/versions/1/ready", timeout=5).status_code == 200
    assert requests.get(f"{url}/v2", timeout=5).json()["name"] == "local_ovms"
    metadata = requests.get(f"{url}/v2/models/chain", timeout=5).json()
    assert metadata["name"] == "chain"
    assert [i["name"] for i in metadata["inputs"]] == ["text"]
    assert [o["name"] for o in metadata["outputs"]] == ["upper", "finished"]


def test_not_ready_model_says_why(url):
    response = requests.get(f"{url}/v2/models/init_raises/ready", timeout=5)
    assert response.status_code == 503
    assert "model files missing" in response.json()["error"]
    response = infer(url, "init_raises", [])
    assert response.status_code == 503
    assert "model files missing" in response.json()["error"]


def test_json_numbers(url):
    response = infer(
        url, "increment", [{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4.5]]}]
    )
    assert response.status_code == 200, response.text
    (output,) = [o for o in response.json()["outputs"] if o["name"] == "output"]
    assert output == {"name": "output", "datatype": "FP32", "shape": [2, 2], "data": [2.0, 3.0, 4.0, 5.5]}


def test_json_bytes_arrive_length_prefixed_and_sorted_by_tag(url):
    response = infer(
        url,
        "concat",
        [
            {"name": "second", "shape": [1], "datatype": "BYTES", "data": ["wörld"]},
            {"name": "first", "shape": [2], "datatype": "BYTES", "data": ["a", "bc"]},
        ],
        id="req-7",
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "req-7"
    outputs = {o["name"]: o for o in body["outputs"]}
    expected = b"\x01\0\0\0a\x02\0\0\0bc|" + struct.pack("<I", 6) + "wörld".encode()
    assert bytes(outputs["joined"]["data"]) == expected
    assert bytes(outputs["order"]["data"]) == b"first,second"


def test_binary_data_extension(url):
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [3], "datatype": "INT32", "parameters": {"binary_data_size": 12}}
            ]
        }
    ).encode()
    response = requests.post(
        f"{url}/v2/models/increment/infer",
        data=header + np.array([7, 8, 9], dtype=np.int32).tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [8, 9, 10]


def test_requested_outputs_only(url):
    response = infer(
        url,
        "increment",
        [{"name": "input", "shape": [1], "datatype": "INT8", "data": [1]}],
        outputs=[{"name": "output"}],
    )
    assert [o["name"] for o in response.json()["outputs"]] == ["output"]


def body(name: str, datatype: str, shape: list[int], data: list) -> dict:
    return {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}


@pytest.mark.parametrize(
    ("model", "request_body", "status", "message"),
    [
        ("nope", {"inputs": []}, 404, "'nope' not found"),
        ("increment", {"inputs": []}, 400, "missing input 'input'"),
        ("increment", body("input", "INT32", [3], [1]), 400, "needs 12 bytes"),
        ("increment", body("input", "INT32", [1], ["x"]), 400, "must be numbers"),
        ("increment", body("x", "INT32", [1], [1]), 400, "unexpected input 'x'"),
        ("increment", {"inputs": "no"}, 400, "'inputs' must be a list"),
        ("increment", body("input", "INT32", [1], [1]) | {"outputs": 5}, 400, "'outputs' must be a list"),
        ("increment", body("input", "INT32", [1], [1]) | {"outputs": ["output"]}, 400, "list of objects"),
        ("increment", body("input", "INT32", [1], [1]) | {"parameters": [1]}, 400, "'parameters' must be an"),
        (
            "increment",
            {
                "inputs": [
                    {"name": "input", "shape": [1], "datatype": "INT32", "data": [1], "parameters": [1]}
                ]
            },
            400,
            "input 'input': 'parameters' must be an object",
        ),
        ("execute_raises", body("input", "UINT8", [3], [98, 97, 100]), 400, "'bad' is not accepted"),
        ("unknown_output", body("input", "UINT8", [1], [1]), 400, "no_such_output"),
        ("count", {"inputs": []}, 400, "ModelStreamInfer"),
    ],
)
def test_bad_requests_get_a_clear_error(url, model, request_body, status, message):
    response = requests.post(f"{url}/v2/models/{model}/infer", json=request_body, timeout=10)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_malformed_json_and_oversized_body(url):
    response = requests.post(f"{url}/v2/models/increment/infer", data=b"{not json", timeout=10)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]
    response = requests.post(
        f"{url}/v2/models/increment/infer",
        data=b"{}",
        headers={"Inference-Header-Content-Length": "\N{SUPERSCRIPT TWO}".encode("latin-1")},
        timeout=10,
    )
    assert response.status_code == 400
    assert "bad inference-header-content-length header" in response.json()["error"]
    response = requests.post(
        f"{url}/v2/models/increment/infer", data=b" " * (MAX_MESSAGE_MB * 1024 * 1024 + 1), timeout=10
    )
    assert response.status_code == 413
    assert "exceeds the limit" in response.json()["error"]
    assert requests.get(f"{url}/v2/health/ready", timeout=5).status_code == 200


def test_metrics_count_rest_requests(url):
    infer(url, "increment", [{"name": "input", "shape": [1], "datatype": "INT32", "data": [1]}])
    infer(url, "nope", [])
    text = requests.get(f"{url}/metrics", timeout=5).text
    assert 'ovms_requests_total{api="rest",model="increment",status="OK"}' in text
    assert 'ovms_requests_total{api="rest",model="<unknown>",status="NOT_FOUND"}' in text


def test_non_finite_float_outputs_are_sent(url):
    header = json.dumps(
        {
            "inputs": [
                {"name": "input", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}
            ]
        }
    ).encode()
    response = requests.post(
        f"{url}/v2/models/increment/infer",
        data=header + np.array([np.nan, np.inf], dtype=np.float32).tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header))},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    data = response.json()["outputs"][0]["data"]
    assert np.isnan(data[0]) and data[1] == float("inf")
