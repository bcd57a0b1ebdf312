"""Two `pybox serve --store redis://...` nodes share one per-minute window per client (Redis's
sorted set, by its clock), and a retried request with the same Idempotency-Key is charged to
the daily quota once (docs/api.md "Admission"). A real redis-server; each node is its own
process, as two machines behind a proxy would be."""
import os
import signal
import subprocess

import pytest

from conftest import PYBOX, body_of, clean_env, expect_error
from redis_server import Redis


@pytest.fixture
def redis(tmp_path):
    r = Redis(tmp_path)
    yield r
    r.stop()


def keys_create(uri, name, *opts):
    p = subprocess.run([PYBOX, "keys", "create", "--name", name, *opts, "--store", uri],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def two_nodes(start_server, redis):
    flags = ("--store", redis.uri, "--nodes", "2", "--rpm", "100000", "--rpd", "1000000")
    return start_server(*flags, "--node-id", "n1"), start_server(*flags, "--node-id", "n2")


def ran(r, out="1\n"):
    assert r.status_code == 200, r.text
    assert body_of(r)["stdout"] == out, r.text


def test_one_window_for_both_nodes(start_server, redis):
    a, b = two_nodes(start_server, redis)
    key = keys_create(redis.uri, "five", "--rpm", "5", "--rpd", "1000")
    for i in range(5):
        ran((a, b)[i % 2].v1({"code": "print(1)"}, key=key))
    for node in (a, b):  # the 6th, on either node
        r = node.v1({"code": "print(1)"}, key=key)
        body = expect_error(r, 429, "RateLimitExceeded")
        assert "5 requests per minute" in body["error"]["message"], body
        assert 1 <= int(r.headers["Retry-After"]) <= 60, r.headers
    # Another key's window is its own; opening a session counts in the same window.
    other = keys_create(redis.uri, "other", "--rpm", "5", "--rpd", "1000")
    ran(b.v1({"code": "print(1)"}, key=other))
    r = a.post("/v1/sessions", {}, key=key)
    expect_error(r, 429, "RateLimitExceeded")
    assert r.headers.get("Retry-After"), r.headers


def test_an_idempotency_key_is_charged_once(start_server, redis):
    a, b = two_nodes(start_server, redis)
    key = keys_create(redis.uri, "three", "--rpm", "1000", "--rpd", "3")
    retry = {"Idempotency-Key": "order-42:try"}
    ran(a.v1({"code": "print(1)"}, key=key, headers=retry))
    ran(b.v1({"code": "print(1)"}, key=key, headers=retry))  # the retry, on the other node
    ran(a.v1({"code": "print(1)"}, key=key))
    ran(b.v1({"code": "print(1)"}, key=key, headers={"Idempotency-Key": "order-43"}))
    r = a.v1({"code": "print(1)"}, key=key)
    body = expect_error(r, 429, "RateLimitExceeded")
    assert "daily quota of 3" in body["error"]["message"], body
    # With the quota spent, a retry of a charged request still passes; a new key does not.
    ran(b.v1({"code": "print(1)"}, key=key, headers=retry))
    r = b.v1({"code": "print(1)"}, key=key, headers={"Idempotency-Key": "order-44"})
    body = expect_error(r, 429, "RateLimitExceeded")
    assert "daily quota of 3" in body["error"]["message"], body


@pytest.mark.parametrize("bad", ["", "a b", "x" * 129, "caf\u00e9"])
def test_a_bad_idempotency_key_is_400(start_server, redis, bad):
    srv = start_server("--store", redis.uri, "--rpm", "100000", "--rpd", "1000000")
    r = srv.request("POST", "/v1/execute", data=b'{"code": "print(1)"}',
                    headers={"Content-Type": "application/json",
                             "Idempotency-Key": bad.encode("utf-8")})
    body = expect_error(r, 400, "ValidationError")
    assert "Idempotency-Key" in body["error"]["message"], body
    ran(srv.v1({"code": "print(1)"}, headers={"Idempotency-Key": "x" * 128}))


def test_while_redis_hangs_each_node_allows_its_share(start_server, redis):
    """While the store does not answer, a node's own window allows 1/N of the limit (--nodes
    2: 2 of a key's 4 a minute); a key without a daily quota, seen before, keeps working."""
    srv = start_server("--store", redis.uri, "--nodes", "2", "--rpm", "100000",
                       "--rpd", "1000000")
    key = keys_create(redis.uri, "four", "--rpm", "4", "--rpd", "unlimited")
    ran(srv.v1({"code": "print(1)"}, key=key))  # seen: its policy is in the node's memory now
    os.kill(redis.proc.pid, signal.SIGSTOP)
    try:
        ran(srv.v1({"code": "print(1)"}, key=key))
        ran(srv.v1({"code": "print(1)"}, key=key))
        r = srv.v1({"code": "print(1)"}, key=key)
        body = expect_error(r, 429, "RateLimitExceeded")
        assert body["error"]["message"] == ("rate limit of 4 requests per minute reached (2 on this "
                                            "node while the store does not answer)"), body
        assert r.headers.get("Retry-After"), r.headers
    finally:
        os.kill(redis.proc.pid, signal.SIGCONT)
