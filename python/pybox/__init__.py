"""pybox: run untrusted Python in a kernel sandbox, on this machine or on a pybox server.

    from pybox import Sandbox

    sb = Sandbox()                               # local: drives the `pybox` binary
    sb = Sandbox(url="http://127.0.0.1:8080", api_key="...")   # remote: a `pybox serve`
    sb = Sandbox.from_env()                      # PYBOX_SERVER set: remote, else local

    r = sb.run("print(6 * 7)")
    r.success, r.status, r.exit_code, r.stdout  # True, "ok", 0, "42\\n"

A script that fails is a Result (see Result.status), never an exception; the exceptions in
pybox.errors mean the request itself failed (server unreachable, bad key, rate limit, ...).
Standard library only.
"""
from . import errors
from ._result import Result
from ._sandbox import Sandbox
from .errors import (BinaryNotFound, ConnectionError, Forbidden, InvalidRequest,  # noqa: F401
                     PyboxConnectionError, PyboxError, RateLimited, RequestTooLarge,
                     ServerBusy, ServerError, SessionBusy, SessionDead, TooManySessions,
                     Unauthorized, Unsupported)

__version__ = "0.1.0"

# ConnectionError is left out so that `from pybox import *` never shadows the builtin; it is
# pybox.ConnectionError, also exported as PyboxConnectionError.
__all__ = [
    "Sandbox", "Result", "errors", "PyboxError", "PyboxConnectionError", "InvalidRequest",
    "RequestTooLarge", "Unauthorized", "Forbidden", "RateLimited", "ServerBusy", "ServerError",
    "Unsupported", "BinaryNotFound", "TooManySessions", "SessionBusy", "SessionDead",
    "__version__",
]
