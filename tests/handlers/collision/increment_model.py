"""Bad: another handler file named increment_model.py; OVMS imports handlers by file name, so it collides."""

from pyovms import Tensor


class OvmsPythonModel:
    def execute(self, inputs):
        return [Tensor("output", b"never")]
