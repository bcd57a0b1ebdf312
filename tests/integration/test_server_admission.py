"""Admission (issue 3 §3): who the client is, per-minute and per-day limits (across a restart),
what is charged, the concurrency cap, API keys, the admin key, and that no key reaches a cell.

Several clients are simulated by connecting from different loopback addresses (127.0.0.x), so
one server serves several tests without their per-minute windows meeting.
"""
import json
import re
import secrets
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import PYBOX, SLOW, body_of, clean_env, expect_error, wait_metric

HELLO = {"code": "print('Hello, World!')"}


def ok(resp):
    body = body_of(resp)
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text[:2000]}"
    assert body["status"] == "success", body
    return body


def rate_limited(resp, daily=False):
    body = expect_error(resp, 429, "RateLimitExceeded")
    ra = resp.headers.get("Retry-After")
    assert ra is not None and ra.isdigit(), f"429 without a Retry-After in seconds: {resp.headers}"
    ra = int(ra)
    if daily:
        assert 1 <= ra <= 86400, ra
        assert re.search(r"dai|day|quota", body["error_details"]["message"], re.I), body
    else:
        assert 1 <= ra <= 60, ra
        assert re.search(r"minute", body["error_details"]["message"], re.I), body
    return body


@pytest.fixture(scope="module")
def rpm3(module_start_server):
    """Anonymous limit 3 per minute; each test uses its own 127.0.0.x client address."""
    return module_start_server("--rpm", "3", "--rpd", "1000", "--timeout", "10")


# ---------------------------------------------------------------------------------------------
# client identity


def test_client_is_the_peer(rpm3):
    body = ok(rpm3.execute(HELLO, source="127.0.0.2"))
    assert body["user_info"]["ip_address"] == "127.0.0.2"
    assert body["user_info"]["requests_today"] == 1


def test_spoofed_xff_from_untrusted_peer_changes_nothing(rpm3):
    src = "127.0.0.3"
    seen = []
    for i, xff in enumerate(["203.0.113.1", "203.0.113.2, 198.51.100.7", "10.9.8.7"]):
        body = ok(rpm3.execute(HELLO, source=src, headers={"X-Forwarded-For": xff}))
        assert body["user_info"]["ip_address"] == src, body["user_info"]
        seen.append(body["user_info"]["requests_today"])
    assert seen == [1, 2, 3]
    # A fourth, with yet another forged address, is the same client over its limit.
    rate_limited(rpm3.execute(HELLO, source=src, headers={"X-Forwarded-For": "192.0.2.55"}))
    rate_limited(rpm3.execute(HELLO, source=src))


def test_per_minute_limit(rpm3):
    src = "127.0.0.4"
    for i in range(3):
        assert ok(rpm3.execute(HELLO, source=src))["user_info"]["requests_today"] == i + 1
    rate_limited(rpm3.execute(HELLO, source=src))
    # /v1/execute shares the window.
    rate_limited(rpm3.v1(HELLO, source=src))
    # Another client is not affected.
    ok(rpm3.execute(HELLO, source="127.0.0.5"))


def test_only_admitted_valid_requests_are_charged(rpm3):
    src = "127.0.0.6"
    # Five failures that must not consume the window of 3 nor the daily quota.
    expect_error(rpm3.execute({"stdin_data": "no code"}, source=src), 400)
    expect_error(rpm3.post("/execute", data=b"{not json", source=src), 400)
    expect_error(rpm3.post("/execute", data=b'{"code": "print(1)"}', content_type="text/plain",
                           source=src), 415)
    expect_error(rpm3.execute({"code": "print(1)\n" + "#" * 2100}, source=src), 400,
                 "ValidationError")
    expect_error(rpm3.execute(HELLO, key="wrong-key", source=src), 401)
    seen = [ok(rpm3.execute(HELLO, source=src))["user_info"]["requests_today"] for _ in range(3)]
    assert seen == [1, 2, 3], seen
    rate_limited(rpm3.execute(HELLO, source=src))


def test_admin_key_bypasses_rates_and_import_restrictions(rpm3):
    src = "127.0.0.7"
    for _ in range(6):
        body = ok(rpm3.execute(HELLO, key=rpm3.admin_key, source=src))
        assert body["user_info"]["role"] == "admin"
        assert body["user_info"]["rate_limits_applied"] is False
    body = ok(rpm3.execute({"code": "import os, subprocess\nprint(os.getuid() >= 0)"},
                           key=rpm3.admin_key, source=src))
    assert body["execution_details"]["stdout"] == "True\n"
    # api_key in the body works the same.
    ok(rpm3.execute({"code": "import os\nprint(1)", "api_key": rpm3.admin_key}, source=src))
    # Anonymous from the same address: untouched window, restricted imports.
    expect_error(rpm3.execute({"code": "import os"}, source=src), 400, "ForbiddenImportError")


# ---------------------------------------------------------------------------------------------
# trusted proxies


def test_trusted_proxy_xff_clients_get_their_own_windows(start_server):
    s = start_server("--trusted-proxy", "127.0.0.1/32", "--rpm", "1", "--rpd", "1000")
    a = ok(s.execute(HELLO, headers={"X-Forwarded-For": "203.0.113.10"}))
    assert a["user_info"]["ip_address"] == "203.0.113.10"
    b = ok(s.execute(HELLO, headers={"X-Forwarded-For": "203.0.113.20"}))
    assert b["user_info"]["ip_address"] == "203.0.113.20"
    assert b["user_info"]["requests_today"] == 1
    rate_limited(s.execute(HELLO, headers={"X-Forwarded-For": "203.0.113.10"}))
    rate_limited(s.execute(HELLO, headers={"X-Forwarded-For": "203.0.113.20"}))
    # The right-most address that is not a trusted proxy is the client; what the client wrote
    # further left is ignored.
    c = ok(s.execute(HELLO, headers={"X-Forwarded-For": "203.0.113.10, 198.51.100.30"}))
    assert c["user_info"]["ip_address"] == "198.51.100.30"
    d = ok(s.execute(HELLO, headers={"X-Forwarded-For": "198.51.100.40, 127.0.0.1"}))
    assert d["user_info"]["ip_address"] == "198.51.100.40"
    # A peer outside the trusted range is itself the client, whatever it forwards.
    e = ok(s.execute(HELLO, source="127.0.0.9", headers={"X-Forwarded-For": "203.0.113.99"}))
    assert e["user_info"]["ip_address"] == "127.0.0.9"
    # A malformed header from the proxy leaves the proxy as the client.
    g = ok(s.execute(HELLO, headers={"X-Forwarded-For": "not-an-address"}))
    assert g["user_info"]["ip_address"] == "127.0.0.1"
    # Without the header, the proxy itself is the client (its window is now used up).
    rate_limited(s.execute(HELLO))


# ---------------------------------------------------------------------------------------------
# daily quota, across a restart


def test_daily_quota_survives_restart(start_server):
    s = start_server("--rpm", "100", "--rpd", "3")
    a, b = "127.0.0.11", "127.0.0.12"
    for i in range(3):
        u = ok(s.execute(HELLO, source=a))["user_info"]
        assert u["daily_quota_limit"] == 3
        assert (u["requests_today"], u["requests_remaining_today"]) == (i + 1, 2 - i), u
    rate_limited(s.execute(HELLO, source=a), daily=True)
    for i in range(2):
        assert ok(s.execute(HELLO, source=b))["user_info"]["requests_today"] == i + 1

    s.restart()

    # The daily limit still holds for a, and b's count continues where it was.
    rate_limited(s.execute(HELLO, source=a), daily=True)
    rate_limited(s.v1(HELLO, source=a), daily=True)
    u = ok(s.execute(HELLO, source=b))["user_info"]
    assert (u["requests_today"], u["requests_remaining_today"]) == (3, 0), u
    rate_limited(s.execute(HELLO, source=b), daily=True)
    # A new client starts from zero.
    assert ok(s.execute(HELLO, source="127.0.0.13"))["user_info"]["requests_today"] == 1


# ---------------------------------------------------------------------------------------------
# the concurrency cap


def test_concurrency_cap_503_at_once(start_server):
    s = start_server("--max-concurrency", "2", "--rpm", "100", "--rpd", "1000", "--timeout", "20",
                     "--queue", "0")
    sleep_s = 3
    barrier = threading.Barrier(4)
    results = [None] * 4

    def fire(i):
        barrier.wait()
        t0 = time.monotonic()
        r = s.session(f"127.0.0.{20 + i}").post(
            s.url + "/execute", data=json.dumps(
                {"code": f"import time\ntime.sleep({sleep_s})\nprint('slept')"}),
            headers={"Content-Type": "application/json"}, timeout=60)
        results[i] = (r, time.monotonic() - t0, time.monotonic())

    threads = [threading.Thread(target=fire, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    # While the sleepers sleep, the server says two slots are busy.
    wait_metric(s, "pybox_cells_busy", 2)
    health = body_of(s.get("/v1/health"))
    for t in threads:
        t.join(90)
    assert all(r is not None for r in results), results

    ok_ = [x for x in results if x[0].status_code == 200]
    busy = [x for x in results if x[0].status_code == 503]
    assert len(ok_) == 2 and len(busy) == 2, [(x[0].status_code, x[0].text[:300])
                                               for x in results]
    for r, elapsed, _ in ok_:
        assert body_of(r)["execution_details"]["stdout"] == "slept\n"
        assert elapsed >= sleep_s
    first_done = min(end for _, _, end in ok_)
    for r, elapsed, end in busy:
        expect_error(r, 503, "ServerBusy")
        assert end < first_done - 1.0, "the 503s did not come back before the sleepers ended"
        assert elapsed < 2.0 * SLOW, f"a 503 took {elapsed:.2f} s"
    assert health.get("active_executions") == 2, health
    # Refused requests were not charged: the next request of a refused client is its first.
    u = ok(s.execute(HELLO, source="127.0.0.29"))["user_info"]
    assert u["requests_today"] == 1
    refused_sources = [f"127.0.0.{20 + i}" for i, x in enumerate(results)
                       if x[0].status_code == 503]
    for src in refused_sources:
        assert ok(s.execute(HELLO, source=src))["user_info"]["requests_today"] == 1, src


# ---------------------------------------------------------------------------------------------
# the admin key: variables, and that it never reaches a cell


def test_admin_key_from_python_exe_key(start_server):
    s = start_server("--rpm", "1", admin_env="PYTHON_EXE_KEY")
    for _ in range(3):
        assert ok(s.execute(HELLO, key=s.admin_key))["user_info"]["role"] == "admin"
    expect_error(s.execute(HELLO, key=s.admin_key + "x"), 401, "Unauthorized")


def test_no_admin_key_configured_means_any_key_is_401(start_server):
    s = start_server("--rpm", "5", admin_env=None)
    expect_error(s.execute(HELLO, key=s.admin_key), 401, "Unauthorized")
    ok(s.execute(HELLO))


SCAN_CODE = r'''
import json, os
key = bytes(a ^ b for a, b in zip(bytes.fromhex("{enc}"), bytes.fromhex("{mask}")))
hits, scanned = [], 0
def check(label, data):
    if key in data or key.lower() in data.lower():
        hits.append(label)
check("os.environ", "\n".join(f"{{k}}={{v}}" for k, v in os.environ.items()).encode())
try:
    pids = os.listdir("/proc")
except OSError:
    pids = []
for pid in pids:
    if pid.isdigit() or pid == "self":
        for part in ("environ", "cmdline"):
            try:
                with open(f"/proc/{{pid}}/{{part}}", "rb") as fh:
                    check(f"/proc/{{pid}}/{{part}}", fh.read())
            except OSError:
                pass
for top in ("/work", "/tmp", "/etc", "/run", "/var", "/home", "/root", "/dev/shm", "/opt",
            "/srv", "/mnt", "/"):
    for root, dirs, files in os.walk(top):
        if top == "/":
            dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "usr", "lib", "lib64",
                                                     "bin", "sbin")]
        for name in files:
            p = os.path.join(root, name)
            try:
                if os.path.islink(p) or not os.path.isfile(p) or os.path.getsize(p) > (4 << 20):
                    continue
                with open(p, "rb") as fh:
                    check(p, fh.read())
                scanned += 1
            except OSError:
                pass
print(json.dumps({{"hits": hits, "scanned": scanned, "env": sorted(os.environ)}}))
'''


def scan_code_for(key):
    raw = key.encode()
    mask = secrets.token_bytes(len(raw))
    enc = bytes(a ^ b for a, b in zip(raw, mask))
    code = SCAN_CODE.format(enc=enc.hex(), mask=mask.hex())
    assert key not in code
    return code


def assert_key_unseen(resp, key):
    body = body_of(resp)
    assert resp.status_code == 200, resp.text[:2000]
    out = body["execution_details"]["stdout"]
    assert key not in json.dumps(body), "the key appears in the response"
    report = json.loads(out)
    assert report["hits"] == [], f"the key is visible inside the sandbox at {report['hits']}"
    assert report["scanned"] > 0, report
    for name in ("PYBOX_ADMIN_KEY", "PYTHON_EXE_KEY"):
        assert name not in report["env"], report["env"]


@pytest.mark.parametrize("admin_env", ["PYBOX_ADMIN_KEY", "PYTHON_EXE_KEY"])
def test_admin_key_never_reaches_the_sandbox(start_server, admin_env):
    s = start_server("--timeout", "20", admin_env=admin_env)
    code = scan_code_for(s.admin_key)
    assert_key_unseen(s.execute({"code": code}, key=s.admin_key, timeout=60), s.admin_key)
    assert_key_unseen(s.execute({"code": code, "api_key": s.admin_key}, timeout=60), s.admin_key)


# ---------------------------------------------------------------------------------------------
# API keys (`pybox keys`)


def keys_cli(server, *args, check=True):
    p = subprocess.run([PYBOX, "keys", *args, "--data", str(server.data_dir)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60,
                       env=clean_env())
    if check:
        assert p.returncode == 0, f"pybox keys {args}: {p.returncode}\n{p.stdout}\n{p.stderr}"
    return p


def create_key(server, name, *opts):
    """`pybox keys create --name NAME --data DIR [opts]`: the token it prints alone on stdout."""
    p = keys_cli(server, "create", "--name", name, *opts)
    token = p.stdout.strip()
    assert token and len(token.split()) == 1 and len(token) >= 20, (
        f"pybox keys create printed {p.stdout!r}, not one token")
    return token


def revoke_key(server, name):
    keys_cli(server, "revoke", name)


@pytest.fixture
def keyed(start_server):
    return start_server("--rpm", "1", "--rpd", "1000", "--timeout", "20")


def test_api_key_policy_overrides_anonymous(keyed):
    key = create_key(keyed, "alice", "--rpm", "3")
    # Bearer header.
    for i in range(2):
        u = ok(keyed.execute(HELLO, key=key))["user_info"]
        assert u.get("key_name") == "alice", u
        assert "role" not in u or u["role"] != "admin"
    # api_key in the body; the same key's window (3 per minute).
    ok(keyed.execute(dict(HELLO, api_key=key)))
    rate_limited(keyed.execute(HELLO, key=key))
    # Anonymous callers from the same address keep their own window (1 per minute).
    ok(keyed.execute(HELLO))
    rate_limited(keyed.execute(HELLO))
    # Without --modules all, imports stay restricted.
    key2 = create_key(keyed, "bob", "--rpm", "10")
    expect_error(keyed.execute({"code": "import os"}, key=key2), 400, "ForbiddenImportError")


def test_api_key_modules_all(keyed):
    key = create_key(keyed, "carol", "--rpm", "10", "--modules", "all")
    body = ok(keyed.execute({"code": "import os, subprocess\nprint('imported')"}, key=key))
    assert body["execution_details"]["stdout"] == "imported\n"


def test_bad_and_revoked_keys_are_401(keyed):
    expect_error(keyed.execute(HELLO, key="pbx_" + secrets.token_hex(20)), 401, "Unauthorized")
    expect_error(keyed.execute(dict(HELLO, api_key="not a key at all")), 401, "Unauthorized")
    key = create_key(keyed, "dave", "--rpm", "10")
    ok(keyed.execute(HELLO, key=key))
    revoke_key(keyed, "dave")
    expect_error(keyed.execute(HELLO, key=key), 401, "Unauthorized")
    expect_error(keyed.execute(dict(HELLO, api_key=key)), 401, "Unauthorized")
    expect_error(keyed.v1(HELLO, key=key), 401, "Unauthorized")


def test_keys_are_stored_hashed_and_listed_without_secret(keyed):
    key = create_key(keyed, "erin")
    listing = keys_cli(keyed, "list").stdout
    assert "erin" in listing and key not in listing, listing
    with open(keyed.data_dir / "pybox.db", "rb") as f:
        assert key.encode() not in f.read()
    conn = sqlite3.connect(f"file:{keyed.data_dir / 'pybox.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT name, hash FROM keys").fetchall()
    finally:
        conn.close()
    assert any(n == "erin" for n, _ in rows), rows
    assert all(key.encode() not in (h if isinstance(h, bytes) else str(h).encode())
               for _, h in rows)


def test_api_key_never_reaches_the_sandbox(keyed):
    key = create_key(keyed, "frank", "--rpm", "10", "--modules", "all")
    code = scan_code_for(key)
    assert_key_unseen(keyed.execute({"code": code}, key=key, timeout=60), key)
    assert_key_unseen(keyed.execute({"code": code, "api_key": key}, timeout=60), key)


def test_api_key_module_list(keyed):
    # `--modules LIST`: these modules besides the default allowlist.
    key = create_key(keyed, "grace", "--rpm", "10", "--modules", "os")
    body = ok(keyed.execute({"code": "import os\nprint(os.sep)"}, key=key))
    assert body["execution_details"]["stdout"] == "/\n"
    expect_error(keyed.execute({"code": "import subprocess"}, key=key), 400,
                 "ForbiddenImportError")


def test_api_key_daily_quota_and_limits(keyed):
    key = create_key(keyed, "heidi", "--rpm", "10", "--rpd", "2")
    for i in range(2):
        u = ok(keyed.execute(HELLO, key=key))["user_info"]
        assert (u["daily_quota_limit"], u["requests_today"]) == (2, i + 1), u
    rate_limited(keyed.execute(HELLO, key=key), daily=True)
    # A key's wall limit (30 s) overrides the server's (--timeout 20 here): 25 s may be asked
    # with the key, not without: /v1/execute refuses it, /execute runs it with the caller's
    # limit and says so.
    key2 = create_key(keyed, "ivan", "--rpm", "10", "--timeout", "30")
    body = ok(keyed.execute({"code": "print(1)", "timeout": 25}, key=key2))
    assert (body["timeout_applied"], body["timeout_clamped"]) == (25, False), body
    expect_error(keyed.v1({"code": "print(1)", "timeout": 25}, source="127.0.0.40"), 400,
                 "ValidationError")
    body = ok(keyed.execute({"code": "print(1)", "timeout": 25}, source="127.0.0.42"))
    assert (body["timeout_applied"], body["timeout_clamped"]) == (20, True), body


def test_key_ceilings_bind_a_request_that_asks_nothing(keyed):
    # A key held below the server's defaults (--timeout 20, 256 MiB here) runs within its
    # own ceilings when the request names no timeout and no memory_mb: 2 s and 64 MiB.
    key = create_key(keyed, "tight", "--rpm", "10", "--timeout", "2", "--memory", "64")
    sleep = {"code": "import time\ntime.sleep(4)\nprint('woke')"}
    hog = {"code": "b = b'x' * (150 << 20)\nprint(len(b))"}
    r = keyed.v1(sleep, key=key, timeout=60)
    assert r.status_code == 200 and body_of(r)["status"] == "timeout", r.text[:2000]
    r = keyed.v1(hog, key=key, timeout=60)
    assert r.status_code == 200 and body_of(r)["status"] == "memory_limit", r.text[:2000]
    body = body_of(keyed.execute(sleep, key=key, timeout=60))
    assert body["status"] != "success" and body["timeout_applied"] == 2, body
    assert "woke" not in body.get("output", ""), body
    body = body_of(keyed.execute(hog, key=key, timeout=60))
    assert body["status"] != "success" and str(150 << 20) not in body.get("output", ""), body
    # What it asks within its ceilings it gets.
    r = keyed.v1({"code": "print(1)", "timeout": 1, "memory_mb": 32}, key=key, timeout=60)
    assert r.status_code == 200 and body_of(r)["status"] == "ok", r.text[:2000]


def test_admin_api_key_bypasses_rates(keyed):
    key = create_key(keyed, "judy", "--admin")
    for _ in range(4):
        u = ok(keyed.execute({"code": "import os\nprint(1)"}, key=key))["user_info"]
        assert u["role"] == "admin" and u["rate_limits_applied"] is False, u


def test_network_key_is_not_refused_by_policy(keyed):
    expect_error(keyed.execute({"code": "print(1)", "allow_network": True}, source="127.0.0.41"),
                 403, "NetworkNotAllowed")
    key = create_key(keyed, "ken", "--rpm", "10", "--network")
    r = keyed.execute({"code": "print(1)", "allow_network": True}, key=key)
    # Allowed by policy: it runs, or the server says it has no network to give (501).
    if r.status_code != 200:
        expect_error(r, 501, "NetworkUnavailable")
