"""The one error type the model scripts report to the user (message only, no traceback)."""


class ModelPrepError(Exception):
    """A problem the user can act on; the scripts print its message and exit with status 2."""
