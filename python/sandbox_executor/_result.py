"""ExecutionResult, what one execution did, and SandboxException, a request that failed."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, Optional

# return_code of an execution that ran out of time, in both modes (the documented value).
TIMEOUT_RETURN_CODE = -1


@dataclasses.dataclass(frozen=True, repr=False)
class ExecutionResult:
    """What one execution did: the same fields in local and remote mode.

    A failing script is an ExecutionResult too (success False), never an exception.

    Attributes:
        stdout, stderr: the script's output as text. When pybox stopped the script (time,
            memory, a signal), stderr ends with a line saying so, e.g. "TimeoutError: ...".
        return_code: the script's exit status: 0 on success; 1 for an uncaught exception, and
            for code refused before it ran (a SyntaxError, a forbidden import: the reason is in
            stderr); -1 when it ran out of time; -N when signal N ended it (-9 when it hit the
            memory limit).
        output_files: every regular file the script left at the top of its working directory,
            {name: content}, the input files excluded.
    """

    stdout: str
    stderr: str
    return_code: int
    output_files: Dict[str, bytes] = dataclasses.field(default_factory=dict)

    @property
    def success(self) -> bool:
        """True when the script exited 0 (return_code == 0)."""
        return self.return_code == 0

    def get_file_content(self, name: str) -> Optional[bytes]:
        """The content of the output file `name`, or None when the script left no such file."""
        return self.output_files.get(name)

    def __repr__(self) -> str:
        files = {name: f"<{len(data)} bytes>" for name, data in self.output_files.items()}
        return (f"ExecutionResult(return_code={self.return_code!r}, stdout={self.stdout!r}, "
                f"stderr={self.stderr!r}, output_files={files!r})")


class SandboxException(Exception):
    """The request failed, so there is no ExecutionResult: the server answered other than 2xx,
    could not be reached or answered something that is not a result; the request was refused
    as invalid; local mode could not run pybox (no `pybox` binary, ...); or the execution asked
    for network access, which pybox never gives.

    Attributes:
        message: what went wrong, in words.
        status_code: the HTTP status of the answer; None when there was none (local mode, no
            answer at all).
        details: remote mode: the answer's body decoded from JSON (e.g. {"detail": ...}), else
            None. The pybox exception behind a local-mode failure is the __cause__.
    """

    def __init__(self, message: str, status_code: Optional[int] = None,
                 details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.details = details

    def __str__(self) -> str:
        suffix = f" (HTTP {self.status_code})" if self.status_code is not None else ""
        return f"{self.message}{suffix}"
