"""Remote mode: each execution is one `POST {server_url}/execute` in the documented shape.

The request is JSON `{"code", "timeout", "allow_network", "files": {name: base64}}`, with
`Authorization: Bearer KEY` when there is a key, sent with urllib (so the usual proxy variables
apply) on a fresh connection per call. The answer must be a 2xx carrying `stdout`, `stderr`,
`return_code` and `output_files` ({name: base64}) at the top level; anything else raises
SandboxException. Redirects are not followed: urllib would turn the POST into a GET.
"""
from __future__ import annotations

import base64
import binascii
import http.client
import json
import socket
import urllib.error
import urllib.request
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

from ._result import ExecutionResult, SandboxException

USER_AGENT = "sandbox_executor-pybox/0.1.0"
MAX_ANSWER = 256 << 20  # bytes read of an answer at most, as pybox's own client


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        return None  # urllib then raises HTTPError for the 3xx itself


def _opener() -> urllib.request.OpenerDirector:
    # Built per call: its ProxyHandler reads the proxy variables when it is made.
    return urllib.request.build_opener(_NoRedirect)


def base_url(url: str) -> str:
    """`url` checked (http or https, with a host) and without its trailing slashes.

    Raises ValueError.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"server_url is not an http:// or https:// URL: {url!r}")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"server_url has a bad port: {url!r}") from None
    if parts.query or parts.fragment:
        raise ValueError(f"server_url must be a base URL, without ?query or #fragment: {url!r}")
    return url.rstrip("/")


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e, urllib.error.HTTPError):
        e = e.reason if isinstance(e.reason, BaseException) else e
    if isinstance(e, (socket.timeout, TimeoutError)):
        return "timed out"
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


def _send(req: urllib.request.Request, wait: float) -> Tuple[int, bytes]:
    """(status, body) of the answer, whatever the status; raises SandboxException without one."""
    try:
        with _opener().open(req, timeout=wait) as resp:
            return resp.status, resp.read(MAX_ANSWER + 1)
    except urllib.error.HTTPError as e:
        try:
            body = e.read(MAX_ANSWER + 1)
        except (OSError, http.client.HTTPException):
            body = b""
        finally:
            e.close()
        return e.code, body
    except (OSError, http.client.HTTPException, ValueError) as e:
        raise SandboxException(f"no answer from {req.full_url}: {_reason(e)}") from e


def _failure(url: str, status: int, body: bytes) -> SandboxException:
    """The exception for a non-2xx answer, with the server's own words when it said any."""
    try:
        details: Any = json.loads(body)
    except ValueError:
        details = None
    said = None
    if isinstance(details, dict):
        for key in ("detail", "error_details", "error", "message"):
            value = details.get(key)
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                value = value["message"]
            if value:
                said = value if isinstance(value, str) else json.dumps(value)
                break
    if said is None:
        said = body[:200].decode("utf-8", "replace").strip() or "no body"
    return SandboxException(f"POST {url}: {said}", status_code=status,
                            details=details)


def _parse(url: str, status: int, body: bytes) -> ExecutionResult:
    try:
        obj = json.loads(body)
        if not isinstance(obj, dict):
            raise TypeError("not a JSON object")
        for key, kind in (("stdout", str), ("stderr", str)):
            if not isinstance(obj.get(key), kind):
                raise TypeError(f"`{key}` is missing or not a string")
        code = obj.get("return_code")
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError("`return_code` is missing or not an integer")
        files = obj.get("output_files") or {}
        if not isinstance(files, dict):
            raise TypeError("`output_files` is not an object")
        output = {}
        for name, data in files.items():
            if not isinstance(data, str):
                raise TypeError(f"output file {name!r} is not a base64 string")
            output[name] = base64.b64decode(data, validate=True)
    except (TypeError, ValueError, binascii.Error) as e:
        raise SandboxException(f"POST {url}: the answer is not an execution result: {e}",
                               status_code=status) from None
    return ExecutionResult(stdout=obj["stdout"], stderr=obj["stderr"], return_code=code,
                           output_files=output)


def execute(server_url: str, api_key: Optional[str], code: str, files: Mapping[str, bytes],
            timeout: float, network: bool, wait: float) -> ExecutionResult:
    """POST the execution to `{server_url}/execute`; raises SandboxException."""
    url = server_url + "/execute"
    body: Dict[str, Any] = {
        "code": code,
        "timeout": int(timeout) if float(timeout).is_integer() else timeout,
        "allow_network": bool(network),
        "files": {name: base64.b64encode(data).decode("ascii") for name, data in files.items()},
    }
    headers = {"Content-Type": "application/json", "Accept": "application/json",
               "User-Agent": USER_AGENT}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"), headers=headers,
                                 method="POST")
    status, answer = _send(req, wait)
    if len(answer) > MAX_ANSWER:
        raise SandboxException(f"POST {url}: the answer is over {MAX_ANSWER} bytes",
                               status_code=status)
    if not 200 <= status < 300:
        raise _failure(url, status, answer)
    return _parse(url, status, answer)


def health_check(server_url: str, api_key: Optional[str], wait: float) -> bool:
    """True when `GET {server_url}/health` answers 200."""
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    req = urllib.request.Request(server_url + "/health", headers=headers, method="GET")
    try:
        status, _ = _send(req, wait)
    except SandboxException:
        return False
    return status == 200
