"""Generative: input ``count`` = [n, delay_ms] yields ``number`` n times (INT32 [1]) then ``done``.

Writes marker files into $LOCAL_OVMS_TEST_MARKERS: ``closed-<first number>`` when its generator gets
GeneratorExit (the time it happened inside), ``finalized`` when finalize() runs. After finalize, running
generators yield a last ``done`` = b"shutdown" and return, as the real servable does.
"""

import os
import threading
import time
from pathlib import Path

import numpy as np
from pyovms import Tensor


def _mark(name: str) -> None:
    directory = os.environ.get("LOCAL_OVMS_TEST_MARKERS")
    if directory:
        temporary = Path(directory, f".{name}.tmp")
        temporary.write_text(repr(time.time()))
        os.replace(temporary, Path(directory, name))


class OvmsPythonModel:
    def initialize(self, kwargs):
        self.stopping = threading.Event()

    def execute(self, inputs):
        n, delay_ms = (int(v) for v in np.array(inputs[0]).reshape(-1)[:2])
        for i in range(n):
            if self.stopping.is_set():
                yield [Tensor("done", b"shutdown")]
                return
            try:
                yield [Tensor("number", np.array([i], dtype=np.int32))]
            except GeneratorExit:
                _mark(f"closed-{time.monotonic_ns()}")
                raise
            time.sleep(delay_ms / 1000)
        yield [Tensor("done", b"complete")]

    def finalize(self):
        self.stopping.set()
        _mark("finalized")
