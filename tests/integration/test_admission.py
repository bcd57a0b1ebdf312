"""Admission in one call (docs/api.md "Admission"): a request's per-minute window, daily quota
and executions at once (`pybox keys create --concurrency`, `pybox serve --client-concurrency`)
checked and charged together, in Redis for every node sharing it or in the node's memory with
SQLite; a request refused after that (503 ServerBusy) gives its charge back; a trusted proxy's
X-Request-Id names the request and makes a request the proxy sends again count once; and while
Redis does not answer each node allows its share (--nodes) of a key's executions at once.
A streamed execution and a session's call hold a lease like any other, and a lease's set lives
as long as its longest lease.

A real redis-server (tests/integration/redis_server.py), read with raw RESP over a socket; each
node is its own `pybox serve` process. Executions that must overlap sleep in the sandbox, and
the test waits (polling /metrics, with a deadline) until they run before it sends the next.
"""
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from conftest import PYBOX, SLOW, body_of, clean_env, expect_error, session_from, wait_metric
from redis_server import Redis

RUNNING = "at once reached; retry when one has ended"  # "1 execution", "2 executions"


def slow(seconds):
    return {"code": f"import time\ntime.sleep({seconds})\nprint('slept')"}


QUICK = {"code": "print(1)"}


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path)
    yield r
    if r.proc.poll() is None:
        os.kill(r.proc.pid, signal.SIGCONT)  # a test that stopped it may have failed midway
    r.stop()


# ---------------------------------------------------------------------------------------------
# Redis, read directly


def _read_reply(f):
    line = f.readline()
    assert line.endswith(b"\r\n"), f"truncated Redis reply {line!r}"
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise AssertionError(f"Redis error: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_read_reply(f) for _ in range(n)]
    raise AssertionError(f"unexpected Redis reply {line!r}")


def rcall(redis, *args):
    """One Redis command's reply (RESP over a new connection)."""
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", redis.port), timeout=10) as c:
        c.sendall(out)
        with c.makefile("rb") as f:
            return _read_reply(f)


def redis_day(redis):
    """Today (UTC, "YYYY-MM-DD") by Redis's clock, which names the quota counters."""
    return time.strftime("%Y-%m-%d", time.gmtime(int(rcall(redis, "TIME")[0])))


def day_count(redis, name):
    v = rcall(redis, "GET", f"pbx:quota:{{key:{name}}}:{redis_day(redis)}")
    return 0 if v is None else int(v)


def leases(redis, name):
    return rcall(redis, "ZCARD", f"pbx:lease:{{key:{name}}}")


def window(redis, name):
    return rcall(redis, "ZCARD", f"pbx:window:{{key:{name}}}")


# ---------------------------------------------------------------------------------------------
# helpers


def keys_create(store, name, *opts):
    """`pybox keys create` in a store (["--store", URI] or ["--data", DIR]); returns the token."""
    p = subprocess.run([PYBOX, "keys", "create", "--name", name, *opts, *store],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def post(srv, body, key=None, headers=None, source=None):
    """POST /v1/execute on a connection of its own (safe from several threads at once)."""
    h = {"Content-Type": "application/json"}
    if key:
        h["Authorization"] = f"Bearer {key}"
    h.update(headers or {})
    with session_from(source) as s:
        return s.post(srv.url + "/v1/execute", json=body, headers=h, timeout=120)


class Background:
    """A request sent on a thread of its own; .result() waits for its answer."""

    def __init__(self, fn):
        self._answer = None
        self._error = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn):
        try:
            self._answer = fn()
        except Exception as e:  # noqa: BLE001 - reported by result()
            self._error = e

    def alive(self):
        return self._thread.is_alive()

    def result(self, timeout=120):
        self._thread.join(timeout * SLOW)
        assert not self._thread.is_alive(), "no answer in time"
        if self._error is not None:
            raise self._error
        return self._answer


def all_at_once(calls):
    """Each call on its own thread, started together; their answers in order."""
    barrier = threading.Barrier(len(calls))

    def start(fn):
        def go():
            barrier.wait(30)
            return fn()
        return go

    return [b.result() for b in [Background(start(fn)) for fn in calls]]


def ran(r, out="1\n"):
    assert r.status_code == 200, r.text
    assert body_of(r)["stdout"] == out, r.text
    return body_of(r)


def at_once_refusal(r, n, share=None):
    body = expect_error(r, 429, "RateLimitExceeded")
    note = f" ({share} on this node while the store does not answer)" if share is not None else ""
    want = f"{n} execution{'s' if n != 1 else ''} at once reached{note}; retry when one has ended"
    assert body["error"]["message"] == want, body
    assert r.headers.get("Retry-After") == "1", r.headers
    return body


def wait_for(what, cond, timeout=20.0):
    deadline = time.monotonic() + timeout * SLOW
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout * SLOW:g} s"
        time.sleep(0.05)


def wait_admitted(send, what, timeout=20.0):
    """Send until the answer is not a refusal of executions at once; returns that answer."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        r = send()
        if r.status_code != 429 or RUNNING not in r.text:
            return r
        assert time.monotonic() < deadline, f"{what}: still refused after {timeout * SLOW:g} s"
        time.sleep(0.05)


def two_nodes(start_server, redis, *extra):
    flags = ("--store", redis.uri, "--nodes", "2", "--rpm", "100000", "--rpd", "1000000", *extra)
    return start_server(*flags, "--node-id", "n1"), start_server(*flags, "--node-id", "n2")


# ---------------------------------------------------------------------------------------------
# 1. a key's executions at once, every node of a Redis together


def test_a_keys_executions_at_once_count_across_nodes(start_server, redis):
    a, b = two_nodes(start_server, redis)
    key = keys_create(["--store", redis.uri], "two", "--rpm", "1000", "--rpd", "1000",
                      "--concurrency", "2")
    ran(post(a, QUICK, key))  # each node has looked the key up: the race below is admission's
    ran(post(b, QUICK, key))
    assert leases(redis, "two") == 0

    answers = all_at_once([lambda n=n: post(n, slow(1.5), key) for n in (a, b, a, b)])
    done = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code != 200]
    assert len(done) == 2 and len(refused) == 2, [(r.status_code, r.text) for r in answers]
    for r in done:
        assert body_of(r)["stdout"] == "slept\n", r.text
    for r in refused:
        at_once_refusal(r, 2)

    # The leases end with their executions: none left in Redis, and two run at once again.
    wait_for("the leases ended", lambda: leases(redis, "two") == 0)
    again = [Background(lambda n=n: post(n, slow(1.5), key)) for n in (a, b)]
    wait_metric(a, "pybox_cells_busy", 1)  # both at once: one on each node
    wait_metric(b, "pybox_cells_busy", 1)
    for bg in again:
        assert bg.result().status_code == 200
    wait_for("the leases ended", lambda: leases(redis, "two") == 0)
    # The day's count is every admitted request: 2 + 2 + 2, the refused ones not counted.
    assert day_count(redis, "two") == 6


# ---------------------------------------------------------------------------------------------
# 2. SQLite, one node: the leases in its memory


def test_sqlite_node_keeps_the_leases(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000", "--client-concurrency", "1",
                       "--max-concurrency", "4")
    store = ["--data", str(srv.data_dir)]
    one = keys_create(store, "one", "--rpm", "1000", "--rpd", "1000", "--concurrency", "1")
    free = keys_create(store, "free", "--rpm", "1000", "--rpd", "1000",
                       "--concurrency", "unlimited")

    # A key with --concurrency 1: a second at once is refused, another caller is not.
    first = Background(lambda: post(srv, slow(3), one))
    wait_metric(srv, "pybox_cells_busy", 1)
    at_once_refusal(post(srv, QUICK, one), 1)
    ran(post(srv, QUICK, free))
    assert first.alive(), "the first ended before the second was refused: retry with longer"
    assert body_of(first.result())["stdout"] == "slept\n"
    ran(wait_admitted(lambda: post(srv, QUICK, one), "key `one` after its execution"))

    # Anonymous callers: one at once each (--client-concurrency 1), per client address.
    first = Background(lambda: post(srv, slow(3), source="127.0.0.2"))
    wait_metric(srv, "pybox_cells_busy", 1)
    at_once_refusal(post(srv, QUICK, source="127.0.0.2"), 1)
    ran(post(srv, QUICK, source="127.0.0.3"))
    assert first.alive(), "the first ended before the second was refused: retry with longer"
    assert body_of(first.result())["stdout"] == "slept\n"
    ran(wait_admitted(lambda: post(srv, QUICK, source="127.0.0.2"), "the anonymous client"))

    # A key with --concurrency unlimited: no limit, whatever the anonymous one.
    both = [Background(lambda: post(srv, slow(1.5), free)) for _ in range(2)]
    wait_metric(srv, "pybox_cells_busy", 2)
    for bg in both:
        assert body_of(bg.result())["stdout"] == "slept\n"


# ---------------------------------------------------------------------------------------------
# 3. refused after admission: the charge given back


def test_server_busy_after_admission_gives_the_charge_back(start_server, redis):
    srv = start_server("--store", redis.uri, "--max-concurrency", "1", "--queue", "0",
                       "--rpm", "100000", "--rpd", "1000000")
    key = keys_create(["--store", redis.uri], "undo", "--rpm", "1000", "--rpd", "10",
                      "--concurrency", "5")
    once = {"Idempotency-Key": "b-1"}
    a = Background(lambda: post(srv, slow(4), key))
    wait_metric(srv, "pybox_cells_busy", 1)
    r = post(srv, QUICK, key, headers=once)
    body = expect_error(r, 503, "ServerBusy")
    assert r.headers.get("Retry-After") == "1", r.headers
    assert "slot" in body["error"]["message"], body
    # B's day count, window place and lease are gone; A's stay while it runs.
    wait_for("B's charge given back", lambda: day_count(redis, "undo") == 1)
    assert window(redis, "undo") == 1
    assert leases(redis, "undo") == 1
    assert a.alive(), "A ended before B's charge was read: retry with a longer sleep"
    assert body_of(a.result())["stdout"] == "slept\n"
    wait_for("A's lease ended", lambda: leases(redis, "undo") == 0)
    assert day_count(redis, "undo") == 1

    # B's idempotency mark went too: sent again, it is charged (once).
    ran(post(srv, QUICK, key, headers=once))
    assert day_count(redis, "undo") == 2
    ran(post(srv, QUICK, key, headers=once))
    assert day_count(redis, "undo") == 2
    assert window(redis, "undo") == 3  # A's and B's two admitted sends
    wait_for("every lease ended", lambda: leases(redis, "undo") == 0)


# ---------------------------------------------------------------------------------------------
# 4. a trusted proxy's request id


def test_a_trusted_proxys_request_id(start_server, redis):
    srv = start_server("--store", redis.uri, "--trusted-proxy", "127.0.0.1",
                       "--rpm", "100000", "--rpd", "1000000")
    key = keys_create(["--store", redis.uri], "proxied", "--rpm", "1000", "--rpd", "5")

    def send(rid=None, headers=None, source=None, out="1\n"):
        h = dict(headers or {})
        if rid is not None:
            h["X-Request-Id"] = rid
        r = post(srv, QUICK, key, headers=h, source=source)
        body = ran(r, out)
        assert body["request_id"] == r.headers["X-Request-Id"], (body, r.headers)
        return r.headers["X-Request-Id"]

    for _ in range(3):  # the proxy sending one request again: one charge
        assert send("abc123") == "abc123"
    assert day_count(redis, "proxied") == 1
    longest = "Az09._-" * 9 + "x"  # 64 characters, every kind allowed
    assert send(longest) == longest
    assert day_count(redis, "proxied") == 2
    # The client's Idempotency-Key wins over the proxy's id.
    assert send("abc123", headers={"Idempotency-Key": "ik-1"}) == "abc123"
    assert day_count(redis, "proxied") == 3
    assert send("zzz", headers={"Idempotency-Key": "ik-1"}) == "zzz"
    assert day_count(redis, "proxied") == 3
    # Malformed ids are ignored: the server's own, each request counted.
    for bad in ("a b", "x" * 65):
        got = send(bad)
        assert got != bad and got not in ("abc123", longest), got
    assert day_count(redis, "proxied") == 5
    r = post(srv, QUICK, key, headers={"X-Request-Id": "fresh"})
    body = expect_error(r, 429, "RateLimitExceeded")
    assert "daily quota of 5" in body["error"]["message"], body
    assert r.headers["X-Request-Id"] == "fresh"
    send("abc123")  # charged already: passes with the quota spent
    assert day_count(redis, "proxied") == 5

    # From a peer that is not the trusted proxy the header is ignored.
    other = keys_create(["--store", redis.uri], "direct", "--rpm", "1000", "--rpd", "5")
    r = post(srv, QUICK, other, headers={"X-Request-Id": "abc123"}, source="127.0.0.2")
    assert ran(r)["request_id"] == r.headers["X-Request-Id"] != "abc123", r.headers
    assert day_count(redis, "direct") == 1


def test_without_a_trusted_proxy_the_request_id_is_ignored(start_server, redis):
    srv = start_server("--store", redis.uri, "--rpm", "100000", "--rpd", "1000000")
    key = keys_create(["--store", redis.uri], "plain", "--rpm", "1000", "--rpd", "5")
    ids = []
    for _ in range(3):
        r = post(srv, QUICK, key, headers={"X-Request-Id": "abc123"})
        body = ran(r)
        assert body["request_id"] == r.headers["X-Request-Id"] != "abc123", r.headers
        ids.append(body["request_id"])
    assert len(set(ids)) == 3, ids
    assert day_count(redis, "plain") == 3


# ---------------------------------------------------------------------------------------------
# 5. Redis not answering: each node its share


def test_while_redis_hangs_each_node_allows_its_share_at_once(start_server, redis):
    a, b = two_nodes(start_server, redis)
    key = keys_create(["--store", redis.uri], "shared", "--rpm", "1000", "--rpd", "unlimited",
                      "--concurrency", "2")
    ran(post(a, QUICK, key))  # seen: its policy is in each node's memory now
    ran(post(b, QUICK, key))
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        running = []
        for node in (a, b):  # 2 at once / 2 nodes: one each
            running.append(Background(lambda n=node: post(n, slow(4), key)))
            wait_metric(node, "pybox_cells_busy", 1)
            at_once_refusal(post(node, QUICK, key), 2, share=1)
        assert all(bg.alive() for bg in running), "retry with a longer sleep"
        for bg in running:
            assert body_of(bg.result())["stdout"] == "slept\n"
        # The node's own leases end with their executions too.
        for node in (a, b):
            ran(wait_admitted(lambda n=node: post(n, QUICK, key), "after the node's execution"))
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)


# ---------------------------------------------------------------------------------------------
# a streamed execution's lease


def test_a_streamed_execution_holds_its_lease_until_it_ends(start_server, redis):
    srv = start_server("--store", redis.uri, "--rpm", "100000", "--rpd", "1000000")
    key = keys_create(["--store", redis.uri], "streamed", "--rpm", "1000", "--rpd", "1000",
                      "--concurrency", "1")
    code = {"code": "import time\nprint('go', flush=True)\ntime.sleep(60)"}
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {key}"}
    with requests.post(srv.url + "/v1/execute", json=code, headers=headers, stream=True,
                       timeout=60) as s:
        assert s.status_code == 200 and s.headers["content-type"] == "text/event-stream"
        seen = b""
        # Kept until the client leaves: a reader dropped closes the connection, and the
        # server would take that for the client leaving.
        chunks = s.iter_content(chunk_size=None)
        while b"go" not in seen:
            seen += next(chunks)
        at_once_refusal(post(srv, QUICK, key), 1)
        assert leases(redis, "streamed") == 1
        del chunks
    # The client left: its execution is cancelled, and its lease ends with it.
    wait_for("the streamed execution's lease ended", lambda: leases(redis, "streamed") == 0)
    ran(wait_admitted(lambda: post(srv, QUICK, key), "after the stream"))


def test_a_sessions_call_holds_a_lease_of_its_key(start_server, redis):
    srv = start_server("--store", redis.uri, "--rpm", "100000", "--rpd", "1000000")
    key = keys_create(["--store", redis.uri], "sessioned", "--rpm", "1000", "--rpd", "1000",
                      "--concurrency", "1")
    h = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    r = requests.post(srv.url + "/v1/sessions", json={}, headers=h, timeout=60)
    assert r.status_code == 201, r.text
    sid = body_of(r)["id"]
    call = Background(lambda: requests.post(f"{srv.url}/v1/sessions/{sid}/execute", json=slow(3),
                                            headers=h, timeout=120))
    wait_metric(srv, "pybox_cells_busy", 1)
    at_once_refusal(post(srv, QUICK, key), 1)  # the session's call is one of the key's
    assert leases(redis, "sessioned") == 1
    assert call.alive(), "the call ended before the second was refused: retry with longer"
    r = call.result()
    assert r.status_code == 200 and body_of(r)["stdout"] == "slept\n", r.text
    wait_for("the call's lease ended", lambda: leases(redis, "sessioned") == 0)
    ran(post(srv, QUICK, key))
    r = requests.delete(f"{srv.url}/v1/sessions/{sid}", headers=h, timeout=60)
    assert r.status_code == 204, r.text


def test_sqlite_node_names_requests_by_the_proxys_id_but_counts_each(start_server):
    """With SQLite there is no other node for the proxy to send a request again to, so the
    proxy's id names the request (X-Request-Id, request_id) but is no idempotency key: each
    request counts (requests_today, in the compatible dialect's user_info), while a client's
    Idempotency-Key still counts once."""
    srv = start_server("--trusted-proxy", "127.0.0.1/32", "--rpm", "1000", "--rpd", "1000")
    key = keys_create(["--data", str(srv.data_dir)], "local", "--rpm", "1000", "--rpd", "4")

    def today(rid, extra=None):
        r = srv.execute(QUICK, key=key, headers={"X-Request-Id": rid, **(extra or {})})
        assert r.status_code == 200, r.text
        assert r.headers["X-Request-Id"] == rid, r.headers
        assert body_of(r)["request_id"] == rid, r.text
        return body_of(r)["user_info"]["requests_today"]

    assert [today("r-1") for _ in range(3)] == [1, 2, 3]
    assert [today(f"r-{i}", {"Idempotency-Key": "job-1"}) for i in (4, 5)] == [4, 4]
    r = srv.execute(QUICK, key=key, headers={"X-Request-Id": "r-1"})
    body = expect_error(r, 429, "RateLimitExceeded")
    assert "daily quota of 4" in body["error_details"]["message"], body


def test_a_short_lease_does_not_shorten_a_long_ones(start_server, redis):
    """Each lease lasts as long as its request may (its timeout and a margin): a request with a
    short timeout admitted next to a long one must not make the leases' set expire, and the long
    one's lease with it, before the long one may end."""
    srv = start_server("--store", redis.uri, "--queue", "0", "--rpm", "100000",
                       "--rpd", "1000000")
    key = keys_create(["--store", redis.uri], "long", "--rpm", "1000", "--rpd", "1000",
                      "--concurrency", "2", "--timeout", "120")
    a = Background(lambda: post(srv, dict(slow(3), timeout=120), key))
    wait_metric(srv, "pybox_cells_busy", 1)
    ran(post(srv, {"code": "print(1)", "timeout": 1}, key))
    pttl = rcall(redis, "PTTL", "pbx:lease:{key:long}")
    assert a.alive(), "A ended before its lease was read: retry with a longer sleep"
    assert leases(redis, "long") == 1
    assert pttl > 100_000, f"A's lease (120 s and more) would expire in {pttl} ms"
    assert body_of(a.result())["stdout"] == "slept\n"
    wait_for("A's lease ended", lambda: leases(redis, "long") == 0)
