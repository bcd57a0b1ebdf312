"""Bad input (issue 3 §5): every malformed, hostile or oversized request gets a JSON error with
the right status (never HTML, never a crash), and the server keeps serving: a health check runs
after every test. Also slow and stalled clients, and SIGTERM during an execution.
"""
import json
import re
import socket
import threading
import time

import pytest
import requests

from conftest import SLOW, b64, body_of, expect_error, parse_http_response

MIB = 1 << 20
MAX_BODY = 12 * MIB  # room for one 8 MiB attachment in base64, not for two
HELLO = {"code": "print('Hello, World!')"}


@pytest.fixture(scope="module")
def srv(module_start_server):
    return module_start_server("--rpm", "100000", "--rpd", "1000000", "--max-body",
                               str(MAX_BODY), "--client-timeout", "2", "--timeout", "10")


@pytest.fixture(autouse=True)
def still_serving(srv):
    yield
    srv.assert_healthy()


def post_raw(srv, body, content_type="application/json", path="/execute"):
    return srv.post(path, data=body, content_type=content_type)


# ---------------------------------------------------------------------------------------------
# bodies that are not a JSON object


@pytest.mark.parametrize("path", ["/execute", "/v1/execute"])
@pytest.mark.parametrize("raw", [
    b"print('Hello, World!')",          # not JSON at all
    b"code=print(1)",                    # a form
    b'{"code": "print(1)"',              # truncated
    b'{"code": "print(1)",}',            # trailing comma
    b"{'code': 'print(1)'}",             # Python, not JSON
    b'{"code": "print(1)"} trailing',    # garbage after the object
    b'[{"code": "print(1)"}]',           # an array
    b"null",
    b'"print(1)"',                       # a string
    b"42",
    b"true",
    b"",                                 # empty
    b"   \n",                            # whitespace
    b'{"code": "print(\xff)"}',          # not UTF-8
    b"\xef\xbb\xbf" + b'{"code": "print(1)"}' + b"\x00",
    b"[" * 50000,                        # deep nesting
    b'{"code": "print(1)", "code": "print(2)"}',  # duplicate keys
])
def test_not_a_json_object(srv, path, raw):
    # /execute answers as the Python Sandbox API documents it: a 400 ValidationError.
    etype = "ValidationError" if path == "/execute" else "InvalidRequest"
    body = expect_error(post_raw(srv, raw, path=path), 400, etype)
    assert body["error_details"]["message"]


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded",
                                   "application/jsonp", "text/json", "application/xml"])
def test_wrong_content_type_is_415(srv, ctype):
    r = srv.post("/execute", data=json.dumps(HELLO).encode(), content_type=ctype)
    expect_error(r, 415, "UnsupportedMediaType")


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "Application/JSON"])
def test_json_content_type_variants_accepted(srv, ctype):
    r = srv.post("/execute", data=json.dumps(HELLO).encode(), content_type=ctype)
    assert r.status_code == 200, r.text
    assert body_of(r)["execution_details"]["stdout"] == "Hello, World!\n"


# ---------------------------------------------------------------------------------------------
# wrong fields


@pytest.mark.parametrize("req", [
    {"code": 42},
    {"code": None},
    {"code": ["print(1)"]},
    {"code": {"src": "print(1)"}},
    {"code": True},
    {"code": "print(1)", "attachments": {}},
    {"code": "print(1)", "attachments": {"filename": "a", "content_base_64": "YQ=="}},
    {"code": "print(1)", "attachments": [5]},
    {"code": "print(1)", "attachments": [{"filename": 5, "content_base_64": "YQ=="}]},
    {"code": "print(1)", "attachments": [{"filename": "a.txt"}]},
    {"code": "print(1)", "attachments": [{"filename": "a.txt", "content_base_64": 12}]},
    {"code": "print(1)", "return_files": "out.txt"},
    {"code": "print(1)", "return_files": [1]},
    {"code": "print(1)", "return_files": {"out.txt": True}},
    {"code": "print(1)", "stdin_data": 5},
    {"code": "print(1)", "stdin_data": ["a"]},
    {"code": "print(1)", "api_key": 5},
    {"script": 5},
])
def test_wrong_field_types(srv, req):
    expect_error(srv.execute(req), 400, "ValidationError")


# `timeout`, `allow_network` and `files` put a request under the FastAPI server's rules, whose
# schema refuses a wrong type or range with 422 {"detail": [...]} (docs/api.md).
@pytest.mark.parametrize("req,loc", [
    ({"code": "print(1)", "timeout": "5"}, ["body", "timeout"]),
    ({"code": "print(1)", "timeout": -1}, ["body", "timeout"]),
    ({"code": "print(1)", "timeout": 0}, ["body", "timeout"]),
    ({"code": "print(1)", "timeout": True}, ["body", "timeout"]),
    ({"code": "print(1)", "allow_network": "no"}, ["body", "allow_network"]),
    ({"code": "print(1)", "files": ["a"]}, ["body", "files"]),
    ({"code": "print(1)", "files": {"a.txt": 5}}, ["body", "files", "a.txt"]),
])
def test_wrong_field_types_of_the_fastapi_shape(srv, req, loc):
    body = expect_error(srv.execute(req), 422, "UnprocessableEntity")
    assert [d["loc"] for d in body["detail"]] == [loc], body


def test_huge_number_is_refused(srv):
    r = post_raw(srv, b'{"code": "print(1)", "timeout": 1e999}')
    expect_error(r, 400)


@pytest.mark.parametrize("req", [
    {},
    {"stdin_data": "x"},
    {"attachments": []},
    {"code": ""},
    {"code": "   \n\t  "},
    {"script": ""},
    {"code": "print(1)\u0000print(2)"},
])
def test_missing_or_empty_code(srv, req):
    # A NUL may be refused by the JSON parser itself (InvalidRequest) or after it.
    expect_error(srv.execute(req), 400, ("ValidationError", "InvalidRequest"))


def test_code_and_script_together(srv):
    expect_error(srv.execute({"code": "print(1)", "script": "def main(): pass"}), 400,
                 "ValidationError")


@pytest.mark.parametrize("field", ["language", "Code", "api-key", "attachment", "memory_mb"])
def test_unknown_fields(srv, field):
    body = expect_error(srv.execute({"code": "print(1)", field: "x"}), 400, "ValidationError")
    assert field in body["error_details"]["message"], body


# ---------------------------------------------------------------------------------------------
# base64 and file names


@pytest.mark.parametrize("text", [
    "aGVsbG8@",         # a character outside the alphabet
    "aGVs*G8=",
    "aGVsbG8",          # padding missing
    "aGVsbA",
    "aGVs bG8=",        # whitespace inside
    "aGVsbG8=\n",       # trailing newline
    " aGVsbG8=",
    "aGVsbG8-",         # URL-safe alphabet
    "aGV_bG8=",
    "aGVsbG8=aGVs",     # data after padding
    "=",
    "a===",
])
def test_bad_base64(srv, text):
    r = srv.execute({"code": "print(1)",
                     "attachments": [{"filename": "a.txt", "content_base_64": text}]})
    body = expect_error(r, 400, "ValidationError")
    assert "base64" in body["error_details"]["message"].lower(), body
    expect_error(srv.execute({"code": "print(1)", "files": {"a.txt": text}}), 400,
                 "ValidationError")
    expect_error(srv.v1({"code": "print(1)", "files": [{"name": "a.txt",
                                                         "content_base64": text}]}), 400,
                 "ValidationError")


def test_good_base64_edge_cases(srv):
    r = srv.execute({"code": "import sys\nprint(len(open('e', 'rb').read()), "
                             "open('p', 'rb').read())",
                     "files": {"e": "", "p": "YWI="}})
    assert r.status_code == 200, r.text
    assert body_of(r)["execution_details"]["stdout"] == "0 b'ab'\n"


@pytest.mark.parametrize("name", ["", ".", "..", "/etc/passwd", "/work/a.txt", "a\u0000b",
                                  "dir/file.txt", "../escape.txt", "x" * 256])
def test_bad_file_names(srv, name):
    # A NUL may be refused by the JSON parser itself (InvalidRequest) or after it.
    etype = ("ValidationError", "InvalidRequest") if "\0" in name else "ValidationError"
    att = [{"filename": name, "content_base_64": b64(b"data")}]
    expect_error(srv.execute({"code": "print(1)", "attachments": att}), 400, etype)
    expect_error(srv.execute({"code": "print(1)", "files": {name: "ZGF0YQ=="}}), 400, etype)
    expect_error(srv.v1({"code": "print(1)", "files": [{"name": name,
                                                         "content_base64": "ZGF0YQ=="}]}), 400,
                 etype)
    expect_error(srv.execute({"code": "print(1)", "return_files": [name]}), 400, etype)


def test_duplicate_file_names(srv):
    one = {"filename": "same.txt", "content_base_64": b64(b"1")}
    two = {"filename": "same.txt", "content_base_64": b64(b"2")}
    expect_error(srv.execute({"code": "print(1)", "attachments": [one, two]}), 400,
                 "ValidationError")
    expect_error(srv.execute({"code": "print(1)", "attachments": [one],
                              "files": {"same.txt": b64(b"3")}}), 400, "ValidationError")
    expect_error(srv.v1({"code": "print(1)", "files": [{"name": "d", "content_base64": "YQ=="},
                                                       {"name": "d", "content_base64": "Yg=="}]}),
                 400, "ValidationError")
    expect_error(srv.execute({"code": "print(1)", "return_files": ["r.txt", "r.txt"]}), 400,
                 "ValidationError")


def test_too_many_attachments(srv):
    att = [{"filename": f"f{i}.txt", "content_base_64": b64(b"x")} for i in range(3)]
    body = expect_error(srv.execute({"code": "print(1)", "attachments": att}), 400,
                        "ValidationError")
    assert "2" in body["error_details"]["message"], body
    # Two are fine.
    r = srv.execute({"code": "print(1)", "attachments": att[:2]})
    assert r.status_code == 200, r.text


def test_attachment_over_8_mib(srv):
    big = b"\x00" * (8 * MIB + 1)
    r = srv.execute({"code": "print(1)",
                     "attachments": [{"filename": "big.bin", "content_base_64": b64(big)}]})
    expect_error(r, 400, "ValidationError")


def test_attachment_of_exactly_8_mib_is_accepted(srv):
    data = bytes(range(256)) * (8 * MIB // 256)
    r = srv.execute({"code": "import os\nprint(len(open('big.bin', 'rb').read()))",
                     "attachments": [{"filename": "big.bin", "content_base_64": b64(data)}]},
                    key=srv.admin_key)
    assert r.status_code == 200, r.text[:2000]
    body = body_of(r)
    assert body["execution_details"]["stdout"] == f"{8 * MIB}\n"
    assert body["request_context"]["processed_attachments"] == [
        {"filename": "big.bin", "size_bytes": 8 * MIB}]


# ---------------------------------------------------------------------------------------------
# bodies over --max-body


MULTIPART = b"multipart/form-data; boundary=xyzzy"


def head(path="/execute", extra=b"", ctype=b"application/json"):
    return (b"POST " + path.encode() + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
            b"Content-Type: " + ctype + b"\r\n" + extra)


def multipart_start():
    return (b'--xyzzy\r\nContent-Disposition: form-data; name="files"; filename="big.bin"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n")


def assert_413(raw, errors):
    assert raw, f"no response at all to an oversized body (errors: {errors})"
    status, headers, body = parse_http_response(raw)
    assert status == 413, raw[:1000]
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert headers.get("x-request-id"), headers
    doc = json.loads(body)
    assert doc["status"] == "error" and doc["error_details"]["type"] == "PayloadTooLarge", doc


@pytest.mark.parametrize("path,ctype", [("/execute", b"application/json"),
                                        ("/v1/execute", b"application/json"),
                                        ("/v1/execute", MULTIPART)])
def test_body_over_max_with_content_length_refused_unread(srv, path, ctype):
    t0 = time.monotonic()
    raw, errors = srv.raw([head(path, b"Content-Length: %d\r\n\r\n" % (MAX_BODY + 1), ctype)])
    assert_413(raw, errors)
    assert time.monotonic() - t0 < 5 * SLOW, "the server waited for a body it should refuse"


def test_body_over_max_with_content_length_and_data(srv):
    def chunks():
        yield head(extra=b"Content-Length: %d\r\n\r\n" % (MAX_BODY + MIB))
        block = b"x" * 65536
        for _ in range((MAX_BODY + MIB) // len(block)):
            yield block

    raw, errors = srv.raw(chunks())
    assert_413(raw, errors)


@pytest.mark.parametrize("path,ctype", [("/execute", b"application/json"),
                                        ("/v1/execute", b"application/json"),
                                        ("/v1/execute", MULTIPART)])
def test_body_over_max_chunked(srv, path, ctype):
    def chunks():
        yield head(path, b"Transfer-Encoding: chunked\r\n\r\n", ctype)
        block = (multipart_start() if ctype == MULTIPART else b'{"code": "') + b"#" * 65000
        for _ in range(MAX_BODY // len(block) + 4):
            yield b"%x\r\n" % len(block) + block + b"\r\n"
        yield b"0\r\n\r\n"

    raw, errors = srv.raw(chunks())
    assert_413(raw, errors)


def test_chunked_body_under_max_works(srv):
    data = json.dumps(HELLO).encode()

    def chunks():
        yield head(extra=b"Transfer-Encoding: chunked\r\n\r\n")
        for i in range(0, len(data), 7):
            part = data[i:i + 7]
            yield b"%x\r\n" % len(part) + part + b"\r\n"
        yield b"0\r\n\r\n"

    raw, errors = srv.raw(chunks())
    status, headers, body = parse_http_response(raw)
    assert status == 200, raw[:1000]
    assert json.loads(body)["execution_details"]["stdout"] == "Hello, World!\n"


# ---------------------------------------------------------------------------------------------
# malformed HTTP framing: still one JSON error, never an HTML page


@pytest.mark.parametrize("raw,status", [
    (b"GET /v1/health HTTP/1.1\r\nConnection: close\r\n\r\n", 400),           # no Host
    (b"GET /v1/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Big: "
     + b"a" * 200000 + b"\r\n\r\n", 431),                                       # huge header
    (b"POST /execute HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
     b"Content-Type: application/json\r\nContent-Length: abc\r\n\r\n", 400),  # bad length
    (b"POST /execute HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
     b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"zz\r\n", 400),                                                          # bad chunk
], ids=["no-host", "huge-header", "bad-content-length", "bad-chunk-size"])
def test_malformed_http_is_refused_and_server_keeps_serving(srv, raw, status):
    """Invariant: HTTP that is malformed below the application (no Host, a header over the
    limit, a bad Content-Length or chunk size) is refused with the right 4xx status by the
    HTTP layer, never crashes the server, and never reaches an execution. (libmicrohttpd
    writes these answers itself, as HTML: a documented limitation, see docs/api.md.)"""
    out, errors = srv.raw([raw])
    assert out, f"no answer (errors: {errors})"
    got = int(out.split(b" ", 2)[1])
    assert got == status, out[:600]
    health = requests.get(srv.url + "/v1/health", timeout=10)
    assert health.status_code == 200


@pytest.mark.parametrize("framing", [
    b"Content-Length: 19\r\nContent-Length: 18\r\n",
    b"Content-Length: 19\r\nTransfer-Encoding: chunked\r\n",
], ids=["content-length-twice", "content-length-and-chunked"])
def test_a_body_framed_two_ways_is_refused_and_the_connection_closed(srv, framing):
    """Invariant: a request whose body could be read two ways (request smuggling behind a proxy
    that reads the other way) runs nothing: one 400 JSON answer, then the connection is closed,
    so bytes after it are never read as a request of their own."""
    body = b'{"code":"print(1)"}'
    smuggled = b"GET /v1/health HTTP/1.1\r\nHost: t\r\n\r\n"
    raw = (b"POST /execute HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n" + framing
           + b"\r\n" + body + smuggled)
    out, errors = srv.raw([raw])
    assert out.count(b"HTTP/1.1 ") == 1, out[:1000]
    status, headers, answer = parse_http_response(out)
    assert status == 400, out[:600]
    assert headers.get("connection", "").lower() == "close", headers
    assert json.loads(answer)["error_details"]["type"] == "InvalidRequest"


@pytest.mark.parametrize("code,etype", [
    ("  print(1)", "IndentationError"),
    ("if 1:\n\tprint(1)\n        print(2)", "TabError"),
])
def test_subclasses_of_syntax_error_are_400_in_the_compatible_dialect(srv, code, etype):
    r = srv.execute({"code": code})
    body = expect_error(r, 400, "SyntaxError")
    assert body["error_details"]["exception_type"] == etype, body


@pytest.mark.parametrize("code", ["raise KeyboardInterrupt", "raise BaseException",
                                  "raise MemoryError"])
def test_an_exception_without_a_message_still_gets_one(srv, code):
    r = srv.execute({"code": code})
    body = expect_error(r, 400, "RuntimeError")
    assert body["error_details"]["message"] and isinstance(body["error"], str), body


def test_an_empty_file_input_adds_nothing_to_the_file_before_it(srv):
    big = b"z" * 300000
    body = (b'--XX\r\nContent-Disposition: form-data; name="code"\r\n\r\n'
            b"import os\nprint(os.path.getsize('a.txt'))\r\n"
            b'--XX\r\nContent-Disposition: form-data; name="files"; filename="a.txt"\r\n\r\n'
            b"a\r\n"
            b'--XX\r\nContent-Disposition: form-data; name="files"; filename=""\r\n\r\n'
            + big + b"\r\n--XX--\r\n")
    r = requests.post(
        srv.url + "/v1/execute", data=body, timeout=60,
        headers={"Content-Type": "multipart/form-data; boundary=XX",
                 "Authorization": "Bearer " + srv.admin_key})
    assert r.status_code == 200, r.text
    assert body_of(r)["stdout"] == "1\n", body_of(r)


def executions(srv):
    """Executions run so far, of every status (pybox_executions_total summed)."""
    text = srv.get("/metrics").text
    return sum(int(n) for n in re.findall(r"^pybox_executions_total\{[^}]*\} (\d+)$", text, re.M))


@pytest.mark.parametrize("path", ["/v1/execute", "/execute-with-files"])
def test_a_form_without_its_closing_boundary_is_refused_unrun(srv, path):
    # A whole HTTP body (its Content-Length sent) whose form stops inside the code part: what
    # was read of it (`prin`) is not a program to run.
    body = b'--XX\r\nContent-Disposition: form-data; name="code"\r\n\r\nprint(1)'
    runs = executions(srv)
    r = srv.post(path, data=body, content_type="multipart/form-data; boundary=XX")
    assert r.status_code == 400, r.text
    assert "malformed multipart/form-data body: " in r.text, r.text
    # The same form with its closing boundary runs.
    r = srv.post(path, data=body + b"\r\n--XX--\r\n",
                 content_type="multipart/form-data; boundary=XX")
    assert r.status_code == 200, r.text
    assert executions(srv) == runs + 1


def test_a_tiny_form_timeout_rounds_up_as_in_json(srv):
    body = (b'--XX\r\nContent-Disposition: form-data; name="code"\r\n\r\nprint(1)\r\n'
            b'--XX\r\nContent-Disposition: form-data; name="timeout"\r\n\r\n1e-9\r\n--XX--\r\n')
    r = srv.post("/v1/execute", data=body, content_type="multipart/form-data; boundary=XX")
    assert r.status_code == 200, r.text
    assert body_of(r)["status"] in ("ok", "timeout"), body_of(r)


# ---------------------------------------------------------------------------------------------
# slow and stalled clients


def connect(srv):
    s = socket.create_connection((srv.host, srv.port), timeout=30)
    return s


def wait_closed(sock, limit):
    """Seconds until the server closes the connection (reads and discards any answer)."""
    t0 = time.monotonic()
    sock.settimeout(limit)
    data = b""
    try:
        while True:
            b = sock.recv(65536)
            if not b:
                break
            data += b
    except socket.timeout:
        return None, data
    except OSError:
        pass
    return time.monotonic() - t0, data


@pytest.mark.parametrize("partial", [
    b"POST /execute HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    b"Content-Length: 100\r\n\r\n{\"code\": ",                    # half a body
    b"POST /execute HTTP/1.1\r\nHost: te",                         # half the headers
    b"",                                                           # nothing at all
])
def test_stalled_client_is_dropped(srv, partial):
    s = connect(srv)
    try:
        if partial:
            s.sendall(partial)
        # The server keeps serving others meanwhile.
        srv.assert_healthy()
        elapsed, data = wait_closed(s, 10 * SLOW)
        assert elapsed is not None, "a client stalled past --client-timeout 2 was not dropped"
        assert elapsed < 8 * SLOW, elapsed
        if data:
            status, headers, _ = parse_http_response(data)
            assert status in (400, 408), data[:500]
    finally:
        s.close()


def test_many_slow_clients_do_not_block_a_normal_request(srv):
    socks = []
    try:
        for i in range(60):
            s = connect(srv)
            s.sendall(b"POST /execute HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json"
                      b"\r\nContent-Length: 1000\r\n\r\n{\"co" if i % 2 else b"GET /v1/hea")
            socks.append(s)
        t0 = time.monotonic()
        r = srv.execute(HELLO, timeout=30)
        assert r.status_code == 200, r.text
        assert time.monotonic() - t0 < 5 * SLOW
        # Drip-feeding one byte at a time (under the idle time-out) still works.
        with connect(srv) as s:
            req = (b"POST /execute HTTP/1.1\r\nHost: drip\r\nConnection: close\r\n"
                   b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                   % len(json.dumps(HELLO)) + json.dumps(HELLO).encode())
            for i in range(0, len(req), 16):
                s.sendall(req[i:i + 16])
                time.sleep(0.01)
            _, data = wait_closed(s, 30)
            status, _, body = parse_http_response(data)
            assert status == 200, data[:500]
    finally:
        for s in socks:
            s.close()


def test_request_split_across_slow_writes_within_timeout(srv):
    """Pauses shorter than --client-timeout between parts are fine."""
    data = json.dumps(HELLO).encode()
    parts = [head(extra=b"Content-Length: %d\r\n" % len(data)), b"\r\n", data[:10], data[10:]]
    raw, errors = srv.raw(parts, pause=0.5)
    status, _, body = parse_http_response(raw)
    assert status == 200, (raw[:500], errors)


# ---------------------------------------------------------------------------------------------
# SIGTERM during an execution


def test_sigterm_lets_the_running_execution_finish(start_server):
    s = start_server("--timeout", "20", "--rpm", "100")
    result = {}

    def run():
        try:
            r = requests.post(s.url + "/execute", json={
                "code": "import time\nprint('started', flush=True)\ntime.sleep(2)\n"
                        "print('finished')"}, timeout=60)
            result["resp"] = r
        except requests.RequestException as e:
            result["error"] = e

    t = threading.Thread(target=run)
    t.start()
    deadline = time.monotonic() + 10 * SLOW
    while time.monotonic() < deadline:
        if body_of(s.get("/v1/health")).get("active_executions") == 1:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the execution never showed as active")
    t0 = time.monotonic()
    s.proc.send_signal(15)
    # No new connections while draining: refused from when SIGTERM is handled, while the
    # execution still runs.
    deadline = time.monotonic() + 5 * SLOW
    while True:
        try:
            requests.get(s.url + "/v1/health", timeout=5, headers={"Connection": "close"})
        except requests.ConnectionError:
            break
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        time.sleep(0.02)
    assert t.is_alive(), "the execution ended before new connections were refused"
    t.join(60)
    assert "error" not in result, f"the running execution's request failed: {result['error']!r}"
    r = result["resp"]
    assert r.status_code == 200, r.text
    body = body_of(r)
    assert body["execution_details"]["stdout"] == "started\nfinished\n", body
    rc = s.proc.wait(30)
    assert rc == 0, f"exit status {rc} after SIGTERM\n{s.log_text()[-3000:]}"
    assert time.monotonic() - t0 < 30
