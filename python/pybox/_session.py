"""Session: an interpreter kept alive between runs, in local or remote mode.

A Session holds one handle of its backend's (_remote.RemoteSession: `/v1/sessions` on a
server; _local.LocalSession: one `pybox repl --jsonl` process on this machine). The handle is
closed with the session: by close(), by leaving its `with` block, when the Session is garbage-
collected, or when the program exits (weakref.finalize, which runs at exit too), so no process
and no server-side session outlives it.
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional

from . import _request
from ._request import Data
from ._result import Event, Result
from .errors import InvalidRequest, PyboxError, SessionDead


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """A file of the session's /work: its path (relative, e.g. "data/in.csv"), size in bytes
    and modification time (ISO-8601 UTC text, or None)."""

    path: str
    size: int
    mtime: Optional[str] = None


def _path(path: object) -> str:
    if not isinstance(path, str):
        raise InvalidRequest(f"a session file's path must be str, not {type(path).__name__}",
                             type="ValidationError")
    if "\0" in path:
        raise InvalidRequest(f"invalid path {path!r}: contains NUL", type="ValidationError")
    return path


class SessionFiles:
    """The files of a session's /work: write(), read(), delete(), list() (put and get too).

    A path is relative, of at most 8 components, none of them "." or ".."; it is resolved
    beneath /work without following symlinks, and write() makes the parent directories. A
    missing file raises PyboxError of type "NotFound", a bad path InvalidRequest, one over the
    input-file limit RequestTooLarge.
    """

    def __init__(self, session: "Session") -> None:
        self._session = weakref.proxy(session)

    def write(self, path: str, data: Data) -> None:
        """Put `data` (bytes, or str as UTF-8) at /work/PATH, replacing what was there."""
        self._session._call("put", _path(path), _request._bytes(data, f"file {path!r}"))

    def read(self, path: str) -> bytes:
        """The bytes of /work/PATH."""
        return self._session._call("get", _path(path))

    def delete(self, path: str) -> None:
        """Delete /work/PATH."""
        self._session._call("delete", _path(path))

    def list(self) -> List[FileInfo]:
        """The regular files of /work, recursively."""
        out = []
        for f in self._session._call("list"):
            if not isinstance(f, Mapping) or not isinstance(f.get("path"), str):
                continue
            out.append(FileInfo(path=f["path"], size=int(f.get("size") or 0),
                                mtime=f.get("mtime") if isinstance(f.get("mtime"), str)
                                else None))
        return out

    put = write
    get = read

    def __iter__(self) -> Iterator[FileInfo]:
        return iter(self.list())


def _close_handle(handle: Any) -> None:
    """weakref.finalize's callback: it holds the handle, never the Session."""
    try:
        handle.close()
    except Exception:  # noqa: BLE001 - at exit or in GC there is nobody to tell
        pass


class Session:
    """An interpreter kept alive between runs, in the same sandbox as every run.

    Made by Sandbox.session(). Globals, imports and the files of /work stay from one run()
    to the next. A run follows Python's REPL rules: the final expression's value is an
    Output of type "result" (Result.value; a trailing `;` suppresses it, `_` holds it
    afterwards), and tracebacks name the code `<cell N>`.

    At its timeout a run is interrupted (KeyboardInterrupt); if the code stops within a second
    the session lives on (Result.state_preserved), else it is killed and the session ends, as
    a memory kill or a crash ends it. Calls on an ended session raise SessionDead, and
    `dead_reason` says why ("timeout", "memory_limit", "idle_timeout", ...). One call at a time:
    a call while another of the same session runs raises SessionBusy.

    Use it as a context manager, or call close(); it is also closed when garbage-collected and
    when the program exits.
    """

    def __init__(self, handle: Any, mode: str) -> None:
        self._h = handle
        self.mode = mode
        self.id: str = handle.id
        self._dead_reason: Optional[str] = None
        self._closed = False
        self.files = SessionFiles(self)
        self._finalizer = weakref.finalize(self, _close_handle, handle)

    def __repr__(self) -> str:
        state = "closed" if self._closed else (f"dead: {self._dead_reason}"
                                               if self._dead_reason else "open")
        return f"<pybox.Session {self.id} ({self.mode}, {state})>"

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def dead_reason(self) -> Optional[str]:
        """Why the session ended, once a call found it ended (or ended it); else None."""
        return self._dead_reason

    @property
    def closed(self) -> bool:
        return self._closed

    def _handle(self) -> Any:
        if self._closed:
            raise SessionDead("the session is closed", type="SessionDead",
                              details={"reason": "closed"})
        return self._h

    def _note(self, result: Result) -> Result:
        # The call ended it, or it ended meanwhile (a lifetime run out during the call).
        ended = result.state_preserved is False or (result.session or {}).get("status") == "dead"
        if ended and self._dead_reason is None:
            self._dead_reason = (result.session or {}).get("dead_reason") or "ended"
        return result

    def _call(self, op: str, *args: Any) -> Any:
        """One operation of the handle (files, restart, extend), an ended session noted."""
        try:
            return getattr(self._handle(), op)(*args)
        except PyboxError as e:
            self._dead(e)
            raise

    def _dead(self, e: PyboxError) -> None:
        if isinstance(e, SessionDead) and self._dead_reason is None:
            self._dead_reason = e.details.get("reason") or "ended"

    def _request(self, code: Data, stdin: Optional[Data], timeout: Optional[float],
                 files: Optional[Mapping[str, Data]], return_files: Optional[Iterable[str]],
                 main: bool) -> _request.Request:
        return _request.build(code, stdin, files, return_files, main, timeout, None, False)

    def run(self, code: Data, stdin: Optional[Data] = None, timeout: Optional[float] = None,
            files: Optional[Mapping[str, Data]] = None,
            return_files: Optional[Iterable[str]] = None, main: bool = False) -> Result:
        """Run `code` in the session and return what it did.

        Args:
            code: the Python source (str, or UTF-8 bytes).
            stdin: its standard input; None: empty.
            timeout: wall-time limit of this call in seconds (default: the session's).
            files: files {name: content} written to /work first (where they stay).
            return_files: names (or patterns) of files of /work to send back.
            main: call main() and put its JSON value in Result.result.

        Returns:
            A Result, with execution_count and state_preserved, whatever the code did.

        Raises:
            SessionDead: the session had ended (dead_reason says why).
            SessionBusy: another call of the session is running.
            InvalidRequest, RequestTooLarge, ConnectionError, ...: as Sandbox.run().
        """
        req = self._request(code, stdin, timeout, files, return_files, main)
        handle = self._handle()
        try:
            result = handle.run(req)
        except PyboxError as e:
            self._dead(e)
            raise
        except KeyboardInterrupt:
            # Ctrl-C here stops the sandboxed call too, as the REPL's does (state kept).
            self._interrupt_quietly(handle)
            raise
        from ._sandbox import _check_returned  # noqa: PLC0415 - one check, one place
        _check_returned(result, req.return_files)
        return self._note(result)

    def stream(self, code: Data, stdin: Optional[Data] = None, timeout: Optional[float] = None,
               files: Optional[Mapping[str, Data]] = None,
               return_files: Optional[Iterable[str]] = None, main: bool = False
               ) -> Iterator[Event]:
        """Run `code` as run() does, yielding its Events as they happen: stdout, stderr,
        display, result, then error (if any) and end, whose `result` is the Result."""
        req = self._request(code, stdin, timeout, files, return_files, main)
        handle = self._handle()
        return self._stream(handle, req)

    def _stream(self, handle: Any, req: _request.Request) -> Iterator[Event]:
        from ._sandbox import _check_returned  # noqa: PLC0415
        ended = False
        try:
            for ev in handle.stream(req):
                if ev.kind == "end" and ev.result is not None:
                    ended = True
                    _check_returned(ev.result, req.return_files)
                    self._note(ev.result)
                yield ev
        except PyboxError as e:
            self._dead(e)
            raise
        finally:
            if not ended:
                # Left early (a break, an exception, Ctrl-C): the call stops, the state stays.
                self._interrupt_quietly(handle)

    @staticmethod
    def _interrupt_quietly(handle: Any) -> None:
        try:
            handle.interrupt()
        except Exception:  # noqa: BLE001 - the caller's own exception is what matters
            pass

    def interrupt(self) -> bool:
        """Raise KeyboardInterrupt in the running call (from another thread); the session keeps
        its state. Returns whether a call was running to be interrupted."""
        return bool(self._handle().interrupt())

    def restart(self) -> None:
        """A fresh interpreter: globals gone, /work kept, execution_count back to 0."""
        self._call("restart")

    def extend(self, idle_ttl: Optional[int] = None, max_lifetime: Optional[int] = None) -> None:
        """Change the session's idle time and lifetime, in whole seconds (None: as it is).

        The lifetime still counts from the opening, the idle time from the end of the last
        call; either may grow or shrink, within the most the server allows (locally those of
        a server by default: 3600 s idle, 86400 s lifetime). Remote mode is
        `PATCH /v1/sessions/{id}`. Answered while a call runs.

        Raises:
            InvalidRequest: a span over the most, or a lifetime the session is older than.
            SessionDead: the session had ended.
        """
        spans = _spans(idle_ttl, max_lifetime)
        self._call("extend", spans["idle_ttl"], spans["max_lifetime"])

    def close(self) -> None:
        """End the session: its processes, files and (remote) its server-side session are gone.
        Closing twice is fine."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        self._h.close()


def session_options(timeout: object, memory_mb: object, idle_ttl: object,
                    max_lifetime: object) -> Dict[str, Any]:
    """Checked options of a new session (None: the default)."""
    opts: Dict[str, Any] = {"timeout": _request.seconds(timeout, "timeout"),
                            "memory_mb": _request.mebibytes(memory_mb, "memory_mb")}
    opts.update(_spans(idle_ttl, max_lifetime))
    return opts


def _spans(idle_ttl: object, max_lifetime: object) -> Dict[str, Optional[int]]:
    """Checked idle time and lifetime: positive whole numbers of seconds, or None."""
    spans: Dict[str, Optional[int]] = {}
    for name, value in (("idle_ttl", idle_ttl), ("max_lifetime", max_lifetime)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value <= 0):
            raise InvalidRequest(f"{name} must be a positive whole number of seconds, not "
                                 f"{value!r}", type="ValidationError")
        spans[name] = value
    return spans
