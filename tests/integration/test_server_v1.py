"""POST /v1/execute, pybox's own dialect (docs/api.md).

Every completed execution is 200 with the result object, whatever its status (ok, error,
timeout, memory_limit, killed, rejected); 4xx only when the request itself failed.
"""
import base64
import json
import time

import pytest
from urllib3 import encode_multipart_formdata

from conftest import REPO, SLOW, b64, body_of, expect_error

RESULT_KEYS = {"status", "exit_code", "signal", "stdout", "stderr", "stdout_truncated",
               "stderr_truncated", "result", "files", "error", "duration_ms", "cpu_ms",
               "max_rss_kb"}
MIB = 1 << 20


@pytest.fixture(scope="module")
def srv(module_start_server):
    return module_start_server("--rpm", "1000", "--rpd", "100000", "--timeout", "5")


def result_of(resp, status):
    """Assert 200 and a complete result object with this status; returns it."""
    body = body_of(resp)
    assert resp.status_code == 200, f"{resp.status_code}: {resp.text[:2000]}"
    missing = RESULT_KEYS - set(body)
    assert not missing, f"result object lacks {missing}: {body}"
    assert body["status"] == status, body
    assert isinstance(body["stdout"], str) and isinstance(body["stderr"], str)
    assert isinstance(body["stdout_truncated"], bool) and isinstance(body["stderr_truncated"],
                                                                     bool)
    assert isinstance(body["files"], dict)
    for k in ("duration_ms", "cpu_ms"):
        assert isinstance(body[k], (int, float)) and body[k] >= 0, (k, body)
    assert isinstance(body["max_rss_kb"], int) and body["max_rss_kb"] >= 0, body
    assert body.get("request_id") == resp.headers.get("X-Request-Id"), (body, resp.headers)
    if status == "ok":
        assert body["exit_code"] == 0 and body["error"] is None and body["signal"] is None, body
    else:
        assert isinstance(body["error"], dict), body
        assert isinstance(body["error"].get("type"), str), body
        assert isinstance(body["error"].get("message"), str), body
    return body


def test_ok_with_stdin_files_and_returned_files(srv):
    r = srv.v1({
        "code": ("import sys\nname = sys.stdin.read().strip()\n"
                 "data = open('in.bin', 'rb').read()\n"
                 "open('out.txt', 'w').write(f'{name}:{len(data)}')\n"
                 "print('hi', name)\n"),
        "stdin": "pybox\n",
        "files": [{"name": "in.bin", "content_base64": b64(b"\x00\x01\x02\xff" * 10)}],
        "return_files": ["out.txt", "absent.txt"],
    })
    res = result_of(r, "ok")
    assert res["stdout"] == "hi pybox\n"
    assert res["stderr"] == ""
    assert res["result"] is None
    out = res["files"]["out.txt"]
    assert base64.b64decode(out["content_base64"], validate=True) == b"pybox:40"
    assert out["size"] == 8
    assert set(res["files"]["absent.txt"]) == {"error"}, res["files"]


def test_main_mode_result(srv):
    r = srv.v1({"code": "def main():\n    print('side')\n    return [1, {'a': 'b'}, True]\n",
                "main": True})
    res = result_of(r, "ok")
    assert res["result"] == [1, {"a": "b"}, True]
    assert res["stdout"] == "side\n"


def test_uncaught_exception_is_200_error(srv):
    res = result_of(srv.v1({"code": "print('before')\n1/0\n"}), "error")
    assert res["exit_code"] == 1 and res["signal"] is None
    assert res["stdout"] == "before\n"
    assert res["error"]["type"] == "ZeroDivisionError", res
    tb = res["error"].get("traceback", "") + res["stderr"]
    assert 'File "main.py"' in tb, res
    assert str(REPO) not in tb and "/tmp/" not in tb, "a host path leaks into the traceback"


def test_nonzero_exit_is_200_error(srv):
    res = result_of(srv.v1({"code": "import sys\nsys.exit(7)"}), "error")
    assert res["exit_code"] == 7


def test_timeout_is_200_timeout(srv):
    t0 = time.monotonic()
    res = result_of(srv.v1({"code": "import time\ntime.sleep(30)", "timeout": 1}), "timeout")
    assert time.monotonic() - t0 < 8 * SLOW
    assert res["exit_code"] is None or isinstance(res["exit_code"], int)


def test_memory_limit_is_200_memory_limit(srv):
    res = result_of(srv.v1({"code": "b = b'x' * (200 << 20)\nprint(len(b))", "memory_mb": 64}),
                    "memory_limit")
    assert res["stdout"] == ""


def test_memory_within_request_works(srv):
    res = result_of(srv.v1({"code": "b = b'x' * (20 << 20)\nprint(len(b))", "memory_mb": 128}),
                    "ok")
    assert res["stdout"] == f"{20 << 20}\n"


def test_killed_is_200_killed(srv):
    # SIGKILL, not SIGSEGV: under ASan the jail's own SIGSEGV handler turns a crash into exit 1.
    res = result_of(srv.v1({"code": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"},
                           key=srv.admin_key), "killed")
    assert res["signal"] == "SIGKILL" and res["exit_code"] is None, res


def test_forbidden_import_is_200_rejected(srv):
    res = result_of(srv.v1({"code": "import os\nprint(os.getcwd())"}), "rejected")
    assert res["exit_code"] is None
    assert res["error"]["type"] == "ForbiddenImportError"
    assert res["error"]["disallowed"] == ["os"]
    assert res["stdout"] == ""


def test_syntax_error_is_200(srv):
    res = result_of(srv.v1({"code": "def f(:\n    pass\n"}), "rejected")
    assert res["error"]["type"] == "SyntaxError"
    assert res["exit_code"] is None


def test_admin_may_import_anything(srv):
    res = result_of(srv.v1({"code": "import os\nprint(os.getcwd())"}, key=srv.admin_key), "ok")
    assert res["stdout"].strip().startswith("/")


def test_stdout_truncated_at_one_mib(srv):
    res = result_of(srv.v1({"code": "import sys\nsys.stdout.write('x' * (3 << 20))"}), "ok")
    assert res["stdout_truncated"] is True
    assert MIB // 2 <= len(res["stdout"]) <= MIB + 4096, len(res["stdout"])
    assert res["stderr_truncated"] is False


def test_invalid_utf8_output_is_still_json(srv):
    res = result_of(srv.v1({"code": "import sys\nsys.stdout.buffer.write(b'\\xff\\xfeok\\n')"}),
                    "ok")
    assert res["stdout"].endswith("ok\n")


def test_return_files_globs(srv):
    # Issue 3 §2: return_files takes names or globs.
    res = result_of(srv.v1({
        "code": ("for n in ('a.txt', 'b.txt', 'c.csv'):\n"
                 "    open(n, 'w').write(n)\n"),
        "return_files": ["*.txt"],
    }), "ok")
    files = res["files"]
    assert set(files) == {"a.txt", "b.txt"}, f"glob *.txt returned {files}"
    assert base64.b64decode(files["a.txt"]["content_base64"]) == b"a.txt"


# ---------------------------------------------------------------------------------------------
# request failures: 4xx


def test_network_refused_for_anonymous(srv):
    expect_error(srv.v1({"code": "print(1)", "network": True}), 403, "NetworkNotAllowed")


@pytest.mark.parametrize("body,etype", [
    ({}, "ValidationError"),
    ({"code": ""}, "ValidationError"),
    ({"code": 5}, "ValidationError"),
    ({"code": "print(1)", "stdin": 5}, "ValidationError"),
    ({"code": "print(1)", "files": {"a": "YQ=="}}, "ValidationError"),
    ({"code": "print(1)", "files": [{"name": "a"}]}, "ValidationError"),
    ({"code": "print(1)", "files": [{"name": "../a", "content_base64": "YQ=="}]},
     "ValidationError"),
    ({"code": "print(1)", "return_files": "out.txt"}, "ValidationError"),
    ({"code": "print(1)", "main": "yes"}, "ValidationError"),
    ({"code": "print(1)", "timeout": "5"}, "ValidationError"),
    ({"code": "print(1)", "timeout": 0}, "ValidationError"),
    ({"code": "print(1)", "timeout": 600}, "ValidationError"),
    ({"code": "print(1)", "memory_mb": 8}, "ValidationError"),
    ({"code": "print(1)", "memory_mb": 64.5}, "ValidationError"),
    ({"code": "print(1)", "memory_mb": 4096}, "ValidationError"),
    ({"code": "print(1)", "network": "no"}, "ValidationError"),
    ({"code": "print(1)", "stdin_data": "compat field"}, "ValidationError"),
    ({"code": "print(1)", "surprise": 1}, "ValidationError"),
])
def test_request_failures_are_400(srv, body, etype):
    expect_error(srv.v1(body), 400, etype)
    srv.assert_healthy()


def test_malformed_json_is_400(srv):
    expect_error(srv.post("/v1/execute", data=b"{code: 1}"), 400, "InvalidRequest")


def test_bad_key_is_401(srv):
    expect_error(srv.v1({"code": "print(1)"}, key="bogus-key"), 401, "Unauthorized")


# ---------------------------------------------------------------------------------------------
# multipart/form-data (fields code, stdin, main, timeout, memory_mb, network, return_files
# repeated; every file part is an input file under its own file name, no base64)


def multipart(srv, fields, files=(), path="/v1/execute", key=None):
    """POST multipart/form-data (encoded by urllib3): fields [(name, value)], files
    [(field, (filename, bytes[, mime]))]."""
    body, ctype = encode_multipart_formdata(list(fields) + list(files))
    return srv.post(path, data=body, content_type=ctype, key=key)


def test_multipart_round_trip(srv):
    blob = bytes(range(256)) * 64
    r = multipart(srv, [
        ("code", "import sys\nd = open('blob.bin', 'rb').read()\nt = open('t.txt').read()\n"
                 "open('copy.bin', 'wb').write(d[::-1])\n"
                 "print(len(d), t, sys.stdin.read())"),
        ("stdin", "from-stdin"),
        ("return_files", "copy.bin"),
        ("return_files", "missing.txt"),
    ], files=[("files", ("blob.bin", blob, "application/octet-stream")),
              ("files", ("t.txt", b"text-part", "text/plain"))])
    assert r.request.headers["Content-Type"].startswith("multipart/form-data")
    res = result_of(r, "ok")
    assert res["stdout"] == f"{len(blob)} text-part from-stdin\n", res
    assert base64.b64decode(res["files"]["copy.bin"]["content_base64"]) == blob[::-1]
    assert res["files"]["copy.bin"]["size"] == len(blob)
    assert set(res["files"]["missing.txt"]) == {"error"}


def test_readme_examples_verbatim(srv):
    # README: curl -s .../v1/execute -H 'Content-Type: application/json' -d '{"code": "print(6*7)"}'
    r = srv.post("/v1/execute", data=b'{"code": "print(6*7)"}')
    assert result_of(r, "ok")["stdout"] == "42\n"
    # README: curl -s .../v1/execute --form-string code='print(open("data.csv").read())'
    #                                 -F files=@data.csv
    csv = b"a,b\n1,2\n"
    r = multipart(srv, [("code", 'print(open("data.csv").read())')],
                  [("files", ("data.csv", csv, "text/csv"))])
    assert result_of(r, "ok")["stdout"] == csv.decode() + "\n"


def test_multipart_main_timeout_memory(srv):
    res = result_of(multipart(srv, [("code", "def main():\n    return {'ok': True}\n"),
                                    ("main", "true"), ("timeout", "3"), ("memory_mb", "128")]),
                    "ok")
    assert res["result"] == {"ok": True}
    res = result_of(multipart(srv, [("code", "import time\ntime.sleep(20)"), ("timeout", "1")]),
                    "timeout")
    res = result_of(multipart(srv, [("code", "import os")]), "rejected")
    assert res["error"]["disallowed"] == ["os"]


@pytest.mark.parametrize("fields,files", [
    ([("stdin", "no code")], []),
    ([("code", "")], []),
    ([("code", "print(1)"), ("surprise", "1")], []),
    ([("code", "print(1)"), ("code", "print(2)")], []),
    ([("code", "print(1)"), ("main", "maybe")], []),
    ([("code", "print(1)"), ("timeout", "soon")], []),
    ([("code", "print(1)"), ("timeout", "600")], []),
    ([("code", "print(1)"), ("memory_mb", "8")], []),
    ([("code", "print(1)"), ("return_files", "../x")], []),
    ([("code", "print(1)")], [("files", ("..", b"x"))]),
    ([("code", "print(1)")], [("files", ("a.txt", b"1")), ("files", ("a.txt", b"2"))]),
])
def test_multipart_request_failures_are_400(srv, fields, files):
    expect_error(multipart(srv, fields, files), 400, "ValidationError")
    srv.assert_healthy()


def test_multipart_over_a_count_is_413(srv):
    """Over a limit is PayloadTooLarge, by JSON or by form, read whole or cut off."""
    body = expect_error(multipart(srv, [("code", "print(1)")],
                                  [("files", (f"f{i}", b"x")) for i in range(3)]),
                        413, "PayloadTooLarge")
    assert body["error_details"]["message"] == "at most 2 files may be attached", body
    srv.assert_healthy()


# One validator reads JSON bodies and forms: a form that asks what a JSON body asks wrongly is
# refused the same way, with the same message.
@pytest.mark.parametrize("json_body,fields", [
    # A name to return twice: multipart let it through before.
    ({"code": "print(1)", "return_files": ["a", "a"]},
     [("code", "print(1)"), ("return_files", "a"), ("return_files", "a")]),
    ({"code": "print(1)", "return_files": ["../x"]},
     [("code", "print(1)"), ("return_files", "../x")]),
    ({"code": "print(1)", "main": "maybe"}, [("code", "print(1)"), ("main", "maybe")]),
    ({"code": "print(1)", "network": "yes"}, [("code", "print(1)"), ("network", "yes")]),
    ({"code": "print(1)", "timeout": "soon"}, [("code", "print(1)"), ("timeout", "soon")]),
    ({"code": "print(1)", "timeout": 0}, [("code", "print(1)"), ("timeout", "0")]),
    ({"code": "print(1)", "timeout": 5000}, [("code", "print(1)"), ("timeout", "5000")]),
    ({"code": "print(1)", "timeout": 60}, [("code", "print(1)"), ("timeout", "60")]),
    ({"code": "print(1)", "memory_mb": 8}, [("code", "print(1)"), ("memory_mb", "8")]),
    ({"code": "print(1)", "surprise": 1}, [("code", "print(1)"), ("surprise", "1")]),
    ({"code": ""}, [("code", "")]),
    ({"stdin": "no code"}, [("stdin", "no code")]),
])
def test_multipart_and_json_are_refused_alike(srv, json_body, fields):
    j = expect_error(srv.v1(json_body), 400, "ValidationError")
    f = expect_error(multipart(srv, fields), 400, "ValidationError")
    assert f["error_details"]["message"] == j["error_details"]["message"], (j, f)


@pytest.mark.parametrize("fields,message", [
    # Given twice: a JSON body cannot repeat a key; a form may not repeat a field but
    # return_files.
    ([("code", "print(1)"), ("main", "true"), ("main", "false")], "field `main` is given twice"),
    ([("code", "print(1)"), ("timeout", "1"), ("timeout", "2")],
     "field `timeout` is given twice"),
    ([("code", "print(1)"), ("memory_mb", "64"), ("memory_mb", "64")],
     "field `memory_mb` is given twice"),
    # The code is counted in characters, so a form's must be UTF-8, as a JSON body's is.
    ([("code", b"print('\xff')")], "`code` is not valid UTF-8"),
    ([("code", "print(1)"), ("files", "a.txt")], "`files` must be file parts"),
])
def test_multipart_refusals_of_forms(srv, fields, message):
    body = expect_error(multipart(srv, fields), 400, "ValidationError")
    assert message in body["error_details"]["message"], body


def test_multipart_timeout_reads_as_json_number(srv):
    res = result_of(multipart(srv, [("code", "print(1)"), ("timeout", " 2.5e0 ")]), "ok")
    assert res["stdout"] == "1\n"
    body = expect_error(multipart(srv, [("code", "print(1)"), ("timeout", "0x2")]), 400,
                        "ValidationError")
    assert body["error_details"]["message"] == "`timeout` must be a number of seconds", body


def test_multipart_file_over_8_mib(srv):
    r = multipart(srv, [("code", "print(1)")],
                  [("files", ("big.bin", b"\0" * (8 * MIB + 1)))])
    expect_error(r, 413, "PayloadTooLarge")


def test_multipart_without_boundary(srv):
    r = srv.post("/v1/execute", data=b"code=print(1)", content_type="multipart/form-data")
    expect_error(r, 400)


def test_multipart_on_compat_route_is_415(srv):
    r = multipart(srv, [("code", "print(1)")], path="/execute")
    body = expect_error(r, 415, "UnsupportedMediaType")
    assert "json" in body["error_details"]["message"].lower(), body


def test_other_media_types_are_415(srv):
    r = srv.post("/v1/execute", data=b"print(1)", content_type="text/x-python")
    body = expect_error(r, 415, "UnsupportedMediaType")
    assert "multipart" in body["error_details"]["message"].lower(), body


def test_get_on_execute_is_405(srv):
    r = srv.get("/v1/execute")
    body = expect_error(r, 405, "MethodNotAllowed")
    assert r.headers.get("Allow") == "POST, OPTIONS", r.headers
    assert body["error_details"]["message"] == "GET is not allowed here; /v1/execute takes POST"


@pytest.mark.parametrize("method,path,allow", [
    ("PUT", "/execute", "POST, OPTIONS"),
    ("DELETE", "/execute-with-files", "POST, OPTIONS"),
    ("POST", "/v1/info", "GET, HEAD, OPTIONS"),
    ("PUT", "/v1/health", "GET, HEAD, OPTIONS"),
    ("POST", "/docs", "GET, HEAD, OPTIONS"),
])
def test_a_405_names_the_methods_allowed(srv, method, path, allow):
    r = srv.request(method, path)
    expect_error(r, 405, "MethodNotAllowed")
    assert r.headers.get("Allow") == allow, (method, path, r.headers)


def test_v1_result_matches_compat_execution(srv):
    code = "print(sum(range(10)))"
    v1 = result_of(srv.v1({"code": code}), "ok")
    compat = body_of(srv.execute({"code": code}))
    assert compat["execution_details"]["stdout"] == v1["stdout"] == "45\n"
    json.dumps(v1)  # plain JSON all the way down


@pytest.mark.parametrize("path,body,field,meant", [
    ("/v1/execute", {"code": "print(1)", "timout": 2}, "timout", "timeout"),
    ("/v1/execute", {"Code": "print(1)"}, "Code", "code"),
    ("/execute", {"code": "print(1)", "stdin": "a"}, "stdin", None),
    ("/execute", {"code": "print(1)", "return_file": ["a"]}, "return_file", "return_files"),
    ("/execute", {"code": "print(1)", "API_KEY": "k"}, "API_KEY", "api_key"),
])
def test_an_unknown_field_says_what_it_may_mean(srv, path, body, field, meant):
    r = srv.post(path, body)
    message = expect_error(r, 400, "ValidationError")["error_details"]["message"]
    want = f"unknown field `{field}`" + (f"; did you mean `{meant}`?" if meant else "")
    assert message == want, message


def test_an_unknown_form_field_says_what_it_may_mean(srv):
    r = multipart(srv, [("code", "print(1)"), ("memory_MB", "64")])
    message = expect_error(r, 400, "ValidationError")["error_details"]["message"]
    assert message == "unknown field `memory_MB`; did you mean `memory_mb`?", message
