"""Adds 1 to every element of its numeric input; also reports the initialize kwargs it got."""

import json

import numpy as np
from pyovms import Tensor


class OvmsPythonModel:
    def initialize(self, kwargs):
        self.kwargs = kwargs
        self.output_name = kwargs["output_names"][0]

    def execute(self, inputs):
        (tensor,) = inputs
        result = np.array(tensor) + 1
        return [
            Tensor(self.output_name, result),
            Tensor("kwargs", json.dumps(self.kwargs, sort_keys=True).encode()),
        ]
