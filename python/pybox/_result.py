"""The result of one execution, the same in local and remote mode."""
from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any, Dict, List, Mapping, Optional

from .errors import ServerError

STATUSES = ("ok", "error", "timeout", "memory_limit", "killed", "rejected")


@dataclasses.dataclass(frozen=True, repr=False)
class Result:
    """What one execution did: the result object of `pybox run --json` and `POST /v1/execute`.

    A failing script is a Result too; look at `status` (or `success`) rather than catching
    exceptions. Two Results compare equal when the executions did the same thing: timings,
    resource usage and the request id are left out of `==`.

    Attributes:
        status: "ok", "error" (non-zero exit or uncaught exception), "timeout" (wall or CPU
            limit), "memory_limit", "killed" (any other signal) or "rejected" (refused by
            policy before it ran: a SyntaxError or a ForbiddenImportError).
        exit_code: the script's exit status; None when a signal killed it or it never ran.
        signal: the signal that killed it, e.g. "SIGKILL"; else None.
        stdout, stderr: its output as text (capped by the server; see the *_truncated flags).
        result: in main() mode, what main() returned (decoded from JSON); else None.
        files: the returned files that came back, {name: content}.
        file_errors: the returned files that did not, {name: reason} (e.g. "not found").
        error: the error object ({"type", "message", ...}) or None.
        stdout_truncated, stderr_truncated: output was cut at its limit.
        duration_ms, cpu_ms, max_rss_kb: wall time, CPU time and peak memory of the execution.
        request_id: the server's request id (remote mode), else None.
        outputs: the rich outputs (display(), matplotlib figures) in the order produced, each
            a dict {"type", "data": {MIME type: value}, "metadata"}; [] from a server that
            sends none.
        raw: the result object exactly as received.
    """

    status: str
    exit_code: Optional[int]
    signal: Optional[str]
    stdout: str
    stderr: str
    result: Any = None
    files: Dict[str, bytes] = dataclasses.field(default_factory=dict)
    file_errors: Dict[str, str] = dataclasses.field(default_factory=dict)
    error: Optional[Dict[str, Any]] = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: Optional[float] = dataclasses.field(default=None, compare=False)
    cpu_ms: Optional[float] = dataclasses.field(default=None, compare=False)
    max_rss_kb: Optional[int] = dataclasses.field(default=None, compare=False)
    request_id: Optional[str] = dataclasses.field(default=None, compare=False)
    outputs: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    raw: Dict[str, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)

    def __repr__(self) -> str:
        files = {name: f"<{len(data)} bytes>" for name, data in self.files.items()}
        return (f"Result(status={self.status!r}, exit_code={self.exit_code!r}, "
                f"signal={self.signal!r}, stdout={self.stdout!r}, stderr={self.stderr!r}, "
                f"result={self.result!r}, files={files!r}, file_errors={self.file_errors!r}, "
                f"error={self.error!r}, duration_ms={self.duration_ms!r})")

    @property
    def success(self) -> bool:
        """True when the script ran to the end and exited 0 (status "ok")."""
        return self.status == "ok"

    @property
    def error_type(self) -> Optional[str]:
        """The error's type, e.g. "ZeroDivisionError", "TimeoutError"; None on success."""
        return self.error.get("type") if self.error else None

    def get_file(self, name: str) -> bytes:
        """The content of the returned file `name`.

        Raises KeyError, with the reason, when it did not come back (not found, not a regular
        file, too large), was not asked for in `return_files`, or the code never ran.
        """
        if name in self.files:
            return self.files[name]
        if name in self.file_errors:
            raise KeyError(f"{name}: {self.file_errors[name]}")
        raise KeyError(f"{name}: not among the returned files (status {self.status})")

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> "Result":
        """Build a Result from a result object (docs/api.md) decoded from JSON.

        Raises ServerError when the object is not a well-formed result object.
        """
        try:
            return cls._parse(obj)
        except (AttributeError, KeyError, TypeError, ValueError, binascii.Error) as e:
            raise ServerError(f"malformed result object: {e!r}", type="BadResponse") from None

    @classmethod
    def _parse(cls, obj: Mapping[str, Any]) -> "Result":
        if not isinstance(obj, Mapping):
            raise TypeError("not an object")
        for key, kinds in (("status", str), ("stdout", str), ("stderr", str),
                           ("stdout_truncated", bool), ("stderr_truncated", bool),
                           ("files", dict)):
            if not isinstance(obj.get(key), kinds):
                raise TypeError(f"{key} is missing or not a {kinds.__name__}")
        status = obj["status"]
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        files: Dict[str, bytes] = {}
        file_errors: Dict[str, str] = {}
        for name, entry in (obj.get("files") or {}).items():
            if "error" in entry:
                file_errors[name] = str(entry["error"])
            else:
                files[name] = base64.b64decode(entry["content_base64"], validate=True)
        error = obj.get("error")
        if error is not None and not isinstance(error, dict):
            raise TypeError("error is not an object")
        outputs = obj.get("outputs") or []
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise TypeError("outputs is not a list of objects")
        exit_code = obj.get("exit_code")
        if exit_code is not None and not isinstance(exit_code, int):
            raise TypeError("exit_code is not an integer")
        return cls(
            status=status,
            exit_code=exit_code,
            signal=obj.get("signal"),
            stdout=_text(obj.get("stdout")),
            stderr=_text(obj.get("stderr")),
            result=obj.get("result"),
            files=files,
            file_errors=file_errors,
            error=error,
            stdout_truncated=bool(obj.get("stdout_truncated", False)),
            stderr_truncated=bool(obj.get("stderr_truncated", False)),
            duration_ms=obj.get("duration_ms"),
            cpu_ms=obj.get("cpu_ms"),
            max_rss_kb=obj.get("max_rss_kb"),
            request_id=obj.get("request_id"),
            outputs=list(outputs),
            raw=dict(obj),
        )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError("output is not a string")
    return value
