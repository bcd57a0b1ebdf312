"""`pybox repl`: the interactive prompt (through a pty), a script of entries on a pipe, and the
machine protocol of --jsonl, in local mode and against a real `pybox serve` (--server).

Every test also proves the REPL leaves nothing behind: once it exited, no process it started
(its engine's zygote and cells in local mode) is alive, and on a server its session is gone.
"""
import base64
import json
import os
import pty
import select
import signal
import subprocess
import threading
import time

import pytest

from conftest import PYBOX, SLOW, clean_env

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAF"
                       "BQIAX8jx0gAAAABJRU5ErkJggg==")
TIMEOUT = 120 * SLOW


def descendants(pid):
    """Every live process whose parent chain reaches `pid`."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def assert_gone(pids, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}")
                 and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"]
        if not alive:
            return
        time.sleep(0.1)
    raise AssertionError(f"processes of the REPL still alive after it exited: {alive}")


def repl(stdin, *args, env=None, cwd=None, timeout=TIMEOUT):
    """`pybox repl ARGS` with `stdin` (text) as its script; returns the CompletedProcess."""
    return subprocess.run([PYBOX, "repl", *args], input=stdin.encode(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=clean_env(env), cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def server(module_start_server):
    """A server whose rate limits the tests do not reach."""
    return module_start_server("--rpm", "100000", "--rpd", "1000000", "--sessions", "32:32:64")


@pytest.fixture(params=["local", "remote"])
def mode_args(request):
    """The REPL's arguments for each mode."""
    if request.param == "local":
        return []
    return ["--server", request.getfixturevalue("server").url]


# ---------------------------------------------------------------------------------------------
# A script on stdin


SCRIPT = """\
x = 41
x += 1
x
x * 2;
_ + 1
for i in range(2):
    print(i)
def f(a):
    # a comment at the start of a line of the block

    return a * 2
@staticmethod
def g():
    pass
if x > 100:
    print("big")
else:
    print("small")
f(x)
s = '''a
b'''
print(s.upper(), (1 +
   2))
import sys; print("to stderr", file=sys.stderr)
"""


def test_script_of_entries(mode_args):
    p = repl(SCRIPT, *mode_args)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == "42\n43\n0\n1\nsmall\n84\nA\nB 3\n"
    assert p.stderr.decode() == "to stderr\n"


def test_errors_do_not_end_the_repl(mode_args):
    p = repl("a = 1\n\n1 / 0\nprint(a)\nx = = 1\nimport socket\nprint('still', a)\n", *mode_args)
    assert p.returncode == 0, p.stderr
    err = p.stderr.decode()
    assert 'File "<cell 2>", line 1' in err and "ZeroDivisionError" in err
    assert "SyntaxError" in err
    assert "ForbiddenImportError" in err or "not allowed" in err, err
    assert p.stdout.decode() == "1\nstill 1\n"


def test_commands(mode_args, tmp_path):
    local = tmp_path / "in.txt"
    local.write_bytes(b"from the host\n")
    got = tmp_path / "back.txt"
    script = (f"%put {local} data/in.txt\n"
              "%files\n"
              "open('data/out.txt', 'w').write(open('data/in.txt').read().upper())\n"
              f"%get data/out.txt {got}\n"
              "%rm data/in.txt\n"
              "kept = 1\n"
              "%restart\n"
              "print('kept' in globals(), open('data/out.txt').read().strip())\n"
              "%get nothing.txt\n"
              "%bogus\n"
              "%help\n")
    p = repl(script, *mode_args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    out, err = p.stdout.decode(), p.stderr.decode()
    assert f"{local} -> /work/data/in.txt (14 bytes)" in out
    assert "data/in.txt" in out.splitlines()[1]
    assert got.read_bytes() == b"FROM THE HOST\n"
    assert "False FROM THE HOST" in out
    assert "%get: " in err and "nothing.txt" in err
    assert "`%bogus` is not a command" in err
    assert "%restart" in out and "%put LOCAL [REMOTE]" in out
    assert "a fresh interpreter" in err


def test_files_at_the_opening_and_spans(mode_args, tmp_path):
    """--file puts host files in /work when the session opens (and each new one); %ttl changes
    its spans, and a session whose lifetime ran out between entries is replaced before the
    next entry, which runs in the new one."""
    (tmp_path / "in.txt").write_bytes(b"first\n")
    (tmp_path / "other").write_bytes(b"second\n")
    script = ("print(open('in.txt').read() + open('b.txt').read(), end='')\n"
              "x = 1\n"
              "%ttl - 2\n"
              "import time; time.sleep(3)\n"
              "print('x' in globals(), open('in.txt').read(), end='')\n"
              "%ttl 4000\n"
              "%ttl nope\n")
    p = repl(script, *mode_args, "--file", str(tmp_path / "in.txt"), "--file",
             f"b.txt={tmp_path / 'other'}", "--idle-ttl", "600")
    assert p.returncode == 0, p.stderr
    out, err = p.stdout.decode(), p.stderr.decode()
    assert out == "first\nsecond\nFalse first\n", (out, err)
    assert "the session ends 2 s after it began" in err
    assert "the session has ended (max_lifetime)" in err and "a new one starts" in err
    assert "%ttl: " in err and "4000" in err, err
    assert "%ttl IDLE [LIFETIME]: whole numbers of seconds" in err
    p = repl("print(1)\n", *mode_args, "--file", str(tmp_path / "missing"))
    assert p.returncode == 2 and b"--file" in p.stderr
    p = repl("print(1)\n", *mode_args, "--file", f"a/b={tmp_path / 'other'}")
    assert p.returncode == 2 and b"not a flat file name" in p.stderr, p.stderr


def test_images_are_written_to_files(mode_args, tmp_path):
    code = ("import base64\n"
            "class P:\n"
            "    def _repr_png_(self):\n"
            f"        return base64.b64decode('{base64.b64encode(PNG).decode()}')\n"
            "\n"
            "display(P()); display(P())\n"
            "P()\n")
    p = repl(code, *mode_args, "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    # Entries 1 and 2 are the import and the class; 3 displays two images, 4 has one as its value.
    assert lines == [f"[image/png: {tmp_path}/pybox-out-3-1.png]",
                     f"[image/png: {tmp_path}/pybox-out-3-2.png]",
                     f"[image/png: {tmp_path}/pybox-out-4-1.png]"], lines
    for name in ("pybox-out-3-1.png", "pybox-out-3-2.png", "pybox-out-4-1.png"):
        assert (tmp_path / name).read_bytes() == PNG
    # A second REPL in the same directory never overwrites them.
    p = repl(code, *mode_args, "--out", str(tmp_path))
    assert f"{tmp_path}/pybox-out-3-1-1.png" in p.stdout.decode()
    assert (tmp_path / "pybox-out-3-1.png").read_bytes() == PNG


def test_a_matplotlib_figure_is_a_png_file(tmp_path):
    pytest.importorskip("matplotlib")
    # One entry, as one cell: a figure still open when an entry ends is shown then (and closed).
    p = repl("import matplotlib.pyplot as plt\n"
             "plt.figure(figsize=(2, 1)); plt.plot([1, 3, 2]); plt.show()\n",
             "--out", str(tmp_path), timeout=300 * SLOW)
    assert p.returncode == 0, p.stderr
    shown = [ln for ln in p.stdout.decode().splitlines() if ln.startswith("[image/png: ")]
    assert len(shown) == 1, p.stdout
    png = (tmp_path / shown[0][len("[image/png: "):-1].rsplit("/", 1)[1]).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (200, 100), (width, height)


def test_timeout_keeps_state_or_replaces_the_session(mode_args):
    script = ("kept = 'yes'\n"
              "import time\n"
              "time.sleep(30)\n"
              "print(kept)\n"
              "while True:\n"
              "    try:\n"
              "        time.sleep(10)\n"
              "    except KeyboardInterrupt:\n"
              "        pass\n"
              "\n"
              "print('kept' in globals())\n")
    t0 = time.time()
    p = repl(script, *mode_args, "--timeout", "1")
    assert p.returncode == 0, p.stderr
    err = p.stderr.decode()
    assert "interrupted at the time limit; the session kept its state" in err
    assert "the session has ended (timeout)" in err and "a new one starts" in err
    assert p.stdout.decode() == "yes\nFalse\n"
    assert time.time() - t0 < 60 * SLOW


def test_bad_usage():
    for args in (["--memory", "1"], ["--timeout", "0"], ["--timeout", "x"], ["--api-key", "k"],
                 ["--out", "/nonexistent/dir"], ["--idle-ttl", "-3"], ["--bogus"], ["extra"],
                 ["--server", "ftp://example.org"]):
        p = repl("", *args)
        assert p.returncode == 2, (args, p.stderr)
        assert b"pybox: " in p.stderr and b"pybox repl --help" in p.stderr, p.stderr
    p = subprocess.run([PYBOX, "repl", "--help"], stdout=subprocess.PIPE, env=clean_env(),
                       timeout=30)
    assert p.returncode == 0
    for word in (b"%restart", b"%files", b"%put LOCAL [REMOTE]", b"%get REMOTE [LOCAL]",
                 b"--jsonl", b"Ctrl-C", b"Ctrl-D", b"--server"):
        assert word in p.stdout, word


def test_no_server_is_the_error_tables_exit():
    p = repl("print(1)\n", "--server", "http://127.0.0.1:9")
    assert p.returncode == 69, p.stderr
    assert b"no session" in p.stderr


# ---------------------------------------------------------------------------------------------
# The interactive prompt, through a pty


class Pty:
    """`pybox repl` on a pseudo-terminal, read and written as a person would."""

    def __init__(self, *args, env=None):
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(PYBOX, [PYBOX, "repl", *args], clean_env(env))
        self.buf = b""

    def expect(self, pattern, timeout=60 * SLOW):
        """Everything up to and including `pattern`."""
        deadline = time.time() + timeout
        while pattern not in self.buf:
            left = deadline - time.time()
            r, _, _ = select.select([self.fd], [], [], max(0, left))
            if not r:
                raise AssertionError(f"no {pattern!r} within {timeout} s; got {self.buf!r}")
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                data = b""
            if not data:
                raise AssertionError(f"the REPL ended before {pattern!r}; got {self.buf!r}")
            self.buf += data
        i = self.buf.index(pattern) + len(pattern)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def send(self, data):
        time.sleep(0.2)  # as a person types: after libedit has set the terminal up
        os.write(self.fd, data)

    def wait(self, timeout=60 * SLOW):
        deadline = time.time() + timeout
        while time.time() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                r, _, _ = select.select([self.fd], [], [], 0.1)
                if r:
                    self.buf += os.read(self.fd, 65536)
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"the REPL did not exit; got {self.buf!r}")


def test_interactive_prompt(mode_args, tmp_path):
    t = Pty(*mode_args, env={"PYBOX_HISTORY": str(tmp_path / "history")})
    banner = t.expect(b">>> ")
    assert b"sandbox session" in banner
    t.send(b"x = 5\r")
    t.expect(b">>> ")
    # A block continues on `... ` until an empty line.
    t.send(b"for i in range(2):\r")
    t.expect(b"... ")
    t.send(b"    print(i * x)\r")
    t.expect(b"... ")
    t.send(b"\r")
    out = t.expect(b">>> ")
    assert b"0\r\n5\r\n" in out, out
    # Open brackets continue too.
    t.send(b"(x +\r")
    t.expect(b"... ")
    t.send(b"1)\r")
    out = t.expect(b">>> ")
    assert b"6\r\n" in out, out
    # Ctrl-C interrupts a running call; the prompt comes back with the state kept.
    descendants_before = descendants(t.pid)
    t.send(b"import time; time.sleep(30)\r")
    time.sleep(2 * SLOW)
    t0 = time.time()
    os.write(t.fd, b"\x03")
    out = t.expect(b">>> ", timeout=15 * SLOW)
    assert b"KeyboardInterrupt" in out, out
    assert time.time() - t0 < 10 * SLOW
    t.send(b"print(x)\r")
    out = t.expect(b">>> ")
    assert b"5\r\n" in out, out
    # Ctrl-C at the prompt clears the entry, even a multi-line one.
    t.send(b"if True:\r")
    t.expect(b"... ")
    t.send(b"    print('never')\x03")
    out = t.expect(b">>> ")
    assert b"KeyboardInterrupt" in out and b"never\r\n" not in out.split(b"\x03")[-1], out
    t.send(b"print('after')\r")
    out = t.expect(b">>> ")
    assert b"after\r\n" in out and b"never" not in out, out
    # Ctrl-D ends the REPL and its session.
    everyone = set(descendants_before) | set(descendants(t.pid))
    t.send(b"\x04")
    assert t.wait() == 0, t.buf
    assert_gone(everyone)
    assert (tmp_path / "history").exists()
    assert b"print(x)" in (tmp_path / "history").read_bytes()


def test_sigterm_at_the_prompt_ends_the_session():
    t = Pty()
    t.expect(b">>> ")
    t.send(b"x = 1\r")
    t.expect(b">>> ")
    everyone = descendants(t.pid)
    assert everyone, "local mode runs its engine under the REPL"
    os.kill(t.pid, signal.SIGTERM)
    assert t.wait() == 0
    assert_gone(everyone)


# ---------------------------------------------------------------------------------------------
# --jsonl


class Jsonl:
    """`pybox repl --jsonl`: requests written, answers and events read by id."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([PYBOX, "repl", "--jsonl", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=clean_env())
        self.lines = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.ready = self.next_line()
        self.n = 0

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(json.loads(line))
                self.cond.notify_all()
        with self.cond:
            self.lines.append(None)
            self.cond.notify_all()

    def next_line(self, pred=lambda o: True, timeout=60 * SLOW):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for i, o in enumerate(self.lines):
                    if o is None or pred(o):
                        return self.lines.pop(i)
                left = deadline - time.time()
                assert left > 0, f"no such line within {timeout} s: {self.lines}"
                self.cond.wait(left)

    def send(self, **rq):
        self.n += 1
        rq.setdefault("id", self.n)
        self.proc.stdin.write((json.dumps(rq) + "\n").encode())
        self.proc.stdin.flush()
        return rq["id"]

    def answer(self, rid, **kw):
        return self.next_line(lambda o: o.get("id") == rid and "ok" in o, **kw)

    def call(self, **rq):
        return self.answer(self.send(**rq))


def test_jsonl_round_trips(mode_args):
    j = Jsonl(*mode_args)
    assert j.ready["ready"] is True and j.ready["session"]["id"].startswith("ses_")
    assert j.ready["session"]["mode"] == ("remote" if mode_args else "local")
    rid = j.send(op="execute", code="x = 6\nprint('hi')\ndisplay('d')\nx * 7", stream=True)
    events = []
    while True:
        o = j.next_line(lambda o: o.get("id") == rid)
        if "ok" in o:
            break
        events.append(o)
    assert o["ok"] is True, o
    r = o["result"]
    assert r["status"] == "ok" and r["stdout"] == "hi\n" and r["execution_count"] == 1
    assert r["state_preserved"] is True and r["session"]["id"] == j.ready["session"]["id"]
    assert [e["event"] for e in events if e["event"] in ("display", "result")] == \
        ["display", "result"]
    assert "".join(e["data"]["text"] for e in events if e["event"] == "stdout") == "hi\n"
    assert [o["data"] for o in events if o["event"] in ("display", "result")] == r["outputs"]
    # Without stream: the answer alone.
    rid = j.send(op="execute", code="x + 1", stdin="in",
                 files=[{"name": "a.bin", "content_base64": base64.b64encode(b"\0\1").decode()}],
                 return_files=["a.bin"])
    o = j.answer(rid)
    assert o["result"]["outputs"][0]["data"]["text/plain"] == "7"
    assert o["result"]["files"]["a.bin"]["content_base64"] == "AAE="
    assert not [x for x in j.lines if x and x.get("id") == rid]
    # Files.
    assert j.call(op="put", path="d/f.txt", content_base64=base64.b64encode(b"data").decode()) \
        == {"id": j.n, "ok": True, "path": "d/f.txt", "size": 4}
    o = j.call(op="get", path="d/f.txt")
    assert o["ok"] and base64.b64decode(o["content_base64"]) == b"data" and o["size"] == 4
    o = j.call(op="list")
    assert sorted(f["path"] for f in o["files"]) == ["a.bin", "d/f.txt"]
    assert j.call(op="delete", path="d/f.txt")["ok"] is True
    o = j.call(op="get", path="d/f.txt")
    assert o["ok"] is False and o["error"]["type"] == "NotFound"
    assert o["error"]["code"] == "PYBOX_E_NOT_FOUND"
    o = j.call(op="get", path="../x")
    assert o["error"]["type"] == "ValidationError" and o["error"]["code"] == "PYBOX_E_INVALID"
    # Interrupt a running call; a request meanwhile is refused as busy.
    rid = j.send(op="execute", code="import time\nprint('go', flush=True)\ntime.sleep(30)",
                 stream=True)
    j.next_line(lambda o: o.get("id") == rid and o.get("event") == "stdout")
    o = j.call(op="list")
    assert o["ok"] is False and o["error"]["type"] == "SessionBusy", o
    assert o["error"]["retry_after"] == 1
    o = j.call(op="execute", code="1")
    assert o["error"]["type"] == "SessionBusy", o
    o = j.call(op="interrupt")
    assert o == {"id": j.n, "ok": True, "interrupted": True}
    o = j.answer(rid)
    assert o["result"]["error"]["type"] == "KeyboardInterrupt"
    assert o["result"]["state_preserved"] is True
    assert j.call(op="interrupt")["interrupted"] is False
    # Restart: variables gone, files kept.
    assert j.call(op="restart")["ok"] is True
    o = j.call(op="execute", code="print('x' in globals(), open('a.bin', 'rb').read())")
    assert o["result"]["stdout"] == "False b'\\x00\\x01'\n"
    assert o["result"]["execution_count"] == 1
    # Close: answered, then the process ends, and everything of it.
    everyone = descendants(j.proc.pid)
    assert j.call(op="close") == {"id": j.n, "ok": True}
    assert j.proc.wait(timeout=30 * SLOW) == 0
    assert_gone(everyone)


def test_jsonl_extend_and_files(mode_args, tmp_path):
    (tmp_path / "in.txt").write_bytes(b"from the host")
    j = Jsonl(*mode_args, "--file", f"given.txt={tmp_path / 'in.txt'}", "--idle-ttl", "60",
              "--max-lifetime", "2")
    assert j.ready["ready"] is True, j.ready
    o = j.call(op="execute", code="y = 5\nopen('given.txt').read()")
    assert o["result"]["outputs"][0]["data"]["text/plain"] == "'from the host'", o
    assert j.call(op="extend", max_lifetime_s=120) == {"id": j.n, "ok": True}
    time.sleep(3)
    o = j.call(op="execute", code="y")  # past its first lifetime, with its state
    assert o["ok"] and o["result"]["outputs"][0]["data"]["text/plain"] == "5", o
    for bad in (dict(idle_ttl_s=0), dict(idle_ttl_s="1"), dict(max_lifetime_s=1.5),
                dict(idle_ttl_s=1, extra=1)):
        o = j.call(op="extend", **bad)
        assert o["ok"] is False and o["error"]["type"] == "ValidationError", (bad, o)
    for over in (dict(idle_ttl_s=3601), dict(max_lifetime_s=1)):
        o = j.call(op="extend", **over)
        assert o["error"]["type"] == "ValidationError", (over, o)
        assert o["error"]["code"] == "PYBOX_E_INVALID"
    # Answered while a call runs.
    rid = j.send(op="execute", code="import time\nprint('go', flush=True)\ntime.sleep(2)",
                 stream=True)
    j.next_line(lambda o: o.get("id") == rid and o.get("event") == "stdout")
    assert j.call(op="extend", idle_ttl_s=1)["ok"] is True
    assert j.answer(rid)["ok"] is True
    time.sleep(2.5)
    o = j.call(op="execute", code="y")
    assert o["ok"] is False and o["error"]["type"] == "SessionDead", o
    assert o["error"]["reason"] == "idle_timeout" and o["error"]["code"] == "PYBOX_E_GONE"
    o = j.call(op="extend", idle_ttl_s=60)
    assert o["error"]["type"] == "SessionDead" and o["error"]["reason"] == "idle_timeout"
    everyone = descendants(j.proc.pid)
    assert j.call(op="close")["ok"] is True
    assert j.proc.wait(timeout=30 * SLOW) == 0
    assert_gone(everyone)


def test_jsonl_files_refused_at_the_opening(tmp_path):
    (tmp_path / "f").write_bytes(b"x")
    args = [a for i in range(3) for a in ("--file", f"f{i}={tmp_path / 'f'}")]
    p = subprocess.run([PYBOX, "repl", "--jsonl", *args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(),
                       timeout=120 * SLOW)
    o = json.loads(p.stdout)
    assert o["ready"] is False and o["error"]["type"] == "PayloadTooLarge", o
    assert p.returncode == 2


def test_jsonl_bad_requests():
    j = Jsonl()
    for line, etype in ((b"not json\n", "InvalidRequest"), (b"[1]\n", "InvalidRequest"),
                        (b'{"op": 1}\n', "ValidationError"),
                        (b'{"op": "fly"}\n', "ValidationError"),
                        (b'{"op": "execute"}\n', "ValidationError"),
                        (b'{"op": "execute", "code": "1", "timout": 1}\n', "ValidationError"),
                        (b'{"op": "execute", "code": "1", "timeout": -1}\n', "ValidationError"),
                        (b'{"op": "execute", "code": "1", "files": [{"name": "../x", '
                         b'"content_base64": ""}]}\n', "ValidationError"),
                        (b'{"op": "put", "path": "a", "content_base64": "***"}\n',
                         "ValidationError"),
                        (b'{"op": "get"}\n', "ValidationError")):
        j.proc.stdin.write(line)
        j.proc.stdin.flush()
        o = j.next_line()
        assert o["ok"] is False and o["error"]["type"] == etype, (line, o)
        assert o["error"]["message"], o
    # Still serving; EOF closes it.
    assert j.call(op="execute", code="print(1)")["result"]["stdout"] == "1\n"
    everyone = descendants(j.proc.pid)
    j.proc.stdin.close()
    assert j.proc.wait(timeout=30 * SLOW) == 0
    assert_gone(everyone)


def test_jsonl_sigterm_during_a_call_ends_everything():
    j = Jsonl()
    rid = j.send(op="execute", code="import time\nprint('go', flush=True)\ntime.sleep(30)",
                 stream=True)
    j.next_line(lambda o: o.get("id") == rid and o.get("event") == "stdout")
    everyone = descendants(j.proc.pid)
    t0 = time.time()
    j.proc.send_signal(signal.SIGTERM)
    assert j.proc.wait(timeout=30 * SLOW) == 128 + signal.SIGTERM
    assert time.time() - t0 < 15 * SLOW
    assert_gone(everyone)


def test_jsonl_without_a_server():
    p = subprocess.run([PYBOX, "repl", "--jsonl", "--server", "http://127.0.0.1:9"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=clean_env(), timeout=60)
    assert p.returncode == 69
    o = json.loads(p.stdout)
    assert o["ready"] is False and o["error"]["code"] == "PYBOX_E_CONNECT"


def test_remote_sessions_are_closed(server):
    """The REPL's session is deleted on the server when it ends, whichever way."""
    def open_sessions():
        """The caller's sessions that have not ended (the list shows the ended ones a while)."""
        return [s for s in server.get("/v1/sessions").json()["sessions"] if s["status"] != "dead"]

    assert open_sessions() == []
    p = repl("x = 1\nprint(x)\n", "--server", server.url)
    assert p.returncode == 0 and p.stdout == b"1\n", p.stderr
    j = Jsonl("--server", server.url)
    assert [s["id"] for s in open_sessions()] == [j.ready["session"]["id"]]
    j.proc.send_signal(signal.SIGTERM)
    j.proc.wait(timeout=30 * SLOW)
    assert open_sessions() == []
