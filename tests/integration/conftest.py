"""Shared machinery of the integration suite: start `pybox serve` for real, talk HTTP to it, and
prove that nothing of it survives its exit.

The binary comes from env PYBOX (ctest sets it), else <repo>/build/pybox. Run with Debian's
interpreter: /usr/bin/python3 -m pytest -q tests/integration

Fixtures:
  start_server         function-scoped factory: start_server(*flags, env=..., preload=...)
  module_start_server  the same factory, module-scoped (servers live for the whole file)

Waits: wait_metric() polls /metrics, wait_jail_file() (tests/pybox_host.py) sees a file that a
running execution wrote; a test waits on what it needs, never a fixed time.

Each server is started as
  pybox serve --listen 127.0.0.1:0 --data <tmpdir> --url-file <tmpdir>/url [flags]
with PYBOX_ADMIN_KEY=<random> (or another variable, see admin_env), its stderr captured in
<tmpdir>/stderr.log. At teardown it gets SIGTERM and must exit 0 within 30 s, leaving no process
of the jail uid range that belongs to it and no pybox-<its pid>-* cgroup.

Other pybox servers and suites may run on the same machine at the same time (ctest runs two
tests at once), so leftovers are attributed precisely: a process of the jail uid range is this
server's when it descends from the server, sits in one of its pybox-<pid>-* cgroups, or lives in
one of the user namespaces its jail processes were seen in while it ran.
"""
import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pybox_host import cgroup_dirs  # noqa: E402
import requests
from requests.adapters import HTTPAdapter

REPO = Path(__file__).resolve().parents[2]
PYBOX = os.path.abspath(os.environ.get("PYBOX") or str(REPO / "build" / "pybox"))

JAIL_UID_MIN = 1000000000
JAIL_UID_MAX = 1000065535
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_DEPTH = 6

START_TIMEOUT = 60   # the zygote imports numpy and PIL at start unless --no-preload
STOP_TIMEOUT = 30    # SIGTERM to exit
HTTP_TIMEOUT = 60    # any one request


def _is_asan(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
        return b"libasan" in data or b"__asan_init" in data
    except OSError:
        return False


PYBOX_IS_ASAN = _is_asan(PYBOX)
# Time scale for waits that depend on pybox's speed (ASan builds are 2-3x slower).
SLOW = 3.0 if PYBOX_IS_ASAN else 1.0


def clean_env(extra=None):
    """The environment for pybox: ours less every PYBOX_* and PYTHON_EXE_KEY variable."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYBOX") and k != "PYTHON_EXE_KEY"}
    if extra:
        env.update(extra)
    return env


# ---------------------------------------------------------------------------------------------
# /proc and cgroup inspection


def _proc_status(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = {}
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.split()
            return fields
    except OSError:
        return None


def proc_status(pid):
    """/proc/PID/status as {field: text} (raises OSError when the process is gone)."""
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def wait_for(what, cond, timeout=20.0):
    """Poll cond() until it returns something true, and return that; fails after `timeout`
    seconds (times SLOW)."""
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _all_status():
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _proc_status(entry)
            if f is not None:
                out[int(entry)] = f
    return out


def _uids(fields):
    try:
        return [int(x) for x in fields.get("Uid", [])]
    except ValueError:
        return []


def _ppid(fields):
    try:
        return int(fields.get("PPid", ["0"])[0])
    except ValueError:
        return 0


def _alive(fields):
    return fields.get("State", ["Z"])[0] not in ("Z", "X")


def _in_jail_range(fields):
    return any(JAIL_UID_MIN <= u <= JAIL_UID_MAX for u in _uids(fields))


def _userns(pid):
    try:
        return os.stat(f"/proc/{pid}/ns/user").st_ino
    except OSError:
        return None


def _cgroup_text(pid):
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            return f.read()
    except OSError:
        return ""


def descendants(root):
    """pids descending from root (not root itself)."""
    statuses = _all_status()
    children = {}
    for pid, f in statuses.items():
        children.setdefault(_ppid(f), []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.append(c)
                todo.append(c)
    return out


def pybox_cgroups_of(server_pid):
    """Directories pybox-<server_pid>-* under /sys/fs/cgroup/*/ (searched a few levels)."""
    prefix = f"pybox-{server_pid}-"
    return cgroup_dirs(lambda name: name.startswith(prefix), str(CGROUP_ROOT), CGROUP_DEPTH)


def _is_other_pybox(pid, server_pid):
    """pid is a live pybox process other than server_pid (another server or `pybox run`)."""
    if pid == server_pid or pid <= 1:
        return False
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe")).startswith("pybox")
    except OSError:
        return False


def jail_leftovers(server_pid, user_namespaces):
    """Live processes of the jail uid range that belong to the server `server_pid`: descendants
    of it, members of its pybox-<pid>-* cgroups, and orphans in one of the user namespaces its
    jail used. (Namespace inode numbers are reused once freed, so a process whose nearest
    ancestor outside the jail range is another live pybox is that pybox's, not ours.)"""
    found = []
    tag = f"pybox-{server_pid}-"
    statuses = _all_status()
    for pid, f in statuses.items():
        if not _in_jail_range(f) or not _alive(f):
            continue
        anc, hops = _ppid(f), 0
        while hops < 64 and anc in statuses and _in_jail_range(statuses[anc]):
            anc, hops = _ppid(statuses[anc]), hops + 1
        if anc == server_pid or tag in _cgroup_text(pid):
            ours = True
        elif _is_other_pybox(anc, server_pid):
            ours = False
        else:
            ours = _userns(pid) in user_namespaces
        if ours:
            found.append((pid, " ".join(f.get("Name", [])), _uids(f), anc))
    return found


# ---------------------------------------------------------------------------------------------
# HTTP


class SourceAddressAdapter(HTTPAdapter):
    """Connect from a chosen local address (127.0.0.x: each is another client to the server)."""

    def __init__(self, source, **kw):
        self._source = source
        super().__init__(**kw)

    def init_poolmanager(self, *args, **kw):
        kw["source_address"] = (self._source, 0)
        super().init_poolmanager(*args, **kw)


def session_from(source=None):
    s = requests.Session()
    if source:
        a = SourceAddressAdapter(source)
        s.mount("http://", a)
    return s


def strict_json(text):
    def reject(name):
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def body_of(resp):
    """The response's JSON body; fails the test (with the raw text) if it is not JSON."""
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.startswith("application/json"), (
        f"{resp.request.method} {resp.url}: Content-Type {ctype!r}, status {resp.status_code}, "
        f"body {resp.text[:1000]!r}")
    try:
        return strict_json(resp.text)
    except ValueError as e:
        pytest.fail(f"{resp.request.method} {resp.url}: body is not JSON ({e}): "
                    f"{resp.text[:1000]!r}")


def expect_error(resp, status, etype=None):
    """Assert a JSON error of the compatible shape with this HTTP status (and error type)."""
    body = body_of(resp)
    assert resp.status_code == status, (
        f"expected HTTP {status} {etype or ''}, got {resp.status_code}: {resp.text[:2000]}")
    assert resp.headers.get("X-Request-Id"), f"no X-Request-Id on a {status}: {resp.headers}"
    assert body.get("status") == "error", body
    assert isinstance(body.get("timestamp_utc"), str) and body["timestamp_utc"], body
    details = body.get("error_details")
    assert isinstance(details, dict), body
    assert isinstance(details.get("type"), str) and isinstance(details.get("message"), str), body
    assert details["message"], body
    if etype is not None:
        if isinstance(etype, (tuple, list, set)):
            assert details["type"] in etype, body
        else:
            assert details["type"] == etype, body
    return body


def b64(data):
    return base64.b64encode(data).decode("ascii")


def metric(srv, name):
    """The value of the unlabelled sample `name` in the server's /metrics."""
    m = re.search(r"^%s (\d+)$" % re.escape(name), srv.get("/metrics").text, re.M)
    assert m, f"/metrics has no {name}"
    return int(m.group(1))


def wait_metric(srv, name, want, timeout=10.0):
    """Poll /metrics until `name` is `want`; fails after `timeout` seconds (times SLOW)."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        got = metric(srv, name)
        if got == want:
            return
        assert time.monotonic() < deadline, f"{name} is {got}, never {want}"
        time.sleep(0.02)


class Server:
    """One `pybox serve`: .url, .admin_key, .data_dir, .proc, .pid, .log_path, .restart()."""

    def __init__(self, flags=(), env=None, preload=False, admin_env="PYBOX_ADMIN_KEY",
                 admin_key=None):
        self.flags = list(flags)
        if not preload and "--no-preload" not in self.flags:
            self.flags.append("--no-preload")
        self.admin_key = admin_key or ("adm-" + secrets.token_hex(16))
        self.admin_env = admin_env
        self.extra_env = dict(env or {})
        self.tmp = Path(tempfile.mkdtemp(prefix="pybox-it-"))
        self.data_dir = self.tmp
        self.url_file = self.tmp / "url"
        self.log_path = self.tmp / "stderr.log"
        self.proc = None
        self.url = None
        self.user_namespaces = set()
        self.exit_codes = []
        self.checked = False
        self._sessions = {}
        self._start()

    # -- process --

    @property
    def pid(self):
        return self.proc.pid

    def argv(self):
        return [PYBOX, "serve", "--listen", "127.0.0.1:0", "--data", str(self.data_dir),
                "--url-file", str(self.url_file)] + self.flags

    def _start(self):
        try:
            self.url_file.unlink()
        except FileNotFoundError:
            pass
        env = clean_env(self.extra_env)
        if self.admin_env:
            env[self.admin_env] = self.admin_key
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=log, env=env,
                                     cwd=str(self.tmp))
        log.close()
        deadline = time.monotonic() + START_TIMEOUT * (2 if PYBOX_IS_ASAN else 1)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"pybox serve exited with {self.proc.returncode} at start: "
                                     f"{self.argv()}\n{self.log_text()[-4000:]}")
            try:
                text = self.url_file.read_text().strip()
            except FileNotFoundError:
                text = ""
            if text.startswith("http://") or text.startswith("https://"):
                self.url = text
                break
            time.sleep(0.05)
        else:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"pybox serve wrote no URL within {START_TIMEOUT} s: "
                                 f"{self.log_text()[-4000:]}")
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname, parts.port
        self.note_namespaces()

    def note_namespaces(self):
        """Remember the user namespaces of the server's jail processes (for leftover checks)."""
        for pid in descendants(self.pid):
            f = _proc_status(pid)
            if f is not None and _in_jail_range(f):
                ns = _userns(pid)
                if ns is not None:
                    self.user_namespaces.add(ns)

    def terminate(self, timeout=STOP_TIMEOUT):
        """SIGTERM, wait for the exit; returns the exit status (None if it did not exit)."""
        if self.proc.poll() is None:
            self.note_namespaces()
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        for s in self._sessions.values():
            s.close()
        self._sessions.clear()
        return rc

    def stop_and_check(self):
        """SIGTERM; assert exit 0 within 30 s and nothing of the server left on the host.
        Checks once: a second call (the fixture's teardown after a test's own) does nothing."""
        if self.checked:
            return
        self.checked = True
        problems = []
        pid = self.pid
        rc = self.terminate()
        if rc is None:
            problems.append(f"pybox serve (pid {pid}) did not exit within {STOP_TIMEOUT} s of "
                            "SIGTERM")
            self.proc.kill()
            self.proc.wait()
        self.exit_codes.append(rc)
        bad = [c for c in self.exit_codes if c != 0]
        if bad:
            problems.append(f"pybox serve exit statuses {self.exit_codes} (expected 0)")
        problems += self.leftover_problems(pid)
        if problems:
            problems.append("server stderr (tail):\n" + self.log_text()[-4000:])
            raise AssertionError("\n".join(problems))
        shutil.rmtree(self.tmp, ignore_errors=True)

    def leftover_problems(self, pid):
        problems = []
        deadline = time.monotonic() + 5 * SLOW
        while True:
            procs = jail_leftovers(pid, self.user_namespaces)
            cgroups = pybox_cgroups_of(pid)
            if (not procs and not cgroups) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if procs:
            problems.append(f"processes of the jail uid range of pybox serve {pid} survive: "
                            f"{procs}")
            for p, *_ in procs:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        if cgroups:
            problems.append(f"cgroups of pybox serve {pid} survive: {cgroups}")
        return problems

    def restart(self):
        """SIGTERM, wait, start again with the same data directory and flags."""
        pid = self.pid
        rc = self.terminate()
        assert rc == 0, f"pybox serve exited {rc} on SIGTERM before restart\n{self.log_text()}"
        self.exit_codes.append(rc)
        problems = self.leftover_problems(pid)
        assert not problems, problems
        self._start()
        return self

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_records(self):
        """The JSON lines of the server's stderr."""
        out = []
        for line in self.log_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    # -- HTTP --

    def session(self, source=None):
        s = self._sessions.get(source)
        if s is None:
            s = self._sessions[source] = session_from(source)
        return s

    def request(self, method, path, source=None, timeout=HTTP_TIMEOUT, **kw):
        return self.session(source).request(method, self.url + path, timeout=timeout, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json_body=None, data=None, headers=None, key=None, source=None,
             timeout=HTTP_TIMEOUT, content_type="application/json"):
        """POST; Content-Type application/json unless content_type says otherwise (None: no
        Content-Type header); key goes in `Authorization: Bearer`."""
        h = {}
        if content_type is not None:
            h["Content-Type"] = content_type
        if key:
            h["Authorization"] = f"Bearer {key}"
        h.update(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode()
        return self.request("POST", path, data=data, headers=h, source=source, timeout=timeout)

    def execute(self, body, **kw):
        """POST /execute (the compatible dialect)."""
        return self.post("/execute", body, **kw)

    def v1(self, body, **kw):
        """POST /v1/execute."""
        return self.post("/v1/execute", body, **kw)

    def admin(self, body, v1=False, **kw):
        return self.post("/v1/execute" if v1 else "/execute", body, key=self.admin_key, **kw)

    def assert_healthy(self):
        """The server still answers GET /v1/health with 200 JSON."""
        assert self.proc.poll() is None, (
            f"pybox serve died (status {self.proc.returncode})\n{self.log_text()[-4000:]}")
        # On a connection of its own: a kept-alive one may have idled past --client-timeout and
        # be closed by the server just as it is reused, which says nothing about its health.
        r = requests.get(self.url + "/v1/health", timeout=30, headers={"Connection": "close"})
        assert r.status_code == 200, r.text
        assert body_of(r).get("status") == "ok", r.text

    def raw(self, chunks, read_timeout=10, source=None, pause=0.0):
        """Send raw bytes (an iterable of chunks) on a new connection while reading the answer
        concurrently; returns (bytes received, [errors])."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if source:
            s.bind((source, 0))
        s.settimeout(read_timeout)
        s.connect((self.host, self.port))
        out, errors = [], []

        def reader():
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    out.append(b)
            except OSError as e:
                errors.append(("recv", e))

        th = threading.Thread(target=reader, daemon=True)
        th.start()
        try:
            for c in chunks:
                s.sendall(c)
                if pause:
                    time.sleep(pause)
        except OSError as e:
            errors.append(("send", e))
        th.join(read_timeout + 5)
        s.close()
        return b"".join(out), errors


def parse_http_response(raw):
    """(status, {lower-case header: value}, body bytes) of one raw HTTP/1.1 response."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no complete HTTP response head in {raw[:500]!r}"
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    assert parts[0].startswith("HTTP/1."), lines[0]
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = body[:int(headers["content-length"])]
    return int(parts[1]), headers, body


class _Factory:
    def __init__(self):
        self.servers = []

    def __call__(self, *flags, **kw):
        s = Server(flags, **kw)
        self.servers.append(s)
        return s

    def close(self):
        errors = []
        for s in self.servers:
            try:
                s.stop_and_check()
            except AssertionError as e:
                errors.append(str(e))
        if errors:
            raise AssertionError("\n\n".join(errors))


@pytest.fixture(scope="session", autouse=True)
def _binary_exists():
    if not os.access(PYBOX, os.X_OK):
        pytest.fail(f"pybox binary not found at {PYBOX}: build it or set PYBOX")


@pytest.fixture
def start_server():
    """Factory of function-scoped servers: start_server(*flags, env=, preload=, admin_env=)."""
    f = _Factory()
    yield f
    f.close()


@pytest.fixture(scope="module")
def module_start_server():
    """Factory of servers that live for the whole test module."""
    f = _Factory()
    yield f
    f.close()
