"""The one error type the model scripts report to the user (message only, no traceback)."""

from collections.abc import Iterator
from contextlib import contextmanager

# What the conversion libraries raise for a model they cannot handle (bad config, missing files, ...).
LIBRARY_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError, ImportError)


class ModelPrepError(Exception):
    """A problem the user can act on; the scripts print its message and exit with status 2."""


@contextmanager
def reported_as(what: str) -> Iterator[None]:
    """Turn a library's error inside the block into a ModelPrepError saying `what` failed, and why."""
    try:
        yield
    except LIBRARY_ERRORS as e:
        raise ModelPrepError(f"{what} failed: {e}") from e
