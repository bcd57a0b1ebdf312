"""The exceptions of the pybox client.

A script that fails (non-zero exit, uncaught exception, timeout, memory limit, signal, code
rejected by policy) is never an exception: it is a `Result` whose `status` says what happened.
The exceptions below mean that the request itself could not be carried out.

    PyboxError                      every error of this package
     +-- ConnectionError            the server could not be reached or did not answer
     |                              (also a builtins.ConnectionError, hence an OSError)
     +-- InvalidRequest             the request was refused as malformed (HTTP 400; local
     |    |                         `pybox run` usage errors); also a ValueError
     |    +-- RequestTooLarge       the request is over a size limit (HTTP 413)
     +-- Unauthorized               the API key is not valid or was revoked (HTTP 401)
     +-- Forbidden                  the caller's policy does not allow this (HTTP 403)
     +-- RateLimited                per-minute window or daily quota used up (HTTP 429)
     |    +-- TooManySessions       as many sessions open as the caller may have (HTTP 429)
     +-- ServerBusy                 every execution slot is busy (HTTP 503)
     +-- SessionBusy                another call of the session is running (HTTP 409)
     +-- SessionDead                the session has ended; `details["reason"]` says why (HTTP 410)
     +-- ServerError                pybox failed, or answered something unexpected (5xx)
     |    +-- Unsupported           not available on this server (HTTP 501: network asked by
     |                              a caller whose policy allows it)
     +-- BinaryNotFound             local mode: no `pybox` binary to run

Which exception a failure raises follows from its error type (`PyboxError.type`, the server's
or, in local mode, the one the server gives the same failure) by ERROR_TYPES below, a copy of
pybox's one error table (docs/design/error-handling.md), so local and remote mode raise the same
exception for the same bad request.

`ConnectionError` deliberately has the name the issue tracker and the README use; it is not
exported by `from pybox import *`, so it never shadows the builtin by accident. Write
`pybox.ConnectionError` (or `pybox.PyboxConnectionError`, the same class).
"""
from __future__ import annotations

import builtins
from typing import Any, Dict, Mapping, Optional, Tuple, Type


class PyboxError(Exception):
    """Base class of every pybox client error.

    Attributes:
        message: what went wrong, in words (the server's message when there is one).
        type: the server's error type (e.g. "ValidationError", "RateLimitExceeded"), or the
            closest equivalent in local mode; None when there is none.
        status: the HTTP status of the answer, or None (local mode, no answer at all).
        request_id: the server's X-Request-Id, when it sent one.
        details: the server's whole error object (empty when there is none).
    """

    def __init__(self, message: str, *, type: Optional[str] = None,
                 status: Optional[int] = None, request_id: Optional[str] = None,
                 details: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(message)
        self.message = message
        self.type = type
        self.status = status
        self.request_id = request_id
        self.details: dict = dict(details or {})

    def __str__(self) -> str:
        prefix = f"{self.type}: " if self.type else ""
        suffix = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{prefix}{self.message}{suffix}"


class ConnectionError(PyboxError, builtins.ConnectionError):  # noqa: A001 - named on purpose
    """The server could not be reached, closed the connection, or did not answer in time."""


PyboxConnectionError = ConnectionError


class InvalidRequest(PyboxError, ValueError):
    """The request was refused as malformed: a bad argument, file name, limit or body.

    `type` keeps the server's own type ("InvalidRequest", "ValidationError", ...).
    """


class RequestTooLarge(InvalidRequest):
    """The request is larger than the server (or `pybox run`) accepts."""


class Unauthorized(PyboxError):
    """The API key is not valid or was revoked."""


class Forbidden(PyboxError):
    """The caller's policy does not allow what was asked (e.g. network access)."""


class _RetryLater(PyboxError):
    def __init__(self, message: str, *, retry_after: Optional[int] = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RateLimited(_RetryLater):
    """The per-minute window or the daily quota is used up.

    Attributes:
        retry_after: seconds to wait before retrying (from the Retry-After header), or None.
    """


class ServerBusy(_RetryLater):
    """Every execution slot of the server is busy; retry in a moment.

    Attributes:
        retry_after: seconds to wait before retrying (from the Retry-After header), or None.
    """


class TooManySessions(RateLimited):
    """As many sessions are open as the caller (or the server) may have; one must end first.

    Attributes:
        retry_after: seconds until the first of them expires at the latest, or None.
    """


class SessionBusy(_RetryLater):
    """Another call of the session is running; a session runs one call at a time.

    Attributes:
        retry_after: seconds to wait before retrying (from the Retry-After header), or None.
    """


class SessionDead(PyboxError):
    """The session has ended (its idle time or lifetime ran out, a call was killed, it was
    deleted): `details["reason"]` says why. Its state is gone; open a new session."""


class ServerError(PyboxError):
    """pybox failed (HTTP 5xx, `pybox run` exit 125), or answered something unexpected."""


class Unsupported(ServerError):
    """Not available on this server: network access asked by a caller whose policy allows it
    (HTTP 501); pybox never gives an execution a network."""


class BinaryNotFound(PyboxError):
    """Local mode: no `pybox` binary was found (argument `binary`, env PYBOX_BIN, or PATH)."""


# The error types a pybox server answers, each with its HTTP status and the exception it
# raises: the rows of src/common/errtable.h that have a type, in its order, which
# tests/client/test_error_table.py holds this copy to. A type not here (a proxy's) raises what
# its status says (status_class()).
ERROR_TYPES: Dict[str, Tuple[int, Type[PyboxError]]] = {
    "InvalidRequest": (400, InvalidRequest),
    "ValidationError": (400, InvalidRequest),
    "SyntaxError": (400, InvalidRequest),
    "ForbiddenImportError": (400, InvalidRequest),
    "TimeoutError": (400, InvalidRequest),
    "RuntimeError": (400, InvalidRequest),
    "Unauthorized": (401, Unauthorized),
    "NetworkNotAllowed": (403, Forbidden),
    "NotFound": (404, PyboxError),
    "MethodNotAllowed": (405, PyboxError),
    "SessionBusy": (409, SessionBusy),
    "SessionDead": (410, SessionDead),
    "PayloadTooLarge": (413, RequestTooLarge),
    "UnsupportedMediaType": (415, PyboxError),
    "MisdirectedRequest": (421, PyboxError),
    "UnprocessableEntity": (422, InvalidRequest),
    "RateLimitExceeded": (429, RateLimited),
    "SessionLimitExceeded": (429, TooManySessions),
    "InternalServerError": (500, ServerError),
    "NetworkUnavailable": (501, Unsupported),
    "ServerBusy": (503, ServerBusy),
    "StoreUnavailable": (503, ServerBusy),
}


def status_class(status: Optional[int]) -> Type[PyboxError]:
    """The exception for an answer whose type says nothing: that of the first type with this
    HTTP status, else ServerError for a 5xx, else PyboxError."""
    for first_status, cls in ERROR_TYPES.values():
        if first_status == status:
            return cls
    if status is not None and 500 <= status <= 599:
        return ServerError
    return PyboxError


def error_class(type: Optional[str], status: Optional[int]) -> Type[PyboxError]:  # noqa: A002
    """The exception for a failure of error type `type` (the server's, or in local mode the
    one the server gives the same failure) and HTTP `status` (None without an answer): by the
    type when ERROR_TYPES has it, else by the status."""
    if type in ERROR_TYPES:
        return ERROR_TYPES[type][1]
    return status_class(status)
