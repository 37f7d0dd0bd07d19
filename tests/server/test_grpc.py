"""KServe gRPC against a real local_ovms subprocess, with tritonclient on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from local_ovms.errors import ALREADY_PROCESSING
from tests.conftest import wait_until
from tests.server.graphs import STANDARD_GRAPHS, write_config
from tests.server.streams import Stream, bytes_input, numpy_input

MAX_MESSAGE_MB = 1


@pytest.fixture(scope="module")
def markers(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
def server(ovms_server_module, tmp_path_factory, markers):
    config = write_config(tmp_path_factory.mktemp("graphs"), STANDARD_GRAPHS)
    return ovms_server_module(
        config,
        env={"LOCAL_OVMS_TEST_MARKERS": str(markers)},
        args=["--max_message_mb", str(MAX_MESSAGE_MB)],
    )


@pytest.fixture
def client(server):
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        yield c


@pytest.fixture
def stub(server):
    with grpc.insecure_channel(server.grpc_url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def count_input(n: int, delay_ms: int) -> grpcclient.InferInput:
    return numpy_input("count", np.array([n, delay_ms], dtype=np.int32))


def infer_error(client, model, inputs) -> grpcclient.InferenceServerException:
    with pytest.raises(grpcclient.InferenceServerException) as info:
        client.infer(model, inputs)
    return info.value


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.get_server_metadata().name == "local_ovms"
    assert client.is_model_ready("increment")
    assert client.is_model_ready("count", "1")
    metadata = client.get_model_metadata("concat")
    assert [i.name for i in metadata.inputs] == ["second", "first"]
    assert [o.name for o in metadata.outputs] == ["joined", "order"]


def test_unary_increment_and_initialize_kwargs(client, server):
    result = client.infer("increment", [numpy_input("input", np.array([[1, 2, 3]], dtype=np.int32))])
    np.testing.assert_array_equal(result.as_numpy("output"), [[2, 3, 4]])
    kwargs = json.loads(result.as_numpy("kwargs").tobytes())
    assert kwargs == {
        "node_name": "python_node",
        "input_names": ["input"],
        "output_names": ["output", "kwargs"],
        "base_path": str(Path(__file__).resolve().parents[1] / "handlers"),
    }
    floats = client.infer("increment", [numpy_input("input", np.array([0.5, 1.5], dtype=np.float32))])
    np.testing.assert_array_equal(floats.as_numpy("output"), np.array([1.5, 2.5], dtype=np.float32))


def test_unary_inputs_arrive_sorted_by_node_tag(client):
    first = bytes_input("first", "héllo".encode())
    second = numpy_input("second", np.array([b"w"], dtype=object))
    result = client.infer("concat", [second, first])
    assert result.as_numpy("order").tobytes() == b"first,second"
    assert result.as_numpy("joined").tobytes() == "héllo|".encode() + b"\x01\x00\x00\x00w"
    assert result.get_output("joined").datatype == "UINT8"


def test_handler_imports_a_helper_module_next_to_it(client):
    result = client.infer("helper", [bytes_input("input", b"hey")])
    assert result.as_numpy("output").tobytes() == b"HEY!"


def test_handlers_with_the_same_file_name_collide(client):
    assert client.is_model_ready("increment")
    error = infer_error(client, "collision", [bytes_input("input", b"x")])
    assert error.status() == "StatusCode.UNAVAILABLE"
    assert "already taken by" in error.message() and "rename the file" in error.message()


def test_unknown_model_is_not_found(client):
    error = infer_error(client, "nope", [bytes_input("input", b"x")])
    assert error.status() == "StatusCode.NOT_FOUND"
    assert "'nope' not found" in error.message()
    with pytest.raises(grpcclient.InferenceServerException, match="not found"):
        client.is_model_ready("nope")


def test_model_whose_initialize_raised_is_unavailable_with_the_reason(client):
    assert not client.is_model_ready("init_raises")
    error = infer_error(client, "init_raises", [bytes_input("input", b"x")])
    assert error.status() == "StatusCode.UNAVAILABLE"
    assert "initialize raised RuntimeError: model files missing: cannot start" in error.message()


def test_model_whose_import_exited_is_unavailable_and_the_server_goes_on(client):
    assert not client.is_model_ready("import_exits")
    error = infer_error(client, "import_exits", [bytes_input("input", b"x")])
    assert error.status() == "StatusCode.UNAVAILABLE"
    assert "import_exits_model.py failed: SystemExit: 2" in error.message()
    assert client.is_model_ready("increment")


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ([], "missing input 'input'"),
        ([bytes_input("input", b"1"), bytes_input("extra", b"2")], "unexpected input 'extra'"),
        ([bytes_input("input", b"1"), bytes_input("input", b"2")], "input 'input' is given twice"),
    ],
    ids=["missing", "extra", "twice"],
)
def test_wrong_inputs_are_invalid_argument_naming_them(client, inputs, message):
    error = infer_error(client, "execute_raises", inputs)
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in error.message()


def test_bytes_that_do_not_match_datatype_and_shape_are_refused(stub):
    request = pb.ModelInferRequest(model_name="increment")
    request.inputs.add(name="input", datatype="INT32", shape=[3])
    request.raw_input_contents.append(b"\0" * 8)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "INT32 with shape [3] needs 12 bytes, got 8" in info.value.details()


def test_typed_contents_are_accepted(stub):
    request = pb.ModelInferRequest(model_name="increment")
    spec = request.inputs.add(name="input", datatype="INT64", shape=[2])
    spec.contents.int64_contents.extend([41, -2])
    response = stub.ModelInfer(request)
    assert np.frombuffer(response.raw_output_contents[0], dtype=np.int64).tolist() == [42, -1]


def test_typed_contents_that_do_not_fit_their_datatype_are_refused(stub):
    request = pb.ModelInferRequest(model_name="increment")
    request.inputs.add(name="input", datatype="INT8", shape=[1]).contents.int_contents.append(300)
    with pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'input': contents do not fit INT8" in info.value.details()


def test_bad_contents_on_a_stream_get_an_error_and_the_stream_goes_on(stub):
    bad = pb.ModelInferRequest(model_name="count", id="bad")
    bad.inputs.add(name="count", datatype="INT8", shape=[2]).contents.int_contents.extend([300, 0])
    good = pb.ModelInferRequest(model_name="count", id="good")
    good.inputs.add(name="count", datatype="INT32", shape=[2]).contents.int_contents.extend([1, 0])
    responses = list(stub.ModelStreamInfer(iter([bad, good]), timeout=10))
    assert "contents do not fit INT8" in responses[0].error_message
    assert responses[0].infer_response.id == "bad"
    assert [r.infer_response.outputs[0].name for r in responses[1:]] == ["number", "done"]


@pytest.mark.parametrize(
    ("model", "value", "message"),
    [
        ("execute_raises", b"bad", "input: 'bad' is not accepted"),
        ("execute_raises", b"exit", "execute called sys.exit"),
        ("wrong_return", b"dict", "execute must return or yield a list of pyovms.Tensor, got dict"),
        ("wrong_return", b"str", "a list holding str"),
        ("wrong_return", b"none", "got NoneType"),
        ("unknown_output", b"x", "output 'no_such_output' is not one of the node's outputs (output)"),
        ("yields_no_loopback", b"x", "has no LOOPBACK"),
        ("count", b"x", "use the streaming gRPC call ModelStreamInfer"),
    ],
)
def test_failing_execute_fails_the_request_and_the_server_goes_on(client, model, value, message):
    error = infer_error(client, model, [bytes_input("count" if model == "count" else "input", value)])
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in error.message()
    assert client.infer("execute_raises", [bytes_input("input", b"ok")]).as_numpy("output").tobytes() == b"ok"


def test_oversized_message_is_refused_and_the_server_goes_on(client):
    too_big = np.zeros(MAX_MESSAGE_MB * 1024 * 1024 // 4 + 1024, dtype=np.int32)
    error = infer_error(client, "increment", [numpy_input("input", too_big)])
    assert error.status() == "StatusCode.RESOURCE_EXHAUSTED"
    result = client.infer("increment", [numpy_input("input", np.array([1], dtype=np.int32))])
    assert result.as_numpy("output").tolist() == [2]


def test_oversized_message_on_a_stream_is_refused(server):
    stream = Stream(server.grpc_url)
    try:
        too_big = np.zeros(MAX_MESSAGE_MB * 1024 * 1024 // 4 + 1024, dtype=np.int32)
        stream.send("count", [numpy_input("count", too_big)])
        error = stream.next().error
    finally:
        stream.close()
    assert "RESOURCE_EXHAUSTED" in error or "larger than max" in error


def test_stream_yields_each_packet_as_its_own_response_with_timestamps(server):
    stream = Stream(server.grpc_url)
    try:
        stream.send("count", [count_input(5, 0)], request_id="r1")
        events = stream.until("done")
    finally:
        stream.close()
    assert [e.output for e in events] == ["number"] * 5 + ["done"]
    assert [np.frombuffer(e.data, np.int32)[0] for e in events[:5]] == [0, 1, 2, 3, 4]
    assert events[0].datatype == "INT32" and events[0].shape == [1]
    assert events[-1].data == b"complete"
    assert [e.timestamp for e in events] == list(range(6))
    assert {e.request_id for e in events} == {"r1"}


def test_client_timestamps_must_increase(server):
    stream = Stream(server.grpc_url)
    try:
        # The generator's last step (the one that ends it) uses timestamp 103.
        stream.send("count", [count_input(2, 0)], parameters={"OVMS_MP_TIMESTAMP": 100})
        assert [e.timestamp for e in stream.until("done")] == [100, 101, 102]
        stream.send("count", [count_input(1, 0)], parameters={"OVMS_MP_TIMESTAMP": 50})
        assert "OVMS_MP_TIMESTAMP must increase on a stream: got 50 after 103" in stream.next().error
        stream.send("count", [count_input(1, 0)])
        assert [e.timestamp for e in stream.until("done")] == [104, 105]
    finally:
        stream.close()


def test_timestamps_follow_mediapipes_range(server):
    stream = Stream(server.grpc_url)
    try:
        stream.send("count", [count_input(1, 0)], parameters={"OVMS_MP_TIMESTAMP": -5})
        assert [e.timestamp for e in stream.until("done")] == [-5, -4]
        stream.send("count", [count_input(1, 0)], parameters={"OVMS_MP_TIMESTAMP": 2**63 - 1})
        assert f"OVMS_MP_TIMESTAMP {2**63 - 1} is outside" in stream.next().error
        # Timestamp::Max() is 2**63 - 4: the third step would pass it.
        stream.send("count", [count_input(3, 0)], parameters={"OVMS_MP_TIMESTAMP": 2**63 - 5})
        events = stream.until("done")
        assert [e.timestamp for e in events[:2]] == [2**63 - 5, 2**63 - 4]
        assert "timestamps reached their maximum" in events[2].error
        stream.send("count", [count_input(1, 0)])
        assert [e.timestamp for e in stream.until("done")] == [0, 1]
    finally:
        stream.close()


def test_request_sent_right_after_the_last_output_is_served(server):
    stream = Stream(server.grpc_url)
    try:
        for i in range(30):
            stream.send("count", [count_input(2, 0)], request_id=str(i))
            events = stream.until("done")
            assert [e.error for e in events] == [None] * 3
            assert events[-1].request_id == str(i)
    finally:
        stream.close()


def test_chained_python_nodes_stream(server):
    stream = Stream(server.grpc_url)
    try:
        stream.send("chain", [bytes_input("text", b"hello big world")])
        events = stream.until("finished")
    finally:
        stream.close()
    assert [(e.output, e.data) for e in events] == [
        ("upper", b"HELLO"),
        ("upper", b"BIG"),
        ("upper", b"WORLD"),
        ("finished", b"1"),
    ]


def test_stream_error_then_the_same_stream_serves_again(server):
    stream = Stream(server.grpc_url)
    try:
        stream.send("execute_raises", [bytes_input("input", b"bad")])
        assert stream.next().error == "input: 'bad' is not accepted"
        stream.send("execute_raises", [bytes_input("input", b"good")])
        assert stream.next().data == b"good"
        stream.send("increment", [bytes_input("input", b"1")])
        assert "this stream serves model 'execute_raises'" in stream.next().error
    finally:
        stream.close()


def test_unknown_model_on_a_stream_ends_it_with_not_found(server):
    stream = Stream(server.grpc_url)
    try:
        stream.send("nope", [bytes_input("input", b"x")])
        error = stream.next().error
    finally:
        stream.close()
    assert "'nope' not found" in error


def test_new_data_while_generating_is_resource_exhausted(server):
    stream = Stream(server.grpc_url)
    try:
        stream.send("count", [count_input(10, 20)], request_id="first")
        assert stream.next().output == "number"
        stream.send("count", [count_input(1, 0)], request_id="second")
        events = stream.until("done", stop_on_error=False)
    finally:
        stream.close()
    errors = [e.error for e in events if e.error]
    assert errors == [ALREADY_PROCESSING]
    assert events[-1].output == "done" and events[-1].data == b"complete"
    assert len([e for e in events if e.output == "number"]) == 9


def metrics_text(server) -> str:
    with urllib.request.urlopen(f"{server.rest_url}/metrics") as response:
        return response.read().decode()


# Numbers a count stream would send for years: only a cancel, a disconnect or a shutdown ends it.
ENDLESS = 2**31 - 1


def _wait_for_closed_generators(markers: Path, before: set[Path], count: int = 1) -> None:
    wait_until(
        lambda: len(set(markers.glob("closed-*")) - before) >= count,
        f"{count} handler generator(s) got GeneratorExit",
    )


def test_cancel_mid_stream_closes_the_generator(server, markers):
    before = set(markers.glob("closed-*"))
    stream = Stream(server.grpc_url)
    stream.send("count", [count_input(ENDLESS, 20)])
    for _ in range(5):
        assert stream.next().output == "number"
    stream.close(cancel=True)
    _wait_for_closed_generators(markers, before)
    with urllib.request.urlopen(f"{server.rest_url}/metrics") as response:
        assert (
            'ovms_requests_total{api="grpc_stream",model="count",status="CANCELLED"}'
            in response.read().decode()
        )


def test_client_disconnect_closes_the_generator(server, markers):
    before = set(markers.glob("closed-*"))
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, tritonclient.grpc as g
        client = g.InferenceServerClient("{server.grpc_url}")
        client.start_stream(callback=lambda result, error: print("got", flush=True))
        count = g.InferInput("count", [2], "INT32")
        count.set_data_from_numpy(np.array([{ENDLESS}, 20], dtype=np.int32))
        client.async_stream_infer("count", [count])
        sys.stdin.read()
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        for _ in range(3):
            assert child.stdout.readline() == b"got\n"
        os.kill(child.pid, signal.SIGKILL)
        _wait_for_closed_generators(markers, before)
    finally:
        child.kill()
        child.wait()


def test_64_concurrent_streams_each_with_its_own_graph_instance(server, markers):
    # Each stream counts for years: all 64 sending at once shows they run side by side (one after
    # another, the second would never start).
    n_streams, numbers = 64, 3
    before = set(markers.glob("closed-*"))
    streams = [Stream(server.grpc_url) for _ in range(n_streams)]
    try:
        for stream in streams:
            stream.send("count", [count_input(ENDLESS, 20)])
        for stream in streams:
            events = [stream.next() for _ in range(numbers)]
            assert [np.frombuffer(e.data, np.int32)[0] for e in events] == list(range(numbers)), events
    finally:
        for stream in streams:
            stream.close(cancel=True)
    _wait_for_closed_generators(markers, before, n_streams)


def test_metrics_count_requests_streams_and_servable_metrics(server, client):
    client.infer("increment", [numpy_input("input", np.array([1], dtype=np.int32))])
    stream = Stream(server.grpc_url)
    try:
        stream.send("count", [count_input(3, 0)])
        stream.until("done")
        text = metrics_text(server)
    finally:
        stream.close()
    assert 'ovms_requests_total{api="grpc",model="increment",status="OK"}' in text
    assert 'ovms_requests_total{api="grpc_stream",model="count",status="OK"}' in text
    assert 'ovms_streamed_responses_total{model="count"}' in text
    assert 'ovms_active_streams{model="count"} 1.0' in text
    assert 'ovms_request_latency_seconds_bucket{api="grpc",le="0.005",model="increment"}' in text
    assert "process_resident_memory_bytes" in text
    assert "test_increment_executions_total" in text  # registered by the servable itself
