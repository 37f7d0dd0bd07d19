"""Bad: names an output the node does not have."""

from pyovms import Tensor


class OvmsPythonModel:
    def execute(self, inputs):
        return [Tensor("no_such_output", b"x")]
