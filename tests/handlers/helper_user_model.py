"""Imports a helper module that sits next to it."""

import shout_helper
from pyovms import Tensor


class OvmsPythonModel:
    def execute(self, inputs):
        return [Tensor("output", shout_helper.shout(bytes(inputs[0])))]
