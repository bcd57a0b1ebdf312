"""Remote mode: each execution is one `POST {url}/v1/execute` to a pybox server.

The request is JSON (input files base64-encoded), authenticated with `Authorization: Bearer
KEY` when there is a key, on a fresh connection per call (so a Sandbox can be shared between
threads). A 200 answer is the result object, whatever the execution's status; any other status
is an error of the request and becomes the PyboxError subclass its error type names (by
errors.ERROR_TYPES, else by its status).
"""
from __future__ import annotations

import base64
import email.utils
import http.client
import json
import math
import ssl
import time
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from ._request import Request
from ._result import Result
from .errors import ConnectionError, PyboxError, ServerError, _RetryLater, error_class

USER_AGENT = "pybox-python/0.1.0"
MAX_ANSWER = 256 << 20  # bytes read of an answer at most, as libpybox: a result fits


def _retry_after(value: Optional[str]) -> Optional[int]:
    """Retry-After as whole seconds (at least 1), from delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not "²", which isdigit() accepts and int() not
        return max(1, int(value))
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError):
        return None
    return max(1, math.ceil(when - time.time()))


def _error(status: int, headers: Mapping[str, str], body: bytes) -> PyboxError:
    """The exception for an answer that is not a result object."""
    details: Dict[str, Any] = {}
    request_id = headers.get("x-request-id")
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        d = obj.get("error_details") or obj.get("error")
        if isinstance(d, dict):
            details = d
        request_id = obj.get("request_id") or request_id
    etype = details.get("type") if isinstance(details.get("type"), str) else None
    message = details.get("message") if isinstance(details.get("message"), str) else None
    if not message:
        snippet = body[:200].decode("utf-8", "replace").strip()
        message = f"HTTP {status} without a pybox error body" + (f": {snippet}" if snippet
                                                                   else "")
    kw: Dict[str, Any] = dict(type=etype, status=status, request_id=request_id,
                              details=details)
    if status == 200:
        return ServerError(f"HTTP 200 but not a result object: {message}", **kw)
    cls = error_class(etype, status)
    if issubclass(cls, _RetryLater):
        kw["retry_after"] = _retry_after(headers.get("retry-after"))
    if status in (404, 405):
        message = f"{message} (is the URL that of a pybox server?)"
    return cls(message, **kw)


class RemoteBackend:
    """Sends requests to a pybox server."""

    def __init__(self, url: str, api_key: Optional[str] = None,
                 request_timeout: Optional[float] = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http:// or https:// URL: {url!r}")
        try:
            self._port = parts.port
        except ValueError:
            raise ValueError(f"bad port in URL: {url!r}") from None
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._path = parts.path.rstrip("/") + "/v1/execute"
        self.api_key = api_key
        self.request_timeout = request_timeout

    def describe(self) -> str:
        return f"remote ({self.url})"

    def _body(self, req: Request) -> bytes:
        body: Dict[str, Any] = {"code": req.code}
        if req.stdin is not None:
            body["stdin"] = req.stdin
        if req.files:
            body["files"] = [{"name": n, "content_base64": base64.b64encode(d).decode("ascii")}
                             for n, d in req.files]
        if req.return_files:
            body["return_files"] = list(req.return_files)
        if req.main:
            body["main"] = True
        if req.timeout is not None:
            body["timeout"] = req.timeout
        if req.memory_mb is not None:
            body["memory_mb"] = req.memory_mb
        if req.network:
            body["network"] = True
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    def _connection(self, run_timeout: Optional[float] = None) -> http.client.HTTPConnection:
        # A long run is still a run: never give up on the answer before its own timeout
        # (plus a margin for queueing and transfer) has passed.
        timeout = self.request_timeout
        if timeout is not None and run_timeout is not None:
            timeout = max(timeout, run_timeout + 30.0)
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def _post(self, body: bytes, run_timeout: Optional[float] = None
              ) -> Tuple[int, Dict[str, str], bytes]:
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": USER_AGENT}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        conn = self._connection(run_timeout)
        try:
            send_error: Optional[OSError] = None
            try:
                conn.request("POST", self._path, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError) as e:
                # The server may refuse a body before reading it (413) and close: its answer
                # is still there to read.
                send_error = e
            except (OSError, http.client.HTTPException) as e:
                raise ConnectionError(f"cannot reach the pybox server at {self.url}: "
                                      f"{_reason(e)}") from e
            try:
                resp = conn.getresponse()
                data = resp.read(MAX_ANSWER + 1)
            except (OSError, http.client.HTTPException) as e:
                cause = send_error or e
                raise ConnectionError(f"no answer from the pybox server at {self.url}: "
                                      f"{_reason(cause)}") from cause
            if len(data) > MAX_ANSWER:
                raise ServerError(f"the answer of {self.url} is over {MAX_ANSWER} bytes",
                                  type="BadResponse", status=resp.status)
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()

    def execute(self, req: Request) -> Result:
        status, headers, data = self._post(self._body(req), req.timeout)
        if status == 200:
            try:
                obj = json.loads(data)
            except ValueError:
                obj = None
            if isinstance(obj, dict) and "status" in obj and "error_details" not in obj:
                result = Result.from_json(obj)
                if result.request_id is None and headers.get("x-request-id"):
                    result = Result.from_json({**obj, "request_id": headers["x-request-id"]})
                return result
        raise _error(status, headers, data)


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError) or type(e).__name__ == "timeout":
        return "timed out"
    text = getattr(e, "strerror", None) or str(e)
    return text or type(e).__name__
