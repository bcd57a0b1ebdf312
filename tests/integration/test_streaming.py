"""Server-Sent Events: POST /v1/execute with `Accept: text/event-stream` (docs/api.md,
"Streaming").

The events come as things happen (`start`, `stdout` and `stderr` coalesced but in their order,
`display`, `error`, `end`), `end` carries the very answer the plain request gets, a silent
execution gets keepalive comments and outlives the request deadline, a client that leaves
cancels its execution (its processes gone, its slot and memory given back), and whatever is
refused before the execution (400, 401, 413, 415, 429, 503) is the plain JSON error.

The events are read off a raw socket (HTTP/1.1, chunked) so that each one's arrival time is
seen as it arrives, and so that a test can hang up in the middle.
"""
import json
import re
import secrets
import socket
import time

import pytest

from conftest import SLOW, body_of, expect_error, metric
from pybox_host import jail_file_pid, wait_jail_file

SSE = {"Accept": "text/event-stream"}
# Fields of the result object that differ from run to run.
VARYING = ("duration_ms", "cpu_ms", "max_rss_kb", "request_id")


@pytest.fixture(scope="module")
def srv(module_start_server):
    return module_start_server("--rpm", "100000", "--rpd", "1000000", "--timeout", "60")


class Event:
    def __init__(self, at, name, data, raw):
        self.at = at          # time.monotonic() when it had arrived whole
        self.name = name      # the event's name, or None for a comment
        self.data = data      # its data line (text), or the comment's text
        self.raw = raw        # its bytes as sent, blank line excluded

    def json(self):
        return json.loads(self.data)

    def __repr__(self):
        return f"Event({self.name!r}, {self.data[:200]!r})"


class Stream:
    """One POST /v1/execute on a connection of its own: .status and .headers (lower-case), then
    the events one by one as they arrive (next(), all())."""

    def __init__(self, srv, body, headers=None, path="/v1/execute", timeout=60):
        data = json.dumps(body).encode()
        h = {"Host": f"{srv.host}:{srv.port}", "Content-Type": "application/json",
             "Content-Length": str(len(data))}
        h.update(SSE)
        h.update(headers or {})
        self.sock = socket.create_connection((srv.host, srv.port), timeout=timeout * SLOW)
        head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
        self.sock.sendall(head.encode() + b"\r\n" + data)
        self.buf = b""
        self.body = b""
        self.ended = False
        lines = self._until(b"\r\n\r\n").decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ", 2)[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"

    def _recv(self):
        b = self.sock.recv(65536)
        if not b:
            raise EOFError(f"the server closed the connection; unread: {self.buf[:200]!r}")
        self.buf += b

    def _until(self, sep):
        while sep not in self.buf:
            self._recv()
        out, self.buf = self.buf.split(sep, 1)
        return out

    def _chunk(self):
        """Decode one chunk of the body into self.body (the last one sets self.ended)."""
        assert self.chunked, f"not a chunked answer: {self.headers}"
        size = int(self._until(b"\r\n").split(b";")[0], 16)
        while len(self.buf) < size + 2:
            self._recv()
        assert self.buf[size:size + 2] == b"\r\n", self.buf[:size + 2]
        self.body += self.buf[:size]
        self.buf = self.buf[size + 2:]
        if size == 0:
            self.ended = True

    def next(self):
        """The next event or comment, or None once the stream has ended."""
        while b"\n\n" not in self.body:
            if self.ended:
                assert self.body == b"", f"the stream ended inside an event: {self.body!r}"
                return None
            self._chunk()
        block, self.body = self.body.split(b"\n\n", 1)
        at = time.monotonic()
        text = block.decode("utf-8")
        if text.startswith(":"):
            return Event(at, None, text[1:].strip(), block)
        fields = dict(line.split(": ", 1) for line in text.split("\n"))
        assert set(fields) == {"event", "data"}, text[:500]
        return Event(at, fields["event"], fields["data"], block)

    def all(self):
        out = []
        while True:
            e = self.next()
            if e is None:
                return out
            out.append(e)

    def close(self):
        self.sock.close()


def stream(srv, body, **kw):
    """The events of a streamed execution that must be admitted; checks the answer's head."""
    s = Stream(srv, body, **kw)
    try:
        assert s.status == 200, (s.status, s.headers, s.buf[:2000])
        assert s.headers["content-type"] == "text/event-stream", s.headers
        assert s.headers["cache-control"] == "no-cache", s.headers
        assert s.headers["x-accel-buffering"] == "no", s.headers
        assert s.headers.get("access-control-allow-origin") == "*", s.headers
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{6}", s.headers["x-request-id"]), s.headers
        events = s.all()
    finally:
        s.close()
    names = [e.name for e in events if e.name is not None]
    assert names[0] == "start" and names[-1] == "end" and names.count("end") == 1, names
    assert names.count("start") == 1 and names.count("error") <= 1, names
    if "error" in names:
        assert names[-2] == "error", names
    assert events[0].json()["request_id"] == s.headers["x-request-id"]
    assert events[-1].name == "end" and events[-1].json()["request_id"] == \
        s.headers["x-request-id"]
    return s, events


def texts(events, name):
    return [e.json()["text"] for e in events if e.name == name]


def masked(text):
    """A result object's JSON text with the fields that vary from run to run blanked out."""
    for field in VARYING:
        text, n = re.subn(r'"%s":("[^"]*"|[-0-9.e+]+)' % field, '"%s":0' % field, text)
        assert n == 1, (field, text[:500])
    return text


def gone(pid):
    """Whether the process `pid` has ended (or is a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            state = next(line for line in f if line.startswith("State:")).split()[1]
    except (OSError, StopIteration):
        return True
    return state in ("Z", "X")


def labelled(srv, name, labels):
    """The value of the sample `name{labels}` in /metrics."""
    m = re.search(r"^%s\{%s\} (\d+)$" % (re.escape(name), re.escape(labels)),
                  srv.get("/metrics").text, re.M)
    assert m, f"/metrics has no {name}{{{labels}}}"
    return int(m.group(1))


def wait_idle(srv):
    """Wait until no execution runs and no request holds memory (the stream's end gave it all
    back)."""
    deadline = time.monotonic() + 10 * SLOW
    while True:
        state = (metric(srv, "pybox_cells_busy"),
                 labelled(srv, "pybox_memory_budget_bytes", 'state="used"'))
        if state == (0, 0):
            return
        assert time.monotonic() < deadline, f"(busy, budget used) = {state}"
        time.sleep(0.02)


def test_output_arrives_as_it_is_printed(srv):
    code = "import time\nprint(1, flush=True)\ntime.sleep(0.5)\nprint(2)\n"
    s, events = stream(srv, {"code": code, "timeout": 10})
    out = [e for e in events if e.name == "stdout"]
    assert [e.json()["text"] for e in out] == ["1\n", "2\n"], events
    # Measured here: the first line came when it was printed, not with the rest at the end.
    assert out[1].at - out[0].at >= 0.4, (out[1].at - out[0].at)
    assert events[-1].at - out[0].at >= 0.4
    start = events[0].json()
    assert start["limits"]["timeout_s"] == 10 and start["limits"]["memory_mb"] > 0, start
    end = events[-1].json()
    assert end["status"] == "ok" and end["stdout"] == "1\n2\n" and end["error"] is None, end
    # The stream ended with its last chunk, and gave back what it held.
    assert s.ended
    wait_idle(srv)


def test_output_is_live_without_flush_and_in_order_with_displays(srv):
    # A watched execution writes stdout at each newline, as on a terminal, and what was
    # printed before an output goes out before it.
    code = ("import time\nprint('a')\ndisplay('shown')\nprint('b')\ntime.sleep(0.5)\n"
            "print('c')\n")
    _, events = stream(srv, {"code": code, "timeout": 10})
    seen = [(e.name, e.json()["text"] if e.name == "stdout" else e.json()["data"]["text/plain"])
            for e in events if e.name in ("stdout", "display")]
    assert seen[0] == ("stdout", "a\n") and seen[1] == ("display", "'shown'"), seen
    out = [e for e in events if e.name == "stdout"]
    assert "".join(e.json()["text"] for e in out) == "a\nb\nc\n", out
    late = [e for e in out if "c" in e.json()["text"]][0]
    early = [e for e in out if "b" in e.json()["text"]][0]
    assert late.at - early.at >= 0.4, "b came only with the end"


def test_end_is_the_answer_the_plain_request_gets(srv):
    code = '''
import sys
print("out", input())
sys.stderr.write("err\\n")
display({"k": [1, 2]}, "two")
open("made.txt", "w").write("made")
raise ValueError("boom")
'''
    body = {"code": code, "stdin": "in\n", "timeout": 10,
            "return_files": ["made.txt", "missing.txt"]}
    s, events = stream(srv, body)
    end = events[-1]
    plain = srv.v1(body)
    assert plain.status_code == 200, plain.text
    # Byte for byte the same JSON but for what differs from one run to the next.
    assert masked(end.data) == masked(plain.text)
    a, b = end.json(), body_of(plain)
    assert a["status"] == "error" and a["error"]["type"] == "ValueError", a
    assert a["files"]["made.txt"]["size"] == 4 and "error" in a["files"]["missing.txt"], a
    # And the stream's own events are the end's parts, in order.
    assert "".join(texts(events, "stdout")) == a["stdout"] == b["stdout"] == "out in\n"
    assert "".join(texts(events, "stderr")) == a["stderr"]
    assert a["stderr"].startswith("err\n") and "ValueError: boom" in a["stderr"]
    assert [e.json() for e in events if e.name == "display"] == a["outputs"]
    assert [o["data"]["text/plain"] for o in a["outputs"]] == ["{'k': [1, 2]}", "'two'"]
    assert events[-2].name == "error" and events[-2].json() == a["error"]


def test_stderr_keeps_its_place_among_stdout(srv):
    # o1 is pending (coalesced) when e1 comes: o1 goes first. Then each on its own.
    code = '''
import sys, time
sys.stdout.write("o1\\n"); sys.stdout.flush()
sys.stderr.write("e1\\n"); sys.stderr.flush()
time.sleep(0.2)
sys.stdout.write("o2\\n"); sys.stdout.flush()
time.sleep(0.2)
sys.stderr.write("e2\\n"); sys.stderr.flush()
'''
    _, events = stream(srv, {"code": code, "timeout": 10})
    got = [(e.name, e.json()["text"]) for e in events if e.name in ("stdout", "stderr")]
    assert got == [("stdout", "o1\n"), ("stderr", "e1\n"), ("stdout", "o2\n"),
                   ("stderr", "e2\n")], got


def test_text_is_coalesced_and_bounded(srv):
    code = "import sys\nfor i in range(300):\n    print(i, flush=True)\nsys.stdout.write('x' * 20000)\n"
    _, events = stream(srv, {"code": code, "timeout": 10})
    out = texts(events, "stdout")
    assert "".join(out) == events[-1].json()["stdout"]
    assert all(len(t.encode()) <= 4096 for t in out), [len(t) for t in out]
    # 301 writes, but at most ~20 ms or 4 KiB to an event: far fewer events.
    assert 5 <= len(out) <= 60, [len(t) for t in out]


def test_text_is_never_cut_inside_a_character(srv):
    # Two-byte characters after one ASCII byte: every 4 KiB boundary falls inside one.
    code = "import sys\nsys.stdout.write('a' + '\\u00e9' * 5000 + '\\u20ac' * 2000)\n"
    _, events = stream(srv, {"code": code, "timeout": 10})
    out = texts(events, "stdout")
    assert len(out) >= 4, [len(t) for t in out]
    assert all("\ufffd" not in t for t in out)
    assert "".join(out) == events[-1].json()["stdout"] == "a" + "\u00e9" * 5000 + "\u20ac" * 2000


def test_output_past_the_queue_and_the_cap_streams_whole(srv):
    # 3 MiB through a queue of 64 KiB: the engine waits for the client; what the stdout limit
    # (1 MiB) keeps is what the events carry.
    code = "import sys\nfor i in range(3 * 1024):\n    sys.stdout.write(str(i % 10) * 1024)\n"
    _, events = stream(srv, {"code": code, "timeout": 20})
    end = events[-1].json()
    assert end["stdout_truncated"] is True and len(end["stdout"]) == 1 << 20, len(end["stdout"])
    assert "".join(texts(events, "stdout")) == end["stdout"]
    wait_idle(srv)


def test_display_arrives_when_shown(srv):
    code = "import time\ndisplay('first')\ntime.sleep(0.5)\nprint('late')\n"
    _, events = stream(srv, {"code": code, "timeout": 10})
    shown = [e for e in events if e.name == "display"]
    assert len(shown) == 1, events
    end = events[-1]
    assert shown[0].json() == end.json()["outputs"][0]
    assert shown[0].json()["type"] == "display" and \
        shown[0].json()["data"]["text/plain"] == "'first'", shown[0].json()
    assert end.at - shown[0].at >= 0.4, "the display came only with the end"
    assert events.index(shown[0]) < [e.name for e in events].index("stdout")


def test_a_client_that_leaves_cancels_its_execution(srv):
    marker = f"/work/stream-{secrets.token_hex(8)}"
    code = f'''
import time
open("{marker}", "w").close()
t = time.time()
while time.time() - t < 30:
    print("tick", flush=True)
    time.sleep(0.05)
'''
    killed = labelled(srv, "pybox_executions_total", 'status="killed"')
    s = Stream(srv, {"code": code, "timeout": 40})
    assert s.status == 200, (s.status, s.buf[:2000])
    assert s.next().name == "start"
    assert s.next().name == "stdout"
    pid = wait_jail_file(marker, 30 * SLOW)
    assert metric(srv, "pybox_cells_busy") == 1
    s.close()
    left = time.monotonic()
    # Within seconds, not the 30 s the code would run: its processes gone, the execution
    # counted as killed, its slot and its share of the memory budget given back.
    deadline = left + 10 * SLOW
    while True:
        state = (gone(pid), jail_file_pid(marker), metric(srv, "pybox_cells_busy"),
                 labelled(srv, "pybox_executions_total", 'status="killed"'),
                 labelled(srv, "pybox_memory_budget_bytes", 'state="used"'))
        if state == (True, None, 0, killed + 1, 0):
            break
        assert time.monotonic() < deadline, \
            f"(gone, pid with the marker, busy, killed, budget used) = {state}"
        time.sleep(0.02)
    assert time.monotonic() - left < 25
    # The server serves on: the next streamed execution runs whole.
    _, events = stream(srv, {"code": "print('again')", "timeout": 10})
    assert events[-1].json()["status"] == "ok"
    assert srv.get("/v1/health").json()["active_executions"] == 0


def test_silence_gets_keepalives_and_outlives_the_deadline(start_server):
    # The request deadline (2 s) does not cut a stream whose execution runs on.
    srv = start_server("--rpm", "1000", "--rpd", "10000", "--request-deadline", "2")
    code = "import time\ntime.sleep(6)\nprint('awake')\n"
    _, events = stream(srv, {"code": code, "timeout": 10})
    comments = [e for e in events if e.name is None]
    assert comments and all(e.raw == b": keepalive" for e in comments), events
    out = [e for e in events if e.name == "stdout"]
    assert out and texts(events, "stdout") == ["awake\n"], events
    # The first comment after about 5 s of silence, and before the code woke.
    assert 4.5 <= comments[0].at - events[0].at, comments[0].at - events[0].at
    assert events.index(comments[0]) < events.index(out[0])
    assert events[-1].json()["status"] == "ok"
    assert metric(srv, "pybox_deadline_drops_total") == 0


def test_keepalives_come_within_the_client_timeout(start_server):
    # libmicrohttpd drops a connection that sends nothing for --client-timeout (2 s): the
    # comments come every second.
    srv = start_server("--rpm", "1000", "--rpd", "10000", "--client-timeout", "2")
    code = "import time\ntime.sleep(3.5)\nprint('awake')\n"
    _, events = stream(srv, {"code": code, "timeout": 10})
    comments = [e for e in events if e.name is None]
    assert len(comments) >= 2, events
    assert texts(events, "stdout") == ["awake\n"] and events[-1].json()["status"] == "ok"


def test_refusals_before_the_stream_are_plain_json(srv):
    cases = [
        ({"code": "print(1)", "cod": 1}, {}, "application/json", 400),
        ({"code": "print(1)", "timeout": 600}, {}, "application/json", 400),
        ({"code": "print(1)"}, {"Authorization": "Bearer not-a-key"}, "application/json", 401),
        ({"code": "print(1)"}, {}, "text/plain", 415),
        ({"code": "print(1)", "stdin": "x" * (9 << 20)}, {}, "application/json", 413),
        ({"code": "#" * 3000}, {}, "application/json", 413),
    ]
    for body, headers, ctype, status in cases:
        plain = srv.post("/v1/execute", body, headers=headers, content_type=ctype)
        streamed = srv.post("/v1/execute", body, headers=dict(headers, **SSE), content_type=ctype)
        a = expect_error(plain, status)
        b = expect_error(streamed, status)
        assert a["error"]["type"] == b["error"]["type"], (a, b)
        assert a["error"]["message"] == b["error"]["message"], (a, b)


def test_rate_limit_is_plain_json(start_server):
    srv = start_server("--rpm", "1", "--rpd", "1000")
    r = srv.v1({"code": "print(1)"})
    assert r.status_code == 200, r.text
    r = srv.post("/v1/execute", {"code": "print(1)"}, headers=SSE)
    expect_error(r, 429, "RateLimitExceeded")
    assert int(r.headers["Retry-After"]) > 0


def test_busy_is_plain_json_and_a_cancel_frees_the_slot(start_server):
    srv = start_server("--max-concurrency", "1", "--queue", "0", "--rpm", "1000",
                       "--rpd", "10000")
    marker = f"/work/busy-{secrets.token_hex(8)}"
    code = f"import time\nopen('{marker}', 'w').close()\ntime.sleep(8)\n"
    s = Stream(srv, {"code": code, "timeout": 10})
    assert s.status == 200 and s.next().name == "start"
    wait_jail_file(marker, 30 * SLOW)
    r = srv.post("/v1/execute", {"code": "print(1)"}, headers=SSE)
    expect_error(r, 503, "ServerBusy")
    s.close()
    deadline = time.monotonic() + 10 * SLOW
    while metric(srv, "pybox_cells_busy") != 0:
        assert time.monotonic() < deadline, "the slot of the cancelled execution stayed taken"
        time.sleep(0.02)
    _, events = stream(srv, {"code": "print('mine')", "timeout": 10})
    assert texts(events, "stdout") == ["mine\n"]


def test_the_compatible_dialect_ignores_accept(srv):
    r = srv.post("/execute", {"code": "print(1)"}, headers=SSE)
    assert r.status_code == 200, r.text
    assert body_of(r)["stdout"] == "1\n"
