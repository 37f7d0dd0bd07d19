"""Concatenates the bytes of its inputs in the order it receives them (sorted by node tag)."""

from pyovms import Tensor


class OvmsPythonModel:
    def execute(self, inputs):
        joined = b"|".join(bytes(t) for t in inputs)
        names = ",".join(t.name for t in inputs)
        return [Tensor("joined", joined), Tensor("order", names.encode())]
