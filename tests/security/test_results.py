"""Honest results: the result object, exit statuses, main() mode, signals, usage errors."""
import shutil
import tempfile

import pytest

from conftest import PYBOX_IS_ASAN, assert_usage_error

DOCUMENTED_KEYS = {"status", "exit_code", "signal", "stdout", "stderr", "stdout_truncated",
                   "stderr_truncated", "result", "files", "error", "duration_ms", "cpu_ms",
                   "max_rss_kb", "outputs"}


def test_result_object_shape(pybox):
    """Invariant: a plain run prints one strict-JSON object with every documented field, of
    the documented types, and exits 0."""
    res = pybox("print('hi')\n", "--timeout", "5")
    assert res.data is not None, res
    assert set(res.data) >= DOCUMENTED_KEYS, set(res.data) ^ DOCUMENTED_KEYS
    assert len(res.stdout.strip().splitlines()) == 1, res
    d = res.data
    assert (d["status"], d["exit_code"], d["signal"], d["stdout"], d["stderr"]) == \
        ("ok", 0, None, "hi\n", ""), res
    assert d["stdout_truncated"] is False and d["stderr_truncated"] is False
    assert d["result"] is None and d["files"] == {} and d["error"] is None
    assert d["outputs"] == [], res
    for k in ("duration_ms", "cpu_ms", "max_rss_kb"):
        assert isinstance(d[k], (int, float)) and d[k] >= 0, (k, d[k])
    assert res.status == 0


def test_random_differs_between_executions(pybox):
    """Invariant: every execution gets fresh randomness: random.random(), uuid4, secrets and
    the str hash seed differ between two executions."""
    code = ("import random, uuid, secrets\nprint(random.random(), uuid.uuid4(), "
            "secrets.token_hex(16), hash('pybox'))\n")
    a = pybox(code, "--timeout", "5")
    b = pybox(code, "--timeout", "5")
    assert a.data["status"] == b.data["status"] == "ok", (a, b)
    va, vb = a.data["stdout"].split(), b.data["stdout"].split()
    assert len(va) == len(vb) == 4
    for x, y in zip(va, vb):
        assert x != y, f"identical across executions: {x}"


@pytest.mark.parametrize("ret,expected", [
    ("{'a': [1, 2.5, None, True, 'x'], 'b': {'c': 'é'}}",
     {"a": [1, 2.5, None, True, "x"], "b": {"c": "é"}}),
    ("[1, 'two', [3]]", [1, "two", [3]]),
    ("None", None),
    ("'text'", "text"),
    ("-7", -7),
])
def test_main_mode_returns_json(pybox, ret, expected):
    """Invariant: in --main mode the JSON value main() returns is the result, status ok."""
    res = pybox(f"def main():\n    return {ret}\n", "--main", "--timeout", "5")
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    assert res.data["result"] == expected, res
    assert res.status == 0


@pytest.mark.parametrize("ret", ["float('nan')", "float('inf')", "-float('inf')", "{1, 2}",
                                 "object()", "{'k': b'bytes'}"])
def test_main_mode_unserialisable_is_clear_error(pybox, ret):
    """Invariant: a main() value that is not JSON (NaN, Infinity, a set, an object, bytes)
    gives status error with a message, and pybox's own output stays strict JSON."""
    res = pybox(f"def main():\n    return {ret}\n", "--main", "--timeout", "5")
    assert res.data is not None, f"output is not strict JSON: {res.stdout!r}"
    assert res.data["status"] == "error", res
    assert res.data["error"]["type"] and res.data["error"]["message"], res
    assert res.data["result"] is None, res
    assert res.status != 0, res


@pytest.mark.parametrize("ret", ["2 ** 64", "10 ** 400", "'a\\x00b'", "'\\udcff'",
                                 "{'n': -(2 ** 70)}"])
def test_main_mode_never_drops_a_value_silently(pybox, ret):
    """Invariant: whatever main() returns is either reported as the result or the run is an
    error with a message (and, like every failed main(), a non-zero exit status): never status
    ok with result null for a value that is not None (big integers, a string with NUL, a lone
    surrogate)."""
    res = pybox(f"def main():\n    return {ret}\n", "--main", "--timeout", "5")
    assert res.data is not None, f"output is not strict JSON: {res.stdout!r}"
    if res.data["status"] == "ok":
        assert res.data["result"] is not None, f"main() returned {ret}, reported null: {res!r}"
    else:
        assert res.data["status"] == "error" and res.data["error"]["message"], res
        assert res.status != 0, f"status error but pybox exited 0: {res!r}"


@pytest.mark.parametrize("code", ["x = 1\n", "main = 5\n", "def mian():\n    return 1\n"])
def test_main_mode_missing_main_is_clear_error(pybox, code):
    """Invariant: --main without a callable main() is status error with a message naming
    main(), not a crash or a silent null."""
    res = pybox(code, "--main", "--timeout", "5")
    assert res.data is not None, res
    assert res.data["status"] == "error", res
    assert "main()" in res.data["error"]["message"], res
    assert res.status == 1, res


def test_traceback_names_main_py_not_host_path(pybox):
    """Invariant: tracebacks name the script main.py, never the host path of the script file
    or its directory, with and without --json, in plain and main() mode."""
    tmpdir = tempfile.mkdtemp(prefix="pybox-HOSTPATH-")
    try:
        code = "def helper():\n    return 1 / 0\n\ndef main():\n    return helper()\n\nmain()\n"
        runs = [pybox(code, "--timeout", "5", script_dir=tmpdir),
                pybox(code, "--timeout", "5", script_dir=tmpdir, json_out=False),
                pybox(code[:-len("main()\n")], "--main", "--timeout", "5", script_dir=tmpdir)]
        for res in runs:
            shown = res.stderr + (res.data["stderr"] if res.data else res.stdout)
            assert 'File "main.py", line 2' in shown, res
            assert "ZeroDivisionError" in shown, res
            assert "pybox-HOSTPATH-" not in res.stdout + res.stderr, res
            assert "attack_script" not in res.stdout + res.stderr, res
        d = runs[0].data
        assert d["status"] == "error" and d["error"]["type"] == "ZeroDivisionError", runs[0]
        assert 'File "main.py"' in d["error"]["traceback"], runs[0]
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


@pytest.mark.parametrize("code", ["exit(3)", "import sys\nsys.exit(3)", "raise SystemExit(3)"])
def test_exit_code_passes_through(pybox, code):
    """Invariant: exit(3) gives exit_code 3, status error, and pybox's own exit status 3,
    with and without --json."""
    res = pybox(code + "\n", "--timeout", "5")
    assert res.data is not None, res
    assert res.data["exit_code"] == 3 and res.data["status"] == "error", res
    assert res.data["signal"] is None, res
    assert res.status == 3, res
    plain = pybox(code + "\n", "--timeout", "5", json_out=False)
    assert plain.status == 3, plain


ILLEGAL_INSTRUCTION = r"""
import ctypes, mmap
m = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
m.write(b"\x0f\x0b")                                  # ud2
ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(m)))()
"""


@pytest.mark.parametrize("code,sig,num", [
    ("import ctypes\nctypes.string_at(0)\n", "SIGSEGV", 11),
    (ILLEGAL_INSTRUCTION, "SIGILL", 4),
])
def test_crash_reported_as_killed(pybox, code, sig, num):
    """Invariant: a crash by signal is reported as what it was: status killed, the signal's
    name, exit_code null, exit status 128+N. (In an ASan build the job is an ASan process whose
    own SIGSEGV handler reports the fault and exits 1; ctest runs this suite against a plain
    build too, security-plain/*, where the SIGSEGV case is the real one.)"""
    res = pybox(code, "--timeout", "5", allow_all=True)
    assert res.data is not None, res
    if sig == "SIGSEGV" and PYBOX_IS_ASAN:
        assert res.data["status"] == "error" and res.data["exit_code"] == 1, res
        assert "ERROR: AddressSanitizer: SEGV" in res.data["stderr"], res
    else:
        assert res.data["status"] == "killed", res
        assert res.data["signal"] == sig, res
        assert res.data["exit_code"] is None, res
        assert res.status == 128 + num, res


def test_sigkill_of_a_child_kills_it(pybox):
    """Invariant: SIGKILL sent by the script to its own child process kills that child (the
    parent sees it die by signal 9)."""
    code = r"""
import os, signal, time
pid = os.fork()
if pid == 0:
    time.sleep(30)
    os._exit(0)
os.kill(pid, signal.SIGKILL)
_, status = os.waitpid(pid, 0)
print("CHILD", "signalled" if os.WIFSIGNALED(status) else "exited",
      os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
"""
    res = pybox(code, "--timeout", "10", allow_all=True)
    assert res.data is not None, res
    assert res.data["stdout"].strip() == "CHILD signalled 9", res
    assert res.elapsed < 8, res


def test_sigkill_to_itself_is_reported_as_killed(pybox):
    """Invariant: os.kill(os.getpid(), SIGKILL) ends the script as `python3 FILE` would: status
    killed, signal SIGKILL, exit status 137 (it must not be ignored because the job is pid 1
    of its pid namespace)."""
    res = pybox("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\nprint('SURVIVED')\n",
                "--timeout", "5", allow_all=True)
    assert res.data is not None, res
    assert "SURVIVED" not in res.data["stdout"], f"SIGKILL to itself was ignored: {res!r}"
    assert res.data["status"] == "killed" and res.data["signal"] == "SIGKILL", res
    assert res.status == 137, res


def test_abort_is_reported_as_sigabrt(pybox):
    """Invariant: os.abort() is reported as what it was: status killed, signal SIGABRT, exit
    status 134 (not SIGSEGV)."""
    res = pybox("import os\nos.abort()\n", "--timeout", "5", allow_all=True)
    assert res.data is not None, res
    assert res.data["status"] == "killed", res
    assert res.data["signal"] == "SIGABRT", res
    assert res.status == 128 + 6, res


@pytest.mark.parametrize("argv", [
    ["run", "{script}", "--no-such-option"],
    ["run", "/nonexistent/dir/missing.py"],
    ["run", "{script}", "--timeout", "abc"],
    ["run", "{script}", "--memory", "0"],
    ["run", "{script}", "--timeout", "0"],
    ["run", "{script}", "--limit", "nope=1"],
    ["run", "{script}", "--limit", "pids=0"],
    ["run", "{script}", "extra-argument"],
    ["run", "{script}", "--file", "=no-name"],
    ["run", "{script}", "--file", "/nonexistent/data.csv"],
    ["run", "{script}", "--stdin", "/nonexistent/input"],
    ["run", "{script}", "--timeout"],
])
def test_bad_usage_is_one_line_exit_2(pybox, argv):
    """Invariant: bad usage exits 2 with exactly one line on stderr starting "pybox: ", prints
    on stdout only its error object (with --json), and runs nothing."""
    res = pybox("print('RAN')\n", argv=argv + ["--json"] if argv[-1] != "--timeout" else argv)
    assert_usage_error(res)


def test_files_left_open_are_flushed_at_exit(pybox):
    """Invariant: as under python3, a file the script leaves open (held in a global) is
    flushed and closed when the script ends, and atexit callbacks run, so returned files are
    complete."""
    code = (
        "import atexit\n"
        "f = open('/work/open.txt', 'w')\n"
        "f.write('left open')\n"
        "atexit.register(lambda: open('/work/atexit.txt', 'w').write('ran'))\n"
    )
    res = pybox(code, "--return", "open.txt", "--return", "atexit.txt", allow_all=True)
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    files = res.data["files"]
    import base64
    assert base64.b64decode(files["open.txt"]["content_base64"]) == b"left open", res
    assert base64.b64decode(files["atexit.txt"]["content_base64"]) == b"ran", res
