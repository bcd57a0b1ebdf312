"""ExecutionMode and ClientConfig, and the configuration read from the environment or a `.env`."""
from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
from typing import Dict, Mapping, Optional, Union

from ._remote import base_url

DEFAULT_TIMEOUT = 30
DEFAULT_MAX_MEMORY_MB = 128
DEFAULT_API_TIMEOUT = 60

PathArg = Union[str, "os.PathLike[str]"]


class ExecutionMode(str, enum.Enum):
    """How code is run. Both modes are pybox's kernel sandbox: pybox never runs code unsandboxed.

    SECURE is the default. SIMPLE is accepted so that configurations written for other
    executors keep working; in pybox it runs the same sandbox, with the same limits and the same
    import allowlist, and is only reported back (SandboxClient.mode). A server decides its own
    mode; this one is not sent.
    """

    SECURE = "secure"
    SIMPLE = "simple"

    @classmethod
    def parse(cls, value: Union["ExecutionMode", str]) -> "ExecutionMode":
        """An ExecutionMode from itself or its name ("secure", "simple"; any case).

        Raises ValueError for anything else.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        raise ValueError(f"execution mode must be `secure` or `simple`, not {value!r}")


@dataclasses.dataclass
class ClientConfig:
    """The settings of a SandboxClient, as SandboxClient.from_config() takes them.

    Attributes:
        server_url: a server's base URL ("http://host:port"); None or "": local mode.
        mode: ExecutionMode.SECURE or ExecutionMode.SIMPLE (the same sandbox in pybox).
        timeout: default wall-time limit of each execution, in seconds.
        allow_network: ask for network access by default. pybox never gives an execution a
            network, so in local mode, and on a pybox server, such an execution raises
            SandboxException.
        max_memory_mb: memory limit of each execution, in MiB (pybox's `memory_mb`).
        api_timeout: seconds to wait for an answer, never less than the execution's own
            timeout plus 30 s.
        api_key: remote mode: sent as `Authorization: Bearer KEY`; ignored in local mode.
    """

    server_url: Optional[str] = None
    mode: ExecutionMode = ExecutionMode.SECURE
    timeout: float = DEFAULT_TIMEOUT
    allow_network: bool = False
    max_memory_mb: int = DEFAULT_MAX_MEMORY_MB
    api_timeout: float = DEFAULT_API_TIMEOUT
    api_key: Optional[str] = None

    @classmethod
    def from_env(cls, env_file: Optional[PathArg] = ".env",
                 environ: Optional[Mapping[str, str]] = None) -> "ClientConfig":
        """A ClientConfig from the environment (or `environ`) and the file `env_file`.

        Variables (one set to "" counts as unset, in the environment as in the file):
            SANDBOX_MODE            secure | simple (any case)
            SANDBOX_TIMEOUT         seconds
            SANDBOX_ALLOW_NETWORK   1/0, true/false, yes/no, on/off
            SANDBOX_MAX_MEMORY_MB   whole MiB
            SANDBOX_SERVER_URL      remote mode when set
            SANDBOX_API_KEY         remote mode's key
            SANDBOX_API_TIMEOUT     seconds

        `env_file` (default `.env`, relative to the current directory; None: none) may set any
        of them; a variable of the environment wins over the file, unless it is empty. A missing
        file is no error; its syntax is parse_env()'s. Local mode's `pybox` binary is pybox's
        to find (env PYBOX_BIN, else PATH), from the environment only.

        Raises ValueError naming the variable whose value is not valid, or a malformed file.
        """
        values: Dict[str, str] = {}
        if env_file is not None:
            try:
                values.update(read_env_file(env_file))
            except FileNotFoundError:
                pass
        env = os.environ if environ is None else environ
        values.update((name, value) for name, value in env.items() if value)

        def get(name: str) -> Optional[str]:
            value = values.get(name)
            return value if value else None

        config = cls()
        config.server_url = get("SANDBOX_SERVER_URL")
        if config.server_url is not None:
            try:
                base_url(config.server_url)
            except ValueError as e:
                raise ValueError(f"SANDBOX_SERVER_URL: {e}") from None
        config.api_key = get("SANDBOX_API_KEY")
        if get("SANDBOX_MODE") is not None:
            try:
                config.mode = ExecutionMode.parse(values["SANDBOX_MODE"])
            except ValueError:
                raise ValueError(f"SANDBOX_MODE: `{values['SANDBOX_MODE']}` is not `secure` or "
                                 "`simple`") from None
        if get("SANDBOX_TIMEOUT") is not None:
            config.timeout = _env_seconds(values["SANDBOX_TIMEOUT"], "SANDBOX_TIMEOUT")
        if get("SANDBOX_API_TIMEOUT") is not None:
            config.api_timeout = _env_seconds(values["SANDBOX_API_TIMEOUT"],
                                              "SANDBOX_API_TIMEOUT")
        if get("SANDBOX_MAX_MEMORY_MB") is not None:
            text = values["SANDBOX_MAX_MEMORY_MB"].strip()
            if not (text.isascii() and text.isdigit()) or int(text) == 0:
                raise ValueError(f"SANDBOX_MAX_MEMORY_MB: `{text}` is not a positive whole "
                                 "number of MiB")
            config.max_memory_mb = int(text)
        if get("SANDBOX_ALLOW_NETWORK") is not None:
            config.allow_network = _env_flag(values["SANDBOX_ALLOW_NETWORK"],
                                             "SANDBOX_ALLOW_NETWORK")
        return config


def _env_seconds(value: str, name: str) -> float:
    try:
        seconds = float(value.strip())
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{name}: `{value}` is not a positive number of seconds")
    return int(seconds) if seconds.is_integer() else seconds


def _env_flag(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}: `{value}` is not a yes/no value such as 1 or 0")


_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def _closing_quote(text: str, quote: str) -> int:
    """The index of the quote that ends `text` (which follows an opening one), or -1."""
    i = 0
    while i < len(text):
        if quote == '"' and text[i] == "\\":
            i += 2
            continue
        if text[i] == quote:
            return i
        i += 1
    return -1


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text,
                  flags=re.DOTALL)


def parse_env(text: str, origin: str = "<.env>") -> Dict[str, str]:
    """The assignments of a `.env` text, {KEY: VALUE}; a later one wins over an earlier one.

    One `KEY=VALUE` a line, optionally preceded by `export `; blank lines and lines starting
    with `#` are comments, as is ` #...` after an unquoted value. Unquoted values are stripped.
    In '...' nothing is special; in "..." the escapes \\n \\t \\r \\" \\\\ \\$ are; either may span
    lines, and a comment may follow the closing quote. Nothing is expanded (`$VAR` stays as
    written). A line that is not an assignment is ignored, as other `.env` readers do.

    Raises ValueError (naming `origin` and the line) for an unterminated quote or text after
    a closing quote.
    """
    values: Dict[str, str] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        lineno = i + 1
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("export ") or line.startswith("export\t"):
            line = line[len("export"):].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            continue
        rest = rest.lstrip()
        if rest[:1] in ("'", '"'):
            quote, body = rest[0], rest[1:]
            end = _closing_quote(body, quote)
            while end < 0 and i < len(lines):
                body += "\n" + lines[i]
                i += 1
                end = _closing_quote(body, quote)
            if end < 0:
                raise ValueError(f"{origin}:{lineno}: {key}: the value's {quote} is never closed")
            after = body[end + 1:].strip()
            if after and not after.startswith("#"):
                raise ValueError(f"{origin}:{lineno}: {key}: `{after}` after the closing "
                                 f"{quote}")
            value = body[:end]
            values[key] = _unescape(value) if quote == '"' else value
        elif rest.startswith("#"):
            values[key] = ""
        else:
            comment = re.search(r"\s#", rest)
            values[key] = (rest[:comment.start()] if comment else rest).strip()
    return values


def read_env_file(path: PathArg) -> Dict[str, str]:
    """The assignments of the `.env` file at `path` (UTF-8), as parse_env() reads them.

    Raises OSError (FileNotFoundError when there is none) or ValueError.
    """
    with open(path, encoding="utf-8") as f:
        return parse_env(f.read(), os.fspath(path))
