"""pyovms.Tensor as the contract describes it: buffer protocol, attributes, datatype mapping, overrides."""

import array
import importlib
import sys

import numpy as np
import pytest

from local_ovms import kserve
from local_ovms.handler import resolve_pyovms
from local_ovms.pyovms import Tensor


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [
        (np.bool_, "BOOL"),
        (np.uint8, "UINT8"),
        (np.uint16, "UINT16"),
        (np.uint32, "UINT32"),
        (np.int8, "INT8"),
        (np.int16, "INT16"),
        (np.int32, "INT32"),
        (np.float16, "FP16"),
        (np.float32, "FP32"),
        (np.float64, "FP64"),
    ],
)
def test_datatype_follows_the_buffer_format(dtype, datatype):
    values = np.arange(6).reshape(2, 3).astype(dtype)
    tensor = Tensor("x", values)
    assert tensor.datatype == datatype
    assert tensor.shape == (2, 3)
    assert tensor.size == values.nbytes
    np.testing.assert_array_equal(np.array(tensor), values)
    assert np.array(tensor).dtype == values.dtype


@pytest.mark.parametrize(
    ("code", "datatype"), [("q", "INT64"), ("Q", "UINT64"), ("b", "INT8"), ("d", "FP64")]
)
def test_struct_codes_q_and_Q_map_to_64_bit_types(code, datatype):
    assert Tensor("x", array.array(code, [1, 2, 3])).datatype == datatype


def test_unknown_format_becomes_the_datatype_as_is():
    assert Tensor("x", memoryview(b"abcd").cast("c")).datatype == "c"


def test_text_goes_out_as_uint8_with_its_length():
    tensor = Tensor("completion", "héllo".encode())
    assert (tensor.name, tensor.datatype, tensor.shape, tensor.size) == ("completion", "UINT8", (6,), 6)
    assert bytes(tensor) == "héllo".encode()
    assert memoryview(tensor).format == "B"
    assert bytes(tensor.data) == "héllo".encode()
    assert isinstance(tensor.data, memoryview)


def test_shape_and_datatype_overrides_reshape_nothing():
    tensor = Tensor("x", np.arange(6, dtype=np.int32), shape=(3, 2), datatype="MY_TYPE")
    assert tensor.shape == (3, 2)
    assert tensor.datatype == "MY_TYPE"
    assert memoryview(tensor).shape == (6,)
    assert np.array(tensor).shape == (6,)


def test_tensor_is_not_an_array_for_arithmetic():
    with pytest.raises(TypeError):
        Tensor("x", b"ab") + 1  # noqa: B018


def test_request_bytes_become_a_flat_byte_buffer_keeping_shape_and_datatype():
    raw = kserve.serialize_bytes_elements([b"one", b"three"])
    tensor = kserve.make_tensor(Tensor, "words", "BYTES", [2], raw)
    assert (tensor.datatype, tensor.shape) == ("BYTES", (2,))
    assert tensor.data.shape == (len(raw),)
    assert bytes(tensor) == b"\x03\x00\x00\x00one\x05\x00\x00\x00three"


def test_request_numbers_get_their_format_and_shape():
    raw = np.array([[1.5, 2.5]], dtype=np.float32).tobytes()
    tensor = kserve.make_tensor(Tensor, "x", "FP32", [1, 2], raw)
    assert memoryview(tensor).format == "f"
    assert tensor.shape == (1, 2)
    np.testing.assert_array_equal(np.array(tensor), [[1.5, 2.5]])


@pytest.mark.parametrize(
    ("datatype", "dtype", "code"), [("INT64", np.int64, "q"), ("UINT64", np.uint64, "Q")]
)
def test_request_64_bit_integers_keep_their_datatype_when_echoed(datatype, dtype, code):
    tensor = kserve.make_tensor(Tensor, "x", datatype, [2], np.array([1, 2], dtype=dtype).tobytes())
    assert tensor.data.format == code
    assert Tensor("echo", tensor.data).datatype == datatype


def test_request_bytes_that_do_not_add_up_are_refused():
    with pytest.raises(Exception, match="needs 12 bytes, got 8"):
        kserve.make_tensor(Tensor, "x", "INT32", [3], b"\0" * 8)


def test_pyovms_module_is_provided_when_no_real_one_exists(monkeypatch):
    monkeypatch.delitem(sys.modules, "pyovms", raising=False)
    module = resolve_pyovms()
    assert importlib.import_module("pyovms") is module
    assert module.Tensor is Tensor
