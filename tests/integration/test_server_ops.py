"""Operations (issue 3 §4): health, Prometheus metrics, the OpenAPI document, CORS, request ids,
the JSON request log on stderr, and the audit log in the store.
"""
import hashlib
import json
import re
import sqlite3
import time

import pytest

from conftest import body_of, expect_error, parse_http_response

HELLO = {"code": "print('Hello, World!')"}


@pytest.fixture(scope="module")
def srv(module_start_server):
    return module_start_server("--rpm", "1000", "--rpd", "100000", "--max-body", "100000")


def wait_for(predicate, timeout=5.0):
    """Poll predicate() (the server logs and counts a request just after answering it)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# health, metrics


def test_health(srv):
    r = srv.get("/v1/health")
    assert r.status_code == 200
    body = body_of(r)
    assert body["status"] == "ok", body
    assert r.headers.get("X-Request-Id")


PROM_LINE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?P<labels>[^}]*)\})? '
    r'(?P<value>[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?|NaN|[+-]Inf)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """{(name, frozenset(labels)): value}, checking every line against the text format."""
    samples, types = {}, {}
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            assert parts[1] in ("HELP", "TYPE"), line
            if parts[1] == "TYPE":
                assert parts[3] in ("counter", "gauge", "histogram", "summary", "untyped"), line
                types[parts[2]] = parts[3]
            continue
        m = PROM_LINE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = {}
        if m.group("labels"):
            pairs = LABEL.findall(m.group("labels"))
            rebuilt = ",".join(f'{k}="{v}"' for k, v in pairs)
            assert rebuilt == m.group("labels").rstrip(","), line
            labels = dict(pairs)
        key = (m.group("name"), frozenset(labels.items()))
        assert key not in samples, f"duplicate sample {line!r}"
        samples[key] = float(m.group("value"))
    return samples, types


def sample(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def test_metrics(srv):
    assert srv.execute(HELLO).status_code == 200
    assert srv.execute({"code": "import os"}).status_code == 400
    assert srv.v1({"code": "1/0"}).status_code == 200
    assert srv.get("/no/such/path").status_code == 404

    def scrape():
        r = srv.get("/metrics")
        assert r.status_code == 200
        assert r.headers["Content-Type"].startswith("text/plain"), r.headers
        s, t = parse_metrics(r.text)
        done = (sample(s, "pybox_http_requests_total", route="other", status="404") or 0) >= 1
        return (s, t, r.text) if done else None

    got = wait_for(scrape)
    assert got, "the 404 was not counted in /metrics"
    s, types, text = got
    assert types.get("pybox_http_requests_total") == "counter", types
    assert sample(s, "pybox_http_requests_total", route="/execute", status="200") >= 1, text
    assert sample(s, "pybox_http_requests_total", route="/execute", status="400") >= 1, text
    assert sample(s, "pybox_http_requests_total", route="/v1/execute", status="200") >= 1, text

    assert types.get("pybox_executions_total") == "counter", types
    assert sample(s, "pybox_executions_total", status="ok") >= 1, text
    assert sample(s, "pybox_executions_total", status="error") >= 1, text
    assert sample(s, "pybox_executions_total", status="rejected") >= 1, text
    for st in ("timeout", "memory_limit", "killed"):
        assert sample(s, "pybox_executions_total", status=st) is not None, (st, text)

    hist = [n for n, t in types.items() if t == "histogram"]
    assert hist, f"no histogram in /metrics:\n{text}"
    h = hist[0]
    buckets = sorted(((float(dict(lbl)["le"]), v) for (n, lbl), v in s.items()
                      if n == h + "_bucket"), key=lambda x: x[0])
    assert buckets and buckets[-1][0] == float("inf"), buckets
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"buckets not cumulative: {buckets}"
    count = sample(s, h + "_count")
    total = sample(s, h + "_sum")
    assert count is not None and total is not None, text
    assert counts[-1] == count >= 3, (buckets, count)
    assert total > 0

    assert sample(s, "pybox_cells_busy") == 0, text
    assert sample(s, "pybox_cells_idle") is not None, text
    assert types.get("pybox_cells_busy") == "gauge" and types.get("pybox_cells_idle") == "gauge"


# ---------------------------------------------------------------------------------------------
# OpenAPI


def resolve_pointer(doc, ref):
    assert ref.startswith("#/"), f"$ref {ref!r} points outside the document"
    node = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list):
            node = node[int(part)]
        else:
            assert isinstance(node, dict) and part in node, f"$ref {ref!r} does not resolve"
            node = node[part]
    return node


def all_refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from all_refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from all_refs(v)


def test_openapi(srv):
    r = srv.get("/openapi.json")
    assert r.status_code == 200
    doc = body_of(r)
    assert re.fullmatch(r"3\.1\.\d+", doc.get("openapi", "")), doc.get("openapi")
    assert doc["info"]["title"] and doc["info"]["version"]
    paths = doc["paths"]
    for p in ("/execute", "/v1/execute"):
        assert "post" in paths[p], p
        op = paths[p]["post"]
        assert "requestBody" in op and "200" in op["responses"], op
    refs = list(all_refs(doc))
    assert refs, "no $ref at all"
    for ref in refs:
        assert isinstance(resolve_pointer(doc, ref), dict), ref
    # Every path item's operations have responses with descriptions.
    for p, item in paths.items():
        for method, op in item.items():
            if method in ("get", "post", "put", "delete", "patch", "options", "head"):
                assert op.get("responses"), (p, method)
                for code, resp in op["responses"].items():
                    assert "description" in resp or "$ref" in resp, (p, method, code)


# ---------------------------------------------------------------------------------------------
# CORS, request ids


def test_cors_preflight(srv):
    r = srv.request("OPTIONS", "/execute", headers={
        "Origin": "https://client.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization"})
    assert r.status_code == 204, (r.status_code, r.text)
    assert r.headers.get("Access-Control-Allow-Origin") in ("*", "https://client.example")
    methods = r.headers.get("Access-Control-Allow-Methods", "")
    assert "POST" in methods.upper(), r.headers
    allowed = r.headers.get("Access-Control-Allow-Headers", "").lower()
    assert "content-type" in allowed and "authorization" in allowed, r.headers
    assert r.headers.get("X-Request-Id")
    # Plain responses carry the origin too.
    r = srv.execute(HELLO, headers={"Origin": "https://client.example"})
    assert r.headers.get("Access-Control-Allow-Origin") in ("*", "https://client.example")


def test_cors_configured_origin(start_server):
    s = start_server("--cors-origin", "https://app.example")
    r = s.request("OPTIONS", "/v1/execute", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 204
    assert r.headers.get("Access-Control-Allow-Origin") == "https://app.example"
    r = s.get("/v1/health", headers={"Origin": "https://app.example"})
    assert r.headers.get("Access-Control-Allow-Origin") == "https://app.example"


def test_cors_origin_list(start_server):
    """A comma-separated list of origins: a listed Origin is echoed (with Vary: Origin), any
    other gets no Access-Control-Allow-Origin at all."""
    s = start_server("--cors-origin", "https://a.example, https://b.example")
    for origin in ("https://a.example", "https://b.example"):
        r = s.get("/v1/health", headers={"Origin": origin})
        assert r.headers.get("Access-Control-Allow-Origin") == origin, r.headers
        assert "Origin" in r.headers.get("Vary", ""), r.headers
    r = s.get("/v1/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers, r.headers
    r = s.request("OPTIONS", "/v1/execute", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in r.headers, r.headers


def test_request_id_on_every_response(srv):
    responses = [
        srv.get("/v1/health"),
        srv.get("/metrics"),
        srv.get("/openapi.json"),
        srv.get("/"),
        srv.get("/definitely/not/here"),
        srv.get("/execute"),                                            # 405
        srv.request("DELETE", "/v1/execute"),                           # 405
        srv.execute({"code": "print(1)"}),                              # 200
        srv.execute({"code": ""}),                                      # 400
        srv.post("/execute", data=b"x=1", content_type="application/x-www-form-urlencoded"),
        srv.execute({"code": "print(1)"}, key="bad"),                   # 401
        srv.request("OPTIONS", "/execute"),                             # 204
    ]
    ids = []
    for r in responses:
        rid = r.headers.get("X-Request-Id")
        assert rid, f"{r.request.method} {r.url} -> {r.status_code} has no X-Request-Id"
        ids.append(rid)
        if r.status_code >= 400:
            body = body_of(r)
            assert body.get("request_id") == rid, body
    statuses = [r.status_code for r in responses]
    assert statuses == [200, 200, 200, 200, 404, 405, 405, 200, 400, 415, 401, 204], statuses
    # 413, refused before the body is read.
    raw, _ = srv.raw([b"POST /execute HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                      b"Content-Type: application/json\r\nContent-Length: 5000000\r\n\r\n"])
    status, headers, _ = parse_http_response(raw)
    assert status == 413 and headers.get("x-request-id"), (status, headers)
    ids.append(headers["x-request-id"])
    assert len(set(ids)) == len(ids), f"request ids repeat: {ids}"


def test_404_is_json_not_html(srv):
    r = srv.get("/nothing.html", headers={"Accept": "text/html"})
    expect_error(r, 404, "NotFound")


# ---------------------------------------------------------------------------------------------
# the request log, the audit log


def test_one_json_log_line_per_request(srv):
    sent = [
        ("POST", "/execute", srv.execute(HELLO)),
        ("POST", "/v1/execute", srv.v1({"code": "print(2)"})),
        ("GET", "/v1/health", srv.get("/v1/health")),
        ("GET", "/nope", srv.get("/nope")),
        ("POST", "/execute", srv.execute({"code": "import os"})),
    ]
    ids = {r.headers["X-Request-Id"]: (m, p, r.status_code) for m, p, r in sent}

    def logged():
        recs = [rec for rec in srv.log_records() if rec.get("request_id") in ids]
        return recs if len(recs) >= len(ids) else None

    recs = wait_for(logged)
    assert recs, f"request ids {list(ids)} not all in the JSON log:\n{srv.log_text()[-3000:]}"
    by_id = {}
    for rec in recs:
        by_id.setdefault(rec["request_id"], []).append(rec)
    for rid, (method, path, status) in ids.items():
        assert len(by_id[rid]) == 1, f"{len(by_id[rid])} log lines for {rid}: {by_id[rid]}"
        rec = by_id[rid][0]
        assert rec.get("method") == method and rec.get("path") == path, rec
        assert rec.get("status") == status, rec
        assert rec.get("client") == "127.0.0.1", rec
    # Every JSON line of stderr is a well-formed object (the log is machine-readable).
    for line in srv.log_text().splitlines():
        if line.startswith("{"):
            assert isinstance(json.loads(line), dict), line


def test_audit_record_per_execution(srv):
    marker = f"audit-{time.time_ns()}"
    runs = [
        ("/execute", {"code": f"print('{marker} ok')"}, None, "ok"),
        ("/execute", {"code": f"print('{marker} err')\n1/0"}, None, "error"),
        ("/execute", {"code": f"import os  # {marker}"}, None, "rejected"),
        ("/v1/execute", {"code": f"print('{marker} v1')"}, None, "ok"),
        ("/execute", {"code": f"import os\nprint('{marker} admin')"}, srv.admin_key, "ok"),
    ]
    for path, body, key, _ in runs:
        r = srv.post(path, body, key=key)
        assert r.status_code in (200, 400), r.text
    # A refused request (invalid) is not an execution.
    not_run = f"print('{marker} never')"
    expect_error(srv.execute({"code": not_run, "bogus": 1}), 400)

    conn = sqlite3.connect(f"file:{srv.data_dir / 'pybox.db'}?mode=ro", uri=True, timeout=10)
    try:
        cols = [row[1] for row in conn.execute("PRAGMA table_info(audit)")]
        assert cols, "no audit table in the store"
        for needed in ("client", "code_sha256", "status", "duration_ms"):
            assert needed in cols, cols
        time_col = next(c for c in cols if c.startswith("time"))
        key_col = next((c for c in cols if c.startswith("key")), None)
        rows = [dict(zip(cols, row)) for row in conn.execute("SELECT * FROM audit")]
    finally:
        conn.close()
    by_hash = {}
    for row in rows:
        assert re.fullmatch(r"[0-9a-f]{64}", row["code_sha256"]), row
        by_hash.setdefault(row["code_sha256"], []).append(row)
    now_ms = time.time() * 1000
    for path, body, key, status in runs:
        h = hashlib.sha256(body["code"].encode()).hexdigest()
        got = by_hash.get(h, [])
        assert len(got) == 1, f"{len(got)} audit rows for {body['code']!r}: {got}"
        row = got[0]
        assert row["status"] == status, row
        assert row["client"] == "127.0.0.1", row
        assert isinstance(row["duration_ms"], (int, float)) and row["duration_ms"] >= 0, row
        t = row[time_col]
        assert isinstance(t, (int, float)) and abs(now_ms - t) < 300000, row
        if "route" in row:
            assert row["route"] == path, row
        if key_col and key is not None:
            assert row[key_col] == "admin", row
    assert hashlib.sha256(not_run.encode()).hexdigest() not in by_hash, \
        "a refused request was audited as an execution"


# ---------------------------------------------------------------------------------------------
# a clean exit after every kind of answer (under ASan a leak makes the exit status non-zero)


def test_clean_exit_after_every_kind_of_answer(start_server):
    s = start_server("--rpm", "1000", "--rpd", "100000", "--timeout", "5")
    answers = [
        s.execute(HELLO),                                                # 200
        s.execute({"code": "import os"}),                                # ForbiddenImportError
        s.execute({"code": "def f(:"}),                                  # SyntaxError
        s.execute({"code": "1/0"}),                                      # RuntimeError
        s.execute({"code": "while True:\n    pass"}),                     # TimeoutError
        s.execute({"code": ""}),                                         # ValidationError
        s.execute({"script": "def main():\n    return 1"}),              # main()
        s.execute({"code": "import time\ntime.sleep(5)", "timeout": 1}),   # S4: return_code -1
        s.execute({"code": "print(1)", "timeout": 0.5}),                 # S4: 422
        s.v1({"code": "1/0"}),
        s.v1({"code": "import os"}),
        s.get("/metrics"), s.get("/openapi.json"), s.get("/health"), s.get("/nope"),
    ]
    assert [r.status_code for r in answers] == [200, 400, 400, 400, 400, 400, 200, 200, 422, 200,
                                                200, 200, 200, 200, 404]
    s.stop_and_check()  # exit status 0, nothing left behind


def test_log_line_for_a_path_that_is_not_utf8(srv):
    """A request whose path is not UTF-8 still gets a JSON 404 and its JSON log line."""
    out, errors = srv.raw([b"GET /x\xff\xfe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"])
    assert out.startswith(b"HTTP/1.1 404"), (out[:300], errors)
    rid = re.search(rb"X-Request-Id: (\S+)", out, re.I).group(1).decode()
    import time
    for _ in range(50):
        if rid in srv.log_text():
            break
        time.sleep(0.1)
    line = [l for l in srv.log_text().splitlines() if rid in l]
    assert line, srv.log_text()[-2000:]
    assert json.loads(line[0])["status"] == 404


def test_start_and_stop_lines(start_server):
    """The isolation in force is a line per fact under a heading, what --modules changed is said,
    and the last line says how long the server served and what."""
    s = start_server("--modules", "colorsys,graphlib")
    lines = s.log_text().splitlines()
    head = lines.index("pybox: isolation in force:")
    facts = []
    for line in lines[head + 1:]:
        if not line.startswith("pybox:   "):
            break
        facts.append(line[len("pybox:   "):])
    assert facts and facts[0].startswith("namespaces: user (uid 0-"), lines
    assert any(f.startswith("cgroup memory") for f in facts), facts
    assert not any(";cgroup" in f or f.endswith(";") for f in facts), facts
    assert "pybox: imports: the default allowlist and colorsys,graphlib, for every caller" in lines
    for i in range(2):
        r = s.v1({"code": f"print({i})"})
        assert r.status_code == 200 and body_of(r)["stdout"] == f"{i}\n", r.text
    assert s.get("/v1/health").status_code == 200
    assert s.terminate() == 0
    last = s.log_text().splitlines()[-1]
    m = re.fullmatch(r"pybox: stopped after (\d+\.\d s|\d+m\d\ds|\d+h\d\dm\d\ds): (\d+) requests "
                     r"answered, 2 executions run \(2 ok\)", last)
    assert m, last
    assert int(m.group(2)) >= 3, last
