"""Local mode: each execution is one `pybox run --json` process on this machine.

Theory of operation: the code, stdin and input files are written to a private temporary
directory (mode 0700, removed whatever happens), `pybox run --json FILE --stdin PATH
--file NAME=PATH... --return NAME...` runs with that directory as its working directory and
with no PYBOX_* variable in its environment (the Sandbox's arguments alone decide the limits),
and the result object it prints on stdout becomes the Result. A request it refuses prints the
server's error object instead, whose type raises what it raises in remote mode
(errors.error_class). Without either, its exit status says what failed: 2 is a usage error
(the request was invalid), anything else a failure of pybox itself.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from typing import List, Optional, Union

from ._request import Request
from ._result import Result
from .errors import BinaryNotFound, Forbidden, InvalidRequest, ServerError, error_class

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
            if name == "":
                # `--file =PATH` is a usage error of its own; say what the server would.
                raise InvalidRequest("invalid file name ``: use 1-255 bytes, no `/`, not `.` "
                                     "or `..`", type="ValidationError")
            if "=" in name:
                raise InvalidRequest(f"invalid file name `{name}`: local mode cannot pass a "
                                     "name containing `=` to `pybox run --file NAME=PATH`",
                                     type="ValidationError")
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
        if req.network:
            # Local mode has the anonymous policy: what a server answers an anonymous caller.
            raise Forbidden("network access is not available: pybox never gives executions a "
                            "network", type="NetworkNotAllowed")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYBOX_")}
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
