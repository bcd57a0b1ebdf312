"""Local mode: each execution is one run of pybox's own client, `pybox.Sandbox`, in local mode.

Theory of operation: pybox.Sandbox(binary=...) runs `pybox run` on this machine, which runs the
code in pybox's kernel sandbox (namespaces, seccomp, cgroups, the import allowlist) with the
input files in its working directory. Nothing here runs Python itself. The script's files come
back through pybox's `return_files` with the glob `*`, which the sandbox expands at the top of
the working directory after the run (names starting with `.` are not matched); the input files
are dropped from what comes back, and so are entries that are not regular files. The pybox
Result becomes an ExecutionResult by the rules of ExecutionResult.return_code.

pybox's default limits of `pybox run` apply, which pybox.Sandbox does not let a caller change
beyond the time and memory: at most 2 input files of 8 MiB; at most 10 names matched by the
glob come back (the input files among them, sorted by name), each of at most 8 MiB (a larger
one is named in stderr instead); the default import allowlist (README, "Allowed imports").
"""
from __future__ import annotations

import os
import signal
from typing import List, Mapping, Optional, Set, Union

import pybox

from ._result import TIMEOUT_RETURN_CODE, ExecutionResult, SandboxException

# Every regular file at the top of the working directory, the sandbox's glob.
ALL_FILES = "*"

# What the sandbox says of a matched name that is not a regular file the script left there:
# the glob's own "not found" when nothing matched, directories, FIFOs, symbolic links. Other
# reasons (too large, unreadable) are said in stderr, since the file did exist.
_NOT_A_FILE = frozenset({"not found", "not a regular file", "is a symbolic link"})


def _signal_number(name: Optional[str]) -> Optional[int]:
    try:
        return int(signal.Signals[name]) if name else None
    except KeyError:
        return None


def _return_code(r: pybox.Result) -> int:
    if r.status == "timeout":
        return TIMEOUT_RETURN_CODE
    if r.status == "rejected":
        return 1
    if r.status in ("memory_limit", "killed"):
        number = _signal_number(r.signal)
        if number is None and r.status == "memory_limit":
            number = int(signal.SIGKILL)
        return -number if number is not None else 1
    if r.exit_code is not None:
        return r.exit_code
    return 0 if r.success else 1


def _stderr(r: pybox.Result, notes: List[str]) -> str:
    """The script's stderr, then a line for each thing pybox did to it that it cannot say."""
    if r.status in ("timeout", "memory_limit", "killed") and r.error:
        notes.insert(0, f"{r.error.get('type') or r.status}: {r.error.get('message') or ''}")
    if r.stdout_truncated:
        notes.append("pybox: stdout was truncated at its limit")
    if r.stderr_truncated:
        notes.append("pybox: stderr was truncated at its limit")
    if not notes:
        return r.stderr
    head = r.stderr if r.stderr == "" or r.stderr.endswith("\n") else r.stderr + "\n"
    return head + "".join(note + "\n" for note in notes)


def to_execution_result(r: pybox.Result, input_names: Set[str]) -> ExecutionResult:
    """The ExecutionResult of a pybox Result whose return_files were ALL_FILES."""
    notes: List[str] = []
    for name, reason in sorted(r.file_errors.items()):
        if name not in input_names and reason not in _NOT_A_FILE:
            notes.append(f"pybox: output file `{name}` not returned: {reason}")
    files = {name: data for name, data in r.files.items() if name not in input_names}
    return ExecutionResult(stdout=r.stdout, stderr=_stderr(r, notes), return_code=_return_code(r),
                           output_files=files)


def execute(code: str, files: Mapping[str, bytes], timeout: float, memory_mb: int,
            network: bool, wait: float,
            binary: Union[str, "os.PathLike[str]", None]) -> ExecutionResult:
    """Run `code` with pybox.Sandbox in local mode; raises SandboxException."""
    try:
        sandbox = pybox.Sandbox(binary=binary, timeout=timeout, memory_mb=memory_mb,
                                network=network, request_timeout=wait)
        r = sandbox.run(code, files=dict(files), return_files=[ALL_FILES])
    except (pybox.PyboxError, ValueError) as e:
        raise SandboxException(f"local pybox: {e}") from e
    return to_execution_result(r, set(files))


def health_check(binary: Union[str, "os.PathLike[str]", None]) -> bool:
    """True when the local sandbox runs a trivial script to the end."""
    try:
        r = pybox.Sandbox(binary=binary, timeout=10, request_timeout=60).run("pass")
    except (pybox.PyboxError, ValueError):
        return False
    return r.success

