"""One execution request, checked once before either mode carries it out."""
from __future__ import annotations

import dataclasses
import math
from typing import Iterable, List, Mapping, Optional, Tuple, Union

from .errors import InvalidRequest

Data = Union[bytes, bytearray, memoryview, str]


@dataclasses.dataclass(frozen=True)
class Request:
    """A checked request: what both backends receive."""

    code: str
    stdin: Optional[str]
    files: List[Tuple[str, bytes]]       # input files, in the caller's order
    return_files: List[str]              # names to send back from the working directory
    main: bool                           # call main() and report its return value
    timeout: Optional[float]             # seconds of wall time; None: the default
    memory_mb: Optional[int]             # MiB; None: the default
    network: bool                        # ask for network access (pybox never grants it)


def _invalid(message: str) -> InvalidRequest:
    return InvalidRequest(message, type="ValidationError")


def _text(value: Data, what: str) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bytes, bytearray, memoryview)):
        try:
            text = bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise _invalid(f"{what} is not UTF-8 text: {e}") from None
    else:
        raise _invalid(f"{what} must be str or bytes, not {type(value).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _invalid(f"{what} cannot be encoded as UTF-8: {e}") from None
    return text


def _bytes(value: Data, what: str) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return _text(value, what).encode("utf-8")
    raise _invalid(f"{what} must be bytes or str, not {type(value).__name__}")


def _name(name: object, what: str) -> str:
    if not isinstance(name, str):
        raise _invalid(f"{what} names must be str, not {type(name).__name__}")
    # The sandbox checks names itself; NUL cannot travel in a command line or be a file name.
    if "\0" in name:
        raise _invalid(f"invalid file name {name!r}: contains NUL")
    return name


def seconds(value: object, what: str) -> Optional[float]:
    """A positive, finite number of seconds, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(f"{what} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise _invalid(f"{what} must be a positive number of seconds, not {value!r}")
    return float(value)


def mebibytes(value: object, what: str) -> Optional[int]:
    """A positive whole number of MiB, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _invalid(f"{what} must be a positive whole number of MiB, not {value!r}")
    return value


def build(code: Data, stdin: Optional[Data], files: Optional[Mapping[str, Data]],
          return_files: Optional[Iterable[str]], main: bool, timeout: object,
          memory_mb: object, network: bool) -> Request:
    """Check the arguments of Sandbox.run; raises InvalidRequest."""
    if isinstance(return_files, (str, bytes)):
        raise _invalid("return_files must be a list of names, not a single string")
    if files is not None and not isinstance(files, Mapping):
        raise _invalid("files must be a mapping {name: bytes}")
    return Request(
        code=_text(code, "code"),
        stdin=None if stdin is None else _text(stdin, "stdin"),
        files=[(_name(n, "files"), _bytes(d, f"file {n!r}")) for n, d in (files or {}).items()],
        return_files=[_name(n, "return_files") for n in (return_files or ())],
        main=bool(main),
        timeout=seconds(timeout, "timeout"),
        memory_mb=mebibytes(memory_mb, "memory_mb"),
        network=bool(network),
    )
