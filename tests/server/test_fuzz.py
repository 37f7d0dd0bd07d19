"""Random requests (hypothesis) get a result or a clean KServe error, and the server stays ready."""

from __future__ import annotations

import grpc
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.server.graphs import STANDARD_GRAPHS, write_config

MODELS = ["increment", "concat", "execute_raises", "wrong_return", "count", "init_raises", "missing"]
INPUT_NAMES = ["input", "first", "second", "count", "other"]
DATATYPES = ["BOOL", "UINT8", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES", "STRANGE"]
CLEAN_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

tensors = st.fixed_dictionaries(
    {
        "name": st.sampled_from(INPUT_NAMES),
        "datatype": st.sampled_from(DATATYPES),
        "shape": st.lists(st.integers(-2, 6), max_size=3),
        "raw": st.binary(max_size=64),
    }
)


@pytest.fixture(scope="module")
def server(ovms_server_module, tmp_path_factory):
    return ovms_server_module(write_config(tmp_path_factory.mktemp("graphs"), STANDARD_GRAPHS))


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


@FUZZ
@given(model=st.sampled_from(MODELS), inputs=st.lists(tensors, max_size=3), raw=st.booleans())
def test_random_grpc_requests_get_a_result_or_a_clean_error(stub, model, inputs, raw):
    request = pb.ModelInferRequest(model_name=model)
    for tensor in inputs:
        spec = request.inputs.add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
        if raw:
            request.raw_input_contents.append(tensor["raw"])
        else:
            spec.contents.bytes_contents.append(tensor["raw"])
    try:
        stub.ModelInfer(request, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() in CLEAN_GRPC, exc.details()
        assert exc.details()
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=12,
)
json_inputs = st.fixed_dictionaries(
    {"name": st.sampled_from(INPUT_NAMES), "datatype": st.sampled_from(DATATYPES)},
    optional={"shape": st.lists(st.integers(-2, 6), max_size=3) | json_values, "data": json_values},
)


bodies = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.lists(json_inputs, max_size=3) | json_values,
        "outputs": json_values,
        "parameters": json_values,
    },
)


@FUZZ
@given(model=st.sampled_from(MODELS), body=bodies)
def test_random_rest_requests_get_a_result_or_a_clean_error(server, model, body):
    response = requests.post(f"{server.rest_url}/v2/models/{model}/infer", json=body, timeout=10)
    assert response.status_code in (200, 400, 404, 503), response.text
    if response.status_code != 200:
        assert response.json()["error"]
    assert requests.get(f"{server.rest_url}/v2/health/ready", timeout=5).status_code == 200
