"""`pybox serve --node-id ID` (docs/deploy.md): session and MCP session ids name their node
(`ses_ID_<32 hex>`, `mcp_ID_<32 hex>`), so a proxy routes them without shared state, and a node
that gets a request for another node's session answers 421 MisdirectedRequest naming the owner,
never a new session; a node without an id keeps the ids it always had. A bad id is a usage error.
"""
import json
import re
import subprocess

import pytest

from conftest import PYBOX, body_of, clean_env, expect_error
from test_sessions import RELAXED, SES, create, post

INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "pytest", "version": "1"}}}
MCP_HEADERS = {"Content-Type": "application/json",
               "Accept": "application/json, text/event-stream"}
OTHER = "ses_n9_" + "ab" * 16


@pytest.fixture(scope="module")
def srv(module_start_server):
    return module_start_server(*RELAXED, "--node-id", "n2")


def test_session_ids_name_the_node(srv):
    s = create(srv)
    assert re.fullmatch(r"ses_n2_[0-9a-f]{32}", s["id"]), s
    r = post(srv, f"{SES}/{s['id']}/execute", {"code": "print(7)"})
    assert r.status_code == 200 and body_of(r)["stdout"] == "7\n", r.text
    assert srv.request("DELETE", f"{SES}/{s['id']}").status_code == 204


@pytest.mark.parametrize("method,path,body", [
    ("GET", "", None), ("DELETE", "", None), ("POST", "/execute", {"code": "1"}),
    ("POST", "/interrupt", None), ("GET", "/files", None),
])
def test_another_nodes_session_is_421_naming_it(srv, method, path, body):
    h = {"Content-Type": "application/json"}
    r = srv.request(method, f"{SES}/{OTHER}{path}", headers=h,
                    data=json.dumps(body) if body is not None else None)
    b = expect_error(r, 421, "MisdirectedRequest")
    assert b["error"]["node"] == "n9" and "n9" in b["error"]["message"], b


def test_this_nodes_unknown_session_stays_404(srv):
    expect_error(srv.request("GET", f"{SES}/ses_n2_{'cd' * 16}"), 404, "NotFound")
    expect_error(srv.request("GET", f"{SES}/ses_{'cd' * 16}"), 404, "NotFound")


def test_mcp_session_ids_name_the_node(srv):
    r = srv.request("POST", "/mcp", data=json.dumps(INIT), headers=MCP_HEADERS)
    assert r.status_code == 200, r.text
    assert re.fullmatch(r"mcp_n2_[0-9a-f]{32}", r.headers["Mcp-Session-Id"]), r.headers
    other = dict(MCP_HEADERS, **{"Mcp-Session-Id": "mcp_n9_" + "ef" * 16})
    for method in ("POST", "DELETE"):
        r = srv.request(method, "/mcp", headers=other,
                        data=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        assert r.status_code == 421, (method, r.status_code, r.text)
        assert "n9" in body_of(r)["error"]["message"], r.text


def test_a_node_without_an_id_keeps_its_ids(start_server):
    s = start_server(*RELAXED)
    assert re.fullmatch(r"ses_[0-9a-f]{32}", create(s)["id"])
    # It has no id, so an id that names one is some other node's.
    expect_error(s.request("GET", f"{SES}/{OTHER}"), 421, "MisdirectedRequest")


@pytest.mark.parametrize("bad", ["", "N2", "n_2", "n.2", "a" * 17, "n2 "])
def test_a_bad_node_id_is_a_usage_error(bad, tmp_path):
    p = subprocess.run([PYBOX, "serve", "--node-id", bad, "--data", str(tmp_path)],
                       capture_output=True, text=True, timeout=60, env=clean_env())
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "--node-id" in p.stderr and len(p.stderr.strip().splitlines()) <= 2, p.stderr
