"""`pybox mcp`: the Model Context Protocol over stdio, spoken line by line as an MCP client
speaks it, against the local engine.

Every line `pybox mcp` writes on stdout must be one JSON-RPC message (the reader fails the
test otherwise), whatever the code prints; at the end of stdin it exits and leaves no process.
"""
import base64
import json
import os
import queue
import secrets
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import PYBOX, SLOW, clean_env, descendants
from test_sessions import wait_until

TIMEOUT = 120 * SLOW


class Client:
    """A line-by-line JSON-RPC client of a spawned `pybox mcp`."""

    def __init__(self, *args):
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([PYBOX, "mcp", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr,
                                     env=clean_env())
        self.lines = queue.Queue()
        self.bad = []
        self.notes = []
        self.next_id = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
                assert isinstance(msg, dict) and msg.get("jsonrpc") == "2.0"
            except (ValueError, AssertionError):
                self.bad.append(raw[:200])
                continue
            self.lines.put(msg)
        self.lines.put(None)

    def send(self, obj):
        line = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
        if isinstance(line, str):
            line = line.encode()
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def start(self, method, params=None, meta=None):
        self.next_id += 1
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method}
        if params is not None:
            msg["params"] = dict(params)
        if meta is not None:
            msg.setdefault("params", {})["_meta"] = meta
        self.send(msg)
        return self.next_id

    def wait(self, rid, timeout=TIMEOUT):
        deadline = time.time() + timeout
        while True:
            msg = self.lines.get(timeout=max(0.1, deadline - time.time()))
            assert msg is not None, "pybox mcp closed stdout: " + self.err()
            assert not self.bad, self.bad
            if "method" in msg:
                self.notes.append(msg)
                continue
            if msg.get("id") == rid:
                return msg
            self.pending = getattr(self, "pending", []) + [msg]

    def req(self, method, params=None, meta=None, timeout=TIMEOUT):
        return self.wait(self.start(method, params, meta), timeout)

    def call(self, name, args=None, meta=None):
        r = self.req("tools/call", {"name": name, "arguments": args or {}}, meta)
        assert "result" in r, r
        res = r["result"]
        assert isinstance(res["structuredContent"], dict)
        assert res["content"][0]["type"] == "text"
        return res

    def initialize(self, version="2025-11-25"):
        r = self.req("initialize", {"protocolVersion": version, "capabilities": {},
                                    "clientInfo": {"name": "pytest", "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return r["result"]

    def err(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-3000:]

    def close(self, timeout=60 * SLOW):
        kids = descendants(self.proc.pid)
        self.proc.stdin.close()
        rc = self.proc.wait(timeout=timeout)
        self.reader.join(10)
        assert not self.bad, self.bad
        deadline = time.time() + 20
        while time.time() < deadline and any(os.path.exists(f"/proc/{p}") for p in kids):
            time.sleep(0.1)
        left = [p for p in kids if os.path.exists(f"/proc/{p}")]
        assert not left, f"processes left: {left}"
        return rc


def marked(marker):
    """Live processes that see /work/<marker>: the cell and interpreter of the run that made it
    (whichever process tree holds them: pybox mcp's engine or a server's)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.path.isfile(f"/proc/{entry}/root/work/{marker}") and not gone(entry):
                found.append(int(entry))
        except OSError:
            continue
    return found


def gone(pid):
    """Whether the process is gone, or a zombie yet to be reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def cancel_one_shot(c):
    """Start a one-shot run that sleeps, cancel it once its code runs: its processes must be
    gone within a second (3 under ASan), the call never answered, and the next call served."""
    marker = "ready-" + secrets.token_hex(8)
    rid = c.start("tools/call", {"name": "run_python", "arguments": {
        "code": f"open('/work/{marker}', 'w').close()\nimport time\ntime.sleep(60)",
        "timeout_ms": 60000}})
    pids = wait_until("the code started", lambda: marked(marker), 60)
    t0 = time.time()
    c.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": rid, "reason": "test"}})
    wait_until("the cancelled code gone",
               lambda: not marked(marker) and all(gone(p) for p in pids), 1)
    took = time.time() - t0
    res = c.call("run_python", {"code": "print(3)"})
    assert res["isError"] is False and res["structuredContent"]["stdout"] == "3\n"
    assert not [m for m in getattr(c, "pending", []) if m.get("id") == rid], "answered"
    return took


@pytest.fixture(scope="module")
def mcp():
    c = Client("--timeout", "20")
    c.initialize()
    yield c
    assert c.close() == 0, c.err()


def test_initialize_and_list():
    c = Client()
    info = c.initialize("2025-06-18")
    assert info["protocolVersion"] == "2025-06-18"
    assert "tools" in info["capabilities"] and "resources" in info["capabilities"]
    assert info["serverInfo"]["name"] == "pybox"
    assert "Importable modules" in info["instructions"]
    assert c.req("ping")["result"] == {}
    tools = c.req("tools/list")["result"]["tools"]
    assert [t["name"] for t in tools] == ["run_python", "create_session", "write_files",
                                          "read_file", "list_files", "close_session"]
    for t in tools:
        assert t["inputSchema"]["type"] == "object"
        assert t["inputSchema"]["additionalProperties"] is False
        assert t["outputSchema"]["type"] == "object"
        assert "10 s" in t["description"]
        assert set(t["annotations"]) >= {"readOnlyHint", "destructiveHint", "idempotentHint",
                                         "openWorldHint"}
    assert c.req("nope")["error"]["code"] == -32601
    assert c.req("tools/call", {"name": "rm_rf"})["error"]["code"] == -32602
    assert c.close() == 0


def test_print(mcp):
    res = mcp.call("run_python", {"code": "print(1+1)"})
    assert res["isError"] is False
    sc = res["structuredContent"]
    assert sc["status"] == "ok" and sc["exit_code"] == 0 and sc["stdout"] == "2\n"
    assert "2" in res["content"][0]["text"]


def test_one_shot_is_no_session(mcp):
    """A one-shot run is one pybox_run(), as on a server: no REPL value, no session; files in
    directories (which it does not take) still go, through a session of its own."""
    res = mcp.call("run_python", {"code": "6 * 7"})
    assert res["isError"] is False and res["structuredContent"]["value"] is None
    res = mcp.call("run_python", {"code": "print(open('d/a.txt').read())",
                                  "files": [{"path": "d/a.txt", "content": "in a dir"}]})
    assert res["isError"] is False, res["structuredContent"]
    assert res["structuredContent"]["stdout"] == "in a dir\n"


def test_failing_script(mcp):
    res = mcp.call("run_python", {"code": "x = 1\nraise ValueError('bad value')"})
    assert res["isError"] is True
    sc = res["structuredContent"]
    assert sc["status"] == "error" and sc["exit_code"] == 1
    assert sc["error"]["type"] == "ValueError" and "bad value" in sc["error"]["message"]
    assert "Traceback" in sc["error"]["traceback"]


def test_timeout(mcp):
    t0 = time.time()
    res = mcp.call("run_python", {"code": "while True: pass", "timeout_ms": 1000})
    assert res["isError"] is True
    assert res["structuredContent"]["status"] == "timeout"
    assert time.time() - t0 < 15 * SLOW


def test_chart(mcp):
    code = ("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [1, 4, 9])\nplt.show()\n")
    res = mcp.call("run_python", {"code": code})
    assert res["isError"] is False, res["structuredContent"]
    images = [c for c in res["content"] if c["type"] == "image"]
    assert len(images) == 1 and images[0]["mimeType"] == "image/png"
    assert base64.b64decode(images[0]["data"]).startswith(b"\x89PNG\r\n\x1a\n")


def test_files_in_and_out(mcp):
    res = mcp.call("run_python", {
        "code": "open('out.txt', 'w').write(open('in.txt').read().upper())\n"
                "open('raw.bin', 'wb').write(open('b.bin', 'rb').read()[::-1])",
        "files": [{"path": "in.txt", "content": "hello"},
                  {"path": "b.bin", "content": base64.b64encode(b"\x00\x01\xff").decode(),
                   "encoding": "base64"}],
        "return_files": ["out.txt", "raw.bin", "missing.txt"]})
    assert res["isError"] is False, res["structuredContent"]
    files = {f["name"]: f for f in res["structuredContent"]["files"]}
    assert files["out.txt"]["size"] == 5 and files["out.txt"]["mime_type"] == "text/plain"
    assert "error" in files["missing.txt"]
    links = {c["name"]: c["uri"] for c in res["content"] if c["type"] == "resource_link"}
    r = mcp.req("resources/read", {"uri": links["out.txt"]})["result"]["contents"][0]
    assert r["text"] == "HELLO"
    r = mcp.req("resources/read", {"uri": links["raw.bin"]})["result"]["contents"][0]
    assert base64.b64decode(r["blob"]) == b"\xff\x01\x00"
    assert mcp.req("resources/read", {"uri": "pybox://results/0/x"})["error"]["code"] == -32002


def test_session(mcp):
    res = mcp.call("create_session", {"ttl_seconds": 600,
                                      "files": [{"path": "d/a.csv", "content": "a,b\n1,2\n"}]})
    assert res["isError"] is False, res
    sid = res["structuredContent"]["session_id"]
    assert mcp.call("run_python", {"code": "x = 41", "session_id": sid})["isError"] is False
    res = mcp.call("run_python", {"code": "x + 1", "session_id": sid})
    assert res["structuredContent"]["value"] == "42"
    assert mcp.call("write_files", {"session_id": sid, "files": [
        {"path": "b.txt", "content": "bee"}]})["isError"] is False
    listed = mcp.call("list_files", {"session_id": sid})["structuredContent"]["files"]
    assert sorted(f["path"] for f in listed) == ["b.txt", "d/a.csv"]
    res = mcp.call("read_file", {"session_id": sid, "path": "d/a.csv"})
    assert res["structuredContent"]["text"] == "a,b\n1,2\n"
    assert mcp.call("close_session", {"session_id": sid})["isError"] is False
    res = mcp.call("run_python", {"code": "x", "session_id": sid})
    assert res["isError"] is True
    assert "create_session" in res["structuredContent"]["error"]["message"]


def test_malformed_lines(mcp):
    for line in [b"{not json", b"\xff\xfe", b"[1, 2", b"null", b'{"jsonrpc": "2.0"}']:
        mcp.send(line)
        msg = mcp.lines.get(timeout=30)
        assert msg["error"]["code"] in (-32700, -32600), msg
        assert msg["id"] is None
    assert mcp.req("ping")["result"] == {}


def test_stdout_clean(mcp):
    code = ("import sys, warnings\nwarnings.warn('careful')\nsys.stdout.write('x' * 10_000_000)\n"
            "sys.__stdout__.write('raw')\nprint('\\x00 and \\u2028')\n")
    res = mcp.call("run_python", {"code": code})
    sc = res["structuredContent"]
    assert sc["stdout_truncated"] is True
    assert len(sc["stdout"]) <= 20000
    assert "careful" in sc["stderr"]
    assert len(json.dumps(res)) < 100_000
    assert mcp.req("ping")["result"] == {}


def test_progress(mcp):
    mcp.notes.clear()
    res = mcp.call("run_python", {"code": "import time\nfor i in range(3):\n"
                                          "    print(i, flush=True); time.sleep(1)"},
                   meta={"progressToken": "p1"})
    assert res["isError"] is False
    prog = [n for n in mcp.notes if n["method"] == "notifications/progress"]
    assert len(prog) >= 2
    assert all(n["params"]["progressToken"] == "p1" for n in prog)
    values = [n["params"]["progress"] for n in prog]
    assert values == sorted(values)


def test_cancel_session(mcp):
    sid = mcp.call("create_session")["structuredContent"]["session_id"]
    rid = mcp.start("tools/call", {"name": "run_python", "arguments": {
        "code": "import time\nwhile True: time.sleep(0.01)", "session_id": sid}})
    time.sleep(1.5 * SLOW)
    assert mcp.req("ping")["result"] == {}  # answered while the call runs
    t0 = time.time()
    mcp.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
              "params": {"requestId": rid, "reason": "test"}})
    # The session takes the next call once the cancelled one is gone.
    res = mcp.call("run_python", {"code": "1 + 1", "session_id": sid})
    assert res["structuredContent"]["value"] == "2"
    assert time.time() - t0 < 5 * SLOW
    assert mcp.call("close_session", {"session_id": sid})["isError"] is False


def test_cancel_one_shot(mcp):
    """A local one-shot run is one cancellable pybox_run(): the engine kills its code."""
    cancel_one_shot(mcp)


def test_cancel_one_shot_and_eof():
    c = Client()
    c.initialize()
    rid = c.start("tools/call", {"name": "run_python",
                                 "arguments": {"code": "import time\ntime.sleep(60)",
                                               "timeout_ms": 60000}})
    time.sleep(1.5 * SLOW)
    c.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": rid}})
    assert c.req("ping")["result"] == {}
    t0 = time.time()
    # The end of stdin waits for calls in flight: the cancelled one is gone, so it exits at once.
    assert c.close(timeout=20 * SLOW) == 0, c.err()
    assert time.time() - t0 < 15 * SLOW


def test_eof_closes_sessions():
    c = Client()
    c.initialize()
    sid = c.call("create_session")["structuredContent"]["session_id"]
    assert c.call("run_python", {"code": "y = 1", "session_id": sid})["isError"] is False
    assert c.close() == 0, c.err()


def test_help():
    out = subprocess.run([PYBOX, "mcp", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "usage: pybox mcp" in out.stdout
    out = subprocess.run([PYBOX, "mcp", "--bogus"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and out.stdout == ""


def test_remote(start_server):
    """--server: every call goes to a `pybox serve`; the sessions it opened end with it."""
    srv = start_server("--rpm", "1000", "--rpd", "1000")
    c = Client("--server", srv.url)
    c.initialize()
    res = c.call("run_python", {"code": "print(6 * 7)"})
    assert res["isError"] is False and res["structuredContent"]["stdout"] == "42\n"
    sid = c.call("create_session")["structuredContent"]["session_id"]
    assert c.call("run_python", {"code": "x = 41", "session_id": sid})["isError"] is False
    res = c.call("run_python", {"code": "x + 1", "session_id": sid})
    assert res["structuredContent"]["value"] == "42"
    res = c.call("run_python", {"code": "1/0"})
    assert res["isError"] is True
    assert res["structuredContent"]["error"]["type"] == "ZeroDivisionError", res
    # A file of a directory is refused on a server's one-shot run, with what to do instead.
    res = c.call("run_python", {"code": "1", "files": [{"path": "d/a.txt", "content": "x"}]})
    assert res["isError"] is True and "session" in res["structuredContent"]["error"]["message"]
    assert c.close() == 0, c.err()


def test_remote_cancel_one_shot(start_server):
    """--server: a cancelled one-shot run's connection closes, and the server kills its code
    (it does not run on to its timeout)."""
    srv = start_server("--rpm", "1000", "--rpd", "1000", "--timeout", "60")
    c = Client("--server", srv.url)
    c.initialize()
    cancel_one_shot(c)
    assert c.close() == 0, c.err()
