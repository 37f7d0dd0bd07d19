"""execute raises ValueError for the input b"bad", otherwise echoes it."""

from pyovms import Tensor


class OvmsPythonModel:
    def execute(self, inputs):
        if bytes(inputs[0]) == b"bad":
            raise ValueError("input: 'bad' is not accepted")
        return [Tensor("output", bytes(inputs[0]))]
