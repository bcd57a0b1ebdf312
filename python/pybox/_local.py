"""Local mode: each execution is one `pybox run --json` process on this machine.

Theory of operation: the code, stdin and input files are written to a private temporary
directory (mode 0700, removed whatever happens), `pybox run --json FILE --stdin PATH
--file NAME=PATH... --return NAME...` runs with that directory as its working directory and
with no PYBOX_* variable in its environment (the Sandbox's arguments alone decide the limits),
and the result object it prints on stdout becomes the Result. A request it refuses prints the
server's error object instead, whose type raises what it raises in remote mode
(errors.error_class). Without either, its exit status says what failed: 2 is a usage error
(the request was invalid), anything else a failure of pybox itself.

Streaming runs `pybox run --json --stream`, which prints each event as a JSON line as it
happens, then the result object. A session is one `pybox repl --jsonl` process (LocalSession),
started in a process session of its own (the terminal's Ctrl-C is the program's, not the
child's) with no PYBOX_* variable, its input files given as `--file NAME=PATH` of a private
temporary directory removed once it is ready: requests go to its stdin one JSON line each, and
a reader thread hands each answer and event to the call that waits for it, by request id. The
process ends with the session: {"op": "close"}, then SIGTERM, then SIGKILL if it has not; and
if this program dies first, the EOF on its stdin ends it (closing the session, whose engine dies
with it). Its idle time and lifetime end it as a server ends a session (libpybox's reaper, in
that process), and a later call raises SessionDead.
"""
from __future__ import annotations

import base64
import collections
import itertools
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
from typing import Any, Deque, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ._request import Request
from ._result import Event, Result, dumps, event_of, final_events
from .errors import (BinaryNotFound, Forbidden, InvalidRequest, PyboxError, ServerError,
                     _RetryLater, error_class)

EXIT_USAGE = 2  # `pybox run`: bad usage, including a request over a limit


def find_binary(binary: Union[str, "os.PathLike[str]", None] = None) -> str:
    """The `pybox` binary to run: `binary`, else env PYBOX_BIN, else `pybox` on PATH.

    A value with a slash is a path; one without is looked up on PATH. Raises BinaryNotFound.
    """
    tried = []
    for origin, value in (("binary", binary), ("PYBOX_BIN", os.environ.get("PYBOX_BIN")),
                          ("PATH", "pybox")):
        if value is None or value == "":
            continue
        value = os.fspath(value)
        if "/" in value:
            if os.path.isfile(value) and os.access(value, os.X_OK):
                return os.path.abspath(value)
        else:
            found = shutil.which(value)
            if found is not None:
                return os.path.abspath(found)
        tried.append(f"{origin}: {value}")
        if origin != "PATH":
            # An explicit choice that does not work is an error, not a reason to pick another.
            break
    raise BinaryNotFound(
        "no runnable `pybox` binary (" + "; ".join(tried) + "): build it with "
        "`cmake -S . -B build -G Ninja && cmake --build build`, then pass binary=, set "
        "PYBOX_BIN or put it on PATH; or give Sandbox a url= to use a pybox server")


def _seconds_arg(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text if text not in ("", "0") else "0.001"


def _without_option(msg: str) -> str:
    """A message of `pybox run` without the option it names first: the server's words."""
    for option in ("--file: ", "--return: "):
        if msg.startswith(option):
            return msg[len(option):]
    return msg


def _cli_message(stderr: bytes) -> str:
    """The last `pybox: ...` line of `pybox run`'s stderr, without the prefix and help hint."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    ours = [ln for ln in lines if ln.startswith("pybox: ")]
    if not lines:
        return ""
    msg = (ours or lines)[-1]
    if msg.startswith("pybox: "):
        msg = msg[len("pybox: "):]
    hint = " (see `pybox run --help`)"
    if msg.endswith(hint):
        msg = msg[:-len(hint)]
    return _without_option(msg)


class LocalBackend:
    """Runs requests with the `pybox` binary."""

    def __init__(self, binary: Union[str, "os.PathLike[str]", None] = None,
                 request_timeout: Optional[float] = None) -> None:
        self.binary = find_binary(binary)
        self.request_timeout = request_timeout

    def describe(self) -> str:
        return f"local ({self.binary})"

    def _argv(self, req: Request, tmp: str) -> List[str]:
        code_path = os.path.join(tmp, "main.py")
        with open(code_path, "w", encoding="utf-8", newline="") as f:
            f.write(req.code)
        argv = [self.binary, "run", "--json", code_path]
        if req.stdin is not None:
            stdin_path = os.path.join(tmp, "stdin")
            with open(stdin_path, "w", encoding="utf-8", newline="") as f:
                f.write(req.stdin)
            argv += ["--stdin", stdin_path]
        for i, (name, data) in enumerate(req.files):
            _file_arg_name(name)
            path = os.path.join(tmp, f"file{i}")
            with open(path, "wb") as f:
                f.write(data)
            argv += ["--file", f"{name}={path}"]
        for name in req.return_files:
            argv += ["--return", name]
        if req.main:
            argv.append("--main")
        if req.timeout is not None:
            argv += ["--timeout", _seconds_arg(req.timeout)]
        if req.memory_mb is not None:
            argv += ["--memory", str(req.memory_mb)]
        return argv

    def execute(self, req: Request) -> Result:
        _no_network(req.network)
        env = _env()
        with tempfile.TemporaryDirectory(prefix="pybox-client-") as tmp:
            argv = self._argv(req, tmp)
            try:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, env=env, cwd=tmp,
                                      timeout=self.request_timeout)
            except subprocess.TimeoutExpired:
                raise ServerError(f"`pybox run` did not finish within {self.request_timeout} s",
                                  type="Timeout") from None
            except OSError as e:
                raise BinaryNotFound(f"cannot run `{self.binary}`: {e.strerror or e}") from None
        return self._result(proc)

    def stream(self, req: Request) -> Iterator[Event]:
        """`pybox run --json --stream`: its event lines as Events as they come, then the end."""
        _no_network(req.network)
        with tempfile.TemporaryDirectory(prefix="pybox-client-") as tmp:
            argv = self._argv(req, tmp) + ["--stream"]
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, env=_env(), cwd=tmp,
                                        start_new_session=True)
            except OSError as e:
                raise BinaryNotFound(f"cannot run `{self.binary}`: {e.strerror or e}") from None
            err = _Drain(proc.stderr)
            timer = None
            timed_out = threading.Event()
            if self.request_timeout is not None:
                def expire() -> None:
                    timed_out.set()
                    proc.kill()
                timer = threading.Timer(self.request_timeout, expire)
                timer.daemon = True
                timer.start()
            try:
                final = b""
                assert proc.stdout is not None
                for line in proc.stdout:
                    obj = _json_line(line)
                    if isinstance(obj, dict) and set(obj) == {"event", "data"}:
                        try:
                            ev = event_of(obj["event"], obj["data"])
                        except (TypeError, ValueError) as e:
                            raise ServerError(f"`pybox run --stream` printed a malformed event: "
                                              f"{e}", type="BadResponse") from None
                        if ev is not None:
                            yield ev
                    else:
                        final = line
                proc.wait()
                if timed_out.is_set():
                    raise ServerError(f"`pybox run` did not finish within "
                                      f"{self.request_timeout} s", type="Timeout")
                result = self._result(subprocess.CompletedProcess(argv, proc.returncode, final,
                                                                  err.join()))
                yield from final_events(result)
            finally:
                if timer is not None:
                    timer.cancel()
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                err.join()
                if proc.stdout is not None:
                    proc.stdout.close()

    def open_session(self, timeout: Optional[float], memory_mb: Optional[int],
                     idle_ttl: Optional[int], max_lifetime: Optional[int],
                     files: Sequence[Tuple[str, bytes]] = ()) -> "LocalSession":
        argv = [self.binary, "repl", "--jsonl"]
        if timeout is not None:
            argv += ["--timeout", _seconds_arg(timeout)]
        if memory_mb is not None:
            argv += ["--memory", str(memory_mb)]
        if idle_ttl is not None:
            argv += ["--idle-ttl", str(idle_ttl)]
        if max_lifetime is not None:
            argv += ["--max-lifetime", str(max_lifetime)]
        # The input files go in at the opening (`pybox repl --file`), as POST /v1/sessions
        # takes them; `pybox repl` has read them once it says it is ready.
        with tempfile.TemporaryDirectory(prefix="pybox-client-") as tmp:
            for i, (name, data) in enumerate(files):
                _file_arg_name(name)
                path = os.path.join(tmp, f"file{i}")
                with open(path, "wb") as f:
                    f.write(data)
                argv += ["--file", f"{name}={path}"]
            return LocalSession(argv, self.request_timeout)

    @staticmethod
    def _result(proc: "subprocess.CompletedProcess[bytes]") -> Result:
        obj = None
        out = proc.stdout.strip()
        if out.startswith(b"{"):
            try:
                obj = json.loads(out)
            except ValueError:
                obj = None
        if isinstance(obj, dict) and isinstance(obj.get("error_details"), dict):
            details = obj["error_details"]
            etype = details.get("type") if isinstance(details.get("type"), str) else None
            message = details.get("message") if isinstance(details.get("message"), str) else ""
            raise error_class(etype, None)(_without_option(message)
                                           or "`pybox run` refused the request",
                                           type=etype, details=details)
        if isinstance(obj, dict) and "status" in obj:
            return Result.from_json(obj)
        msg = _cli_message(proc.stderr)
        if proc.returncode == EXIT_USAGE:
            raise InvalidRequest(msg or "`pybox run` refused the request",
                                 type="ValidationError")
        if proc.returncode < 0:
            raise ServerError(f"`pybox run` was killed by signal {-proc.returncode}"
                              + (f": {msg}" if msg else ""), type="InternalServerError")
        raise ServerError(msg or f"`pybox run` exited {proc.returncode} without a result",
                          type="InternalServerError")


def _file_arg_name(name: str) -> None:
    """Refuse a name that `--file NAME=PATH` (of `pybox run` and `pybox repl`) cannot carry."""
    if name == "":
        # `--file =PATH` is a usage error of its own; say what the server would.
        raise InvalidRequest("invalid file name ``: use 1-255 bytes, no `/`, not `.` "
                             "or `..`", type="ValidationError")
    if "=" in name:
        raise InvalidRequest(f"invalid file name `{name}`: local mode cannot pass a "
                             "name containing `=` to `pybox run --file NAME=PATH`",
                             type="ValidationError")


def _env() -> Dict[str, str]:
    """Our environment less every PYBOX_* variable: the Sandbox's arguments alone decide."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYBOX_")}


def _no_network(network: bool) -> None:
    if network:
        # Local mode has the anonymous policy: what a server answers an anonymous caller.
        raise Forbidden("network access is not available: pybox never gives executions a "
                        "network", type="NetworkNotAllowed")


def _json_line(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


class _Drain:
    """A thread that reads a pipe to its end, keeping the last 64 KiB (what a failure says)."""

    def __init__(self, pipe: Any) -> None:
        self._tail: Deque[bytes] = collections.deque()
        self._size = 0
        self._pipe = pipe
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for chunk in iter(lambda: self._pipe.read1(65536), b""):
            self._tail.append(chunk)
            self._size += len(chunk)
            while self._size > 65536 and len(self._tail) > 1:
                self._size -= len(self._tail.popleft())
        self._pipe.close()

    def join(self, timeout: Optional[float] = 10.0) -> bytes:
        self._thread.join(timeout)
        return b"".join(self._tail)


_CLOSED = object()  # what a waiting call gets when the process ended


class LocalSession:
    """One `pybox repl --jsonl` process: a session of the engine it runs."""

    def __init__(self, argv: List[str], request_timeout: Optional[float]) -> None:
        self._timeout = request_timeout
        self._ids = itertools.count(1)
        self._lock = threading.Lock()       # guards _waiting, _ended and the writes
        self._waiting: Dict[Any, "queue.Queue[Any]"] = {}
        self._ended = False
        ready: "queue.Queue[Any]" = queue.Queue()
        self._waiting["ready"] = ready
        try:
            self._proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, env=_env(), cwd="/",
                                          start_new_session=True)
        except OSError as e:
            raise BinaryNotFound(f"cannot run `{argv[0]}`: {e.strerror or e}") from None
        self._err = _Drain(self._proc.stderr)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            first = ready.get(timeout=self._timeout)
        except queue.Empty:
            self._kill()
            raise ServerError(f"`pybox repl --jsonl` did not start within {self._timeout} s",
                              type="Timeout") from None
        if first is _CLOSED or not isinstance(first, dict):
            self._kill()
            raise ServerError(f"`pybox repl --jsonl` ended before its session opened: "
                              f"{self._stderr()}", type="InternalServerError")
        if first.get("ready") is not True:
            self._kill()
            raise _failure(first.get("error"))
        self.id: str = first["session"]["id"]

    # -- the process --

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            obj = _json_line(line)
            if not isinstance(obj, dict):
                continue
            key = "ready" if "ready" in obj else obj.get("id")
            with self._lock:
                q = self._waiting.get(key)
            if q is not None:
                q.put(obj)
        with self._lock:
            self._ended = True
            waiting = list(self._waiting.values())
        for q in waiting:
            q.put(_CLOSED)
        self._proc.stdout.close()

    def _stderr(self) -> str:
        text = self._err.join(timeout=1.0).decode("utf-8", "replace").strip()
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return lines[-1] if lines else "(nothing on its stderr)"

    def _kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()
        if self._proc.stdin is not None:
            try:
                self._proc.stdin.close()
            except OSError:
                pass
        self._reader.join(5)
        self._err.join(5)

    def _send(self, rq: Dict[str, Any]) -> "queue.Queue[Any]":
        rid = next(self._ids)
        rq["id"] = rid
        q: "queue.Queue[Any]" = queue.Queue()
        line = (dumps(rq) + "\n").encode("ascii")
        with self._lock:
            if self._ended or self._proc.poll() is not None:
                raise ServerError(f"the session's `pybox repl` process has ended: "
                                  f"{self._stderr()}", type="InternalServerError")
            self._waiting[rid] = q
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(line)
                self._proc.stdin.flush()
            except OSError:
                del self._waiting[rid]
                raise ServerError("the session's `pybox repl` process is gone",
                                  type="InternalServerError") from None
        q.rid = rid  # type: ignore[attr-defined]
        return q

    def _next(self, q: "queue.Queue[Any]", run_timeout: Optional[float] = None) -> Any:
        timeout = self._timeout
        if timeout is not None and run_timeout is not None:
            timeout = max(timeout, run_timeout + 30.0)
        try:
            msg = q.get(timeout=timeout)
        except queue.Empty:
            raise ServerError(f"`pybox repl` did not answer within {timeout} s",
                              type="Timeout") from None
        if msg is _CLOSED:
            raise ServerError(f"the session's `pybox repl` process ended: {self._stderr()}",
                              type="InternalServerError")
        return msg

    def _done(self, q: "queue.Queue[Any]") -> None:
        with self._lock:
            self._waiting.pop(getattr(q, "rid", None), None)

    def _call(self, op: str, run_timeout: Optional[float] = None, **fields: Any
              ) -> Dict[str, Any]:
        q = self._send({"op": op, **fields})
        try:
            while True:
                msg = self._next(q, run_timeout)
                if "ok" in msg:
                    break
        finally:
            self._done(q)
        if not msg["ok"]:
            raise _failure(msg.get("error"))
        return msg

    # -- the session --

    @staticmethod
    def _fields(req: Request, stream: bool) -> Dict[str, Any]:
        fields: Dict[str, Any] = {"code": req.code}
        if req.stdin is not None:
            fields["stdin"] = req.stdin
        if req.timeout is not None:
            fields["timeout"] = req.timeout
        if req.files:
            fields["files"] = [{"name": n, "content_base64": base64.b64encode(d).decode()}
                               for n, d in req.files]
        if req.return_files:
            fields["return_files"] = list(req.return_files)
        if req.main:
            fields["main"] = True
        if stream:
            fields["stream"] = True
        return fields

    def run(self, req: Request) -> Result:
        msg = self._call("execute", req.timeout, **self._fields(req, False))
        return Result.from_json(msg.get("result"))

    def stream(self, req: Request) -> Iterator[Event]:
        q = self._send({"op": "execute", **self._fields(req, True)})
        try:
            while True:
                msg = self._next(q, req.timeout)
                if "ok" in msg:
                    break
                try:
                    ev = event_of(msg.get("event"), msg.get("data"))
                except (TypeError, ValueError) as e:
                    raise ServerError(f"`pybox repl` sent a malformed event: {e}",
                                      type="BadResponse") from None
                if ev is not None:
                    yield ev
        finally:
            self._done(q)
        if not msg["ok"]:
            raise _failure(msg.get("error"))
        yield from final_events(Result.from_json(msg.get("result")))

    def put(self, path: str, data: bytes) -> None:
        self._call("put", path=path, content_base64=base64.b64encode(data).decode())

    def get(self, path: str) -> bytes:
        msg = self._call("get", path=path)
        return base64.b64decode(msg.get("content_base64") or "")

    def delete(self, path: str) -> None:
        self._call("delete", path=path)

    def list(self) -> List[Any]:
        return list(self._call("list").get("files") or [])

    def interrupt(self) -> bool:
        return bool(self._call("interrupt").get("interrupted"))

    def restart(self) -> None:
        self._call("restart")

    def extend(self, idle_ttl: Optional[int], max_lifetime: Optional[int]) -> None:
        fields = {k: v for k, v in (("idle_ttl_s", idle_ttl), ("max_lifetime_s", max_lifetime))
                  if v is not None}
        self._call("extend", **fields)

    def close(self) -> None:
        """End the session and its process: close, then SIGTERM, then SIGKILL."""
        if self._proc.poll() is None:
            try:
                self._call("close")
            except PyboxError:
                pass
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        self._kill()


def _failure(error: Any) -> PyboxError:
    """The exception of an error object of `pybox repl --jsonl` ({type, message, code,
    retry_after, reason}), as remote mode raises it for the same type."""
    error = error if isinstance(error, dict) else {}
    etype = error.get("type") if isinstance(error.get("type"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else ""
    cls = error_class(etype, None)
    kw: Dict[str, Any] = dict(type=etype, details=error)
    if issubclass(cls, _RetryLater):
        kw["retry_after"] = error.get("retry_after")
    return cls(message or "`pybox repl` refused the request", **kw)
