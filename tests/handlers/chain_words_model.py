"""Generative first node of a chain: yields each word of its text input as ``word``."""

from pyovms import Tensor


class OvmsPythonModel:
    def execute(self, inputs):
        for word in bytes(inputs[0]).decode().split():
            yield [Tensor("word", word.encode())]
        yield [Tensor("finished", b"1")]
