"""Second node of a chain: upper-cases each ``word`` it gets into ``upper``."""

from pyovms import Tensor


class OvmsPythonModel:
    def execute(self, inputs):
        return [Tensor("upper", bytes(inputs[0]).upper())]
