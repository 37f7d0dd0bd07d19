"""A small tritonclient streaming helper for the server tests."""

from __future__ import annotations

import queue
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from local_ovms.kserve import TIMESTAMP_PARAM
from tests.conftest import LIVENESS_S


def bytes_input(name: str, value: bytes) -> grpcclient.InferInput:
    """A BYTES [1] input whose raw content is ``value`` as is (as the reference demo's client sends)."""
    tensor = grpcclient.InferInput(name, [1], "BYTES")
    tensor._raw_content = value
    return tensor


def numpy_input(name: str, values: np.ndarray) -> grpcclient.InferInput:
    """An input holding a numpy array."""
    tensor = grpcclient.InferInput(name, list(values.shape), grpcclient.np_to_triton_dtype(values.dtype))
    tensor.set_data_from_numpy(values)
    return tensor


@dataclass
class Event:
    """One stream response: the output (name, bytes, datatype, shape, timestamp) or an error message."""

    output: str | None = None
    data: bytes = b""
    datatype: str = ""
    shape: list[int] = field(default_factory=list)
    timestamp: int | None = None
    request_id: str = ""
    error: str | None = None


class Stream:
    """A tritonclient stream whose responses are collected into a queue of Events."""

    def __init__(self, url: str) -> None:
        self.client = grpcclient.InferenceServerClient(url)
        self.events: queue.Queue[Event] = queue.Queue()
        self.client.start_stream(callback=self._on_response)

    def _on_response(self, result: Any, error: Any) -> None:
        if error is not None:
            self.events.put(Event(error=error.message()))
            return
        response = result.get_response()
        (output,) = response.outputs
        self.events.put(
            Event(
                output=output.name,
                data=response.raw_output_contents[0],
                datatype=output.datatype,
                shape=list(output.shape),
                timestamp=response.parameters[TIMESTAMP_PARAM].int64_param,
                request_id=response.id,
            )
        )

    def send(
        self, model: str, inputs: list[grpcclient.InferInput], request_id: str = "", **kwargs: Any
    ) -> None:
        self.client.async_stream_infer(model, inputs, request_id=request_id, **kwargs)

    def next(self, timeout: float = LIVENESS_S) -> Event:
        return self.events.get(timeout=timeout)

    def until(self, output: str, timeout: float = LIVENESS_S, stop_on_error: bool = True) -> list[Event]:
        """Events up to and including the first one of ``output`` (or the first error)."""
        events = []
        while True:
            event = self.next(timeout)
            events.append(event)
            if event.output == output or (stop_on_error and event.error is not None):
                return events

    def close(self, cancel: bool = False) -> None:
        self.client.stop_stream(cancel_requests=cancel)
        self.client.close()
