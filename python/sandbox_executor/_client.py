"""SandboxClient: one interface, local (pybox's sandbox on this machine) or remote (a server)."""
from __future__ import annotations

import math
from typing import Dict, Mapping, Optional, Union

from . import _local, _remote
from ._config import (DEFAULT_API_TIMEOUT, DEFAULT_MAX_MEMORY_MB, DEFAULT_TIMEOUT,
                      ClientConfig, ExecutionMode, PathArg)
from ._result import ExecutionResult, SandboxException

# A run is still a run: the wait for its answer is never shorter than its own limit plus this.
ANSWER_MARGIN = 30.0


def _seconds(value: object, what: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")
    return value


def _input_files(files: Optional[Mapping[str, object]]) -> Dict[str, bytes]:
    if files is None:
        return {}
    if not isinstance(files, Mapping):
        raise SandboxException("input_files must be a mapping {name: bytes}")
    out: Dict[str, bytes] = {}
    for name, data in files.items():
        if not isinstance(name, str):
            raise SandboxException(f"input file names must be str, not {type(name).__name__}")
        if isinstance(data, str):
            data = data.encode("utf-8")
        elif isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):
            raise SandboxException(f"input file {name!r} must be bytes or str, not "
                                   f"{type(data).__name__}")
        out[name] = data
    return out


class SandboxClient:
    """Runs Python code in a sandbox: pybox's, on this machine, or a server's.

    SandboxClient() is local mode: every execute() is one run of `pybox.Sandbox` in local mode
    (the `pybox` binary: `binary`, else env PYBOX_BIN, else PATH). SandboxClient(server_url=...)
    is remote mode: every execute() is one `POST {server_url}/execute` to a pybox server or any
    server answering the same shape. A script that fails is an ExecutionResult, never an
    exception.

    The client holds no connection or process between calls, so it can be shared by threads.
    Its attributes are read at each call and may be changed between calls.

    Args:
        server_url: the server's base URL, e.g. "http://127.0.0.1:8080"; None or "": local.
        timeout: default wall-time limit of each execution, in seconds (pybox's `timeout`;
            a server may cap it at the caller's limit).
        allow_network: ask for network access by default. pybox never gives an execution a
            network: locally, and on a pybox server, such an execute() raises SandboxException.
        mode: ExecutionMode.SECURE or ExecutionMode.SIMPLE (or "secure", "simple"). In pybox
            both are the same kernel sandbox; see ExecutionMode.
        max_memory_mb: memory limit of each execution, in MiB (pybox's `memory_mb`, which
            counts files written in the sandbox too). Local mode only: the documented request
            of remote mode has no such field, so there the server's limit applies.
        api_timeout: seconds to wait for an answer (the HTTP exchange; locally the whole
            `pybox run`), never less than the execution's timeout plus 30 s.
        api_key: remote mode: sent as `Authorization: Bearer KEY`; ignored in local mode.
        binary: local mode: the `pybox` binary (path, or name looked up on PATH); None:
            pybox's choice (env PYBOX_BIN, else PATH).

    Raises:
        ValueError: a server_url that is not a base http:// or https:// URL, an unknown mode,
            or a timeout, max_memory_mb or api_timeout that is not a positive number.
    """

    def __init__(self, server_url: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT,
                 allow_network: bool = False,
                 mode: Union[ExecutionMode, str] = ExecutionMode.SECURE,
                 max_memory_mb: int = DEFAULT_MAX_MEMORY_MB,
                 api_timeout: float = DEFAULT_API_TIMEOUT, api_key: Optional[str] = None, *,
                 binary: Optional[PathArg] = None) -> None:
        self.server_url = _remote.base_url(server_url) if server_url else None
        self.timeout = _seconds(timeout, "timeout")
        self.allow_network = bool(allow_network)
        self.mode = ExecutionMode.parse(mode)
        if (isinstance(max_memory_mb, bool) or not isinstance(max_memory_mb, int)
                or max_memory_mb <= 0):
            raise ValueError(f"max_memory_mb must be a positive whole number of MiB, not "
                             f"{max_memory_mb!r}")
        self.max_memory_mb = max_memory_mb
        self.api_timeout = _seconds(api_timeout, "api_timeout")
        self.api_key = api_key
        self.binary = binary

    @classmethod
    def from_config(cls, config: ClientConfig, *, binary: Optional[PathArg] = None
                    ) -> "SandboxClient":
        """A SandboxClient with the settings of `config` (and local mode's `binary`)."""
        return cls(server_url=config.server_url, timeout=config.timeout,
                   allow_network=config.allow_network, mode=config.mode,
                   max_memory_mb=config.max_memory_mb, api_timeout=config.api_timeout,
                   api_key=config.api_key, binary=binary)

    @classmethod
    def from_env(cls, env_file: Optional[PathArg] = ".env",
                 environ: Optional[Mapping[str, str]] = None, *,
                 binary: Optional[PathArg] = None) -> "SandboxClient":
        """A SandboxClient configured from the environment (or `environ`) and `.env`.

        SANDBOX_MODE (secure|simple), SANDBOX_TIMEOUT, SANDBOX_ALLOW_NETWORK,
        SANDBOX_MAX_MEMORY_MB, SANDBOX_SERVER_URL (remote mode when set), SANDBOX_API_KEY and
        SANDBOX_API_TIMEOUT, from the environment or else from `env_file` (default `.env` in
        the current directory; None: no file); see ClientConfig.from_env().

        Raises ValueError naming a variable whose value is not valid, or a malformed file.
        """
        return cls.from_config(ClientConfig.from_env(env_file, environ), binary=binary)

    @property
    def is_remote(self) -> bool:
        """True in remote mode (a server_url), False in local mode."""
        return self.server_url is not None

    def __repr__(self) -> str:
        where = self.server_url or "local"
        return f"<sandbox_executor.SandboxClient {where} mode={self.mode.value}>"

    def execute(self, code: str, input_files: Optional[Mapping[str, bytes]] = None,
                timeout: Optional[float] = None,
                allow_network: Optional[bool] = None) -> ExecutionResult:
        """Run `code` in a fresh sandbox and return what it did.

        Args:
            code: the Python source (str, or UTF-8 bytes).
            input_files: files {name: content} placed in the script's working directory; a
                str content is encoded as UTF-8. Local mode takes at most 2 and returns at
                most 10 files, inputs counted (pybox's limits; see _local's docstring).
            timeout: wall-time limit of this execution, in seconds (default: the client's).
            allow_network: ask for network access (default: the client's); see the class.

        Returns:
            An ExecutionResult, whatever the script did: an exception, a non-zero exit, a
            timeout (return_code -1) or code refused by the sandbox's policy (return_code 1).

        Raises:
            SandboxException: the request failed: a non-2xx answer or none, an invalid
                request, no `pybox` binary in local mode, network access asked.
        """
        if isinstance(code, (bytes, bytearray)):
            try:
                code = bytes(code).decode("utf-8")
            except UnicodeDecodeError as e:
                raise SandboxException(f"code is not UTF-8 text: {e}") from None
        if not isinstance(code, str):
            raise SandboxException(f"code must be str, not {type(code).__name__}")
        try:
            run_timeout = _seconds(self.timeout if timeout is None else timeout, "timeout")
        except ValueError as e:
            raise SandboxException(str(e)) from None
        network = self.allow_network if allow_network is None else bool(allow_network)
        files = _input_files(input_files)
        wait = max(self.api_timeout, run_timeout + ANSWER_MARGIN)
        if self.server_url is not None:
            return _remote.execute(self.server_url, self.api_key, code, files, run_timeout,
                                   network, wait)
        return _local.execute(code, files, run_timeout, self.max_memory_mb, network, wait,
                              self.binary)

    def health_check(self) -> bool:
        """True when executions can run: remotely, `GET {server_url}/health` answers 200;
        locally, the sandbox runs a trivial script. Never raises."""
        if self.server_url is not None:
            return _remote.health_check(self.server_url, self.api_key, self.api_timeout)
        return _local.health_check(self.binary)

