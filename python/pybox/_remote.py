"""Remote mode: each execution is one `POST {url}/v1/execute` to a pybox server.

The request is JSON (input files base64-encoded), authenticated with `Authorization: Bearer
KEY` when there is a key, on a fresh connection per call (so a Sandbox can be shared between
threads). A 200 answer is the result object, whatever the execution's status; any other status
is an error of the request and becomes the PyboxError subclass its error type names (by
errors.ERROR_TYPES, else by its status).

Streaming asks for `Accept: text/event-stream` and reads the Server-Sent Events line by line as
they arrive (docs/api.md, "Streaming"); an answer of another type is read whole, and its events
given once it is in. Sessions are `/v1/sessions` (RemoteSession), one request per operation; a
file's path goes into the URL percent-encoded (http.client sends it as it is: `..` is never
resolved on the way).
"""
from __future__ import annotations

import base64
import contextlib
import email.utils
import http.client
import json
import math
import re
import ssl
import time
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import quote, urlsplit

from ._request import Request
from ._result import Event, Result, event_of, events_of_result
from .errors import ConnectionError, PyboxError, ServerError, _RetryLater, error_class

USER_AGENT = "pybox-python/0.1.0"
MAX_ANSWER = 256 << 20  # bytes read of an answer at most, as libpybox: a result fits
SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,63}$")  # what goes into a URL unescaped


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


def _error(status: int, headers: Mapping[str, str], body: bytes, hint: bool = True
           ) -> PyboxError:
    """The exception for an answer that is not a result object; `hint`: a 404 or 405 may
    mean the URL is not a pybox server's (not for a session's calls, whose 404 is theirs)."""
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
    if status in (404, 405) and hint:
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
        self._base = parts.path.rstrip("/")
        self._path = self._base + "/v1/execute"
        self.api_key = api_key
        self.request_timeout = request_timeout

    def describe(self) -> str:
        return f"remote ({self.url})"

    def _body(self, req: Request, session: bool = False) -> bytes:
        """The JSON body of a run; a session's sends no memory and no network (its own)."""
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
        if req.memory_mb is not None and not session:
            body["memory_mb"] = req.memory_mb
        if req.network and not session:
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

    @contextlib.contextmanager
    def _open(self, method: str, path: str, body: Optional[bytes] = None,
              content_type: Optional[str] = "application/json",
              accept: str = "application/json",
              run_timeout: Optional[float] = None) -> Iterator[http.client.HTTPResponse]:
        """The answer to one request, its body unread; the connection closes on leaving."""
        headers = {"Accept": accept, "User-Agent": USER_AGENT}
        if body is not None and content_type is not None:
            headers["Content-Type"] = content_type
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        conn = self._connection(run_timeout)
        try:
            send_error: Optional[OSError] = None
            try:
                conn.request(method, self._base + path, body=body if body is not None else
                             (b"" if method in ("POST", "PUT") else None), headers=headers)
            except (BrokenPipeError, ConnectionResetError) as e:
                # The server may refuse a body before reading it (413) and close: its answer
                # is still there to read.
                send_error = e
            except (OSError, http.client.HTTPException) as e:
                raise ConnectionError(f"cannot reach the pybox server at {self.url}: "
                                      f"{_reason(e)}") from e
            try:
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as e:
                cause = send_error or e
                raise ConnectionError(f"no answer from the pybox server at {self.url}: "
                                      f"{_reason(cause)}") from cause
            yield resp
        finally:
            conn.close()

    def _request(self, method: str, path: str, body: Optional[bytes] = None,
                 content_type: Optional[str] = "application/json",
                 run_timeout: Optional[float] = None) -> Tuple[int, Dict[str, str], bytes]:
        """One request, its answer read whole: (status, headers, body)."""
        with self._open(method, path, body, content_type, run_timeout=run_timeout) as resp:
            try:
                data = resp.read(MAX_ANSWER + 1)
            except (OSError, http.client.HTTPException) as e:
                raise ConnectionError(f"no answer from the pybox server at {self.url}: "
                                      f"{_reason(e)}") from e
            if len(data) > MAX_ANSWER:
                raise ServerError(f"the answer of {self.url} is over {MAX_ANSWER} bytes",
                                  type="BadResponse", status=resp.status)
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def _post(self, body: bytes, run_timeout: Optional[float] = None
              ) -> Tuple[int, Dict[str, str], bytes]:
        return self._request("POST", "/v1/execute", body, run_timeout=run_timeout)

    def _result(self, status: int, headers: Mapping[str, str], data: bytes, hint: bool = True
                ) -> Result:
        """The Result of a 200 that is a result object; else the error it is."""
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
        raise _error(status, headers, data, hint)

    def _stream(self, path: str, body: bytes, run_timeout: Optional[float]) -> Iterator[Event]:
        """The events of a streamed run at `path`; the last is `end`, with the Result."""
        with self._open("POST", path, body, accept="text/event-stream",
                        run_timeout=run_timeout) as resp:
            headers = {k.lower(): v for k, v in resp.getheaders()}
            streamed = headers.get("content-type", "").split(";")[0].strip().lower() == \
                "text/event-stream"
            if resp.status != 200 or not streamed:
                data = resp.read(MAX_ANSWER + 1)
                result = self._result(resp.status, headers, data, path == "/v1/execute")
                yield from events_of_result(result)
                if result.error is not None:
                    yield Event("error", error=result.error)
                yield Event("end", result=result)
                return
            for name, data in _sse(resp, self.url):
                try:
                    obj = json.loads(data)
                except ValueError:
                    raise ServerError(f"the `{name}` event of {self.url} is not JSON",
                                      type="BadResponse") from None
                if name == "end":
                    if isinstance(obj, dict) and isinstance(obj.get("error_details"), dict):
                        # Refused once the stream had begun: the error a plain answer would be.
                        etype = obj["error_details"].get("type")
                        from .errors import ERROR_TYPES  # noqa: PLC0415
                        raise _error(ERROR_TYPES.get(etype, (500, None))[0], headers, data,
                                     False)
                    result = Result.from_json(obj)
                    yield Event("end", result=result)
                    return
                try:
                    ev = event_of(name, obj)
                except (TypeError, ValueError) as e:
                    raise ServerError(f"a malformed `{name}` event from {self.url}: {e}",
                                      type="BadResponse") from None
                if ev is not None:
                    yield ev
            raise ConnectionError(f"the stream of {self.url} ended before its `end` event")

    def stream(self, req: Request) -> Iterator[Event]:
        return self._stream("/v1/execute", self._body(req), req.timeout)

    def open_session(self, timeout: Optional[float], memory_mb: Optional[int],
                     idle_ttl: Optional[int], max_lifetime: Optional[int],
                     files: Sequence[Tuple[str, bytes]] = ()) -> "RemoteSession":
        body: Dict[str, Any] = {}
        for key, value in (("timeout", timeout), ("memory_mb", memory_mb),
                           ("idle_ttl_s", idle_ttl), ("max_lifetime_s", max_lifetime)):
            if value is not None:
                body[key] = value
        if files:
            # In /work before the first call, as a run's input files are (POST /v1/sessions).
            body["files"] = [{"name": n, "content_base64": base64.b64encode(d).decode("ascii")}
                             for n, d in files]
        status, headers, data = self._request("POST", "/v1/sessions",
                                              json.dumps(body, ensure_ascii=False).encode())
        if status not in (200, 201):
            raise _error(status, headers, data)
        try:
            obj = json.loads(data)
            sid = obj["id"]
            if not isinstance(sid, str) or not SESSION_ID.match(sid):
                raise ValueError(sid)
        except (ValueError, KeyError, TypeError):
            raise ServerError(f"the answer of {self.url} to POST /v1/sessions is not a session",
                              type="BadResponse", status=status) from None
        limits = obj.get("limits") if isinstance(obj.get("limits"), dict) else {}
        given = limits.get("timeout_s")
        if isinstance(given, (int, float)) and not isinstance(given, bool) and given > 0:
            timeout = float(given)  # the server's word: how long a call may take
        return RemoteSession(self, sid, timeout)

    def execute(self, req: Request) -> Result:
        status, headers, data = self._post(self._body(req), req.timeout)
        return self._result(status, headers, data)


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError) or type(e).__name__ == "timeout":
        return "timed out"
    text = getattr(e, "strerror", None) or str(e)
    return text or type(e).__name__


def _sse(resp: http.client.HTTPResponse, url: str) -> Iterator[Tuple[str, bytes]]:
    """(event name, data) of each Server-Sent Event of `resp` as it arrives; comments (the
    keepalive) skipped; at most MAX_ANSWER bytes in all."""
    name, data, total = "", [], 0
    while True:
        try:
            line = resp.readline(MAX_ANSWER + 1)
        except (OSError, http.client.HTTPException) as e:
            raise ConnectionError(f"the stream of {url} broke: {_reason(e)}") from e
        if not line:
            return
        total += len(line)
        if total > MAX_ANSWER:
            raise ServerError(f"the stream of {url} is over {MAX_ANSWER} bytes",
                              type="BadResponse")
        if line.endswith(b"\n"):
            line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            if data:
                yield name or "message", b"\n".join(data)
            name, data = "", []
            continue
        if line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"event":
            name = value.decode("utf-8", "replace")
        elif field == b"data":
            data.append(value)


class RemoteSession:
    """A session on the server: `/v1/sessions/{id}` and what is under it."""

    def __init__(self, backend: RemoteBackend, sid: str, timeout: Optional[float]) -> None:
        self._b = backend
        self.id = sid
        self._path = f"/v1/sessions/{sid}"
        self._timeout = timeout  # the session's own, for how long to wait for a call
        self._closed = False

    def _check(self, status: int, headers: Mapping[str, str], data: bytes,
               ok: Tuple[int, ...]) -> None:
        if status not in ok:
            raise _error(status, headers, data, hint=False)

    def run(self, req: Request) -> Result:
        status, headers, data = self._b._request(
            "POST", self._path + "/execute", self._b._body(req, session=True),
            run_timeout=req.timeout or self._timeout)
        return self._b._result(status, headers, data, hint=False)

    def stream(self, req: Request) -> Iterator[Event]:
        return self._b._stream(self._path + "/execute", self._b._body(req, session=True),
                               req.timeout or self._timeout)

    def _file(self, path: str) -> str:
        return self._path + "/files/" + quote(path, safe="/")

    def put(self, path: str, data: bytes) -> None:
        status, headers, body = self._b._request("PUT", self._file(path), data,
                                                 "application/octet-stream")
        self._check(status, headers, body, (200, 201))

    def get(self, path: str) -> bytes:
        status, headers, body = self._b._request("GET", self._file(path), None, None)
        self._check(status, headers, body, (200,))
        return body

    def delete(self, path: str) -> None:
        status, headers, body = self._b._request("DELETE", self._file(path), None, None)
        self._check(status, headers, body, (200, 204))

    def _json(self, method: str, path: str) -> Any:
        status, headers, body = self._b._request(method, path, None, None)
        self._check(status, headers, body, (200,))
        try:
            return json.loads(body)
        except ValueError:
            raise ServerError(f"the answer of {self._b.url} to {method} {path} is not JSON",
                              type="BadResponse", status=status) from None

    def list(self) -> List[Any]:
        files = (self._json("GET", self._path + "/files") or {}).get("files")
        if not isinstance(files, list):
            raise ServerError(f"{self._b.url}: the list of files is not a list",
                              type="BadResponse")
        return files

    def interrupt(self) -> bool:
        return bool((self._json("POST", self._path + "/interrupt") or {}).get("interrupted"))

    def restart(self) -> None:
        self._json("POST", self._path + "/restart")

    def extend(self, idle_ttl: Optional[int], max_lifetime: Optional[int]) -> None:
        body = {k: v for k, v in (("idle_ttl_s", idle_ttl), ("max_lifetime_s", max_lifetime))
                if v is not None}
        status, headers, data = self._b._request("PATCH", self._path, json.dumps(body).encode())
        self._check(status, headers, data, (200,))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            status, headers, body = self._b._request("DELETE", self._path, None, None)
        except ConnectionError:
            return  # the server is gone: so is the session (its sessions end with it)
        # Ended already (410), or unknown to it (404: it restarted): closed all the same.
        if status not in (200, 204, 404, 410):
            raise _error(status, headers, body, hint=False)
