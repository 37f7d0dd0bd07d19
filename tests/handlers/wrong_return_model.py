"""Bad: returns something other than a list of pyovms.Tensor, chosen by the input."""

from pyovms import Tensor


class OvmsPythonModel:
    def execute(self, inputs):
        kind = bytes(inputs[0])
        if kind == b"dict":
            return {"output": Tensor("output", b"x")}
        if kind == b"str":
            return ["not a tensor"]
        return None
