"""Mutated HTTP requests against a real `pybox serve` (issue 10 §1): the front door survives
whatever bytes a client sends.

Invariant: every one of the 10,000 requests below, sent over a raw socket, gets one of
  - a 4xx whose body is a JSON error: {status: "error", error_details: {type, message},
    request_id} with request_id equal to the X-Request-Id header (429 and 503 included);
  - a 2xx, when the mutation happened to leave a valid request, with a valid JSON body (for
    POST, and whenever the answer says application/json);
  - a closed connection: with no bytes, or after libmicrohttpd's own 4xx (no X-Request-Id) for
    bytes that are not HTTP; its 505 only for a request line whose version is not HTTP/1.0 or
    HTTP/1.1, since that is HTTP's own answer to it.
Never a 5xx of the server, never 10 s without an answer or a close, never a crash: after every
batch of 100 the process is alive and GET /v1/health answers 200 on a fresh connection, and at
the end no server's stderr holds an AddressSanitizer, LeakSanitizer or UBSan report. Framing
that RFC 9112 §6.3 calls an attack is held to it: conflicting Content-Length values never get a
2xx, and a request with Content-Length and Transfer-Encoding gets one answer, not two.

The requests are mutations of valid seed requests of both dialects (POST /execute, POST
/v1/execute as JSON and as multipart/form-data, the GET routes), drawn from random.Random(SEED):
the same seed gives the same bytes, so a failure names its seed, its case number and its bytes.
Targeted cases come first (conflicting framing, bad chunk sizes, odd methods and paths, wrong
JSON types for every field of both dialects, odd multipart parts, odd Authorization, X-API-Key and
X-Forwarded-For, code that fails in every way), then random stacks of structural and
byte-level mutations.

A crash does not end the run: the server is restarted, the requests of the batch that killed it
that got no answer are replayed one at a time on a fresh server to name the ones that do it, and
the run goes on, so one run reports every distinct failure (grouped by kind, every one of them
in failures.txt beside the servers' logs).

Environment: PYBOX (the binary; build it with -DPYBOX_SANITIZE=ON for the sanitizer checks),
PYBOX_MUTATION_SEED and PYBOX_MUTATION_COUNT (defaults below) to explore further,
PYBOX_MUTATION_RESTARTS (how many crashes one run survives). Run with -s to see the
distribution of answers on success.
"""
import collections
import copy
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from conftest import (PYBOX, PYBOX_IS_ASAN, _clean_env, _our_pybox_pids, pybox_cgroups,
                      remove_cgroup)

SEED = int(os.environ.get("PYBOX_MUTATION_SEED", "20261001"))
COUNT = int(os.environ.get("PYBOX_MUTATION_COUNT", "10000"))  # targeted cases, then random ones
BATCH = 100            # requests between two health checks
WORKERS = 4            # connections in flight at once
REQUEST_TIMEOUT = 10   # seconds for one exchange: connect, send, read to EOF
START_TIMEOUT = 120 if PYBOX_IS_ASAN else 60
STOP_TIMEOUT = 30
MAX_RESTARTS = int(os.environ.get("PYBOX_MUTATION_RESTARTS", "150"))  # crashes survived
MAX_BODY = 1 << 20     # --max-body: room for the 10^5-bracket bodies, not for much more

SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "SUMMARY: UndefinedBehaviorSanitizer")

CODE = "print(1)"
HOST = b"127.0.0.1"

# ---------------------------------------------------------------------------------------------
# The server


class Serve:
    """One `pybox serve` on 127.0.0.1:0 with generous rate limits; stderr in <tmp>/stderr.log."""

    FLAGS = ["--no-preload", "--rpm", "1000000000", "--rpd", "1000000000", "--timeout", "5",
             "--client-timeout", "5", "--max-body", str(MAX_BODY),
             "--trusted-proxy", "127.0.0.1/32"]

    def __init__(self, tmp, n):
        self.dir = Path(tmp) / f"serve-{n}"
        self.dir.mkdir()
        self.log_path = self.dir / "stderr.log"
        url_file = self.dir / "url"
        env = _clean_env({"UBSAN_OPTIONS": os.environ.get("UBSAN_OPTIONS", "print_stacktrace=1")})
        argv = [PYBOX, "serve", "--listen", "127.0.0.1:0", "--data", str(self.dir), "--url-file",
                str(url_file)] + self.FLAGS
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=log, env=env, cwd=str(self.dir))
        _our_pybox_pids.add(self.proc.pid)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"pybox serve exited {self.proc.returncode} at start:\n"
                                     f"{self.log_text()[-4000:]}")
            try:
                url = url_file.read_text().strip()
            except FileNotFoundError:
                url = ""
            if url.startswith("http://"):
                break
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"pybox serve wrote no URL in {START_TIMEOUT} s:\n"
                                     f"{self.log_text()[-4000:]}")
            time.sleep(0.05)
        self.port = int(url.rsplit(":", 1)[1])

    def alive(self):
        return self.proc.poll() is None

    def healthy(self):
        """None when alive and GET /v1/health answers 200 {"status": "ok"}, else why not."""
        if not self.alive():
            return f"pybox serve is dead (status {self.proc.returncode})"
        ex = exchange(self.port, b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Connection: close\r\n\r\n")
        responses, _ = parse_responses(ex.data, False)
        if ex.timed_out or not responses or responses[0].status != 200:
            try:  # a dying process may still be writing its sanitizer report
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            return (f"GET /v1/health failed (timed out {ex.timed_out}, error {ex.error}, "
                    f"answer {ex.data[:300]!r}); pybox serve "
                    + ("alive" if self.alive() else f"dead (status {self.proc.returncode})"))
        try:
            if strict_json(responses[0].body).get("status") != "ok":
                return f"GET /v1/health body {responses[0].body[:300]!r}"
        except ValueError:
            return f"GET /v1/health body is not JSON: {responses[0].body[:300]!r}"
        return None

    def stop(self):
        """SIGTERM and wait; the exit status (None when it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def sanitizer_reports(text):
    """The sanitizer reports in a stderr text, each shortened to its headline, top frames and
    summary."""
    lines = text.splitlines()
    reports = []
    for i, line in enumerate(lines):
        if not any(m in line for m in SANITIZER_MARKS) or line.startswith("SUMMARY:"):
            continue
        block = [line]
        frames = 0
        for follow in lines[i + 1:i + 120]:
            stripped = follow.strip()
            if stripped.startswith("#") and frames < 8:
                block.append("  " + stripped)
                frames += 1
            if stripped.startswith("SUMMARY:"):
                block.append("  " + stripped)
                break
        reports.append("\n".join(block))
    return reports


# ---------------------------------------------------------------------------------------------
# One exchange on a raw socket, and the answers in it


class Exchange:
    def __init__(self, data, timed_out, error, elapsed):
        self.data = data            # every byte the server sent
        self.timed_out = timed_out  # no EOF within REQUEST_TIMEOUT
        self.error = error          # a socket error (reset, refused), or None
        self.elapsed = elapsed      # seconds from connect to EOF


def exchange(port, request, timeout=REQUEST_TIMEOUT):
    """Send `request` on a new connection while reading; half-close once it is sent (so a
    request cut short ends instead of waiting for --client-timeout) and read to EOF."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    out = []
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as e:
        return Exchange(b"", False, f"connect: {e}", time.monotonic() - t0)
    s.setblocking(False)
    sent = 0
    shut = False
    error = None
    timed_out = False
    try:
        while True:
            if sent >= len(request) and not shut:
                shut = True
                try:
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            readable, writable, _ = select.select([s], [s] if not shut else [], [], left)
            if readable:
                try:
                    chunk = s.recv(65536)
                except BlockingIOError:
                    chunk = None
                except OSError as e:
                    error = f"recv: {e}"
                    break
                if chunk == b"":
                    break
                if chunk:
                    out.append(chunk)
            if writable:
                try:
                    sent += s.send(request[sent:sent + 65536])
                except BlockingIOError:
                    pass
                except OSError as e:  # the server answered early and closed: read the answer
                    error = f"send: {e}"
                    sent = len(request)
    finally:
        s.close()
    return Exchange(b"".join(out), timed_out, error, time.monotonic() - t0)


class Response:
    def __init__(self, status, headers, body, truncated):
        self.status = status        # int
        self.headers = headers      # {lower-case name: value} (latin-1)
        self.body = body            # bytes
        self.truncated = truncated  # fewer body bytes than Content-Length said


STATUS_LINE = re.compile(r"HTTP/1\.[01] (\d{3})(?: .*)?\Z")


def parse_responses(data, head_first, head_later=False):
    """([Response], bytes left that are not a response) of everything read on one connection.
    head_first: the first request is a HEAD (its answer has no body); head_later: a later one
    may be, so an answer followed at once by another (or by the end) may have none. Parsing
    stops after a response that says Connection: close."""
    out = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            break
        lines = data[pos:end].decode("latin-1").split("\r\n")
        m = STATUS_LINE.match(lines[0])
        if not m:
            break
        status = int(m.group(1))
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        pos = end + 4
        truncated = False
        no_body = (100 <= status < 200 or status in (204, 304)
                   or (head_first and not any(r.status >= 200 for r in out))
                   or (head_later and out and (pos == len(data)
                                               or data.startswith(b"HTTP/1.", pos))))
        if no_body:
            body = b""
        elif "content-length" in headers and headers["content-length"].isdigit():
            n = int(headers["content-length"])
            body = data[pos:pos + n]
            truncated = len(body) < n
            pos += len(body)
        else:
            body = data[pos:]
            pos = len(data)
        out.append(Response(status, headers, body, truncated))
        if status >= 200 and headers.get("connection", "").lower() == "close":
            return out, b""
    return out, data[pos:]


def strict_json(raw):
    """Parse strict JSON from bytes: UTF-8 only, no NaN or Infinity."""

    def reject(name):
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(raw.decode("utf-8"), parse_constant=reject)


# ---------------------------------------------------------------------------------------------
# Requests: a small model, serialised to bytes


class Raw:
    """A JSON value written verbatim (invalid JSON, odd numbers, invalid UTF-8)."""

    def __init__(self, text):
        self.text = text


def dump(v):
    """JSON text (bytes) of a value that may hold Raw pieces."""
    if isinstance(v, Raw):
        return v.text
    if isinstance(v, dict):
        return b"{" + b",".join(dump(k) + b":" + dump(x) for k, x in v.items()) + b"}"
    if isinstance(v, list):
        return b"[" + b",".join(dump(x) for x in v) + b"]"
    return json.dumps(v).encode()


class Req:
    """A request: method, target, version, headers [(name, value)], body (all bytes). Length
    framing is added by to_bytes() unless the headers already carry it (framing=False)."""

    def __init__(self, method, target, headers=(), body=b"", version=b"HTTP/1.1", framing=True):
        self.method = method
        self.target = target
        self.version = version
        self.headers = [(b"Host", HOST)] + list(headers)
        self.body = body
        self.framing = framing

    def copy(self):
        r = Req(self.method, self.target, (), self.body, self.version, self.framing)
        r.headers = list(self.headers)
        return r

    def to_bytes(self):
        line = self.method + b" " + self.target + (b" " + self.version if self.version else b"")
        heads = list(self.headers)
        if self.framing and (self.body or self.method == b"POST"):
            heads.append((b"Content-Length", str(len(self.body)).encode()))
        return (line + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in heads) + b"\r\n"
                + self.body)


class Case:
    def __init__(self, name, data, req=None, must_succeed=False):
        self.index = -1
        self.name = name                  # what was done to which seed
        self.data = data                  # the bytes sent
        self.must_succeed = must_succeed  # an unmutated seed: 2xx required
        # From the structure, when the bytes are exactly what it says: conflicting
        # Content-Length values without Transfer-Encoding (RFC 9112 §6.3: a 400 and a close,
        # never a 2xx), and Content-Length with Transfer-Encoding (processed by the chunks or
        # refused, but either way the connection closes after one answer).
        self.framing_invalid, self.one_answer = framing_of(req) if req is not None else (False,
                                                                                          False)


def framing_of(req):
    """(conflicting Content-Length without Transfer-Encoding, Content-Length and
    Transfer-Encoding together) of a Req."""
    heads = req.headers + ([(b"Content-Length", b"%d" % len(req.body))] if req.framing and (
        req.body or req.method == b"POST") else [])
    lengths = set()
    te = False
    for name, value in heads:
        if name.lower() == b"content-length":
            lengths.update(v.strip() for v in value.split(b","))
        elif name.lower() == b"transfer-encoding":
            te = True
    return len(lengths) > 1 and not te, bool(lengths) and te


JSON_CT = (b"Content-Type", b"application/json")
BOUNDARY = b"XX"
MP_CT = (b"Content-Type", b"multipart/form-data; boundary=" + BOUNDARY)

COMPAT_MIN = {"code": CODE}
COMPAT_FULL = {"code": CODE, "api_key": None, "stdin_data": "x",
               "attachments": [{"filename": "a.txt", "content_base_64": "YQ=="}],
               "files": {"b.txt": "Yg=="}, "return_files": ["a.txt"], "timeout": 5,
               "allow_network": False}
COMPAT_SCRIPT = {"script": "def main():\n    return 1\n"}
V1_MIN = {"code": CODE}
V1_FULL = {"code": CODE, "stdin": "x", "files": [{"name": "a.txt", "content_base64": "YQ=="}],
           "return_files": ["a.txt"], "main": False, "timeout": 5, "memory_mb": 64,
           "network": False}
FORM_FIELDS = [("code", CODE.encode()), ("stdin", b"x"), ("timeout", b"5"), ("memory_mb", b"64"),
               ("main", b"false"), ("network", b"false"), ("return_files", b"a.txt")]
FORM_FILE = ("a.txt", b"a")

ROUTES = [b"/v1/health", b"/metrics", b"/v1/info", b"/openapi.json", b"/", b"/docs",
          b"/assets/app.css", b"/assets/app.js", b"/assets/favicon.svg"]


def part(headers, value):
    """One multipart part: its header lines (bytes, without CRLF) and its value."""
    return b"--" + BOUNDARY + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + value \
        + b"\r\n"


def disposition(name, filename=None):
    h = b'Content-Disposition: form-data; name="' + name + b'"'
    if filename is not None:
        h += b'; filename="' + filename + b'"'
    return h


def form_body(fields=FORM_FIELDS, file=FORM_FILE, extra=b"", close=True):
    body = b"".join(part([disposition(n.encode())], v) for n, v in fields)
    if file is not None:
        body += part([disposition(b"files", file[0].encode()),
                      b"Content-Type: application/octet-stream"], file[1])
    body += extra
    if close:
        body += b"--" + BOUNDARY + b"--\r\n"
    return body


def json_req(path, obj, headers=()):
    return Req(b"POST", path, [JSON_CT] + list(headers), dump(obj))


def form_req(body, ctype=MP_CT[1], headers=()):
    return Req(b"POST", b"/v1/execute", [(b"Content-Type", ctype)] + list(headers), body)


def seeds():
    """(name, Req) of valid requests: every one must succeed unmutated."""
    out = [("compat-min", json_req(b"/execute", COMPAT_MIN)),
           ("compat-full", json_req(b"/execute", COMPAT_FULL)),
           ("compat-script", json_req(b"/execute", COMPAT_SCRIPT)),
           ("v1-min", json_req(b"/v1/execute", V1_MIN)),
           ("v1-full", json_req(b"/v1/execute", V1_FULL)),
           ("v1-form", form_req(form_body())),
           ("preflight", Req(b"OPTIONS", b"/v1/execute",
                             [(b"Origin", b"http://example.com"),
                              (b"Access-Control-Request-Method", b"POST")]))]
    for route in ROUTES:
        out.append(("get " + route.decode(), Req(b"GET", route)))
    out.append(("head /v1/health", Req(b"HEAD", b"/v1/health")))
    return out


# ---------------------------------------------------------------------------------------------
# Odd values

HUGE_INT = b"1" + b"0" * 400
DEEP_OPEN = b"[" * 100000
DEEP_BALANCED = b"[" * 100000 + b"]" * 100000
DEEP_OBJECT = b'{"a":' * 100000 + b"1" + b"}" * 100000

# JSON values for every field: wrong types, numbers beyond every range, odd strings.
JSON_ODD = [
    b"null", b"true", b"false", b"0", b"-0", b"-0.0", b"0.5", b"1e999", b"-1e999", b"1e-999",
    b"18446744073709551616", b"18446744073709551615", b"9223372036854775808",
    b"9223372036854775807", b"-9223372036854775809", HUGE_INT, b"-" + HUGE_INT, b"3601",
    b"1E2", b"NaN", b"Infinity", b"-Infinity", b"01", b"1.", b".5", b"+1", b"0x10", b"-",
    b'""', b'"print(1)"', b'"\\u0000"', b'"print(1)\\u0000"', b'"\\ud800"', b'"\\udc00x"',
    b'"\\ud800\\udc00"', b'"\xff\xfe"', b'"\xc0\x80"', b'"\xed\xa0\x80"', b'"a\x00b"',
    b"[]", b"{}", b"[1]", b'["a.txt"]', b'{"a":1}', b'[{"filename":1}]', b"[[[[[[[[[[1]]]]]]]]]]",
]
# Big ones, for a few fields only: the parser is the same for all.
JSON_BIG = [b'"' + b"a" * 100000 + b'"', DEEP_OPEN, DEEP_BALANCED, DEEP_OBJECT]
BIG_PATHS = {(), ("code",), ("files",), ("return_files",)}

# Form field values: the same ideas as text.
FORM_ODD = [
    b"", b"abc", b"-0", b"0", b"-1", b"0.0001", b"1e999", b"-1e999", b"nan", b"inf", b"-inf",
    b"18446744073709551616", b"18446744073709551615", b"9223372036854775808", HUGE_INT,
    b"0x10", b" 5", b"5 ", b"5\n", b"true", b"yes", b"on", b"\x00", b"print(1)\x00", b"\xff\xfe",
    b"\xed\xa0\x80", b"\xc0\x80", b"../etc/passwd", b"a/b", b"..", b".", b"a" * 5000,
    "é".encode() * 600, b"\\ud800",
]

COMPAT_PATHS = [
    (COMPAT_FULL, ("code",)), (COMPAT_FULL, ("api_key",)), (COMPAT_FULL, ("stdin_data",)),
    (COMPAT_FULL, ("attachments",)), (COMPAT_FULL, ("attachments", 0)),
    (COMPAT_FULL, ("attachments", 0, "filename")),
    (COMPAT_FULL, ("attachments", 0, "content_base_64")), (COMPAT_FULL, ("return_files",)),
    (COMPAT_FULL, ("return_files", 0)), (COMPAT_SCRIPT, ("script",)), (COMPAT_FULL, ("timeout",)),
    (COMPAT_FULL, ("allow_network",)), (COMPAT_FULL, ("files",)), (COMPAT_FULL, ("files", "b.txt")),
    (COMPAT_MIN, ()),
]
V1_PATHS = [
    (V1_FULL, ("code",)), (V1_FULL, ("stdin",)), (V1_FULL, ("files",)), (V1_FULL, ("files", 0)),
    (V1_FULL, ("files", 0, "name")), (V1_FULL, ("files", 0, "content_base64")),
    (V1_FULL, ("return_files",)), (V1_FULL, ("return_files", 0)), (V1_FULL, ("main",)),
    (V1_FULL, ("timeout",)), (V1_FULL, ("memory_mb",)), (V1_FULL, ("network",)), (V1_MIN, ()),
]


def replaced(obj, path, value):
    """A deep copy of obj with the value at path replaced (path () replaces the whole body)."""
    if not path:
        return value
    obj = copy.deepcopy(obj)
    cur = obj
    for key in path[:-1]:
        cur = cur[key]
    cur[path[-1]] = value
    return obj


def path_name(path):
    return "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path) or "(body)"


def short(raw, limit=60):
    text = repr(raw)
    return text if len(text) <= limit else text[:limit] + f"...({len(raw)} bytes)"


# ---------------------------------------------------------------------------------------------
# Targeted cases


def chunked(body, sizes=None, size_text=None, last=b"0\r\n\r\n"):
    """body in chunks of the given sizes; size_text(n) writes a size line."""
    out = b""
    pos = 0
    sizes = sizes or [len(body)]
    for n in sizes:
        piece = body[pos:pos + n]
        pos += n
        out += (size_text(len(piece)) if size_text else b"%x" % len(piece)) + b"\r\n" + piece \
            + b"\r\n"
    return out + last


def with_headers(req, headers, drop=()):
    r = req.copy()
    r.headers = [h for h in r.headers if h[0].lower() not in drop] + list(headers)
    return r


def framing_cases():
    body = dump(COMPAT_MIN)
    n = len(body)
    ln = str(n).encode()
    base = Req(b"POST", b"/execute", [JSON_CT], body, framing=False)
    cl = (b"Content-Length", ln)
    te = (b"Transfer-Encoding", b"chunked")
    out = []

    def add(name, headers, data=body, req=base):
        r = with_headers(req, headers)
        r.body = data
        out.append(Case("framing: " + name, r.to_bytes(), r))

    add("Content-Length twice, same value", [cl, cl])
    shorter = (b"Content-Length", str(n - 1).encode())
    add("Content-Length twice, larger first", [cl, shorter])
    add("Content-Length twice, smaller first", [shorter, cl])
    add("Content-Length twice, 0 then real", [(b"Content-Length", b"0"), cl])
    add("Content-Length list, same values", [(b"Content-Length", ln + b", " + ln)])
    add("Content-Length list, different values", [(b"Content-Length", ln + b", " + shorter[1])])
    for v in [b"-1", b"+" + ln, b" " + ln, b"0" + ln, ln + b" ", b"1_9", b"0x13", b"", b"abc",
              b"99999999999999999999", b"18446744073709551616", b"18446744073709551615",
              b"9223372036854775808", b"0", b"1", ln + b"\x00", ln + b"a"]:
        add(f"Content-Length {short(v)}", [(b"Content-Length", v)])
    add("Content-Length with Transfer-Encoding: chunked", [cl, te], chunked(body))
    add("Transfer-Encoding: chunked with Content-Length", [te, cl], chunked(body))
    add("Content-Length covering chunked body and a smuggled request",
        [(b"Content-Length", str(len(chunked(body)) + 40).encode()), te],
        chunked(body) + b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
    add("chunked, in 1-byte chunks", [te], chunked(body, [1] * n))
    add("chunked with an extension", [te], chunked(body, size_text=lambda k: b"%x;a=b" % k))
    add("chunked with a trailer", [te], chunked(body, last=b"0\r\nX-T: 1\r\n\r\n"))
    for name, size in [("non-hex", b"zz"), ("negative", b"-1"), ("0x-prefixed", b"0x13"),
                       ("overflowing", b"f" * 20), ("2^64", b"10000000000000000"),
                       ("2^63", b"8000000000000000"), ("empty", b""), ("space padded", b" 13 "),
                       ("too big", b"%x" % (n + 5)), ("too small", b"%x" % (n - 5)),
                       ("NUL", b"1\x003"), ("huge", b"7fffffff")]:
        add(f"chunk size {name}", [te], chunked(body, size_text=lambda k, s=size: s))
    add("chunked without the last chunk", [te], chunked(body, last=b""))
    add("chunked without CRLF after the data", [te], b"%x\r\n" % n + body + b"0\r\n\r\n")
    add("chunked with LF line ends", [te], b"%x\n" % n + body + b"\n0\n\n")
    for v in [b"gzip", b"chunked, gzip", b"gzip, chunked", b"chunked, chunked", b"identity",
              b"CHUNKED", b"chunked\x00", b" chunked", b"xchunked", b""]:
        add(f"Transfer-Encoding {short(v)}", [(b"Transfer-Encoding", v)], chunked(body))
    add("Transfer-Encoding twice", [te, te], chunked(body))
    add("Expect: 100-continue", [cl, (b"Expect", b"100-continue")])
    add("Expect: garbage", [cl, (b"Expect", b"\xff" * 10)])
    add("Upgrade: websocket", [cl, (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")])
    add("Connection: close, upgrade, x", [cl, (b"Connection", b"close, upgrade, x")])
    add("two pipelined requests", [cl], body + seeds()[0][1].to_bytes())
    add("pipelined garbage", [cl], body + b"\xff\xfe garbage\r\n\r\n")
    no_host = with_headers(base, [], drop=(b"host",))
    add("no Host", [cl], req=no_host)
    add("Host empty", [(b"Host", b""), cl], req=no_host)
    add("Host not ASCII", [(b"Host", b"\xff" * 8), cl], req=no_host)
    add("Host twice", [cl, (b"Host", b"other")])
    add("Host huge", [cl, (b"Host", b"h" * 20000)])
    return out


def request_line_cases():
    out = []
    valid = json_req(b"/execute", COMPAT_MIN)
    for v in [b"HTTP/1.0", b"", b"HTTP/2.0", b"HTTP/1.2", b"HTTP/9.9", b"http/1.1", b"HTTP/1.1 ",
              b"HTTP/1.10", b"HTTP/01.1", b"HTTP/1", b"HTTP/", b"HTTPS/1.1", b"HTTP/1.1\x00"]:
        r = valid.copy()
        r.version = v
        out.append(Case(f"version {short(v)}", r.to_bytes()))
    data = valid.to_bytes()
    out += [
        Case("double space in request line", data.replace(b" ", b"  ", 1)),
        Case("tab in request line", data.replace(b" ", b"\t", 1)),
        Case("LF line ends", data.replace(b"\r\n", b"\n")),
        Case("CR line ends", data.replace(b"\r\n", b"\r")),
        Case("leading empty lines", b"\r\n\r\n" + data),
        Case("no CRLF at all", data.replace(b"\r\n", b" ")),
        Case("header without colon", data.replace(b"\r\n\r\n", b"\r\nNoColon\r\n\r\n", 1)),
        Case("space before colon", data.replace(b"Content-Type:", b"Content-Type :")),
        Case("obs-fold continuation",
             data.replace(b"\r\n\r\n", b"\r\nX-A: a\r\n folded\r\n\r\n", 1)),
        Case("empty header name", data.replace(b"\r\n\r\n", b"\r\n: x\r\n\r\n", 1)),
        Case("NUL in header name", data.replace(b"\r\n\r\n", b"\r\nX-\x00A: x\r\n\r\n", 1)),
        Case("NUL in header value", data.replace(b"\r\n\r\n", b"\r\nX-A: a\x00b\r\n\r\n", 1)),
        Case("not ASCII header", data.replace(b"\r\n\r\n", b"\r\nX-\xe9: \xff\xfe\r\n\r\n", 1)),
        Case("100 KB header", data.replace(b"\r\n\r\n", b"\r\nX-A: " + b"a" * 100000 + b"\r\n\r\n",
                                           1)),
        Case("2000 headers", data.replace(b"\r\n\r\n", b"\r\n" + b"".join(
            b"X-%d: %d\r\n" % (i, i) for i in range(2000)) + b"\r\n", 1)),
        Case("only a request line", b"POST /execute HTTP/1.1\r\n\r\n"),
        Case("empty request", b""),
        Case("just CRLF", b"\r\n"),
        Case("binary noise", bytes(range(256)) * 4),
        Case("TLS client hello", bytes.fromhex("16030100a5010000a10303") + b"\x00" * 64),
        Case("HTTP/2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
    ]
    return out


def method_route_cases():
    out = []
    methods = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"TRACE",
               b"CONNECT", b"get", b"PROPFIND", b"M" * 300, b"G\x00T", b"", b"\xff\xfe"]
    routes = [b"/execute", b"/v1/execute"] + ROUTES + [b"/assets/nope.js", b"/assets/",
                                                       b"/assets/../docs", b"/nope"]
    for m in methods:
        for route in routes:
            body = dump(COMPAT_MIN) if m in (b"POST", b"PUT", b"PATCH") else b""
            r = Req(m, route, [JSON_CT] if body else [], body)
            out.append(Case(f"method {short(m, 20)} {route.decode()}", r.to_bytes()))
    return out


def target_cases():
    out = []
    targets = [b"/" + b"a" * 4000, b"/" + b"a" * 10000, b"/" + b"a" * 100000,
               b"/execute" + b"/" * 5000, b"/execute%00", b"/%00", b"/execute\x00",
               b"/v1/../execute", b"/../../etc/passwd", b"/assets/..%2f..%2fetc%2fpasswd",
               b"/assets/%2e%2e/docs", b"/assets/app.css%00.js", b"/./execute",
               b"http://127.0.0.1/execute", b"http://evil.example/execute",
               b"https://127.0.0.1/v1/execute", b"http://", b"*", b"", b"execute", b"//execute",
               b"/execute/", b"/execute?x=1", b"/execute?" + b"x" * 5000, b"/execute#f",
               b"/%65xecute", b"/execute;x", b"/ex ecute", b"/\xff\xfe", "/é".encode(),
               b"/EXECUTE", b"/v1/execute%2f", b"/%", b"/%zz", b"/execute%"]
    for dialect, obj in [(b"/execute", COMPAT_MIN), (b"/v1/execute", V1_MIN)]:
        for t in targets:
            r = json_req(dialect, obj)
            r.target = t
            out.append(Case(f"POST target {short(t)} ({dialect.decode()} body)", r.to_bytes()))
    for t in targets[:12]:
        out.append(Case(f"GET target {short(t)}", Req(b"GET", t).to_bytes()))
    return out


def header_cases():
    out = []
    auths = [b"", b"Bearer", b"Bearer ", b"Bearer  ", b"bearer x", b"BEARER x", b"Bearer \xff\xfe",
             "Bearer é".encode(), b"Bearer " + b"A" * 20000, b"Bearer " + b"A" * 200000,
             b"Basic dXNlcjpwYXNz", b"Bearer x\x00y", b"Bearer a b", b"Bearer\tx", b"Token x",
             b"Bearer pbx_" + b"0" * 64]
    xffs = [b"", b"garbage", b"1.2.3.4", b"1.2.3.4, garbage", b"garbage, 1.2.3.4", b"::1",
            b"[::1]", b"999.999.999.999", b"1.2.3.4:80", b",,,,", b"," * 10000,
            b"1.2.3.4 " * 1000, b"\xff", b"127.0.0.1, 127.0.0.1", b"::ffff:1.2.3.4",
            b"fe80::1%eth0", b"1" * 50000, b"1.2.3.4\x00", b"-1.-1.-1.-1", b"0.0.0.0",
            b"255.255.255.255, ::", b"1.2.3.4, 127.0.0.1"]
    for dialect, obj in [(b"/execute", COMPAT_MIN), (b"/v1/execute", V1_MIN)]:
        for a in auths:
            r = json_req(dialect, obj, [(b"Authorization", a)])
            out.append(Case(f"Authorization {short(a)} {dialect.decode()}", r.to_bytes()))
        r = json_req(dialect, obj, [(b"Authorization", b"Bearer a"),
                                    (b"Authorization", b"Bearer b")])
        out.append(Case(f"Authorization twice {dialect.decode()}", r.to_bytes()))
        for k in [b"", b" ", b"x", b"\xff\xfe", b"A" * 20000, b"pbx_" + b"0" * 64]:
            r = json_req(dialect, obj, [(b"X-API-Key", k)])
            out.append(Case(f"X-API-Key {short(k)} {dialect.decode()}", r.to_bytes()))
        r = json_req(dialect, obj, [(b"X-API-Key", b"a"), (b"X-API-Key", b"b")])
        out.append(Case(f"X-API-Key twice {dialect.decode()}", r.to_bytes()))
        r = json_req(dialect, obj, [(b"Authorization", b"Bearer a"), (b"X-API-Key", b"b")])
        out.append(Case(f"Authorization and X-API-Key apart {dialect.decode()}", r.to_bytes()))
        for x in xffs:
            r = json_req(dialect, obj, [(b"X-Forwarded-For", x)])
            out.append(Case(f"X-Forwarded-For {short(x)} {dialect.decode()}", r.to_bytes()))
        r = json_req(dialect, obj, [(b"X-Forwarded-For", b"1.2.3.4"),
                                    (b"X-Forwarded-For", b"garbage")])
        out.append(Case(f"X-Forwarded-For twice {dialect.decode()}", r.to_bytes()))
    for a in [b"Bearer ", b"Bearer \xff", b"Bearer " + b"A" * 20000]:
        r = json_req(b"/execute", dict(COMPAT_MIN, api_key="k"), [(b"Authorization", a)])
        out.append(Case(f"Authorization {short(a)} with api_key", r.to_bytes()))
    ctypes = [None, b"", b"application/json; charset=latin1", b"application/json;;;",
              b"application/json\x00", b"application/json; charset", b"application/jsonx",
              b"APPLICATION/JSON", b"application/json ; x=\"y", b"text/plain",
              b"application/x-www-form-urlencoded", b"application/json, text/plain",
              b"\xff\xfe", b"application/json; " + b"x=y; " * 2000]
    for dialect, obj in [(b"/execute", COMPAT_MIN), (b"/v1/execute", V1_MIN)]:
        for ct in ctypes:
            r = Req(b"POST", dialect, [(b"Content-Type", ct)] if ct is not None else [], dump(obj))
            out.append(Case(f"Content-Type {short(ct)} {dialect.decode()}", r.to_bytes()))
        r = Req(b"POST", dialect, [JSON_CT, (b"Content-Type", b"text/plain")], dump(obj))
        out.append(Case(f"Content-Type twice {dialect.decode()}", r.to_bytes()))
    return out


def json_cases():
    out = []
    for dialect, paths in [(b"/execute", COMPAT_PATHS), (b"/v1/execute", V1_PATHS)]:
        for obj, path in paths:
            for v in JSON_ODD + (JSON_BIG if path in BIG_PATHS else []):
                body = replaced(obj, path, Raw(v))
                out.append(Case(f"{dialect.decode()} {path_name(path)} = {short(v)}",
                                json_req(dialect, body).to_bytes()))
        base = COMPAT_FULL if dialect == b"/execute" else V1_FULL
        text = dump(base)
        extra = [
            ("duplicate key", text[:-1] + b',"code":"print(2)"}'),
            ("unknown key", text[:-1] + b',"zzz":1}'),
            ("NUL in a key", text[:-1] + b',"co\\u0000de":1}'),
            ("key not UTF-8", text[:-1] + b',"\xff\xfe":1}'),
            ("key a lone surrogate", text[:-1] + b',"\\ud800":1}'),
            ("long key", text[:-1] + b',"' + b"k" * 10000 + b'":1}'),
            ("long multibyte key", text[:-1] + b',"' + "é".encode() * 5000 + b'":1}'),
            ("trailing garbage", text + b"x"),
            ("trailing NUL", text + b"\x00"),
            ("BOM", b"\xef\xbb\xbf" + text),
            ("UTF-16", text.decode().encode("utf-16")),
            ("cut in half", text[:len(text) // 2]),
            ("empty", b""),
            ("comment", b"/*x*/" + text),
            ("single quotes", text.replace(b'"', b"'")),
            ("1000 files", dump(dict(base, files=(
                [{"name": f"f{i}", "content_base64": "YQ=="} for i in range(1000)]
                if dialect == b"/v1/execute" else {f"f{i}": "YQ==" for i in range(1000)})))),
            ("1000 return_files", dump(dict(base, return_files=[f"r{i}" for i in range(1000)]))),
            ("return_files twice the same", dump(dict(base, return_files=["a", "a"]))),
        ]
        for name, body in extra:
            r = Req(b"POST", dialect, [JSON_CT], body)
            out.append(Case(f"{dialect.decode()} {name}", r.to_bytes()))
    return out


# Code whose outcome is an error of each kind: the answer is never a 5xx for any of them.
ODD_CODE = ["  print(1)", "if 1:\n\tprint(1)\n        print(2)", "x = (", "return 1", "1/0",
            "raise SystemExit(3)", "raise KeyboardInterrupt", "raise BaseException",
            "raise MemoryError", "-" * 1900 + "1", "import os", "while True: pass",
            "print('\\ud800')", "exit()", "# coding: foo\nprint(1)"]


def code_cases():
    out = []
    for code in ODD_CODE:
        for dialect in (b"/execute", b"/v1/execute"):
            obj = {"code": code, "timeout": 1}
            out.append(Case(f"{dialect.decode()} code {short(code.encode(), 30)}",
                            json_req(dialect, obj).to_bytes()))
        script = "def main():\n" + "".join(f"    {line}\n" for line in code.split("\n"))
        out.append(Case(f"/execute script {short(code.encode(), 30)}",
                        json_req(b"/execute", {"script": script, "timeout": 1}).to_bytes()))
        out.append(Case(f"form code {short(code.encode(), 30)}",
                        form_req(form_body([("code", code.encode()), ("timeout", b"0.5")],
                                           None)).to_bytes()))
    return out


def form_cases():
    out = []
    for name, _ in FORM_FIELDS:
        for v in FORM_ODD:
            fields = [(n, v if n == name else x) for n, x in FORM_FIELDS]
            out.append(Case(f"form {name} = {short(v)}", form_req(form_body(fields)).to_bytes()))
    code = part([disposition(b"code")], CODE.encode())
    b = b"--" + BOUNDARY
    structural = [
        ("part without headers (crash of issue 10)", b + b"\r\n\r\n\r\n"),
        ("part without headers, closed", b + b"\r\n\r\n\r\n" + b + b"--\r\n"),
        ("part without headers after code", code + b + b"\r\n\r\nx\r\n" + b + b"--\r\n"),
        ("part without Content-Disposition", code + part([b"Content-Type: text/plain"], b"x")
         + b + b"--\r\n"),
        ("Content-Disposition without name",
         part([b"Content-Disposition: form-data"], CODE.encode()) + b + b"--\r\n"),
        ("empty name", part([b'Content-Disposition: form-data; name=""'], CODE.encode())
         + b + b"--\r\n"),
        ("name=", part([b"Content-Disposition: form-data; name="], CODE.encode()) + b + b"--\r\n"),
        ("unterminated name", part([b'Content-Disposition: form-data; name="code'], CODE.encode())
         + b + b"--\r\n"),
        ("unquoted name", part([b"Content-Disposition: form-data; name=code"], CODE.encode())
         + b + b"--\r\n"),
        ("filename without name", code + part([b'Content-Disposition: form-data; filename="a.txt"'],
                                              b"a") + b + b"--\r\n"),
        ("filename without name, alone", part([b'Content-Disposition: form-data; filename="a"'],
                                              b"a") + b + b"--\r\n"),
        ("name twice in one part", part([b'Content-Disposition: form-data; name="code"; '
                                         b'name="stdin"'], CODE.encode()) + b + b"--\r\n"),
        ("attachment disposition", part([b'Content-Disposition: attachment; name="code"'],
                                        CODE.encode()) + b + b"--\r\n"),
        ("disposition garbage", part([b"Content-Disposition: \xff\xfe;;;=\"\""], CODE.encode())
         + b + b"--\r\n"),
        ("NUL in name", part([b'Content-Disposition: form-data; name="co\x00de"'], CODE.encode())
         + b + b"--\r\n"),
        ("name not UTF-8", code + part([b'Content-Disposition: form-data; name="\xff\xfe"'], b"x")
         + b + b"--\r\n"),
        ("long name", code + part([disposition(b"n" * 300)], b"x") + b + b"--\r\n"),
        ("long multibyte name", code + part([disposition("é".encode() * 150)], b"x")
         + b + b"--\r\n"),
        ("odd multibyte name", code + part([disposition(b"a" + "é".encode() * 150)], b"x")
         + b + b"--\r\n"),
        ("code twice", code + code + b + b"--\r\n"),
        ("stdin twice", code + part([disposition(b"stdin")], b"a") + part([disposition(b"stdin")],
                                                                          b"b") + b + b"--\r\n"),
        ("timeout twice, different", code + part([disposition(b"timeout")], b"5")
         + part([disposition(b"timeout")], b"1e999") + b + b"--\r\n"),
        ("same file twice", code + part([disposition(b"files", b"a.txt")], b"a")
         + part([disposition(b"files", b"a.txt")], b"b") + b + b"--\r\n"),
        ("file named code", part([disposition(b"code", b"code")], CODE.encode()) + b + b"--\r\n"),
        ("empty filename", code + part([disposition(b"files", b"")], b"a") + b + b"--\r\n"),
        ("filename ..", code + part([disposition(b"files", b"..")], b"a") + b + b"--\r\n"),
        ("filename with /", code + part([disposition(b"files", b"../x")], b"a") + b + b"--\r\n"),
        ("filename not UTF-8", code + part([disposition(b"files", b"\xff\xfe")], b"a")
         + b + b"--\r\n"),
        ("filename with NUL", code + part([disposition(b"files", b"a\x00b")], b"a")
         + b + b"--\r\n"),
        ("filename 300 bytes", code + part([disposition(b"files", b"f" * 300)], b"a")
         + b + b"--\r\n"),
        ("filename*", code + part([b"Content-Disposition: form-data; name=\"files\"; "
                                   b"filename*=UTF-8''a%20b"], b"a") + b + b"--\r\n"),
        ("100 KB part header", part([disposition(b"code"), b"X-Pad: " + b"p" * 100000],
                                    CODE.encode()) + b + b"--\r\n"),
        ("100 KB name", part([disposition(b"n" * 100000)], CODE.encode()) + b + b"--\r\n"),
        ("1000 part headers", part([disposition(b"code")] + [b"X-%d: x" % i for i in range(1000)],
                                   CODE.encode()) + b + b"--\r\n"),
        ("part Content-Type odd", part([disposition(b"code"),
                                        b"Content-Type: text/plain; charset=utf-16; x=\"y"],
                                       CODE.encode()) + b + b"--\r\n"),
        ("part base64 transfer encoding", part([disposition(b"code"),
                                                b"Content-Transfer-Encoding: base64"],
                                               b"cHJpbnQoMSk=") + b + b"--\r\n"),
        ("part header without colon", part([disposition(b"code"), b"NoColon"], CODE.encode())
         + b + b"--\r\n"),
        ("LF line ends", form_body().replace(b"\r\n", b"\n")),
        ("no final boundary", form_body(close=False)),
        ("only the final boundary", b + b"--\r\n"),
        ("empty body", b""),
        ("preamble and epilogue", b"preamble\r\n" + form_body() + b"epilogue"),
        ("boundary inside a value", part([disposition(b"code")], b"print(1)\r\n" + b + b"x")
         + b + b"--\r\n"),
        ("no CRLF before the last boundary", b + b"\r\n" + disposition(b"code") + b"\r\n\r\n"
         + CODE.encode() + b + b"--"),
        ("nested multipart", part([disposition(b"code"), b"Content-Type: multipart/mixed; "
                                   b"boundary=YY"], b"--YY\r\n\r\nx\r\n--YY--") + b + b"--\r\n"),
        ("200 file parts", code + b"".join(part([disposition(b"files", b"f%d" % i)], b"a")
                                            for i in range(200)) + b + b"--\r\n"),
        ("200 return_files parts", code + b"".join(part([disposition(b"return_files")], b"r%d" % i)
                                                   for i in range(200)) + b + b"--\r\n"),
        ("empty filename after a file", code + part([disposition(b"files", b"a.txt")], b"a")
         + part([disposition(b"files", b"")], b"B" * 200000) + b + b"--\r\n"),
        ("a value in many pieces", part([disposition(b"code")], b"#" * 300000 + b"\nprint(1)")
         + b + b"--\r\n"),
        ("2000 empty parts", b"".join(part([disposition(b"x%d" % i)], b"") for i in range(2000))
         + b + b"--\r\n"),
    ]
    for name, body in structural:
        out.append(Case(f"form: {name}", form_req(body).to_bytes()))
    body = form_body()
    for ct in [b"multipart/form-data", b"multipart/form-data; boundary=",
               b'multipart/form-data; boundary=""', b"multipart/form-data; boundary=" + b"X" * 200,
               b"multipart/form-data; boundary=X X", b'multipart/form-data; boundary="XX"',
               b"multipart/form-data; boundary=XX; boundary=YY",
               b"multipart/form-data; boundary=YY; boundary=XX",
               b"multipart/form-data;boundary=XX;charset=utf-8", b"multipart/mixed; boundary=XX",
               b"MULTIPART/FORM-DATA; BOUNDARY=XX", b"multipart/form-data; boundary=YY",
               b"multipart/form-data; boundary=\xff\xfe", b"multipart/form-data; boundary=XX\x00",
               b"multipart/form-data; charset=utf-8", b"multipart/form-data; boundary",
               b"multipart/form-datax; boundary=XX", b"multipart/form-data; boundary=XX; "
               + b"p=v; " * 2000]:
        out.append(Case(f"form Content-Type {short(ct)}", form_req(body, ctype=ct).to_bytes()))
    out.append(Case("form to /execute", Req(b"POST", b"/execute", [MP_CT], body).to_bytes()))
    r = form_req(body)
    r.framing = False
    r.headers.append((b"Transfer-Encoding", b"chunked"))
    r.body = chunked(body, [7] * (len(body) // 7 + 1))
    out.append(Case("form, chunked in 7-byte chunks", r.to_bytes()))
    return out


# ---------------------------------------------------------------------------------------------
# Random mutations

INTERESTING = [b"\x00", b"\xff", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b":", b" ", b"%00", b"%",
               b'"', b"\\", b"\\u0000", b"\\ud800", b"{", b"}", b"[", b"]", b",", b"--XX",
               b"--XX--", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"-", b"9" * 30,
               b"1e999", b";", b"=", b"/..", b"\t"]


def mutate_bytes(rng, data):
    """One byte-level mutation; (what, new bytes)."""
    n = len(data)
    op = rng.randrange(9)
    i = rng.randrange(n + 1) if n else 0
    if op == 0 and n:
        i = min(i, n - 1)
        return f"flip bit at {i}", data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) \
            + data[i + 1:]
    if op == 1 and n:
        i = min(i, n - 1)
        return f"byte {i} := random", data[:i] + bytes([rng.randrange(256)]) + data[i + 1:]
    if op == 2:
        piece = rng.choice(INTERESTING)
        return f"insert {piece!r} at {i}", data[:i] + piece + data[i:]
    if op == 3:
        return f"cut at {i}", data[:i]
    if op == 4 and n:
        j = min(n, i + rng.randrange(1, 64))
        return f"delete {i}:{j}", data[:i] + data[j:]
    if op == 5 and n:
        j = min(n, i + rng.randrange(1, 128))
        return f"duplicate {i}:{j}", data[:j] + data[i:j] + data[j:]
    if op == 6:
        k = rng.randrange(1, 4096)
        return f"insert {k} random bytes at {i}", data[:i] + bytes(
            rng.randrange(256) for _ in range(k)) + data[i:]
    if op == 7 and b"\r\n" in data:
        return "a CRLF := LF", data.replace(b"\r\n", b"\n", rng.randrange(1, 4))
    k = rng.randrange(1, 16)
    piece = rng.choice(INTERESTING)
    return f"replace {k} bytes at {i} with {piece!r}", data[:i] + piece + data[i + k:]


def mutate_struct(rng, req):
    """One structural mutation of a Req; (what, Req)."""
    r = req.copy()
    op = rng.randrange(12)
    if op == 0 and len(r.headers) > 1:
        h = rng.choice(r.headers)
        r.headers.insert(rng.randrange(len(r.headers) + 1), h)
        return f"duplicate header {h[0]!r}", r
    if op == 1:
        n = len(r.body)
        other = n + rng.choice([-1, 1, 7, -n]) if n else 5
        r.framing = False
        heads = [(b"Content-Length", b"%d" % n), (b"Content-Length", b"%d" % max(other, 0))]
        rng.shuffle(heads)
        r.headers += heads
        return f"Content-Length {n} and {max(other, 0)}", r
    if op == 2:
        r.framing = False
        sizes = []
        left = len(r.body)
        while left > 0:
            k = rng.randrange(1, max(2, left + 1))
            sizes.append(k)
            left -= k
        bad = rng.random() < 0.5
        size_text = (lambda k: rng.choice([b"%x" % (k + 1), b"%X" % k, b"-%x" % k, b"0x%x" % k,
                                           b"%x;" % k, b"f" * 17])) if bad else None
        r.body = chunked(r.body, sizes or [0], size_text)
        r.headers.append((b"Transfer-Encoding", b"chunked"))
        if rng.random() < 0.3:
            r.headers.append((b"Content-Length", b"%d" % len(r.body)))
        return f"chunked{' with bad sizes' if bad else ''}", r
    if op == 3:
        r.method = rng.choice([b"GET", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"post", b"POSTX",
                               b"P" * 1000, b"PO\x00ST", b""])
        return f"method {short(r.method, 20)}", r
    if op == 4:
        r.target = rng.choice([r.target + b"%00", r.target + b"/..", b"/.." + r.target,
                               b"http://127.0.0.1" + r.target, b"*", r.target * 50,
                               r.target + b"?" + b"q" * rng.randrange(1, 20000),
                               r.target.upper(), r.target + b"\xff"])
        return f"target {short(r.target)}", r
    if op == 5:
        r.version = rng.choice([b"HTTP/1.0", b"HTTP/2.0", b"", b"HTTP/1.1\t", b"HTTP/1.x"])
        return f"version {r.version!r}", r
    if op == 6:
        h = rng.choice([(b"Authorization", b"Bearer "), (b"Authorization", b"Bearer \xff" * 5),
                        (b"Authorization", b"Bearer " + b"B" * rng.randrange(1, 40000)),
                        (b"X-Forwarded-For", bytes(rng.randrange(256) for _ in range(40))),
                        (b"X-Forwarded-For", b", ".join(b"%d.%d.%d.%d" % tuple(
                            rng.randrange(300) for _ in range(4)) for _ in range(50))),
                        (b"Expect", b"100-continue"), (b"Connection", b"close"),
                        (b"Content-Type", b"application/json"), (b"Content-Type", MP_CT[1]),
                        (b"Transfer-Encoding", b"chunked"), (b"X-" + b"h" * 5000, b"v")])
        r.headers.append(h)
        return f"add header {short(h[0] + b': ' + h[1])}", r
    if op == 7 and len(r.headers) > 1:
        i = rng.randrange(1, len(r.headers))
        h = r.headers.pop(i)
        return f"drop header {h[0]!r}", r
    if op == 8:
        r.headers = [(n, v) if n.lower() != b"content-type" else
                     (n, v + rng.choice([b"; charset=x", b";", b"; boundary=", b"\x00",
                                         b"; boundary=XX; boundary=YY", b",text/plain"]))
                     for n, v in r.headers]
        return "Content-Type parameters", r
    if op == 9 and r.body:
        k = rng.randrange(1, 4)
        r.body = r.body * k if rng.random() < 0.5 else r.body[:rng.randrange(len(r.body))]
        return f"body repeated/cut ({len(r.body)} bytes)", r
    if op == 10:
        r.headers.append((b"X-Pad", b"x" * rng.choice([1000, 8000, 30000, 70000])))
        return "big header", r
    r.headers = [(n.lower() if rng.random() < 0.5 else n.upper(), v) for n, v in r.headers]
    return "header name case", r


def json_mutation(rng):
    """A seed JSON body with 1-3 fields replaced by odd values, or a field added or dropped."""
    dialect, paths = rng.choice([(b"/execute", COMPAT_PATHS), (b"/v1/execute", V1_PATHS)])
    base, _ = rng.choice([p for p in paths if p[1]])
    obj = base
    what = []
    for _ in range(rng.randrange(1, 4)):
        _, path = rng.choice([p for p in paths if p[0] is base and p[1]])
        value = Raw(rng.choice(JSON_ODD))
        try:
            obj = replaced(obj, path, value)
        except (KeyError, IndexError, TypeError):
            continue  # the path went away with an earlier replacement
        what.append(f"{path_name(path)}={short(value.text, 30)}")
    return f"{dialect.decode()} " + ", ".join(what), json_req(dialect, obj)


def form_mutation(rng):
    fields = list(FORM_FIELDS)
    rng.shuffle(fields)
    fields = fields[:rng.randrange(1, len(fields) + 1)]
    what = []
    for _ in range(rng.randrange(1, 3)):
        i = rng.randrange(len(fields))
        v = rng.choice(FORM_ODD)
        fields[i] = (fields[i][0], v)
        what.append(f"{fields[i][0]}={short(v, 30)}")
    if rng.random() < 0.2:
        fields.append(rng.choice(fields))
        what.append(f"{fields[-1][0]} twice")
    extra = b""
    if rng.random() < 0.05:
        extra = rng.choice([b"--XX\r\n\r\n\r\n", part([b"Content-Disposition: form-data"], b"x"),
                            part([b'Content-Disposition: form-data; filename="f"'], b"x"),
                            part([disposition(b"z" * rng.randrange(1, 3000))], b"x")])
        what.append(f"extra part {short(extra, 40)}")
    file = FORM_FILE if rng.random() < 0.5 else None
    return "form " + ", ".join(what), form_req(form_body(fields, file, extra))


def random_case(rng, seed_list):
    """A random stack of mutations."""
    kind = rng.random()
    if kind < 0.25:
        what, req = json_mutation(rng)
    elif kind < 0.4:
        what, req = form_mutation(rng)
    else:
        what, req = rng.choice(seed_list)
        what = "seed " + what
    steps = [what]
    for _ in range(rng.randrange(0, 3)):
        step, req = mutate_struct(rng, req)
        steps.append(step)
    data = req.to_bytes()
    n_bytes = rng.randrange(0 if len(steps) > 1 else 1, 4)
    for _ in range(n_bytes):
        step, data = mutate_bytes(rng, data)
        steps.append(step)
    # After byte mutations the structure no longer says what the bytes frame.
    return Case("; ".join(steps), data, None if n_bytes else req)


def all_cases(seed, count):
    """The seeds, the targeted cases, then random cases up to `count` (deterministic)."""
    seed_list = seeds()
    cases = [Case("seed " + name, r.to_bytes(), must_succeed=True) for name, r in seed_list]
    cases += (framing_cases() + request_line_cases() + method_route_cases() + target_cases()
              + header_cases() + json_cases() + form_cases() + code_cases())
    rng = random.Random(seed)
    while len(cases) < count:
        cases.append(random_case(rng, seed_list))
    for i, c in enumerate(cases):
        c.index = i
    return cases


# ---------------------------------------------------------------------------------------------
# The rules

REQUEST_VERSION = re.compile(rb"\A[^ \r\n]+ [^ \r\n]* HTTP/1\.[01]\r\n")


def check(case, ex):
    """The problems with one exchange (empty when it follows the rules), and a label for the
    distribution of answers."""
    if ex.timed_out:
        return [f"no answer and no close within {REQUEST_TIMEOUT} s (hang); got "
                f"{ex.data[:300]!r}"], "hang"
    if ex.error and ex.error.startswith("connect"):
        return [f"could not connect: {ex.error}"], "refused"
    responses, rest = parse_responses(ex.data, case.data.startswith(b"HEAD "),
                                      b"\nHEAD " in case.data)
    finals = [r for r in responses if r.status >= 200]
    problems = []
    if case.must_succeed and not (finals and 200 <= finals[0].status < 300):
        problems.append("a valid seed request did not succeed")
    if not finals:
        if ex.data.strip() and not all(r.status == 100 for r in responses):
            return problems + [f"the answer is not HTTP: {ex.data[:300]!r}"], "not HTTP"
        return problems, "closed"
    for k, r in enumerate(finals):
        problems += [f"answer {k + 1} ({r.status}): {p}" for p in check_response(case, k, r)]
    if case.one_answer and len(finals) > 1:
        problems.append("more than one answer to a request with both Content-Length and "
                        "Transfer-Encoding (RFC 9112 §6.3: close after the first; request "
                        "smuggling)")
    if rest and finals[-1].headers.get("x-request-id"):
        problems.append(f"bytes after the last answer: {rest[:200]!r}")
    first = finals[0]
    label = str(first.status) if first.headers.get("x-request-id") else f"{first.status} (MHD)"
    return problems, label


def check_response(case, k, r):
    """The problems with the k-th final answer on the connection of `case`."""
    status = r.status
    rid = r.headers.get("x-request-id")
    if rid is None:
        # libmicrohttpd's own answer to bytes that are not HTTP: a 4xx, then the close.
        if 400 <= status < 500:
            return []
        if status == 505 and (k > 0 or not REQUEST_VERSION.match(case.data)):
            return []  # HTTP's own answer to a version other than 1.0 and 1.1
        return [f"an answer without X-Request-Id that is not a 4xx: {r.headers}"]
    if r.truncated:
        return [f"the body is shorter than its Content-Length: {r.body[:200]!r}"]
    if status >= 500:
        return [f"a 5xx: {r.body[:500]!r}"]
    if not (200 <= status < 300 or 400 <= status < 500):
        return [f"an unexpected status: {r.headers}"]
    if 200 <= status < 300:
        if case.framing_invalid and k == 0:
            return ["a request with conflicting Content-Length values was accepted (request "
                    "smuggling: RFC 9112 §6.3 requires a 400 and a close)"]
        ctype = r.headers.get("content-type", "")
        if r.body and (ctype.startswith("application/json") or case.data.startswith(b"POST")):
            try:
                strict_json(r.body)
            except ValueError as e:
                return [f"a 2xx whose body is not JSON ({e}): {r.body[:300]!r}"]
        return []
    if not r.body and case.data.startswith(b"HEAD "):
        return []
    if not r.headers.get("content-type", "").startswith("application/json"):
        return [f"a {status} that is not application/json: {r.headers}"]
    try:
        body = strict_json(r.body)
    except ValueError as e:
        return [f"a {status} whose body is not JSON ({e}): {r.body[:300]!r}"]
    if not isinstance(body, dict):
        return [f"a {status} whose body is not a JSON object: {r.body[:300]!r}"]
    details = body.get("error_details")
    problems = []
    if body.get("status") != "error":
        problems.append('no status: "error"')
    if not isinstance(details, dict):
        problems.append("no error_details object")
    elif not isinstance(details.get("type"), str) or not details["type"]:
        problems.append("no error_details.type")
    elif not isinstance(details.get("message"), str):
        problems.append("no error_details.message")
    elif not details["message"]:
        problems.append("an empty error_details.message")
    if body.get("request_id") != rid:
        problems.append(f"request_id {body.get('request_id')!r} is not X-Request-Id {rid!r}")
    return [f"{p}: {r.body[:300]!r}" for p in problems]


# ---------------------------------------------------------------------------------------------
# The test


def describe(case, detail):
    data = case.data
    shown = repr(data[:600]) + (f"...({len(data)} bytes)" if len(data) > 600 else "")
    return f"seed {SEED}, case #{case.index} [{case.name}]: {detail}\n    request: {shown}"


def crash_signature(reports):
    """What tells one crash from another: the first report's headline and top frame, without
    pids and addresses."""
    if not reports:
        return "(no sanitizer report)"
    lines = reports[0].splitlines()
    sig = " ".join(lines[:2])
    sig = re.sub(r"==\d+==|0x[0-9a-f]+|#\d+ ", "", sig)
    return re.sub(r"/\S*/(src|include)/", r"\1/", sig).strip()


class Run:
    """The servers of one run (the last one is current), and what the run found."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.servers = [Serve(tmp, 0)]
        self.failures = []
        self.statuses = collections.Counter()
        self.slowest = []   # the 5 slowest exchanges: (seconds, case index, label)
        self.crashes = {}   # crash signature: index of the first case seen to cause it

    @property
    def server(self):
        return self.servers[-1]

    def restart(self):
        """Stop the current server, start another; False when the run must give up."""
        self.server.stop()
        if len(self.servers) > MAX_RESTARTS:
            self.failures.append(f"gave up after {MAX_RESTARTS} restarts (set "
                                 "PYBOX_MUTATION_RESTARTS to go on)")
            return False
        self.servers.append(Serve(self.tmp, len(self.servers)))
        return True

    def record(self, case, ex):
        problems, label = check(case, ex)
        self.statuses[label] += 1
        self.slowest = sorted(self.slowest + [(ex.elapsed, case.index, label)])[-5:]
        if problems:
            self.failures.append(describe(case, "; ".join(problems)))

    def crashed(self, case, why):
        self.statuses["crash"] += 1
        reports = sanitizer_reports(self.server.log_text())
        sig = crash_signature(reports)
        if sig in self.crashes:
            self.failures.append(describe(case, f"the server dies: {sig} (as with case "
                                                f"#{self.crashes[sig]})"))
            return
        self.crashes[sig] = case.index
        summary = "\n      ".join(reports) or self.server.log_text()[-1500:]
        self.failures.append(describe(case, f"the server dies: {sig}\n      {why}\n      "
                                            f"{summary}"))

    def batch(self, pool, cases):
        """Send a batch in parallel, then check the server; False when the run must stop."""
        port = self.server.port
        results = list(pool.map(lambda c: exchange(port, c.data), cases))
        sick = self.server.healthy()
        if sick is None:
            for case, ex in zip(cases, results):
                self.record(case, ex)
            return True
        # It died or stopped answering. The exchanges it finished are checked as usual; the
        # others are replayed one at a time on a fresh server, which names the requests that
        # kill it.
        again = []
        for case, ex in zip(cases, results):
            if check(case, ex)[1] in ("closed", "refused", "hang", "not HTTP"):
                again.append(case)
            else:
                self.record(case, ex)
        dead = self.server
        if not self.restart():
            return False
        culprits = 0
        for case in again:
            ex = exchange(self.server.port, case.data)
            why = self.server.healthy()
            if why is None:
                self.record(case, ex)
                continue
            culprits += 1
            self.crashed(case, why)
            if not self.restart():
                return False
        if culprits == 0:
            reports = sanitizer_reports(dead.log_text())
            for report in reports:
                self.crashes.setdefault(crash_signature([report]), -1)
            summary = "\n      ".join(reports) or dead.log_text()[-1500:]
            self.failures.append(f"seed {SEED}, cases #{cases[0].index}-#{cases[-1].index}: the "
                                 f"server died ({sick}), but no single request of the batch "
                                 f"kills a fresh one:\n      {summary}")
        return True

    def finish(self):
        """Stop every server; report sanitizer findings not reported yet and a bad exit of the
        last one. Cgroups a crashed server could not remove are removed here (the crash is
        the failure, not its leftovers)."""
        exits = [(s.proc.pid, s.stop()) for s in self.servers]
        for s in self.servers:
            for report in sanitizer_reports(s.log_text()):
                if crash_signature([report]) not in self.crashes:
                    self.crashes[crash_signature([report])] = -1
                    self.failures.append(f"pybox serve {s.proc.pid} stderr holds a sanitizer "
                                         f"report:\n      {report}")
        for pid, rc in exits:
            if rc != 0:
                for path in pybox_cgroups({pid}):
                    remove_cgroup(path)
        pid, rc = exits[-1]
        if rc != 0 and not self.crashes:
            self.failures.append(f"pybox serve {pid} exited {rc} after SIGTERM:\n"
                                 f"{self.server.log_text()[-2000:]}")


def failure_kind(text):
    """What a failure is, without the case that showed it: the text after the case name, up
    to the first quoted bytes, without case numbers."""
    detail = text.split("]: ", 1)[-1].split("\n", 1)[0]
    detail = re.sub(r"answer \d+ \((\d+)\): ", r"\1: ", detail)
    detail = re.sub(r" \(as with case #\d+\)", "", detail)
    detail = re.sub(r"[:(]? ?b['\"].*", "", detail)
    return re.sub(r"#\d+", "#N", detail)[:160]


def summarize(failures, examples=3):
    """The failures grouped by kind: a count and the first few of each."""
    kinds = collections.OrderedDict()
    for f in failures:
        kinds.setdefault(failure_kind(f), []).append(f)
    out = []
    for kind, items in kinds.items():
        out.append(f"--- {len(items)} x {kind}")
        out += items[:examples]
    return "\n".join(out)


def test_mutated_requests():
    tmp = tempfile.mkdtemp(prefix="pybox-sec-mutation-")
    cases = all_cases(SEED, COUNT)
    started = time.monotonic()
    run = Run(tmp)
    try:
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            for start in range(0, len(cases), BATCH):
                if not run.batch(pool, cases[start:start + BATCH]):
                    break
    finally:
        run.finish()
    elapsed = time.monotonic() - started
    distribution = ", ".join(f"{k}: {v}" for k, v in sorted(run.statuses.items()))
    slowest = ", ".join(f"#{i} {label} {t:.2f} s" for t, i, label in reversed(run.slowest))
    print(f"\n{len(cases)} mutated requests (seed {SEED}) in {elapsed:.0f} s; answers: "
          f"{distribution}; slowest: {slowest}")
    if not run.failures:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        Path(tmp, "failures.txt").write_text("\n".join(run.failures) + "\n")
    assert not run.failures, (f"{len(run.failures)} failures in {len(cases)} requests (seed "
                              f"{SEED}; answers: {distribution}; every failure in "
                              f"{tmp}/failures.txt, server logs beside it):\n"
                              + summarize(run.failures))
    busy = run.statuses.get("429", 0) + run.statuses.get("503", 0)
    assert busy < len(cases) // 10, f"429 and 503 dominate: {distribution}"
