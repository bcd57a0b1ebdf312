"""pybox: run untrusted Python in a kernel sandbox, on this machine or on a pybox server.

    from pybox import Sandbox

    sb = Sandbox()                               # local: drives the `pybox` binary
    sb = Sandbox(url="http://127.0.0.1:8080", api_key="...")   # remote: a `pybox serve`
    sb = Sandbox.from_env()                      # PYBOX_SERVER set: remote, else local

    r = sb.run("print(6 * 7)")
    r.success, r.status, r.exit_code, r.stdout  # True, "ok", 0, "42\\n"

    with sb.session() as s:                      # state kept between runs
        s.run("x = 6")
        s.run("x * 7").value.text                # "42"

    for ev in sb.stream("print(1); print(2)"):   # events as they happen
        print(ev.kind, ev.text)

A script that fails is a Result (see Result.status), never an exception; the exceptions in
pybox.errors mean the request itself failed (server unreachable, bad key, rate limit, ...).
Standard library only.
"""
from . import errors
from ._result import Event, Output, Result
from ._sandbox import Sandbox
from ._session import FileInfo, Session, SessionFiles
from .errors import (BinaryNotFound, ConnectionError, Forbidden, InvalidRequest,  # noqa: F401
                     PyboxConnectionError, PyboxError, RateLimited, RequestTooLarge,
                     ServerBusy, ServerError, SessionBusy, SessionDead, TooManySessions,
                     Unauthorized, Unsupported)

__version__ = "0.1.0"

# ConnectionError is left out so that `from pybox import *` never shadows the builtin; it is
# pybox.ConnectionError, also exported as PyboxConnectionError.
__all__ = [
    "Sandbox", "Result", "Output", "Event", "Session", "SessionFiles", "FileInfo", "errors", "PyboxError", "PyboxConnectionError", "InvalidRequest",
    "RequestTooLarge", "Unauthorized", "Forbidden", "RateLimited", "ServerBusy", "ServerError",
    "Unsupported", "BinaryNotFound", "TooManySessions", "SessionBusy", "SessionDead",
    "__version__",
]
