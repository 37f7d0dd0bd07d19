"""Generative, ended by the test: input ``gate`` = a file path (UTF-8) yields ``number`` 0, then waits
until that file exists and yields ``done`` = b"complete", so an answer lasts exactly as long as the
test wants, however fast the machine. After finalize() it yields ``done`` = b"shutdown" at once, as the
real servable does."""

import threading
from pathlib import Path

import numpy as np
from pyovms import Tensor


class OvmsPythonModel:
    def initialize(self, kwargs):
        self.stopping = threading.Event()

    def execute(self, inputs):
        gate = Path(bytes(inputs[0]).decode())
        yield [Tensor("number", np.array([0], dtype=np.int32))]
        while not gate.exists():
            if self.stopping.wait(0.01):
                yield [Tensor("done", b"shutdown")]
                return
        yield [Tensor("done", b"complete")]

    def finalize(self):
        self.stopping.set()
