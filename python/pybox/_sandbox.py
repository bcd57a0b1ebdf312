"""Sandbox: one interface to pybox, local or remote."""
from __future__ import annotations

import fnmatch

import os
from typing import Iterable, Iterator, Mapping, Optional, Union

from . import _request
from ._local import LocalBackend
from ._remote import RemoteBackend
from ._request import Data
from ._result import Event, Result
from ._session import Session, session_options
from .errors import Forbidden, InvalidRequest, ServerError

DEFAULT_REQUEST_TIMEOUT = 300.0


def _env_flag(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("", "0", "false", "no", "off"):
        return False
    raise InvalidRequest(f"{name}: `{value}` is not a yes/no value such as 1 or 0",
                         type="ValidationError")


class Sandbox:
    """Runs Python code in a pybox sandbox: on this machine, or on a pybox server.

    Sandbox() is local mode: every run() starts the `pybox` binary (`binary`, else env
    PYBOX_BIN, else PATH). Sandbox(url=..., api_key=...) is remote mode: every run() is one
    `POST {url}/v1/execute`. The same request gives the same Result in both modes.

    A Sandbox holds no connection or process between calls, so it can be shared by threads.

    Args:
        url: the pybox server, e.g. "http://127.0.0.1:8080"; None for local mode.
        api_key: the server's API key (sent as `Authorization: Bearer`); None: anonymous.
        timeout: default wall-time limit of each run, in seconds (None: pybox's default, 10 s;
            a server caps it at the caller's policy).
        memory_mb: default memory limit of each run, in MiB (None: pybox's default, 256).
        network: ask for network access. pybox never gives an execution a network, so a run
            with network=True raises Forbidden where the caller's policy does not allow
            network (local mode, which has the anonymous policy, and a server's callers
            without such a key) and Unsupported (a ServerError) for a key allowed it.
        binary: local mode only: the `pybox` binary (path, or name looked up on PATH).
        request_timeout: seconds to wait for an answer (a socket timeout in remote mode; the
            whole `pybox run` in local mode) before raising; default 300, None: forever.

    Raises:
        BinaryNotFound: local mode without a runnable `pybox` binary.
        ValueError: a URL that is not http:// or https://, or an api_key without a url.
        InvalidRequest: a bad default timeout or memory_mb.
    """

    def __init__(self, url: Optional[str] = None, api_key: Optional[str] = None, *,
                 timeout: Optional[float] = None, memory_mb: Optional[int] = None,
                 network: bool = False,
                 binary: Union[str, "os.PathLike[str]", None] = None,
                 request_timeout: Optional[float] = DEFAULT_REQUEST_TIMEOUT) -> None:
        self.timeout = _request.seconds(timeout, "timeout")
        self.memory_mb = _request.mebibytes(memory_mb, "memory_mb")
        self.network = bool(network)
        self._backend: Union[LocalBackend, RemoteBackend]
        if url:
            if binary is not None:
                raise ValueError("binary= is for local mode; remote mode (url=) runs no binary")
            self._backend = RemoteBackend(url, api_key, request_timeout)
        else:
            if api_key:
                raise ValueError("api_key= needs url=: local mode has no server to send it to")
            self._backend = LocalBackend(binary, request_timeout)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None, **overrides: object
                 ) -> "Sandbox":
        """A Sandbox configured from the environment (or `environ`):

        PYBOX_SERVER (remote mode when set and not empty), PYBOX_API_KEY, PYBOX_TIMEOUT
        (seconds), PYBOX_MEMORY_MB, PYBOX_NETWORK (1/0, true/false, yes/no); local mode also
        reads PYBOX_BIN. Keyword arguments override what the environment says.

        Raises InvalidRequest when a variable's value is not valid.
        """
        env = os.environ if environ is None else environ
        kw: dict = {}
        if env.get("PYBOX_SERVER"):
            kw["url"] = env["PYBOX_SERVER"]
            if env.get("PYBOX_API_KEY"):
                kw["api_key"] = env["PYBOX_API_KEY"]
        elif environ is not None and env.get("PYBOX_BIN"):
            kw["binary"] = env["PYBOX_BIN"]
        if env.get("PYBOX_TIMEOUT"):
            try:
                kw["timeout"] = float(env["PYBOX_TIMEOUT"].strip().rstrip("s"))
            except ValueError:
                raise InvalidRequest(f"PYBOX_TIMEOUT: `{env['PYBOX_TIMEOUT']}` is not a number "
                                     "of seconds", type="ValidationError") from None
        if env.get("PYBOX_MEMORY_MB"):
            try:
                kw["memory_mb"] = int(env["PYBOX_MEMORY_MB"].strip())
            except ValueError:
                raise InvalidRequest(f"PYBOX_MEMORY_MB: `{env['PYBOX_MEMORY_MB']}` is not a "
                                     "whole number of MiB", type="ValidationError") from None
        if "PYBOX_NETWORK" in env:
            kw["network"] = _env_flag(env["PYBOX_NETWORK"], "PYBOX_NETWORK")
        kw.update(overrides)
        return cls(**kw)  # type: ignore[arg-type]

    @property
    def mode(self) -> str:
        """"local" or "remote"."""
        return "remote" if isinstance(self._backend, RemoteBackend) else "local"

    @property
    def url(self) -> Optional[str]:
        """The server's URL in remote mode, else None."""
        return self._backend.url if isinstance(self._backend, RemoteBackend) else None

    @property
    def binary(self) -> Optional[str]:
        """The `pybox` binary in local mode, else None."""
        return self._backend.binary if isinstance(self._backend, LocalBackend) else None

    def __repr__(self) -> str:
        return f"<pybox.Sandbox {self._backend.describe()}>"

    def run(self, code: Data, stdin: Optional[Data] = None,
            files: Optional[Mapping[str, Data]] = None,
            return_files: Optional[Iterable[str]] = None, main: bool = False,
            timeout: Optional[float] = None, memory_mb: Optional[int] = None) -> Result:
        """Run `code` in a fresh sandbox and return what it did.

        Args:
            code: the Python source (str, or UTF-8 bytes); it runs as `main.py` in /work.
            stdin: the script's standard input (str, or UTF-8 bytes); None: empty.
            files: input files {name: content}, placed in the working directory; a str
                content is encoded as UTF-8.
            return_files: names of files to send back from the working directory afterwards;
                each comes back in Result.files, or in Result.file_errors with the reason.
            main: call main() after running the module, and put its return value (which
                must be JSON-serialisable) in Result.result.
            timeout: wall-time limit in seconds for this run (default: the Sandbox's).
            memory_mb: memory limit in MiB for this run (default: the Sandbox's).

        Returns:
            A Result, whatever the script did: a non-zero exit, an exception, a timeout, the
            memory limit or code rejected by policy are all Results (see Result.status).

        Raises:
            InvalidRequest: a malformed request (bad file name, over a limit, ...).
            RequestTooLarge: the request is over the server's size limit.
            ConnectionError: remote mode: the server could not be reached or did not answer.
            Unauthorized, Forbidden, RateLimited, ServerBusy, ServerError, Unsupported: see
                pybox.errors.
            BinaryNotFound: local mode: the `pybox` binary cannot be run.
        """
        req = _request.build(code, stdin, files, return_files, main,
                             self.timeout if timeout is None else timeout,
                             self.memory_mb if memory_mb is None else memory_mb,
                             self.network)
        result = self._backend.execute(req)
        _check_returned(result, req.return_files)
        return result

    def stream(self, code: Data, stdin: Optional[Data] = None,
               files: Optional[Mapping[str, Data]] = None,
               return_files: Optional[Iterable[str]] = None, main: bool = False,
               timeout: Optional[float] = None, memory_mb: Optional[int] = None
               ) -> Iterator[Event]:
        """Run `code` as run() does, yielding its Events as they happen:

            for ev in sandbox.stream("for i in range(3): print(i, flush=True)"):
                if ev.kind == "stdout":
                    print(ev.text, end="")
                elif ev.kind == "end":
                    result = ev.result

        Kinds: "stdout" and "stderr" (ev.text), "display" and "result" (ev.output, an Output),
        "error" (ev.error, the result's error object, just before the end) and "end"
        (ev.result, the whole Result, always last). Remote mode reads the server's Server-Sent
        Events; local mode `pybox run --stream`'s lines. The request is checked, and the
        exceptions of run() raised, when the iteration starts; leaving the loop early stops
        the execution.
        """
        req = _request.build(code, stdin, files, return_files, main,
                             self.timeout if timeout is None else timeout,
                             self.memory_mb if memory_mb is None else memory_mb,
                             self.network)
        return self._stream(req)

    def _stream(self, req: "_request.Request") -> Iterator[Event]:
        for ev in self._backend.stream(req):
            if ev.kind == "end" and ev.result is not None:
                _check_returned(ev.result, req.return_files)
            yield ev

    def session(self, timeout: Optional[float] = None, memory_mb: Optional[int] = None,
                idle_ttl: Optional[int] = None, max_lifetime: Optional[int] = None,
                files: Optional[Mapping[str, Data]] = None) -> Session:
        """Open a session: an interpreter kept alive between runs (see Session).

            with sandbox.session() as s:
                s.run("import json; data = [1, 2, 3]")
                r = s.run("sum(data)")
                r.value.text                    # "6"
                s.files.write("in.csv", b"a,b\n1,2\n")

        Args:
            timeout: each run's wall-time limit in seconds when the run sets none (default:
                the Sandbox's, else pybox's 10 s or the server's).
            memory_mb: the session's memory limit for its whole life (default: the
                Sandbox's).
            idle_ttl: end it after this many seconds without a call (default: the server's;
                none locally); counted from the end of the last call.
            max_lifetime: end it this many seconds after it was opened (likewise). Either
                ends it in both modes alike, between calls too: its processes and memory are
                freed then, and the next call raises SessionDead ("idle_timeout",
                "max_lifetime"). Session.extend() changes them.
            files: input files {name: content} in /work from the start, sent with the
                opening as run()'s files are sent with a run (flat names, within the same
                caps: 2 files of 8 MiB by default); put more, or files in subdirectories,
                with Session.files.write().

        Local mode holds the session in one `pybox repl --jsonl` process, remote mode on the
        server (`/v1/sessions`); both give the same Results. Raises what run() raises, and
        TooManySessions when the caller has as many sessions open as the server allows.
        """
        opts = session_options(self.timeout if timeout is None else timeout,
                               self.memory_mb if memory_mb is None else memory_mb,
                               idle_ttl, max_lifetime)
        if self.network:
            raise Forbidden("sessions run without network, as every execution does",
                            type="NetworkNotAllowed")
        checked = _request.build("", None, files, None, False, None, None, False)
        return Session(self._backend.open_session(**opts, files=checked.files), self.mode)


def _check_returned(result: "Result", asked: Iterable[str]) -> None:
    """Refuse an answer that returns a file the request did not ask back, or one whose name is
    not a flat file name: a caller that saves Result.files under their names must never be led
    outside its directory (as libpybox refuses the same answer)."""
    asked = list(asked or ())
    for name in list(result.files) + list(result.file_errors):
        flat = (0 < len(name.encode("utf-8", "surrogateescape")) <= 255 and "/" not in name
                and "\0" not in name and name not in (".", ".."))
        wanted = name in asked or any(
            fnmatch.fnmatchcase(name, p) and not (name.startswith(".") and not p.startswith("."))
            for p in asked)
        if not flat or not wanted:
            raise ServerError(f"the answer returns a file {name!r}, which is not a flat name the "
                              "request asked back: refused", type="BadResponse")
