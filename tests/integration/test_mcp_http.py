"""`pybox serve`'s /mcp as the server sees it (docs/mcp.md): the caller's daily quota and audit
shared with /v1/execute, MCP sessions bound to their key, the sessions opened through one ended
with it (their processes gone), a caller's 17th MCP session ending its least recently used,
the Host rules (IP addresses, loopback names, --mcp-allowed-hosts), a cancel from another
connection, and a stop with MCP sessions open leaving nothing. The official SDK's view of the
same endpoint is tests/mcp/http.test.mjs. Every wait polls with a deadline.
"""
import hashlib
import json
import os
import sqlite3
import threading
import time

import pytest

from conftest import body_of
from test_sessions import RELAXED, Cell, keys_cli, state, wait_until

INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "pytest", "version": "1"}}}


def hdrs(key=None, sid=None, **extra):
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if key:
        h["Authorization"] = f"Bearer {key}"
    if sid:
        h["Mcp-Session-Id"] = sid
    h.update(extra)
    return h


def mcp(srv, msg, key=None, sid=None, timeout=60, **extra):
    return srv.request("POST", "/mcp", data=json.dumps(msg), headers=hdrs(key, sid, **extra),
                       timeout=timeout)


def open_mcp(srv, key=None):
    r = mcp(srv, INIT, key)
    assert r.status_code == 200, r.text
    sid = r.headers["Mcp-Session-Id"]
    assert mcp(srv, {"jsonrpc": "2.0", "method": "notifications/initialized"}, key,
               sid).status_code == 202
    return sid


def tool(srv, sid, name, args, key=None, rid=1, timeout=60):
    r = mcp(srv, {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                  "params": {"name": name, "arguments": args}}, key, sid, timeout=timeout)
    assert r.status_code == 200, r.text
    return body_of(r)["result"]


@pytest.fixture(scope="module")
def srv(module_start_server):
    return module_start_server(*RELAXED)


def test_runs_count_against_the_keys_quota_with_v1_execute(srv):
    k = keys_cli(srv, "create", "--name", "mcp-quota", "--rpm", "1000", "--rpd", "3")
    sid = open_mcp(srv, k)
    assert srv.post("/v1/execute", {"code": "print(1)"}, key=k).status_code == 200
    res = tool(srv, sid, "run_python", {"code": "print(2)"}, k)
    assert res["isError"] is False and res["structuredContent"]["stdout"] == "2\n", res
    assert srv.post("/v1/execute", {"code": "print(3)"}, key=k).status_code == 200
    # The quota of 3 is spent by both routes together: MCP's next run is refused, saying when.
    res = tool(srv, sid, "run_python", {"code": "print(4)"}, k, rid=2)
    assert res["isError"] is True, res
    assert "daily quota of 3" in json.dumps(res) and "retry in" in json.dumps(res), res
    assert srv.post("/v1/execute", {"code": "print(5)"}, key=k).status_code == 429


def test_an_mcp_run_is_audited_with_its_route(srv):
    code = f"print('audit {time.time_ns()}')"
    sid = open_mcp(srv)
    assert tool(srv, sid, "run_python", {"code": code})["isError"] is False
    digest = hashlib.sha256(code.encode()).hexdigest()
    conn = sqlite3.connect(f"file:{srv.data_dir / 'pybox.db'}?mode=ro", uri=True, timeout=10)
    try:
        cols = [row[1] for row in conn.execute("PRAGMA table_info(audit)")]
        rows = [dict(zip(cols, row)) for row in
                conn.execute("SELECT * FROM audit WHERE code_sha256 = ?", (digest,))]
    finally:
        conn.close()
    assert len(rows) == 1 and rows[0]["route"] == "/mcp" and rows[0]["status"] == "ok", rows


def test_an_mcp_session_is_bound_to_its_key(srv):
    a = keys_cli(srv, "create", "--name", "mcp-a", "--rpm", "1000")
    b = keys_cli(srv, "create", "--name", "mcp-b", "--rpm", "1000")
    sid = open_mcp(srv, a)
    ping = {"jsonrpc": "2.0", "id": 5, "method": "ping"}
    assert mcp(srv, ping, a, sid).status_code == 200
    for other in (b, None):  # another key, and no key, know nothing of it
        r = mcp(srv, ping, other, sid)
        assert r.status_code == 404, r.text
        assert body_of(r)["error"]["code"] == -32600 and body_of(r)["id"] is None
    # A session made through it is the key's too: the other key's call gets an isError.
    made = tool(srv, sid, "create_session", {}, a)["structuredContent"]["session_id"]
    other_sid = open_mcp(srv, b)
    res = tool(srv, other_sid, "run_python", {"code": "1", "session_id": made}, b)
    assert res["isError"] is True and "create a new one with create_session" in json.dumps(res), res
    assert tool(srv, sid, "run_python", {"code": "6*7", "session_id": made}, a)[
        "structuredContent"]["value"] is not None


def test_delete_ends_the_sessions_opened_through_it(srv):
    sid = open_mcp(srv)
    made = tool(srv, sid, "create_session", {})["structuredContent"]["session_id"]
    cell = Cell(srv, made)
    cell.assert_alive()
    r = srv.request("DELETE", "/mcp", headers=hdrs(sid=sid))
    assert r.status_code == 204, r.text
    cell.assert_gone(timeout=10)
    assert state(srv, made)["status"] == "dead"
    assert mcp(srv, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, sid=sid).status_code == 404


def test_a_callers_17th_mcp_session_ends_its_least_recently_used(srv):
    k = keys_cli(srv, "create", "--name", "mcp-many", "--rpm", "100000")
    sids = [open_mcp(srv, k) for _ in range(16)]
    made = tool(srv, sids[0], "create_session", {}, k)["structuredContent"]["session_id"]
    cell = Cell(srv, made, key=k)
    for sid in sids[1:]:  # the first is now the least recently used
        assert mcp(srv, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, k, sid).status_code == 200
    newest = open_mcp(srv, k)
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    assert mcp(srv, ping, k, sids[0]).status_code == 404
    for sid in sids[1:] + [newest]:
        assert mcp(srv, ping, k, sid).status_code == 200
    cell.assert_gone(timeout=10)  # ended with the MCP session that opened it
    for sid in sids[1:] + [newest]:
        assert srv.request("DELETE", "/mcp", headers=hdrs(k, sid)).status_code == 204


def test_host_rules(start_server):
    s = start_server(*RELAXED, "--mcp-allowed-hosts", "pybox.example, other.example")
    ping = json.dumps(INIT)
    for host, status in [("10.1.2.3:8080", 200), ("[::1]:9", 200), ("localhost", 200),
                         ("LOCALHOST:80", 200), ("pybox.example", 200), ("other.example:1", 200),
                         ("evil.example", 403), ("pybox.example.evil", 403), ("", 403),
                         ("10.1.2", 403)]:
        r = s.request("POST", "/mcp", data=ping, headers=hdrs(Host=host))
        assert r.status_code == status, (host, r.status_code, r.text)
    for origin, status in [("http://pybox.example", 200), ("https://127.0.0.1:3000", 200),
                           ("http://evil.example", 403), ("null", 403)]:
        r = s.request("POST", "/mcp", data=ping, headers=hdrs(Origin=origin))
        assert r.status_code == status, (origin, r.status_code, r.text)
        if status == 403:
            assert body_of(r)["error"]["message"], r.text


def test_a_cancel_from_another_connection_kills_the_run(srv):
    sid = open_mcp(srv)
    made = tool(srv, sid, "create_session", {})["structuredContent"]["session_id"]
    cell = Cell(srv, made)
    answer = {}

    def long_call():
        answer["r"] = mcp(srv, {"jsonrpc": "2.0", "id": 77, "method": "tools/call",
                                "params": {"name": "run_python", "arguments": {
                                    "session_id": made,
                                    "code": "import time\nopen('/work/started','w').close()\n"
                                            "time.sleep(60)"}}}, sid=sid, timeout=90)

    t = threading.Thread(target=long_call)
    t.start()
    # Seen from the host: the session's /work holds the file the call made.
    wait_until("the call started",
               lambda: any(os.path.exists(f"/proc/{p}/root/work/started") for p in cell.pids),
               timeout=20)
    t0 = time.monotonic()
    r = mcp(srv, {"jsonrpc": "2.0", "method": "notifications/cancelled",
                  "params": {"requestId": 77, "reason": "test"}}, sid=sid)
    assert r.status_code == 202, r.text
    t.join(timeout=30)
    assert not t.is_alive() and time.monotonic() - t0 < 10
    assert answer["r"].status_code == 204, answer["r"].text  # a cancelled request: no response
    # The session lives on, and its next call runs at once.
    res = tool(srv, sid, "run_python", {"session_id": made, "code": "print('after')"}, rid=4)
    assert res["structuredContent"]["stdout"] == "after\n", res


def test_a_stop_with_mcp_sessions_open_leaves_nothing(start_server):
    s = start_server(*RELAXED)
    sid = open_mcp(s)
    made = tool(s, sid, "create_session", {})["structuredContent"]["session_id"]
    cell = Cell(s, made)
    assert tool(s, sid, "run_python", {"code": "print(1)"})["isError"] is False
    s.stop_and_check()  # exit 0 within its time, and nothing of the server left on the host
    cell.assert_gone()


def test_pybox_mcp_server_describes_the_servers_policy(start_server):
    """`pybox mcp --server` states the server's limits and modules for its key, from
    GET /v1/info (pybox_client_info()), not its own defaults."""
    from test_mcp_stdio import Client

    s = start_server(*RELAXED, "--timeout", "7", "--modules", "pydoc_data")
    k = keys_cli(s, "create", "--name", "mcp-describe", "--rpm", "1000", "--timeout", "42")
    c = Client("--server", s.url, "--api-key", k)
    try:
        instr = c.initialize()["instructions"]
        assert "7 s of wall-clock time per run by default (at most 42 s" in instr, instr
        assert "pydoc_data" in instr and "numpy" in instr, instr
        desc = next(t for t in c.req("tools/list")["result"]["tools"]
                    if t["name"] == "run_python")["description"]
        assert "pydoc_data" in desc, desc
    finally:
        assert c.close() == 0


def test_a_client_that_takes_only_event_streams_gets_one(srv):
    sid = open_mcp(srv)
    r = srv.request("POST", "/mcp", headers=dict(hdrs(sid=sid), Accept="text/event-stream"),
                    data=json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                                     "params": {"name": "run_python",
                                                "arguments": {"code": "print(3)"}}}))
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/event-stream", r.headers
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e.get("id") for e in events] == [9], events
    assert events[0]["result"]["structuredContent"]["stdout"] == "3\n", events

