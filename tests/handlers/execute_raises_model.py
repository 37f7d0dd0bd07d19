"""execute raises ValueError for the input b"bad", exits for b"exit", otherwise echoes it."""

from pyovms import Tensor


class OvmsPythonModel:
    def execute(self, inputs):
        if bytes(inputs[0]) == b"bad":
            raise ValueError("input: 'bad' is not accepted")
        if bytes(inputs[0]) == b"exit":
            raise SystemExit("execute called sys.exit")
        return [Tensor("output", bytes(inputs[0]))]
