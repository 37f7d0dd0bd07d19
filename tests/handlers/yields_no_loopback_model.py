"""Bad: yields, but its graph has no LOOPBACK."""

from pyovms import Tensor


class OvmsPythonModel:
    def execute(self, inputs):
        yield [Tensor("output", b"x")]
