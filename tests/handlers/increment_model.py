"""Adds 1 to every element of its numeric input; also reports the initialize kwargs it got and counts
its calls in a prometheus_client metric (which the server's /metrics must show)."""

import json

import numpy as np
from prometheus_client import Counter
from pyovms import Tensor

EXECUTIONS = Counter("test_increment_executions", "execute calls of the increment test servable")


class OvmsPythonModel:
    def initialize(self, kwargs):
        self.kwargs = kwargs
        self.output_name = kwargs["output_names"][0]

    def execute(self, inputs):
        EXECUTIONS.inc()
        (tensor,) = inputs
        result = np.array(tensor) + 1
        return [
            Tensor(self.output_name, result),
            Tensor("kwargs", json.dumps(self.kwargs, sort_keys=True).encode()),
        ]
