"""The result of one execution, the same in local and remote mode."""
from __future__ import annotations

import base64
import binascii
import dataclasses
import json as _json
import os
from typing import Any, Dict, Iterator, List, Mapping, Optional, Union

from .errors import ServerError

STATUSES = ("ok", "error", "timeout", "memory_limit", "killed", "rejected")
OUTPUT_TYPES = ("display", "result")


@dataclasses.dataclass(frozen=True)
class Output:
    """One rich output of an execution, in the order produced: a display() call, a matplotlib
    figure, an object with _repr_html_/_repr_png_/..., or (in a session) the value of the
    final expression.

    Attributes:
        type: "display", or "result" for a session's final expression's value.
        data: {MIME type: value}, as the result object carries it: "text/plain" always, and
            maybe "text/html", "image/png" (base64 text), "image/svg+xml", "application/json".
        metadata: details such as {"image/png": {"width": 640, "height": 480}}.

    The helpers decode: `text`, `html`, `svg` are str or None, `png` is the PNG's bytes or
    None, `json` the decoded JSON value or None. `o["data"]` works too, as on the dict the
    result object holds.
    """

    type: str
    data: Dict[str, Any]
    metadata: Dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Any) -> "Output":
        """An Output from its JSON object; raises TypeError or ValueError when it is not one."""
        if not isinstance(obj, Mapping):
            raise TypeError("an output is not an object")
        kind, data, meta = obj.get("type"), obj.get("data"), obj.get("metadata", {})
        if kind not in OUTPUT_TYPES:
            raise ValueError(f"unknown output type {kind!r}")
        if not isinstance(data, dict) or not isinstance(meta, dict):
            raise TypeError("an output's data and metadata must be objects")
        if not isinstance(data.get("text/plain"), str):
            raise TypeError("an output has no text/plain")
        if "image/png" in data:
            base64.b64decode(data["image/png"], validate=True)  # raises binascii.Error
        return cls(type=kind, data=dict(data), metadata=dict(meta))

    def __getitem__(self, key: str) -> Any:
        if key in ("type", "data", "metadata"):
            return getattr(self, key)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def to_json(self) -> Dict[str, Any]:
        """The output as the result object carries it."""
        return {"type": self.type, "data": dict(self.data), "metadata": dict(self.metadata)}

    @property
    def text(self) -> str:
        """Its text/plain (every output has one)."""
        return self.data.get("text/plain", "")

    @property
    def html(self) -> Optional[str]:
        """Its text/html, or None."""
        return self.data.get("text/html")

    @property
    def svg(self) -> Optional[str]:
        """Its image/svg+xml, or None."""
        return self.data.get("image/svg+xml")

    @property
    def png(self) -> Optional[bytes]:
        """Its image/png as the PNG's bytes (decoded from base64), or None."""
        b64 = self.data.get("image/png")
        return base64.b64decode(b64) if isinstance(b64, str) else None

    @property
    def json(self) -> Any:
        """Its application/json value, or None."""
        return self.data.get("application/json")

    @property
    def is_image(self) -> bool:
        """Whether it carries an image (PNG or SVG)."""
        return "image/png" in self.data or "image/svg+xml" in self.data

    def save(self, path: Union[str, "os.PathLike[str]"]) -> str:
        """Write the output's image to `path` (a PNG's bytes, or an SVG's text as UTF-8) and
        return the path. Raises ValueError when the output has no image."""
        png = self.png
        if png is not None:
            data = png
        elif self.svg is not None:
            data = self.svg.encode("utf-8")
        else:
            raise ValueError("this output has no image (image/png or image/svg+xml)")
        with open(path, "wb") as f:
            f.write(data)
        return os.fspath(path)


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
        outputs: the rich outputs (display(), matplotlib figures, a session's final
            expression) in the order produced, as Output objects; [] from a server that sends
            none. images() and html() pick the images and the HTML among them.
        execution_count: in a session, the calls run in it so far, this one included; None
            for Sandbox.run().
        state_preserved: in a session, whether it lives on with its state (False: this call
            ended it, see session.dead_reason); None for Sandbox.run().
        session: in a session, {"id", "status", "dead_reason"} after the call; else None.
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
    outputs: List[Output] = dataclasses.field(default_factory=list)
    execution_count: Optional[int] = None
    state_preserved: Optional[bool] = None
    session: Optional[Dict[str, Any]] = dataclasses.field(default=None, compare=False)
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

    def images(self) -> List[Output]:
        """The outputs that carry an image (PNG or SVG), in order: `r.images()[0].save(path)`."""
        return [o for o in self.outputs if o.is_image]

    def html(self) -> List[str]:
        """The text/html of the outputs that have one, in order (a pandas DataFrame's table)."""
        return [o.html for o in self.outputs if o.html is not None]

    @property
    def value(self) -> Optional[Output]:
        """In a session, the final expression's value (the output of type "result"), or None."""
        for o in self.outputs:
            if o.type == "result":
                return o
        return None

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
        if not isinstance(outputs, list):
            raise TypeError("outputs is not a list of objects")
        count, kept, session = (obj.get("execution_count"), obj.get("state_preserved"),
                                obj.get("session"))
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise TypeError("execution_count is not an integer")
        if kept is not None and not isinstance(kept, bool):
            raise TypeError("state_preserved is not a boolean")
        if session is not None and not isinstance(session, dict):
            raise TypeError("session is not an object")
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
            outputs=[Output.from_json(o) for o in outputs],
            execution_count=count,
            state_preserved=kept,
            session=session,
            raw=dict(obj),
        )


def _text(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise TypeError("output is not a string")
    return value


EVENT_KINDS = ("stdout", "stderr", "display", "result", "error", "end")


@dataclasses.dataclass(frozen=True)
class Event:
    """One event of a streamed execution (Sandbox.stream(), Session.stream()), in order.

    Attributes:
        kind: "stdout" and "stderr" (text the code wrote), "display" and "result" (an Output),
            "error" (the result's error object, just before the end, when there is one), "end"
            (the whole Result; always last).
        text: for stdout and stderr, the text (never a character cut in two); else None.
        output: for display and result, the Output; else None.
        error: for error, the error object {"type", "message", ...}; else None.
        result: for end, the Result; else None.

    Put together, the stdout events are the result's stdout, the stderr events its stderr, and
    the display and result events its outputs, in both modes.
    """

    kind: str
    text: Optional[str] = None
    output: Optional[Output] = None
    error: Optional[Dict[str, Any]] = None
    result: Optional[Result] = None

    def __repr__(self) -> str:
        what = {"stdout": self.text, "stderr": self.text, "display": self.output,
                "result": self.output, "error": self.error, "end": self.result}[self.kind]
        return f"Event({self.kind}, {what!r})"


def event_of(kind: str, data: Any) -> Optional[Event]:
    """The Event of a stream's `kind` and decoded data (docs/api.md, "Streaming"), or None for
    what is not one (`start`, kinds of later versions). Raises TypeError/ValueError when the data
    is not what the kind says."""
    if kind in ("stdout", "stderr"):
        if not isinstance(data, Mapping) or not isinstance(data.get("text"), str):
            raise TypeError(f"a {kind} event without its text")
        return Event(kind, text=data["text"])
    if kind in ("display", "result"):
        return Event(kind, output=Output.from_json(data))
    if kind == "error":
        if not isinstance(data, dict):
            raise TypeError("an error event that is not an object")
        return Event(kind, error=data)
    return None


def events_of_result(result: Result) -> Iterator[Event]:
    """The events a stream would have given, from a Result that came whole: a server that
    does not stream, and what no event said before the end."""
    if result.stdout:
        yield Event("stdout", text=result.stdout)
    if result.stderr:
        yield Event("stderr", text=result.stderr)
    for o in result.outputs:
        yield Event(o.type, output=o)


def final_events(result: Result) -> Iterator[Event]:
    """The stream's last events, as the server sends them: `error` when there is one, `end`."""
    if result.error is not None:
        yield Event("error", error=result.error)
    yield Event("end", result=result)


def dumps(obj: Any) -> str:
    """Compact JSON of a request line."""
    return _json.dumps(obj, separators=(",", ":"), ensure_ascii=True)
