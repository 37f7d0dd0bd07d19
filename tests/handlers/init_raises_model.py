"""Bad: initialize raises, so the graph is unavailable."""


class OvmsPythonModel:
    def initialize(self, kwargs):
        raise RuntimeError("model files missing: cannot start")

    def execute(self, inputs):
        return []
