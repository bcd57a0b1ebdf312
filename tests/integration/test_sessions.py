"""Sessions over HTTP (/v1/sessions, docs/api.md "Sessions"), against a real `pybox serve`.

A session is a cell kept alive between calls: its globals and /work persist, one call runs at a
time, it ends when its idle time or lifetime runs out, when a call is killed, when it is deleted,
when the server stops, and then nothing of it is left on the host. Each invariant is checked
from the host: the processes of a session are found by a token file that only its /work holds
(/proc/PID/root), and after its end none of them lives, no process on the host can reach that
/work any more (its mounts are gone) and none of its cgroups holds one of them (class Cell).

No test sleeps in place of a condition: every wait polls what it waits for, with a deadline. The
one fixed interval (test_idle_session_uses_no_cpu) is the quantity measured.
"""
import http.client
import json
import os
import secrets
import subprocess
import sqlite3
import threading
import time
from contextlib import contextmanager

import pytest

from conftest import PYBOX, SLOW, body_of, clean_env, expect_error, metric, parse_http_response
from pybox_host import _jail_pids, wait_jail_file
from test_streaming import Stream, stream

SES = "/v1/sessions"
RELAXED = ("--rpm", "100000", "--rpd", "1000000", "--modules", "os,threading")


@pytest.fixture(scope="module")
def srv(module_start_server):
    return module_start_server(*RELAXED, "--sessions", "32:32:64")


# ---------------------------------------------------------------------------------------------
# Helpers


def headers(key=None, json_body=True):
    h = {"Content-Type": "application/json"} if json_body else {}
    if key:
        h["Authorization"] = f"Bearer {key}"
    return h


def post(srv, path, body=None, key=None, source=None, extra=None, timeout=60):
    h = headers(key)
    h.update(extra or {})
    return srv.request("POST", path, data=json.dumps(body if body is not None else {}),
                       headers=h, source=source, timeout=timeout * SLOW)


def create(srv, body=None, key=None, source=None):
    r = post(srv, SES, body, key=key, source=source)
    b = body_of(r)
    assert r.status_code == 201, r.text
    return b


def delete(srv, sid, key=None, source=None):
    return srv.request("DELETE", f"{SES}/{sid}", headers=headers(key, False), source=source)


@contextmanager
def opened(srv, body=None, key=None, source=None):
    """A new session, deleted at the end (whatever state it is in then)."""
    s = create(srv, body, key=key, source=source)
    try:
        yield s
    finally:
        r = delete(srv, s["id"], key=key, source=source)
        assert r.status_code in (204, 404), r.text


def call(srv, sid, code, key=None, source=None, wait=60, **fields):
    """POST .../execute with `code` and `fields` (`timeout` among them); `wait`: the HTTP one."""
    return post(srv, f"{SES}/{sid}/execute", dict(fields, code=code), key=key, source=source,
                timeout=wait)


def run(srv, sid, code, key=None, **fields):
    """A call that must be answered 200 (whatever its status); its result object."""
    r = call(srv, sid, code, key=key, **fields)
    b = body_of(r)
    assert r.status_code == 200, r.text
    assert b["session"]["id"] == sid, b
    return b


def value(body):
    """The text/plain of a call's `result` output (its final expression), or None."""
    results = [o for o in body["outputs"] if o["type"] == "result"]
    assert len(results) <= 1, body["outputs"]
    return results[0]["data"]["text/plain"] if results else None


def state(srv, sid, key=None, source=None):
    r = srv.request("GET", f"{SES}/{sid}", headers=headers(key, False), source=source)
    b = body_of(r)
    assert r.status_code == 200, r.text
    return b


def wait_until(what, cond, timeout=20.0):
    deadline = time.monotonic() + timeout * SLOW
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"never {what}"
        time.sleep(0.05)


def wait_status(srv, sid, status, key=None, timeout=20.0):
    return wait_until(f"{sid} {status}",
                      lambda: (lambda b: b if b["status"] == status else None)(
                          state(srv, sid, key=key)), timeout)


def keys_cli(server, *args):
    p = subprocess.run([PYBOX, "keys", *args, "--data", str(server.data_dir)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60,
                       env=clean_env())
    assert p.returncode == 0, f"pybox keys {args}: {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p.stdout.strip()


def raw_request(srv, method, path, body=b"", hdrs=None):
    """A request whose path goes out byte for byte as given (requests would normalise `..`)."""
    c = http.client.HTTPConnection(srv.host, srv.port, timeout=60 * SLOW)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for k, v in (hdrs or {}).items():
            c.putheader(k, v)
        c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        c.close()


# -- the host's view of a session --


def _cgroup_dirs(pid):
    """The host directories of the pybox cgroups `pid` is in (cgroup v1 or v2)."""
    dirs = set()
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return dirs
    for line in lines:
        _, ctrls, path = line.split(":", 2)
        if "pybox" not in path:
            continue
        for ctrl in (ctrls.split(",") if ctrls else [""]):
            base = "/sys/fs/cgroup/" + ctrl.replace("name=", "") if ctrl else "/sys/fs/cgroup"
            if os.path.isdir(base + path):
                dirs.add(base + path)
    return dirs


def _starttime(pid):
    """When `pid` started (clock ticks since boot), so a pid reused later is not taken for it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class Cell:
    """A session's processes as the host sees them, found through a token file in its /work.

    What is left of it, later: any of those processes (the same pid and start time), any
    process through which its /work is still reachable (/proc/PID/root/work/TOKEN: its mounts
    live on), and any of its cgroups still holding one of its processes (an emptied cgroup may
    go back to the engine's pool for a later cell, so it is its processes that must be gone)."""

    def __init__(self, srv, sid, key=None):
        self.token = "probe-" + secrets.token_hex(8)
        b = run(srv, sid, f"open('/work/{self.token}', 'w').close()", key=key)
        assert b["status"] == "ok", b
        self.pids = {p: _starttime(p) for p in _jail_pids() if self._sees(p)}
        assert self.pids, f"no process of the jail has /work/{self.token}"
        self.cgroups = set()
        for p in self.pids:
            self.cgroups |= _cgroup_dirs(p)
        assert self.cgroups, f"{list(self.pids)} are in no pybox cgroup"

    def _sees(self, pid):
        return os.path.exists(f"/proc/{pid}/root/work/{self.token}")

    def _ours(self, pid):
        return pid in self.pids and _starttime(pid) == self.pids[pid]

    def leftovers(self):
        left = [("process", p) for p in _jail_pids() if self._ours(p)]
        for entry in os.listdir("/proc"):
            if entry.isdigit() and self._sees(int(entry)):
                left.append(("its /work, through", int(entry)))
        for d in self.cgroups:
            for name in ("cgroup.procs", "tasks"):
                try:
                    with open(os.path.join(d, name)) as f:
                        procs = [int(x) for x in f.read().split()]
                except OSError:
                    continue
                left += [("cgroup", d, p) for p in procs if self._ours(p)]
        return left

    def assert_gone(self, timeout=0.0):
        """Nothing of the session is left (at once, or polled for `timeout` seconds)."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            left = self.leftovers()
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        assert not left, f"the session left {left}"

    def assert_alive(self):
        assert [p for p in _jail_pids() if self._ours(p)], f"none of {list(self.pids)} lives"


# ---------------------------------------------------------------------------------------------
# State and the REPL


def test_open_answers_the_session(srv):
    with opened(srv) as s:
        assert s["id"].startswith("ses_") and len(s["id"]) == 36, s
        int(s["id"][4:], 16)
        assert s["status"] == "idle" and s["execution_count"] == 0, s
        for t in ("created_at", "expires_at", "idle_expires_at"):
            assert s[t].endswith("Z") and "T" in s[t], s
        assert s["limits"]["idle_ttl_s"] == 600 and s["limits"]["max_lifetime_s"] == 3600, s
        assert s["limits"]["timeout_s"] == 10 and s["limits"]["memory_mb"] == 256, s
        got = state(srv, s["id"])
        assert got["id"] == s["id"] and got["status"] == "idle", got
        mine = body_of(srv.get(SES))["sessions"]
        assert s["id"] in [x["id"] for x in mine], mine


def test_state_persists_across_calls(srv):
    with opened(srv) as s:
        b = run(srv, s["id"], "x = 1")
        assert b["status"] == "ok" and b["execution_count"] == 1, b
        assert b["state_preserved"] is True, b
        assert b["session"] == {"id": s["id"], "status": "idle", "dead_reason": None}, b
        b = run(srv, s["id"], "x + 1")
        assert value(b) == "2" and b["execution_count"] == 2, b
        b = run(srv, s["id"], "import json\nprint(json.dumps({'x': x}))")
        assert b["stdout"] == '{"x": 1}\n', b
        assert state(srv, s["id"])["execution_count"] == 3


def test_repl_rules(srv):
    with opened(srv) as s:
        sid = s["id"]
        b = run(srv, sid, "a = 6\na * 7")
        assert value(b) == "42" and b["outputs"][0]["type"] == "result", b
        assert value(run(srv, sid, "'s'")) == "'s'"          # its repr
        assert value(run(srv, sid, "_ * 2")) == "'ss'"       # `_` holds the last result
        run(srv, sid, "y = 3")                                 # no result: `_` stays
        assert value(run(srv, sid, "_")) == "'ss'"
        b = run(srv, sid, "a * 2;")
        assert value(b) is None and b["outputs"] == [], b     # a trailing ; suppresses it
        b = run(srv, sid, "print('before')\n1 / 0\n")
        assert b["status"] == "error" and b["error"]["type"] == "ZeroDivisionError", b
        n = b["execution_count"]
        assert f'<cell {n}>' in b["error"]["traceback"], b["error"]
        assert "line 2" in b["error"]["traceback"], b["error"]


def test_sessions_see_nothing_of_each_other(srv):
    with opened(srv) as a, opened(srv) as b:
        assert a["id"] != b["id"]
        assert run(srv, a["id"], "secret = 41\nopen('/work/mine.txt', 'w').write('a')")[
            "status"] == "ok"
        r = run(srv, b["id"], "secret")
        assert r["status"] == "error" and r["error"]["type"] == "NameError", r
        r = run(srv, b["id"], "import os\nos.path.exists('/work/mine.txt')")
        assert value(r) == "False", r
        r = srv.get(f"{SES}/{b['id']}/files/mine.txt")
        expect_error(r, 404, "NotFound")
        assert value(run(srv, a["id"], "secret + 1")) == "42"


def test_session_call_fields(srv):
    with opened(srv, {"files": [{"name": "in.txt", "content_base64": "aGVsbG8="}]}) as s:
        sid = s["id"]
        b = run(srv, sid, "import sys\n"
                          "print(sys.stdin.read().upper(), open('/work/in.txt').read())",
                stdin="abc")
        assert b["stdout"] == "ABC hello\n", b
        b = run(srv, sid, "open('/work/out.txt', 'w').write('back')",
                files=[{"name": "more.txt", "content_base64": "eA=="}],
                return_files=["out.txt", "more.txt"])
        assert b["files"]["out.txt"]["content_base64"] == "YmFjaw==", b["files"]
        r = call(srv, sid, "1", memory_mb=64)
        body = expect_error(r, 400, "ValidationError")
        assert "session" in body["error"]["message"], body
        expect_error(call(srv, sid, "1", tiemout=1), 400, "ValidationError")
        expect_error(post(srv, f"{SES}/{sid}/execute", {"stdin": "x"}), 400, "ValidationError")
        r = srv.request("POST", f"{SES}/{sid}/execute", data=b"code=1",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
        expect_error(r, 415, "UnsupportedMediaType")
        # Over the caller's timeout: refused, as /v1/execute refuses it.
        expect_error(call(srv, sid, "1", timeout=11), 400, "ValidationError")


# ---------------------------------------------------------------------------------------------
# Ends and what they leave


def test_delete_leaves_nothing(srv):
    s = create(srv)
    sid = s["id"]
    run(srv, sid, "import threading, time\n"
                  "threading.Thread(target=lambda: time.sleep(3600), daemon=True).start()")
    cell = Cell(srv, sid)
    cell.assert_alive()
    seen = {what[0] for what in cell.leftovers()}
    assert seen == {"process", "its /work, through", "cgroup"}, seen  # what the check sees
    r = delete(srv, sid)
    assert r.status_code == 204 and r.content == b"", (r.status_code, r.text)
    assert r.headers.get("X-Request-Id"), r.headers
    cell.assert_gone()
    b = state(srv, sid)
    assert b["status"] == "dead" and b["dead_reason"] == "deleted" and b["ended_at"], b
    body = expect_error(call(srv, sid, "1"), 410, "SessionDead")
    assert body["error"]["reason"] == "deleted", body
    assert delete(srv, sid).status_code == 204  # again: nothing changes


def test_delete_during_a_call_interrupts_it_and_leaves_nothing(srv):
    s = create(srv)
    cell = Cell(srv, s["id"])
    bg = started(srv, s["id"], seconds=30)
    r = delete(srv, s["id"])
    assert r.status_code == 204, r.text
    cell.assert_gone()
    b = body_of(bg.result())
    assert b["error"]["type"] == "KeyboardInterrupt", b
    assert b["session"] == {"id": s["id"], "status": "dead", "dead_reason": "deleted"}, b
    assert state(srv, s["id"])["dead_reason"] == "deleted"


def test_idle_time_ends_a_session(start_server):
    srv = start_server(*RELAXED, "--session-idle-ttl", "2")
    s = create(srv)
    assert s["limits"]["idle_ttl_s"] == 2, s
    run(srv, s["id"], "x = 1")
    cell = Cell(srv, s["id"])
    b = wait_status(srv, s["id"], "dead")
    assert b["dead_reason"] == "idle_timeout", b
    cell.assert_gone(timeout=5)
    body = expect_error(call(srv, s["id"], "x"), 410, "SessionDead")
    assert body["error"]["reason"] == "idle_timeout", body
    assert 'reason="idle_timeout"} 1' in srv.get("/metrics").text


def test_idle_time_runs_from_the_end_of_the_last_call(srv):
    with opened(srv, {"idle_ttl_s": 2}) as s:
        # A call longer than the idle time: the session outlives it.
        b = run(srv, s["id"], "import time\ntime.sleep(3)\n'done'", timeout=8)
        assert value(b) == "'done'" and b["session"]["status"] == "idle", b
        assert state(srv, s["id"])["status"] == "idle"


def test_lifetime_ends_a_session(srv):
    s = create(srv, {"max_lifetime_s": 3, "idle_ttl_s": 600})
    cell = Cell(srv, s["id"])
    # Calls keep it from idling: only its lifetime can end it.
    deadline = time.monotonic() + 20 * SLOW
    while True:
        r = call(srv, s["id"], "1")
        if r.status_code == 410:
            break
        assert r.status_code == 200, r.text
        assert time.monotonic() < deadline, "the session outlived its lifetime"
        time.sleep(0.2)
    assert body_of(r)["error"]["reason"] == "max_lifetime", r.text
    b = state(srv, s["id"])
    assert b["status"] == "dead" and b["dead_reason"] == "max_lifetime", b
    cell.assert_gone(timeout=5)


def test_timeout_keeps_the_state(srv):
    with opened(srv) as s:
        run(srv, s["id"], "kept = 'yes'")
        b = run(srv, s["id"], "import time\ntime.sleep(10)", timeout=1)
        assert b["status"] == "timeout" and b["state_preserved"] is True, b
        assert b["session"]["status"] == "idle", b
        assert value(run(srv, s["id"], "kept")) == "'yes'"


def test_swallowed_interrupt_is_killed_and_the_session_ends(srv):
    s = create(srv)
    cell = Cell(srv, s["id"])
    code = ("import time\n"
            "while True:\n"
            "    try:\n"
            "        time.sleep(10)\n"
            "    except KeyboardInterrupt:\n"
            "        pass\n")
    b = run(srv, s["id"], code, timeout=1)
    assert b["status"] in ("timeout", "killed"), b
    assert b["state_preserved"] is False, b
    assert b["session"] == {"id": s["id"], "status": "dead", "dead_reason": "timeout"}, b
    cell.assert_gone(timeout=5)
    body = expect_error(call(srv, s["id"], "1"), 410, "SessionDead")
    assert body["error"]["reason"] == "timeout", body


def test_memory_kill_ends_the_session(srv):
    s = create(srv, {"memory_mb": 64})
    assert s["limits"]["memory_mb"] == 64, s
    cell = Cell(srv, s["id"])
    b = run(srv, s["id"], "big = 'x' * (256 << 20)")
    assert b["status"] == "memory_limit", b
    assert b["state_preserved"] is False, b
    assert b["session"]["status"] == "dead" and b["session"]["dead_reason"] == "memory_limit", b
    cell.assert_gone(timeout=5)
    body = expect_error(call(srv, s["id"], "1"), 410, "SessionDead")
    assert body["error"]["reason"] == "memory_limit", body


def test_pids_limit_ends_the_session(srv):
    s = create(srv)
    assert s["limits"]["pids"] == 10, s
    cell = Cell(srv, s["id"])
    b = run(srv, s["id"], "import threading, time\n"
                          "for _ in range(50):\n"
                          "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()")
    assert b["state_preserved"] is False, b
    assert b["session"]["status"] == "dead" and b["session"]["dead_reason"] == "pids_limit", b
    cell.assert_gone(timeout=5)
    body = expect_error(call(srv, s["id"], "1"), 410, "SessionDead")
    assert body["error"]["reason"] == "pids_limit", body


def test_an_interpreter_that_dies_ends_the_session(srv):
    s = create(srv)
    run(srv, s["id"], "x = 1")
    cell = Cell(srv, s["id"])
    b = run(srv, s["id"], "import os\nos._exit(3)")
    assert b["state_preserved"] is False, b
    assert b["session"]["status"] == "dead" and b["session"]["dead_reason"] == "crashed", b
    cell.assert_gone(timeout=5)
    body = expect_error(call(srv, s["id"], "x"), 410, "SessionDead")
    assert body["error"]["reason"] == "crashed", body
    assert state(srv, s["id"])["dead_reason"] == "crashed"


# ---------------------------------------------------------------------------------------------
# One call at a time, interrupt, restart


class Background:
    """A call of a session run on a thread; .result() is its answer."""

    def __init__(self, srv, sid, code, **fields):
        self.out = {}
        self.th = threading.Thread(target=self._go, args=(srv, sid, code), kwargs=fields)
        self.th.start()

    def _go(self, srv, sid, code, **fields):
        try:
            self.out["r"] = call(srv, sid, code, **fields)
        except Exception as e:  # noqa: BLE001 - reported by result()
            self.out["e"] = e

    def result(self):
        self.th.join(60 * SLOW)
        assert not self.th.is_alive(), "the call never returned"
        if "e" in self.out:
            raise self.out["e"]
        return self.out["r"]


def started(srv, sid, seconds=8, timeout=10):
    """A call that says (a file in /work) when its code runs, then sleeps."""
    tok = "started-" + secrets.token_hex(6)
    bg = Background(srv, sid, f"open('/work/{tok}', 'w').close()\nimport time\n"
                              f"time.sleep({seconds})\n'slept'", timeout=timeout)
    wait_jail_file(f"/work/{tok}", 20 * SLOW)
    return bg


def test_a_second_call_meanwhile_is_409(srv):
    with opened(srv) as s:
        sid = s["id"]
        bg = started(srv, sid, seconds=3)
        assert state(srv, sid)["status"] == "busy"
        for r in (call(srv, sid, "1"),
                  post(srv, f"{SES}/{sid}/restart"),
                  srv.request("PUT", f"{SES}/{sid}/files/x.txt", data=b"x"),
                  srv.get(f"{SES}/{sid}/files"),
                  srv.get(f"{SES}/{sid}/files/x.txt")):
            body = expect_error(r, 409, "SessionBusy")
            assert r.headers.get("Retry-After") == "1", r.headers
            assert "one at a time" in body["error"]["message"], body
        r = bg.result()
        assert r.status_code == 200 and value(body_of(r)) == "'slept'", r.text
        assert state(srv, sid)["status"] == "idle"
        assert value(run(srv, sid, "2 + 2")) == "4"


def test_a_busy_session_is_seen_busy_then_idle(srv):
    with opened(srv) as s:
        bg = Background(srv, s["id"], "import time\ntime.sleep(2)")
        wait_status(srv, s["id"], "busy")
        assert state(srv, s["id"])["idle_expires_at"] is None
        bg.result()
        b = wait_status(srv, s["id"], "idle")
        assert b["idle_expires_at"] is not None, b


def test_interrupt_raises_in_the_call_and_keeps_the_session(srv):
    with opened(srv) as s:
        sid = s["id"]
        run(srv, sid, "kept = 7")
        r = post(srv, f"{SES}/{sid}/interrupt")
        assert r.status_code == 200 and body_of(r)["interrupted"] is False, r.text
        bg = started(srv, sid, seconds=30)
        r = post(srv, f"{SES}/{sid}/interrupt")
        assert r.status_code == 200 and body_of(r)["interrupted"] is True, r.text
        b = body_of(bg.result())
        assert b["status"] == "error" and b["error"]["type"] == "KeyboardInterrupt", b
        assert b["state_preserved"] is True and b["session"]["status"] == "idle", b
        assert value(run(srv, sid, "kept")) == "7"


def test_restart_clears_globals_and_keeps_work(srv):
    with opened(srv) as s:
        sid = s["id"]
        run(srv, sid, "g = 1\nopen('/work/kept.txt', 'w').write('still here')")
        r = post(srv, f"{SES}/{sid}/restart")
        b = body_of(r)
        assert r.status_code == 200 and b["status"] == "idle" and b["id"] == sid, r.text
        b = run(srv, sid, "g")
        assert b["status"] == "error" and b["error"]["type"] == "NameError", b
        assert value(run(srv, sid, "open('/work/kept.txt').read()")) == "'still here'"


# ---------------------------------------------------------------------------------------------
# Who may see a session, and how many


def test_another_callers_session_is_404(srv):
    alice = keys_cli(srv, "create", "--name", "ses-alice", "--rpm", "10000")
    bob = keys_cli(srv, "create", "--name", "ses-bob", "--rpm", "10000")
    with opened(srv, key=alice) as s:
        sid = s["id"]
        assert value(run(srv, sid, "'mine'", key=alice)) == "'mine'"
        mine = body_of(srv.request("GET", SES, headers=headers(alice, False)))["sessions"]
        assert [x["id"] for x in mine] == [sid], mine
        theirs = body_of(srv.request("GET", SES, headers=headers(bob, False)))["sessions"]
        assert sid not in [x["id"] for x in theirs], theirs
        for key, source in ((bob, None), (None, None), (None, "127.0.0.2")):
            h = headers(key, False)
            for r in (srv.request("GET", f"{SES}/{sid}", headers=h, source=source),
                      call(srv, sid, "'stolen'", key=key, source=source),
                      post(srv, f"{SES}/{sid}/interrupt", key=key, source=source),
                      post(srv, f"{SES}/{sid}/restart", key=key, source=source),
                      srv.request("GET", f"{SES}/{sid}/files", headers=h, source=source),
                      srv.request("PATCH", f"{SES}/{sid}", data=b'{"idle_ttl_s": 5}',
                                  headers=headers(key), source=source),
                      srv.request("DELETE", f"{SES}/{sid}", headers=h, source=source)):
                body = expect_error(r, 404, "NotFound")
                assert "sessions end when the server restarts" in body["error"]["message"]
        # Still there, untouched, for its owner.
        b = state(srv, sid, key=alice)
        assert b["status"] == "idle" and b["execution_count"] == 1, b


def test_an_anonymous_session_is_bound_to_its_address(srv):
    with opened(srv, source="127.0.0.3") as s:
        assert state(srv, s["id"], source="127.0.0.3")["status"] == "idle"
        expect_error(srv.get(f"{SES}/{s['id']}"), 404, "NotFound")


def test_unknown_ids_are_404(srv):
    fake = "ses_" + secrets.token_hex(16)
    for r in (srv.get(f"{SES}/{fake}"), call(srv, fake, "1"), delete(srv, fake),
              srv.get(f"{SES}/{fake}/files/a.txt")):
        body = expect_error(r, 404, "NotFound")
        assert body["error"]["message"] == "no such session: sessions end when the server restarts"
    for bad in ("nope", "ses_" + "g" * 32, "ses_" + "a" * 31, "x" * 200):
        body = expect_error(srv.get(f"{SES}/{bad}"), 404, "NotFound")
        assert "not a session id" in body["error"]["message"], body
    expect_error(srv.get(f"{SES}/{fake}/nothing"), 404, "NotFound")
    expect_error(srv.get(f"{SES}/"), 404, "NotFound")


def test_open_sessions_are_capped(start_server):
    srv = start_server(*RELAXED, "--sessions", "2:3:4")
    a = create(srv)
    create(srv)
    r = post(srv, SES)
    body = expect_error(r, 429, "SessionLimitExceeded")
    assert "the caller" in body["error"]["message"], body
    assert int(r.headers["Retry-After"]) >= 1, r.headers
    # Another client address has its own count; the server's total binds them all.
    create(srv, source="127.0.0.2")
    create(srv, source="127.0.0.2")
    body = expect_error(post(srv, SES, source="127.0.0.4"), 429, "SessionLimitExceeded")
    assert "the server" in body["error"]["message"], body
    assert delete(srv, a["id"]).status_code == 204
    create(srv)
    assert metric(srv, "pybox_sessions_open") == 4


def test_calls_count_against_the_rate_limit(start_server):
    srv = start_server("--rpm", "3", "--rpd", "1000")
    s = create(srv)                          # 1
    assert run(srv, s["id"], "1")["status"] == "ok"   # 2
    assert run(srv, s["id"], "2")["status"] == "ok"   # 3
    r = call(srv, s["id"], "3")
    expect_error(r, 429, "RateLimitExceeded")
    assert int(r.headers["Retry-After"]) >= 1
    # Reading its state costs nothing.
    assert state(srv, s["id"])["execution_count"] == 2


def test_spans_within_the_servers_maxima(srv):
    expect_error(post(srv, SES, {"idle_ttl_s": 3601}), 400, "ValidationError")
    expect_error(post(srv, SES, {"max_lifetime_s": 86401}), 400, "ValidationError")
    expect_error(post(srv, SES, {"idle_ttl_s": 0}), 400, "ValidationError")
    expect_error(post(srv, SES, {"idle_ttl_s": 1.5}), 400, "ValidationError")
    expect_error(post(srv, SES, {"timeout": 11}), 400, "ValidationError")
    expect_error(post(srv, SES, {"memory_mb": 100000}), 400, "ValidationError")
    body = expect_error(post(srv, SES, {"idle_tl_s": 5}), 400, "ValidationError")
    assert "did you mean `idle_ttl_s`" in body["error"]["message"], body
    expect_error(srv.request("POST", SES, data=b"[1]", headers=headers()), 400, "InvalidRequest")
    with opened(srv, {"idle_ttl_s": 30, "max_lifetime_s": 60, "timeout": 2}) as s:
        assert s["limits"]["timeout_s"] == 2, s
        b = run(srv, s["id"], "import time\ntime.sleep(5)")
        assert b["status"] == "timeout", b            # the session's timeout, by default
        r = srv.request("PATCH", f"{SES}/{s['id']}",
                        data=json.dumps({"idle_ttl_s": 120, "max_lifetime_s": 7200}),
                        headers=headers())
        b = body_of(r)
        assert r.status_code == 200, r.text
        assert b["limits"]["idle_ttl_s"] == 120 and b["limits"]["max_lifetime_s"] == 7200, b
        r = srv.request("PATCH", f"{SES}/{s['id']}", data=b'{"idle_ttl_s": 4000}',
                        headers=headers())
        expect_error(r, 400, "ValidationError")
        r = srv.request("PATCH", f"{SES}/{s['id']}", data=b'{"max_lifetime_s": 1}',
                        headers=headers())
        expect_error(r, 400, "ValidationError")         # already older than that
        assert state(srv, s["id"])["limits"]["max_lifetime_s"] == 7200


def test_wrong_methods_are_405_with_allow(srv):
    cases = [("PUT", SES, "GET, HEAD, POST, OPTIONS"),
             ("POST", f"{SES}/ses_{'0' * 32}", "GET, HEAD, PATCH, DELETE, OPTIONS"),
             ("GET", f"{SES}/ses_{'0' * 32}/execute", "POST, OPTIONS"),
             ("POST", f"{SES}/ses_{'0' * 32}/files", "GET, HEAD, OPTIONS"),
             ("POST", f"{SES}/ses_{'0' * 32}/files/a", "GET, HEAD, PUT, DELETE, OPTIONS")]
    for method, path, allow in cases:
        r = srv.request(method, path)
        expect_error(r, 405, "MethodNotAllowed")
        assert r.headers.get("Allow") == allow, (method, path, r.headers)
    r = srv.request("OPTIONS", SES, headers={"Origin": "https://x.example",
                                            "Access-Control-Request-Method": "DELETE"})
    assert r.status_code == 204 and "DELETE" in r.headers["Access-Control-Allow-Methods"]


# ---------------------------------------------------------------------------------------------
# Idle sessions are stopped


def test_idle_session_uses_no_cpu(srv):
    with opened(srv) as s:
        sid = s["id"]
        b = run(srv, sid, "import threading, time\n"
                          "ticks = []\n"
                          "def tick():\n"
                          "    while True:\n"
                          "        ticks.append(time.monotonic())\n"
                          "        time.sleep(0.01)\n"
                          "threading.Thread(target=tick, daemon=True).start()\n"
                          "time.sleep(0.3)\n"
                          "end1 = time.monotonic()\n"
                          "len(ticks) > 10")
        assert value(b) == "True", b
        time.sleep(1.0)  # the idle interval is what is measured, not a condition
        b = run(srv, sid, "start2 = time.monotonic()\n"
                          "time.sleep(0.3)\n"
                          "import json\n"
                          "print(json.dumps({'idle': start2 - end1,\n"
                          "    'gap': [t - end1 for t in ticks if end1 + 0.1 < t < start2 - 0.1],\n"
                          "    'after': sum(1 for t in ticks if t > start2)}))")
        got = json.loads(b["stdout"])
        assert got["idle"] >= 0.9, got
        assert got["gap"] == [], f"the thread ran while the session was idle: {got}"
        assert got["after"] >= 10, f"the thread did not run again during the next call: {got}"
        # Between calls every thread of the code's processes is stopped, as the host sees them
        # (all but the cell, pid 1 of the session's pid namespace, which waits for the next).
        cell = Cell(srv, sid)
        states = {}
        for p in cell.pids:
            with open(f"/proc/{p}/status") as f:
                nspid = [line.split()[1:] for line in f if line.startswith("NSpid:")][0]
            if nspid[-1] == "1":
                continue
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/stat") as f:
                    states[f"{p}/{task}"] = f.read().rsplit(")", 1)[1].split()[0]
        assert len(states) >= 2, states  # the interpreter and its thread
        assert set(states.values()) <= {"T", "t"}, states


# ---------------------------------------------------------------------------------------------
# Files


def test_file_api_round_trip(srv):
    with opened(srv) as s:
        sid = s["id"]
        data = bytes(range(256)) * 100 + b"\0end"
        r = srv.request("PUT", f"{SES}/{sid}/files/dir/data.bin", data=data)
        assert r.status_code == 201 and body_of(r) == {"path": "dir/data.bin", "size": len(data),
                                                       "request_id": r.headers["X-Request-Id"]}
        r = srv.request("PUT", f"{SES}/{sid}/files/dir/data.bin", data=data)
        assert r.status_code == 200, r.text
        run(srv, sid, "open('/work/made.txt', 'w').write('by code')")
        files = body_of(srv.get(f"{SES}/{sid}/files"))["files"]
        by = {f["path"]: f for f in files}
        assert by["dir/data.bin"]["size"] == len(data), files
        assert by["made.txt"]["size"] == 7, files
        assert by["made.txt"]["mtime"].endswith("Z"), files
        r = srv.get(f"{SES}/{sid}/files/dir/data.bin")
        assert r.status_code == 200 and r.content == data, (r.status_code, r.content[:100])
        assert r.headers["Content-Type"] == "application/octet-stream", r.headers
        b = run(srv, sid, "open('/work/dir/data.bin', 'rb').read()[-4:]")
        assert value(b) == "b'\\x00end'", b
        r = srv.request("DELETE", f"{SES}/{sid}/files/dir/data.bin")
        assert r.status_code == 204, r.text
        expect_error(srv.get(f"{SES}/{sid}/files/dir/data.bin"), 404, "NotFound")
        expect_error(srv.request("DELETE", f"{SES}/{sid}/files/dir/data.bin"), 404, "NotFound")
        # Over the input-file limit (8 MiB): refused before it is read when announced, and once
        # read when chunked; nothing is written.
        path = f"{SES}/{sid}/files/big.bin"
        raw, errors = srv.raw([f"PUT {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {(8 << 20) + 1}"
                               "\r\nConnection: close\r\n\r\n".encode()])
        status, _, got = parse_http_response(raw)
        assert status == 413 and json.loads(got)["error"]["type"] == "PayloadTooLarge", raw[:500]

        def chunked():
            yield (f"PUT {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                   "Connection: close\r\n\r\n").encode()
            block = b"\0" * (1 << 20)
            for _ in range(9):
                yield b"%x\r\n" % len(block) + block + b"\r\n"
            yield b"0\r\n\r\n"

        raw, errors = srv.raw(chunked(), read_timeout=30)
        status, _, got = parse_http_response(raw)
        assert status == 413 and json.loads(got)["error"]["type"] == "PayloadTooLarge", raw[:500]
        expect_error(srv.get(path), 404, "NotFound")


def test_paths_outside_work_are_refused(srv):
    with open("/etc/passwd", "rb") as f:
        host_passwd = f.read()
    with opened(srv) as s:
        sid = s["id"]
        jail_passwd = value(run(srv, sid, "open('/etc/passwd').read()"))
        run(srv, sid, "import os\n"
                      "os.symlink('/etc/passwd', '/work/link')\n"
                      "os.symlink('/etc', '/work/etcdir')\n"
                      "os.symlink('../tmp', '/work/up')\n"
                      "open('/tmp/outside.txt', 'w').write('outside')\n"
                      "os.mkdir('/work/d')\n"
                      "os.symlink('/etc/passwd', '/work/d/deep')")
        base = f"{SES}/{sid}/files/"

        def refused(method, path, body=b""):
            status, hdrs, got = raw_request(srv, method, base + path, body)
            assert status in (400, 404), (method, path, status, got[:300])
            assert hdrs.get("content-type", "").startswith("application/json"), hdrs
            assert b"root:" not in got, (method, path, got[:300])

        # Out of /work, or through a link on the way: refused whatever the method.
        for path in ("../x", "..%2Fx", "%2e%2e/x", "a/../../x", "./x", "/etc/passwd",
                     "%2Fetc%2Fpasswd", "etcdir/passwd", "up/outside.txt", "a%00b", "a%01b",
                     "a%ffb", "", "a//b", "d/../link"):
            for method, body in (("GET", b""), ("PUT", b"overwritten"), ("DELETE", b"")):
                refused(method, path, body)
        # A link itself: never read through. A PUT replaces the link in /work with the file, a
        # DELETE removes the link: neither touches what it points to.
        refused("GET", "link")
        refused("GET", "d/deep")
        status, _, got = raw_request(srv, "PUT", base + "link", b"overwritten")
        assert status == 201, (status, got[:300])
        status, _, got = raw_request(srv, "GET", base + "link")
        assert (status, got) == (200, b"overwritten"), (status, got[:300])
        status, _, got = raw_request(srv, "DELETE", base + "d/deep")
        assert status == 204, (status, got[:300])
        b = run(srv, sid, "import os\n"
                          "(os.path.islink('/work/link'), os.path.lexists('/work/d/deep'))")
        assert value(b) == "(False, False)", b
        with open("/etc/passwd", "rb") as f:
            assert f.read() == host_passwd
        b = run(srv, sid, "(open('/etc/passwd').read(), open('/tmp/outside.txt').read())")
        assert value(b) == repr((eval(jail_passwd), "outside")), b
        names = [f["path"] for f in body_of(srv.get(f"{SES}/{sid}/files"))["files"]]
        assert "etcdir" not in names and "up" not in names, names


# ---------------------------------------------------------------------------------------------
# The server's life, metrics, streaming


def test_metrics_count_sessions_and_their_calls(srv):
    created = metric(srv, "pybox_sessions_created_total")
    text = srv.get("/metrics").text
    ok_before = int(text.split('pybox_executions_total{status="ok"} ')[1].split()[0])
    deleted_before = int(text.split('pybox_sessions_ended_total{reason="deleted"} ')[1].split()[0])
    with opened(srv) as s:
        assert metric(srv, "pybox_sessions_created_total") == created + 1
        assert metric(srv, "pybox_sessions_open") >= 1
        run(srv, s["id"], "1")
    text = srv.get("/metrics").text
    assert int(text.split('pybox_executions_total{status="ok"} ')[1].split()[0]) >= ok_before + 1
    assert int(text.split('pybox_sessions_ended_total{reason="deleted"} ')[1].split()[0]) \
        == deleted_before + 1
    assert 'route="/v1/sessions",status="201"' in text
    assert 'route="/v1/sessions",status="204"' in text
    # And audited as an execution: a row of the store's audit log with its route.
    db = sqlite3.connect(f"file:{srv.data_dir}/pybox.db?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT route, status FROM audit WHERE route = '/v1/sessions'").fetchall()
    finally:
        db.close()
    assert ("/v1/sessions", "ok") in rows, rows


def test_a_session_call_streams(srv):
    with opened(srv) as s:
        run(srv, s["id"], "n = 5")
        _, events = stream(srv, {"code": "print(n)\nn * 2"}, path=f"{SES}/{s['id']}/execute")
        names = [e.name for e in events if e.name]
        assert "stdout" in names, names
        end = [e for e in events if e.name == "end"][0].json()
        assert end["stdout"] == "5\n" and value(end) == "10", end
        assert end["execution_count"] == 2 and end["session"]["status"] == "idle", end


def test_a_client_that_leaves_a_streamed_call_interrupts_it_and_the_session_lives(srv):
    with opened(srv) as s:
        run(srv, s["id"], "kept = 'yes'")
        st = Stream(srv, {"code": "import time\nprint('going', flush=True)\ntime.sleep(30)\n"},
                    path=f"{SES}/{s['id']}/execute")
        assert st.status == 200, (st.status, st.buf[:300])
        # Until the call runs: its first line came.
        while True:
            e = st.next()
            assert e is not None, "the stream ended before the call printed"
            if e.name == "stdout":
                break
        t0 = time.monotonic()
        st.close()
        # The call is interrupted, not left to its 30 s: the session is idle again soon.
        wait_status(srv, s["id"], "idle", timeout=10.0)
        assert time.monotonic() - t0 < 10.0
        b = run(srv, s["id"], "print(kept)")
        assert b["stdout"] == "yes\n" and b["state_preserved"] is True, b
        assert b["execution_count"] == 3, b


def test_a_restarted_server_has_no_sessions(start_server):
    srv = start_server(*RELAXED)
    s = create(srv)
    run(srv, s["id"], "x = 1")
    cell = Cell(srv, s["id"])
    # srv.restart(), with the session's own check between the stop and the start.
    pid = srv.pid
    rc = srv.terminate()
    assert rc == 0, f"pybox serve exited {rc} on SIGTERM\n{srv.log_text()[-4000:]}"
    srv.exit_codes.append(rc)
    cell.assert_gone()
    assert not srv.leftover_problems(pid)
    srv._start()
    body = expect_error(srv.get(f"{SES}/{s['id']}"), 404, "NotFound")
    assert body["error"]["message"] == "no such session: sessions end when the server restarts"
    expect_error(call(srv, s["id"], "x"), 404, "NotFound")
    assert body_of(srv.get(SES))["sessions"] == []
