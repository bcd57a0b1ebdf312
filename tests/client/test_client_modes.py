"""One set of cases, run by the Python client in local mode (`pybox run`) and in remote mode (a
real `pybox serve`): each mode must do what the case says, and both must give equal Results."""
import dataclasses

import pytest

import pybox
from pybox import Result

BLOB = bytes(range(256)) * 64 + b"\x00\xff" * 1000

CASES = {
    "hello": dict(code='print("hello, world")'),
    "stdin": dict(code="import sys\nprint(sys.stdin.read().upper(), end='')",
                  stdin="first line\nsecond line\n"),
    "files_roundtrip": dict(
        code="data = open('in.txt', 'rb').read()\nopen('out.txt', 'wb').write(data.upper())\n"
             "print(len(data))",
        files={"in.txt": b"some text\nmore text\n"}, return_files=["out.txt"]),
    "binary_files": dict(
        code="a = open('blob.bin', 'rb').read()\nb = open('empty', 'rb').read()\n"
             "open('rev.bin', 'wb').write(a[::-1])\nopen('copy', 'wb').write(b)\n"
             "print(len(a), len(b))",
        files={"blob.bin": BLOB, "empty": b""}, return_files=["rev.bin", "copy"]),
    "main_dict": dict(
        code="def main():\n    print('computing')\n"
             "    return {'n': 3, 'items': [1, 2.5, 'x', None, True], 'nested': {'ok': True}}",
        main=True),
    "failing_script": dict(code="def f():\n    raise ValueError('boom')\n\nprint('before')\nf()"),
    "sys_exit_3": dict(code="import sys\nprint('bye')\nsys.exit(3)"),
    "timeout": dict(code="print('start', flush=True)\nwhile True:\n    pass", timeout=1),
    "memory_limit": dict(code="chunks = []\nwhile True:\n    chunks.append(bytearray(8 << 20))",
                         memory_mb=64),
    "forbidden_import": dict(code="import os\nimport math\nimport subprocess\n"),
    "syntax_error": dict(code="x = 1\nif x\n    print(x)\n"),
    "missing_return_file": dict(code="open('here.txt', 'w').write('yes')",
                                return_files=["here.txt", "missing.txt"]),
    "unicode_output": dict(code="import sys\nprint('héllo wörld ✓ 日本語 🐍')\n"
                                "print('ошибка ⚠', file=sys.stderr)"),
}


def check_hello(r):
    assert r.success and r.status == "ok" and r.exit_code == 0 and r.signal is None
    assert r.stdout == "hello, world\n" and r.stderr == ""
    assert r.result is None and r.files == {} and r.error is None
    assert r.duration_ms is not None and r.duration_ms > 0


def check_stdin(r):
    assert r.status == "ok", r
    assert r.stdout == "FIRST LINE\nSECOND LINE\n"


def check_files_roundtrip(r):
    assert r.status == "ok", r
    assert r.stdout == "20\n"
    assert r.files == {"out.txt": b"SOME TEXT\nMORE TEXT\n"}
    assert r.get_file("out.txt") == b"SOME TEXT\nMORE TEXT\n"


def check_binary_files(r):
    assert r.status == "ok", r
    assert r.stdout == f"{len(BLOB)} 0\n"
    assert r.get_file("rev.bin") == BLOB[::-1]
    assert r.get_file("copy") == b""
    assert r.file_errors == {}


def check_main_dict(r):
    assert r.status == "ok", r
    assert r.result == {"n": 3, "items": [1, 2.5, "x", None, True], "nested": {"ok": True}}
    assert r.stdout == "computing\n"


def check_failing_script(r):
    assert not r.success and r.status == "error"
    assert r.exit_code == 1 and r.signal is None
    assert r.stdout == "before\n"
    assert r.stderr.startswith("Traceback (most recent call last):\n"), r.stderr
    assert 'File "main.py", line 5' in r.stderr and 'File "main.py", line 2, in f' in r.stderr
    assert r.stderr.endswith("ValueError: boom\n"), r.stderr
    assert r.error_type == "ValueError"


def check_sys_exit_3(r):
    assert r.status == "error" and r.exit_code == 3 and r.signal is None, r
    assert r.stdout == "bye\n"


def check_timeout(r):
    assert r.status == "timeout" and r.exit_code is None, r
    assert r.stdout == "start\n"
    assert r.error_type == "TimeoutError"
    assert 900 <= r.duration_ms < 5000


def check_memory_limit(r):
    assert r.status == "memory_limit" and r.exit_code is None, r
    assert r.error_type == "MemoryError"
    assert "64 MiB" in r.error["message"]


def check_forbidden_import(r):
    assert r.status == "rejected" and r.exit_code is None and r.signal is None, r
    assert r.error_type == "ForbiddenImportError"
    assert r.error["disallowed"] == ["os", "subprocess"]
    assert r.stdout == ""


def check_syntax_error(r):
    assert r.status == "rejected" and r.exit_code is None, r
    assert r.error_type == "SyntaxError" and r.error["line"] == 2
    assert "SyntaxError" in r.stderr and 'File "main.py", line 2' in r.stderr


def check_missing_return_file(r):
    assert r.status == "ok", r
    assert r.files == {"here.txt": b"yes"}
    assert r.file_errors == {"missing.txt": "not found"}
    with pytest.raises(KeyError, match="missing.txt: not found"):
        r.get_file("missing.txt")
    with pytest.raises(KeyError, match="never-asked: not among the returned files"):
        r.get_file("never-asked")


def check_unicode_output(r):
    assert r.status == "ok", r
    assert r.stdout == "héllo wörld ✓ 日本語 🐍\n"
    assert r.stderr == "ошибка ⚠\n"


@pytest.mark.parametrize("case", sorted(CASES))
def test_case(sandbox, case):
    r = sandbox.run(**CASES[case])
    assert isinstance(r, Result)
    globals()[f"check_{case}"](r)


TIMING = ("duration_ms", "cpu_ms", "max_rss_kb", "request_id")


@pytest.mark.parametrize("case", sorted(CASES))
def test_modes_agree(local_sandbox, remote_sandbox, case):
    local = local_sandbox.run(**CASES[case])
    remote = remote_sandbox.run(**CASES[case])
    if case == "timeout":
        # The timeout is both the wall and the CPU limit, in either mode; which of the two
        # stops a busy loop first (SIGKILL or SIGXCPU, "wall" or "CPU" in the message) is a
        # race of the engine's, not a difference between the modes.
        assert local.status == remote.status == "timeout", (local, remote)
        assert local.error_type == remote.error_type == "TimeoutError", (local, remote)
        local, remote = (dataclasses.replace(r, signal=None, error=None, raw={
            k: v for k, v in r.raw.items() if k not in ("signal", "error")})
            for r in (local, remote))
    for field in ("status", "exit_code", "signal", "stdout", "stderr", "stdout_truncated",
                  "stderr_truncated", "result", "files", "file_errors", "error"):
        assert getattr(local, field) == getattr(remote, field), (
            f"{case}: {field} differs: local {getattr(local, field)!r}, "
            f"remote {getattr(remote, field)!r}")
    assert local == remote
    # The whole result objects too, but for what is measured rather than done.
    strip = lambda raw: {k: v for k, v in raw.items() if k not in TIMING}  # noqa: E731
    assert strip(local.raw) == strip(remote.raw)
    assert remote.request_id and local.request_id is None


@pytest.mark.parametrize("kwargs", [
    dict(files={"../escape": b"x"}),
    dict(files={".": b"x"}),
    dict(return_files=["a/b"]),
    dict(files={"": b"x"}),
], ids=["dotdot", "dot", "slash-return", "empty-name"])
def test_bad_file_names_are_invalid_requests_in_both_modes(local_sandbox, remote_sandbox,
                                                           kwargs):
    errors = []
    for sb in (local_sandbox, remote_sandbox):
        with pytest.raises(pybox.InvalidRequest) as e:
            sb.run("print(1)", **kwargs)
        assert e.value.type == "ValidationError"
        assert "file name" in e.value.message, e.value
        errors.append(e.value)
    assert errors[0].status is None and errors[1].status == 400


def test_network_is_forbidden_in_both_modes(pybox_bin, client_server):
    for sb in (pybox.Sandbox(binary=pybox_bin, network=True),
               pybox.Sandbox(url=client_server.url, api_key=client_server.client_key,
                             network=True)):
        with pytest.raises(pybox.Forbidden) as e:
            sb.run("print(1)")
        assert e.value.type == "NetworkNotAllowed"


def test_a_sandbox_default_limits_apply_and_run_overrides_them(sandbox):
    sb = pybox.Sandbox(binary=sandbox.binary, url=sandbox.url,
                       api_key=getattr(sandbox._backend, "api_key", None), timeout=1)
    r = sb.run("while True: pass")
    assert r.status == "timeout" and "1 s" in r.error["message"], r
    r = sb.run("import time\ntime.sleep(1.5)\nprint('slept')", timeout=3)
    assert r.status == "ok" and r.stdout == "slept\n", r


def test_code_and_stdin_may_be_bytes(sandbox):
    r = sandbox.run("import sys\nprint(sys.stdin.read()[::-1])".encode(), stdin="äbc".encode())
    assert r.status == "ok" and r.stdout == "cbä\n", r


def test_client_side_checks(sandbox):
    for kwargs in (dict(timeout=0), dict(timeout=-1), dict(timeout="2"), dict(memory_mb=0),
                   dict(memory_mb=1.5), dict(memory_mb=True), dict(return_files="out.txt"),
                   dict(stdin=b"\xff\xfe"), dict(files={"a": 3}), dict(files=["a"]),
                   dict(files={"nul\0name": b""})):
        with pytest.raises(pybox.InvalidRequest):
            sandbox.run("print(1)", **kwargs)


def test_remote_waits_for_a_run_longer_than_its_request_timeout(client_server):
    """The socket timeout grows with the run's own timeout: a run may take longer than
    request_timeout and still comes back."""
    sb = pybox.Sandbox(url=client_server.url, api_key=client_server.client_key,
                       request_timeout=1)
    r = sb.run("import time\ntime.sleep(2)\nprint('late')", timeout=5)
    assert r.success and r.stdout == "late\n", r
