"""`pybox serve --node-id ID` claims its id in the store (docs/deploy.md "Many nodes"): a second
server with the same id and the same store exits 1 before it listens, with one line naming the
holder, while the first serves on; a holder that was SIGKILLed frees its id once its claim
lapses (--node-ttl), so a server started in its place waits at most that long and a second; a
clean stop gives the id back at once. Redis, and SQLite (two servers sharing one file). A node
starts while Redis is down, and a renewal that finds another holder is logged and counted in
pybox_node_id_conflicts_total, the node serving on. Every wait polls with a deadline.
"""
import re
import socket
import subprocess
import time

import pytest

from conftest import (PYBOX, SLOW, Server, body_of, clean_env, jail_leftovers, metric,
                      pybox_cgroups_of)
from redis_server import Redis

TTL = 3  # --node-ttl: renewed every second, lapsing 3 s after the last renewal
HOST = socket.gethostname()


@pytest.fixture(params=["redis", "sqlite"])
def store(request, tmp_path):
    if request.param == "redis":
        r = Redis(tmp_path)
        yield r.uri
        r.stop()
    else:
        yield f"sqlite:{tmp_path}/shared/pybox.db"


def flags(store, node="n1"):
    return ("--store", store, "--node-id", node, "--node-ttl", str(TTL))


def refused_start(store, tmp_path, node="n1"):
    """A `pybox serve` that must not start: (its CompletedProcess, seconds to its exit)."""
    t0 = time.monotonic()
    p = subprocess.run([PYBOX, "serve", "--listen", "127.0.0.1:0", "--no-preload",
                        "--data", str(tmp_path / "b"), *flags(store, node)],
                       capture_output=True, text=True, timeout=60 * SLOW, env=clean_env())
    return p, time.monotonic() - t0


def wait_log(srv, pattern, timeout=20.0):
    deadline = time.monotonic() + timeout * SLOW
    while not re.search(pattern, srv.log_text()):
        assert time.monotonic() < deadline, f"the log never said {pattern!r}:\n{srv.log_text()}"
        time.sleep(0.05)


def test_a_second_server_with_the_id_is_refused(start_server, store, tmp_path):
    a = start_server(*flags(store))
    assert "node id n1 claimed in the store" in a.log_text()
    p, took = refused_start(store, tmp_path)
    assert p.returncode == 1, (p.returncode, p.stderr)
    last = p.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"pybox: node id n1 is held by another running server \(pid {a.pid} on host "
        rf"{re.escape(HOST)}, renewed \d+ s ago\); give each node its own --node-id", last), last
    assert "serving on" not in p.stderr and "isolation in force" not in p.stderr, p.stderr
    # Refused as soon as the holder is seen renewing (every TTL/3), not after the whole wait.
    assert took < TTL + 1 + 2 * SLOW, took
    # The first serves on, its claim untouched.
    a.assert_healthy()
    r = a.admin({"code": "print(6 * 7)"}, v1=True)
    assert r.status_code == 200 and body_of(r)["stdout"] == "42\n", r.text
    assert metric(a, "pybox_node_id_conflicts_total") == 0
    # Another id on the same store is free.
    b = start_server(*flags(store, node="n2"))
    b.assert_healthy()


def test_a_killed_holder_frees_its_id_after_its_ttl(start_server, store):
    a = Server(flags(store))
    pid = a.pid
    a.proc.kill()
    a.proc.wait(timeout=30)
    a.checked = True  # stopped here, by SIGKILL: what it leaves is checked below
    deadline = time.monotonic() + 10 * SLOW  # its jails die with it, a moment later
    while jail_leftovers(pid, a.user_namespaces):
        assert time.monotonic() < deadline, jail_leftovers(pid, a.user_namespaces)
        time.sleep(0.05)
    t0 = time.monotonic()
    b = start_server(*flags(store))
    took = time.monotonic() - t0
    # Its empty cgroups are the next server's to remove (docs/design/cgroups.md).
    deadline = time.monotonic() + 20 * SLOW
    while pybox_cgroups_of(pid):
        assert time.monotonic() < deadline, pybox_cgroups_of(pid)
        time.sleep(0.1)
    log = b.log_text()
    assert re.search(rf"node id n1 is held by pid {pid} on host {re.escape(HOST)}", log), log
    assert "node id n1 claimed in the store" in log, log
    # The wait is the claim's TTL and a second at most, then the start of the jails.
    assert took < TTL + 1 + 30 * SLOW, took
    b.assert_healthy()


def test_a_clean_stop_gives_the_id_back(start_server, store):
    a = start_server(*flags(store))
    a.stop_and_check()
    b = start_server(*flags(store))
    log = b.log_text()
    assert "node id n1 claimed in the store" in log and "waiting up to" not in log, log


def redis_cli(redis, *args):
    p = subprocess.run(["redis-cli", "-p", str(redis.port), *args], capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_a_node_starts_with_redis_down_then_claims_and_counts_conflicts(start_server, tmp_path):
    redis = Redis(tmp_path)
    redis.stop()
    try:
        a = start_server(*flags(redis.uri))
        assert "the store cannot tell whether another server holds it" in a.log_text()
        a.assert_healthy()
        redis.start()
        wait_log(a, r"node id n1: claimed in the store again")
        assert redis_cli(redis, "HGET", "pbx:node:{n1}", "pid") == str(a.pid)
        # Another server takes the id (as if this node's claim had lapsed while Redis was out
        # of its reach): each renewal finds it held, says so and counts it; the node serves on.
        redis_cli(redis, "HSET", "pbx:node:{n1}", "token", "someone-else", "pid", "4242",
                  "host", "elsewhere")
        redis_cli(redis, "PEXPIRE", "pbx:node:{n1}", "60000")  # it renews; this node cannot
        wait_log(a, r"pybox: ERROR: node id n1 is held by another running server \(pid 4242 "
                    r"on host elsewhere, renewed \d+ s ago\)")
        deadline = time.monotonic() + 10 * SLOW
        while metric(a, "pybox_node_id_conflicts_total") < 2:
            assert time.monotonic() < deadline, a.log_text()
            time.sleep(0.1)
        a.assert_healthy()
        # The other gives it up: the node takes its id back.
        redis_cli(redis, "DEL", "pbx:node:{n1}")
        deadline = time.monotonic() + 10 * SLOW
        while redis_cli(redis, "HGET", "pbx:node:{n1}", "pid") != str(a.pid):
            assert time.monotonic() < deadline, a.log_text()
            time.sleep(0.1)
        a.stop_and_check()
        # A clean stop gave it back.
        assert redis_cli(redis, "EXISTS", "pbx:node:{n1}") == "0"
    finally:
        redis.stop()


@pytest.mark.parametrize("opt,bad", [("--node-ttl", "2"), ("--node-ttl", "3601"),
                                     ("--node-ttl", "x"), ("--drain", "3601"),
                                     ("--drain", "-1"), ("--drain", "1.5")])
def test_bad_ttls_and_drains_are_usage_errors(opt, bad, tmp_path):
    p = subprocess.run([PYBOX, "serve", opt, bad, "--data", str(tmp_path)],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert opt in p.stderr and len(p.stderr.strip().splitlines()) <= 2, p.stderr
