"""`pybox serve --store redis://...` when Redis stops answering (docs/api.md "Operations",
docs/deploy.md): requests that need the store (a key to check, a daily quota to charge) are
refused at once with 503 StoreUnavailable and Retry-After, within the store's timeout, never
let through and never left hanging; GET /v1/health stays 200 and says the store is unavailable
(liveness does not depend on Redis) while GET /v1/ready turns 503; and service comes back by
itself when Redis does. Redis is stopped for real, with SIGSTOP (it hangs) and SIGKILL (it is
gone). Every wait polls with a deadline.
"""
import hashlib
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import PYBOX, SLOW, body_of, clean_env, expect_error, metric
from redis_server import Redis

TIMEOUT_S = 2.0 * SLOW  # the store's timeout is 200 ms: a refusal must come well within this


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path)
    yield r
    if r.proc.poll() is None:
        os.kill(r.proc.pid, signal.SIGCONT)
    r.stop()


def keys_create(uri, name, *opts):
    p = subprocess.run([PYBOX, "keys", "create", "--name", name, "--rpm", "1000", *opts,
                        "--store", uri], capture_output=True, text=True, timeout=60,
                       env=clean_env())
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0


def wait_for(what, cond, timeout=20.0):
    deadline = time.monotonic() + timeout * SLOW
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.1)


def outage(srv, key, how, redis):
    """Redis stopped `how`: every answer that needs it is a quick 503 StoreUnavailable."""
    for attempt in range(3):  # the first meets the timeout, the next ones the backoff
        r, took = timed(lambda: srv.v1({"code": "print(1)"}, key=key))
        body = expect_error(r, 503, "StoreUnavailable")
        assert r.headers.get("Retry-After"), r.headers
        assert "retry" in body["error"]["message"], body
        assert took < TIMEOUT_S, (how, attempt, took)
        r, took = timed(lambda: srv.v1({"code": "print(1)"}))  # anonymous: the quota
        expect_error(r, 503, "StoreUnavailable")
        assert took < TIMEOUT_S, (how, "anonymous", attempt, took)
    h = srv.request("GET", "/v1/health")
    assert h.status_code == 200 and body_of(h)["store"] == "unavailable", h.text
    r = srv.request("GET", "/v1/ready")
    assert r.status_code == 503 and body_of(r) == {"ready": False, "store": "unavailable",
                                                   "request_id": body_of(r)["request_id"]}, r.text


def test_a_hung_then_a_dead_redis(start_server, redis):
    srv = start_server("--store", redis.uri, "--rpm", "100000", "--rpd", "1000000")
    key = keys_create(redis.uri, "outage", "--rpd", "1000")
    free = keys_create(redis.uri, "no-quota", "--rpd", "unlimited")
    assert srv.v1({"code": "print(1)"}, key=key).status_code == 200
    assert srv.request("GET", "/v1/ready").status_code == 200
    assert body_of(srv.request("GET", "/v1/health"))["store"] == "ok"

    os.kill(redis.proc.pid, signal.SIGSTOP)  # it hangs: every call meets the timeout
    outage(srv, key, "SIGSTOP", redis)
    # A key without a daily quota, seen just before: served from the node's memory for a while
    # (its name and policy, never its token); one never seen is refused as before.
    assert srv.v1({"code": "print(2)"}, key=free).status_code == 503  # seen only after...
    os.kill(redis.proc.pid, signal.SIGCONT)
    wait_for("ready again", lambda: srv.request("GET", "/v1/ready").status_code == 200)
    assert srv.v1({"code": "print(2)"}, key=free).status_code == 200  # ...this lookup
    os.kill(redis.proc.pid, signal.SIGSTOP)
    during = f"print(3)  # during the outage {time.time_ns()}"
    r = srv.v1({"code": during}, key=free)
    assert r.status_code == 200 and body_of(r)["stdout"] == "3\n", r.text
    expect_error(srv.v1({"code": "print(3)"}, key=key), 503, "StoreUnavailable")  # has a quota
    # Its audit record waits in the node's memory, and is written once the store answers.
    assert metric(srv, "pybox_audit_spooled") >= 1
    os.kill(redis.proc.pid, signal.SIGCONT)
    wait_for("ready again", lambda: srv.request("GET", "/v1/ready").status_code == 200)
    assert srv.v1({"code": "print(4)"}, key=free).status_code == 200
    assert metric(srv, "pybox_audit_spooled") == 0
    p = subprocess.run([PYBOX, "audit", "--last", "10", "--store", redis.uri],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    assert p.returncode == 0, p.stderr
    digest = hashlib.sha256(during.encode()).hexdigest()
    rows = [json.loads(line) for line in p.stdout.splitlines()]
    assert [r for r in rows if r["code_sha256"] == digest and r["key_name"] == "no-quota"], rows
    wait_for("the key served again",
             lambda: srv.v1({"code": "print(1)"}, key=key).status_code == 200)

    redis.stop()  # gone: every call is refused at once
    outage(srv, key, "SIGKILL", redis)
    redis.start()  # back, empty (no persistence): anonymous service resumes by itself
    wait_for("ready again", lambda: srv.request("GET", "/v1/ready").status_code == 200)
    wait_for("anonymous runs again",
             lambda: srv.v1({"code": "print(1)"}).status_code == 200)
    # Its keys were in the Redis that died: the key is unknown now, not let through.
    expect_error(srv.v1({"code": "print(1)"}, key=key), 401, "Unauthorized")


def test_a_node_starts_while_redis_is_down(start_server, tmp_path):
    """No Redis on the port at start: the node starts and is live (GET /v1/health 200, the
    store "unavailable") but not ready (GET /v1/ready 503), requests that need the store are a
    quick 503, and `pybox keys` fails with one clear line; once a redis-server starts on that
    port the node is ready and serves, with nothing restarted."""
    redis = Redis(tmp_path, password="s3cret-pw")
    redis.stop()  # its port, with nothing there
    try:
        srv = start_server("--store", redis.uri, "--rpm", "100000", "--rpd", "1000000")
        h = srv.request("GET", "/v1/health")
        assert h.status_code == 200 and body_of(h)["status"] == "ok", h.text
        assert body_of(h)["store"] == "unavailable", h.text
        r = srv.request("GET", "/v1/ready")
        assert r.status_code == 503 and body_of(r)["store"] == "unavailable", r.text
        r, took = timed(lambda: srv.v1({"code": "print(1)"}))  # anonymous: its daily quota
        expect_error(r, 503, "StoreUnavailable")
        assert took < TIMEOUT_S, took

        p = subprocess.run([PYBOX, "keys", "list", "--store", redis.uri], capture_output=True,
                           text=True, timeout=60, env=clean_env())
        assert p.returncode != 0, p.stdout
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1, p.stderr
        assert f"redis://127.0.0.1:{redis.port}" in lines[0], p.stderr
        assert "refused" in lines[0], p.stderr
        assert redis.password not in p.stderr, p.stderr
        assert redis.password not in srv.log_text(), srv.log_text()[-4000:]

        redis.start()  # on the same port: the node finds it by itself
        wait_for("ready", lambda: srv.request("GET", "/v1/ready").status_code == 200)
        assert body_of(srv.request("GET", "/v1/health"))["store"] == "ok"
        r = srv.v1({"code": "print(1)"})
        assert r.status_code == 200 and body_of(r)["stdout"] == "1\n", r.text
        key = keys_create(redis.uri, "late")
        r = srv.v1({"code": "print(2)"}, key=key)
        assert r.status_code == 200 and body_of(r)["stdout"] == "2\n", r.text
    finally:
        redis.stop()
