"""A key's session policy (`pybox keys create --sessions N --session-idle-ttl S
--session-lifetime S`), against a real `pybox serve`: the key's cap on open sessions, its longest
idle time and lifetime in place of the server's, the server's defaults cut to them, what
GET /v1/info says, and a store of the older schema upgraded in place (docs/api.md "Sessions",
README "API keys").

As on /v1/execute, where a timeout over the key's limit is a 400 ValidationError, a span asked
over the key's longest is a 400, never shortened unasked; a session that asks none gets the
server's default, cut to the key's longest. Every wait polls with a deadline.
"""
import hashlib
import json
import sqlite3
import time

import pytest

from conftest import body_of, expect_error
from test_sessions import (RELAXED, SES, create, delete, headers, keys_cli, post, state,
                           wait_status)


@pytest.fixture(scope="module")
def srv(module_start_server):
    # 2 open sessions of an anonymous client, 3 of a key, 64 on the server.
    return module_start_server(*RELAXED, "--sessions", "2:3:64")


def key(srv, name, *opts):
    return keys_cli(srv, "create", "--name", name, "--rpm", "100000", *opts)


def patch(srv, sid, body, k):
    return srv.request("PATCH", f"{SES}/{sid}", data=json.dumps(body), headers=headers(k))


def info(srv, k=None):
    r = srv.request("GET", "/v1/info", headers=headers(k, False))
    assert r.status_code == 200, r.text
    return body_of(r)


def test_a_keys_own_cap(srv):
    one = key(srv, "cap-one", "--sessions", "1")
    other = key(srv, "cap-other")
    a = create(srv, key=one)
    body = expect_error(post(srv, SES, key=one), 429, "SessionLimitExceeded")
    assert "the caller" in body["error"]["message"], body
    # Another key, and an anonymous client, still open theirs (the server's caps for them).
    b = [create(srv, key=other) for _ in range(3)]
    expect_error(post(srv, SES, key=other), 429, "SessionLimitExceeded")
    c = create(srv, source="127.0.0.9")
    # Its one session ended, the key opens another.
    assert delete(srv, a["id"], key=one).status_code == 204
    a = create(srv, key=one)
    for s, k, source in [(a, one, None), (c, None, "127.0.0.9")] + [(x, other, None) for x in b]:
        assert delete(srv, s["id"], key=k, source=source).status_code == 204


def test_a_keys_cap_above_the_servers_per_key_cap(srv):
    many = key(srv, "cap-many", "--sessions", "5")
    opened = [create(srv, key=many) for _ in range(5)]
    expect_error(post(srv, SES, key=many), 429, "SessionLimitExceeded")
    for s in opened:
        assert delete(srv, s["id"], key=many).status_code == 204


def test_the_servers_total_still_binds_a_key(start_server):
    srv = start_server(*RELAXED, "--sessions", "1:1:2")
    big = keys_cli(srv, "create", "--name", "big", "--rpm", "100000", "--sessions", "10")
    create(srv, key=big)
    create(srv, key=big)
    body = expect_error(post(srv, SES, key=big), 429, "SessionLimitExceeded")
    assert "the server" in body["error"]["message"], body


def test_spans_over_the_keys_longest_are_400(srv):
    short = key(srv, "span-short", "--session-lifetime", "5", "--session-idle-ttl", "2")
    body = expect_error(post(srv, SES, {"max_lifetime_s": 3600}, key=short), 400,
                        "ValidationError")
    assert body["error"]["message"] == "`max_lifetime_s` 3600 is over this caller's limit of 5 s"
    expect_error(post(srv, SES, {"idle_ttl_s": 3}, key=short), 400, "ValidationError")
    # Asking nothing: the server's defaults (600, 3600), cut to the key's longest.
    s = create(srv, key=short)
    assert (s["limits"]["idle_ttl_s"], s["limits"]["max_lifetime_s"]) == (2, 5), s
    delete(srv, s["id"], key=short)
    s = create(srv, {"max_lifetime_s": 4, "idle_ttl_s": 1}, key=short)
    assert (s["limits"]["idle_ttl_s"], s["limits"]["max_lifetime_s"]) == (1, 4), s
    # PATCH stays within the key's longest too.
    expect_error(patch(srv, s["id"], {"max_lifetime_s": 6}, short), 400, "ValidationError")
    expect_error(patch(srv, s["id"], {"idle_ttl_s": 3}, short), 400, "ValidationError")
    delete(srv, s["id"], key=short)


def test_a_keys_longest_may_be_over_the_servers(srv):
    long = key(srv, "span-long", "--session-lifetime", "172800", "--session-idle-ttl", "7200")
    # The server's most is 86400 and 3600; the key's replaces it, the default stays the server's.
    s = create(srv, key=long)
    assert (s["limits"]["idle_ttl_s"], s["limits"]["max_lifetime_s"]) == (600, 3600), s
    b = body_of(patch(srv, s["id"], {"idle_ttl_s": 7200, "max_lifetime_s": 172800}, long))
    assert (b["limits"]["idle_ttl_s"], b["limits"]["max_lifetime_s"]) == (7200, 172800), b
    expect_error(patch(srv, s["id"], {"max_lifetime_s": 172801}, long), 400, "ValidationError")
    delete(srv, s["id"], key=long)
    # Anonymous callers keep the server's most.
    expect_error(post(srv, SES, {"max_lifetime_s": 86401}), 400, "ValidationError")


def test_a_session_ends_at_its_keys_lifetime(srv):
    short = key(srv, "span-ends", "--session-lifetime", "3")
    s = create(srv, key=short)
    assert s["limits"]["max_lifetime_s"] == 3, s
    b = wait_status(srv, s["id"], "dead", key=short, timeout=15)
    assert b["dead_reason"] == "max_lifetime", b
    body = expect_error(post(srv, f"{SES}/{s['id']}/execute", {"code": "1"}, key=short), 410,
                        "SessionDead")
    assert body["error"]["reason"] == "max_lifetime", body


def test_info_shows_the_callers_session_policy(srv):
    k = key(srv, "info-k", "--sessions", "1", "--session-lifetime", "5")
    assert info(srv, k)["sessions"] == {"max_open": 1, "max_open_server": 64, "idle_ttl_s": 3600,
                                        "default_idle_ttl_s": 600, "max_lifetime_s": 5,
                                        "default_max_lifetime_s": 5}
    plain = key(srv, "info-plain")
    server = {"max_open_server": 64, "idle_ttl_s": 3600, "default_idle_ttl_s": 600,
              "max_lifetime_s": 86400, "default_max_lifetime_s": 3600}
    assert info(srv, plain)["sessions"] == dict(server, max_open=3)
    assert info(srv, srv.admin_key)["sessions"] == dict(server, max_open=3)
    assert info(srv)["sessions"] == dict(server, max_open=2)


def test_info_without_sessions(start_server):
    srv = start_server("--sessions", "4:16:0")
    assert info(srv)["sessions"] is None


# ---------------------------------------------------------------------------------------------
# A store of schema version 1 (pybox before per-key session policies)

SCHEMA_V1 = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version (version) VALUES (1);
CREATE TABLE keys (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
  hash BLOB NOT NULL UNIQUE, created INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,
  rpm INTEGER NOT NULL DEFAULT 0, rpd INTEGER NOT NULL DEFAULT 0,
  timeout_ms INTEGER NOT NULL DEFAULT 0, memory_bytes INTEGER NOT NULL DEFAULT 0,
  all_modules INTEGER NOT NULL DEFAULT 0, modules TEXT, network INTEGER NOT NULL DEFAULT 0,
  admin INTEGER NOT NULL DEFAULT 0);
CREATE TABLE quota (client TEXT NOT NULL, day TEXT NOT NULL, count INTEGER NOT NULL,
  PRIMARY KEY (client, day)) WITHOUT ROWID;
CREATE TABLE audit (id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, client TEXT NOT NULL,
  key_name TEXT, route TEXT NOT NULL, code_sha256 TEXT NOT NULL, status TEXT NOT NULL,
  duration_ms REAL NOT NULL);
CREATE INDEX audit_time ON audit (time_ms);
"""


def old_store(path, token):
    """A version-1 store at `path` holding the key `old` (rpm 77) of `token`."""
    db = sqlite3.connect(path)
    db.executescript(SCHEMA_V1)
    # The store keeps the token's BLAKE2b-256 (libsodium's crypto_generichash), never the token.
    db.execute("INSERT INTO keys (name, prefix, hash, created, rpm) VALUES (?, ?, ?, ?, 77)",
               ("old", token[:10], hashlib.blake2b(token.encode(), digest_size=32).digest(),
                int(time.time())))
    db.commit()
    db.close()


def test_a_server_upgrades_an_old_store(start_server, tmp_path):
    token = "pbx_" + "A" * 40 + "old"
    path = tmp_path / "old.db"
    old_store(str(path), token)
    srv = start_server(*RELAXED, "--store", f"sqlite:{path}", "--sessions", "2:3:64")
    i = info(srv, token)
    assert i["policy"] == "key" and i["key_name"] == "old", i
    assert i["rate_limits"]["requests_per_minute"] == 77, i
    # The old key has the server's session policy.
    assert i["sessions"]["max_open"] == 3 and i["sessions"]["max_lifetime_s"] == 86400, i
    s = create(srv, key=token)
    assert state(srv, s["id"], key=token)["status"] == "idle"
    delete(srv, s["id"], key=token)
    db = sqlite3.connect(path)
    try:
        assert [v for (v,) in db.execute("SELECT version FROM schema_version ORDER BY 1")] == [
            1, 2, 3]
        assert db.execute("SELECT sessions, session_idle_ttl_s, session_lifetime_s, concurrency "
                          "FROM keys WHERE name = 'old'").fetchone() == (0, 0, 0, 0)
    finally:
        db.close()
    # A key made on the upgraded store has its own.
    new = keys_cli(srv, "create", "--name", "new", "--sessions", "1", "--store", f"sqlite:{path}")
    assert info(srv, new)["sessions"]["max_open"] == 1
