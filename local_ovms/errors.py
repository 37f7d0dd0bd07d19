"""Errors reported to clients, carrying their KServe status for gRPC and REST."""

from __future__ import annotations

import grpc

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.INTERNAL: 500,
}

ALREADY_PROCESSING = "Node is already processing data. Create new stream for another request."


class ServeError(Exception):
    """A request refused or failed, with the gRPC status code that goes with it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        """The HTTP status KServe REST uses for this error."""
        return _HTTP_STATUS.get(self.code, 500)

    @property
    def status_label(self) -> str:
        """The status name used as a metrics label."""
        return self.code.name


def describe(exc: BaseException) -> str:
    """``Type: message`` of an exception, for messages shown to operators and clients."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def internal(exc: BaseException) -> ServeError:
    """An unexpected failure in the server itself (INTERNAL), naming the exception."""
    return ServeError(grpc.StatusCode.INTERNAL, f"internal error: {describe(exc)}")


def invalid(message: str) -> ServeError:
    """A request the client got wrong (INVALID_ARGUMENT)."""
    return ServeError(grpc.StatusCode.INVALID_ARGUMENT, message)
