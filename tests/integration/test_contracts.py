"""The four documented systems pybox stands in for, against a real `pybox serve`.

Every documented request is sent as its client sends it, and its documented answer is checked
field by field (docs/api.md, "POST /execute"):

- S1, the "Python Sandbox API": its six documented requests (the admin key from
  PYTHON_EXE_KEY, the Pillow grayscale round trip) and its error shape;
- S2, the minimal Flask runner: its two requests, `output`/`error`/`returncode`/
  `execution_time`, its 400 `{"error": "Code is not safe: ..."}`, a failing script that still
  answers with its output, CORS;
- S3, the main() runner: its two requests (the first imports pandas) and its two errors;
- S4, the FastAPI server: `GET /`, `GET /health`, its documented request (timeout 30, over the
  anonymous limit, runs with that limit), error handling, forbidden imports and syntax errors
  as return_code 1, a timeout as -1, the files map both ways, `POST /execute-with-files`, its
  422 and 400 `detail` shapes;
- and what pybox adds to tell them apart: `timeout_applied`, and `server_status.load` as the
  documented string with the number in `load_average`.
"""
import base64
import io
import json
import re
import threading
import time

import pytest
import requests
from PIL import Image  # python3-pil, as the server's own sandbox has it

from conftest import SLOW, b64, body_of

ANON_TIMEOUT = 10  # pybox's default wall limit for anonymous callers, as S1 documents it


@pytest.fixture(scope="module")
def srv(module_start_server):
    # The admin key as S1 reads it; quotas high enough for the module; the zygote preloaded
    # (numpy, PIL), as in production.
    return module_start_server("--rpm", "1000", "--rpd", "100000", preload=True,
                               admin_env="PYTHON_EXE_KEY")


def post(srv, body, path="/execute", **kw):
    """POST a JSON body exactly as the documented clients serialize it."""
    return srv.post(path, data=json.dumps(body).encode(), **kw)


# ---------------------------------------------------------------------------------------------
# The shapes


def check_s1_success(r, admin=False):
    """S1's documented success, field by field; returns the body."""
    assert r.status_code == 200, r.text
    body = body_of(r)
    assert body["status"] == "success", body
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["timestamp_utc"]), body
    user = body["user_info"]
    assert user["ip_address"] == "127.0.0.1", user
    if admin:
        assert user["rate_limits_applied"] is False, user
    else:
        assert set(user) >= {"daily_quota_limit", "requests_today", "requests_remaining_today"}
        assert user["requests_remaining_today"] == user["daily_quota_limit"] - \
            user["requests_today"], user
    st = body["server_status"]
    assert st["load"] in ("normal", "high"), st
    assert isinstance(st["load_average"], (int, float)), st
    assert isinstance(st["active_processes_at_request"], int), st
    assert isinstance(st["max_concurrent_processes"], int), st
    ctx = body["request_context"]
    assert set(ctx) == {"code_length", "attachment_count", "stdin_provided",
                        "processed_attachments"}, ctx
    ex = body["execution_details"]
    assert ex["success"] is True and ex["exit_code"] == 0, ex
    assert isinstance(ex["stdout"], str) and isinstance(ex["stderr"], str), ex
    assert isinstance(ex["execution_duration_sec"], float), ex
    assert isinstance(ex["output_files"], dict), ex
    check_every_shape(body)
    return body


def check_every_shape(body):
    """The fields every execution answer of /execute carries, whichever client reads it."""
    for k in ("stdout", "stderr", "output"):
        assert isinstance(body[k], str), (k, body)
    assert isinstance(body["return_code"], int) and body["returncode"] == body["return_code"]
    assert isinstance(body["output_files"], dict), body
    for name, data in body["output_files"].items():
        base64.b64decode(data, validate=True)
    assert isinstance(body.get("error", ""), str), body  # S2, S3: always a string
    assert isinstance(body["timeout_applied"], (int, float)), body
    assert isinstance(body["timeout_clamped"], bool), body


def check_s2(body, output, returncode=0):
    assert body["output"] == output, body
    assert body["returncode"] == returncode, body
    assert isinstance(body["error"], str), body
    assert re.fullmatch(r"\d+\.\d{4} seconds", body["execution_time"]), body


def check_s4(r, stdout, return_code, files=None):
    """S4's documented answer: a 200 with its four fields at the top level."""
    assert r.status_code == 200, r.text
    body = body_of(r)
    assert body["stdout"] == stdout, body
    assert body["return_code"] == return_code, body
    assert isinstance(body["stderr"], str), body
    out = {name: base64.b64decode(v, validate=True) for name, v in body["output_files"].items()}
    assert out == (files or {}), body
    return body


def s1_error(r, status, etype):
    """S1's documented error: {status, timestamp_utc, error_details: {type, message}}, and
    `error` a string (a run's stderr, S2's reading, which may be empty)."""
    assert r.status_code == status, r.text
    body = body_of(r)
    assert body["status"] == "error", body
    assert isinstance(body["timestamp_utc"], str), body
    assert body["error_details"]["type"] == etype, body
    assert isinstance(body["error_details"]["message"], str), body
    assert body["error_details"]["message"], body
    assert isinstance(body["error"], str), body
    return body


def error_of(r, status):
    """The top-level `error` of an answer with this status: S2's and S3's, always a string."""
    assert r.status_code == status, r.text
    error = body_of(r)["error"]
    assert isinstance(error, str), r.text
    return error


S4 = {"timeout": 30, "allow_network": False}  # what S4's client adds to every request


def s4(code, inputs=None, **kw):
    """A request as S4's client sends it: {code, timeout, allow_network, files}, the files
    `inputs` ({name: bytes}) in base64; `kw` replaces fields as they are."""
    body = {"code": code, **S4, "files": {n: b64(d) for n, d in (inputs or {}).items()}}
    body.update(kw)
    return body


# ---------------------------------------------------------------------------------------------
# S1: the "Python Sandbox API"


def test_s1_sum(srv):
    code = "print(f\"The sum is {10 + 25}\")"
    body = check_s1_success(post(srv, {"code": code}))
    assert body["execution_details"]["stdout"] == "The sum is 35\n", body
    assert body["execution_details"]["stderr"] == "", body
    assert body["request_context"] == {"code_length": len(code), "attachment_count": 0,
                                       "stdin_provided": False, "processed_attachments": []}


def test_s1_stdin(srv):
    r = post(srv, {"code": "import sys\nname = sys.stdin.read().strip()\nprint(f\"Hello, {name}!\")",
                   "stdin_data": "Alice"})
    body = check_s1_success(r)
    assert body["execution_details"]["stdout"] == "Hello, Alice!\n", body
    assert body["request_context"]["stdin_provided"] is True


def test_s1_attachment(srv):
    text = b"a file, in lower case\n"
    r = post(srv, {"code": "with open(\"input.txt\", \"r\") as f:\n  print(f.read().upper())",
                   "attachments": [{"filename": "input.txt", "content_base_64": b64(text)}]})
    body = check_s1_success(r)
    assert body["execution_details"]["stdout"] == text.decode().upper() + "\n", body
    assert body["request_context"]["attachment_count"] == 1
    assert body["request_context"]["processed_attachments"] == [
        {"filename": "input.txt", "size_bytes": len(text)}]
    # No return_files: what the script left comes back, the attachment does not.
    assert body["execution_details"]["output_files"] == {}, body


def test_s1_return_files(srv):
    r = post(srv, {"code": "with open(\"result.txt\", \"w\") as f:\n"
                           "  f.write(\"Process completed successfully.\")",
                   "return_files": ["result.txt"]})
    body = check_s1_success(r)
    out = body["execution_details"]["output_files"]
    assert set(out) == {"result.txt"}, out
    assert base64.b64decode(out["result.txt"]["content_base64"]) == \
        b"Process completed successfully."
    assert out["result.txt"]["size_bytes"] == len("Process completed successfully.")


def test_s1_admin_key(srv):
    # `os` is outside the allowlist: the admin key (PYTHON_EXE_KEY) bypasses it, and the rates.
    r = post(srv, {"code": "import os\nprint(f\"Running with {os.cpu_count()} CPU cores "
                           "available.\")", "api_key": srv.admin_key})
    body = check_s1_success(r, admin=True)
    assert re.fullmatch(r"Running with \d+ CPU cores available\.\n",
                        body["execution_details"]["stdout"]), body
    assert body["user_info"]["rate_limits_applied"] is False


def test_s1_pillow_grayscale(srv):
    photo = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 40, 90)).save(photo, "JPEG")
    r = post(srv, {"code": "from PIL import Image\n"
                           "img = Image.open(\"input_photo.jpg\")\n"
                           "gray = img.convert(\"L\")\n"
                           "gray.save(\"output_grayscale.png\")\n"
                           "print(f\"Converted {img.size} to grayscale\")",
                   "attachments": [{"filename": "input_photo.jpg",
                                    "content_base_64": b64(photo.getvalue())}],
                   "return_files": ["output_grayscale.png"]})
    body = check_s1_success(r)
    png = base64.b64decode(
        body["execution_details"]["output_files"]["output_grayscale.png"]["content_base64"])
    img = Image.open(io.BytesIO(png))
    assert (img.format, img.mode, img.size) == ("PNG", "L", (24, 16))


def test_s1_errors(srv):
    s1_error(post(srv, {"code": "import socket"}), 400, "ForbiddenImportError")
    body = s1_error(post(srv, {"code": "print('partial')\nraise SystemExit(2)"}), 400,
                    "RuntimeError")
    # A script that exits non-zero is a 400 RuntimeError with its output.
    assert body["error_details"]["execution_details"]["stdout"] == "partial\n", body
    body = s1_error(post(srv, {"code": "while True:\n    pass"}), 400, "TimeoutError")
    assert body["timeout_applied"] == ANON_TIMEOUT, body
    r = srv.post("/execute", data=b'{"code": ')
    assert r.status_code == 400 and body_of(r)["status"] == "error", r.text
    over = base64.b64encode(b"\0" * (8 * 1024 * 1024 + 1)).decode()
    s1_error(post(srv, {"code": "print(1)", "attachments": [
        {"filename": "big.bin", "content_base_64": over}]}), 400, "ValidationError")


def test_s1_server_status_load_is_a_string(start_server):
    one = start_server("--rpm", "1000", "--rpd", "1000", "--max-concurrency", "1",
                       "--queue", "4:20")
    first = {}

    def busy():
        first["r"] = post(one, {"code": "import time\ntime.sleep(2)\nprint('done')"})

    t = threading.Thread(target=busy)
    t.start()
    deadline = time.monotonic() + 20 * SLOW
    while body_of(one.get("/v1/health"))["active_executions"] < 1:
        assert time.monotonic() < deadline, "the first execution never started"
        time.sleep(0.01)
    second = check_s1_success(post(one, {"code": "print(2)"}))
    t.join(60)
    st = second["server_status"]
    assert (st["load"], st["active_processes_at_request"], st["max_concurrent_processes"]) == \
        ("high", 1, 1), st
    st = check_s1_success(first["r"])["server_status"]
    assert (st["load"], st["active_processes_at_request"]) == ("normal", 0), st


# ---------------------------------------------------------------------------------------------
# S2: the minimal Flask runner


def test_s2_hello(srv):
    r = post(srv, {"code": "print('Hello, world!')"})
    assert r.status_code == 200, r.text
    body = body_of(r)
    check_s2(body, "Hello, world!\n")
    assert body["error"] == "", body


def test_s2_math(srv):
    body = body_of(post(srv, {"code": "import math\nprint(math.sqrt(16))"}))
    check_s2(body, "4.0\n")


def test_s2_disallowed_import(srv):
    r = post(srv, {"code": "import subprocess\nsubprocess.run(['ls'])"})
    assert error_of(r, 400) == "Code is not safe: Disallowed import: subprocess"


def test_s2_missing_code(srv):
    assert error_of(post(srv, {"source": "print(1)"}), 400)


def test_s2_failing_script_answers_with_its_output(srv):
    r = post(srv, {"code": "import sys\nprint('out')\nprint('oops', file=sys.stderr)\nsys.exit(3)"})
    assert r.status_code == 400, r.text  # S1's RuntimeError, with S2's fields
    body = body_of(r)
    check_s2(body, "out\n", returncode=3)
    assert body["error"] == "oops\n", body


def test_s2_cors(srv):
    r = post(srv, {"code": "print(1)"}, headers={"Origin": "https://app.example"})
    assert r.headers.get("Access-Control-Allow-Origin") in ("*", "https://app.example")


# ---------------------------------------------------------------------------------------------
# S3: the main() runner


def test_s3_documented_example(srv):
    # Needs pandas installed and on the default allowlist.
    r = post(srv, {"script": "def main():\n    import numpy as np\n    import pandas as pd\n"
                             "    print(\"Processing data...\")\n"
                             "    data = np.array([1, 2, 3, 4, 5])\n"
                             "    return {\"mean\": float(np.mean(data)), "
                             "\"sum\": int(np.sum(data))}"})
    assert r.status_code == 200, r.text
    body = body_of(r)
    assert body["result"] == {"mean": 3.0, "sum": 15}, body
    assert body["stdout"] == "Processing data...", body
    assert "error" not in body, body


def test_s3_status_ok(srv):
    r = post(srv, {"script": "def main():\n    return {\"status\": \"ok\"}"})
    assert r.status_code == 200, r.text
    body = body_of(r)
    assert (body["result"], body["stdout"]) == ({"status": "ok"}, ""), body


def test_s3_no_main(srv):
    r = post(srv, {"script": "def helper():\n    return 1\n"})
    assert error_of(r, 400) == "Script must contain a 'def main():' function"


def test_s3_not_json(srv):
    r = post(srv, {"script": "def main():\n    return {1, 2, 3}\n"})
    assert error_of(r, 400) == "main() must return a JSON-serializable object"


# ---------------------------------------------------------------------------------------------
# S4: the FastAPI server, as its client and its docs use it


def test_s4_root(srv):
    r = srv.get("/", headers={"Accept": "application/json"})
    assert r.status_code == 200
    body = body_of(r)
    assert body["status"] == "ok" and isinstance(body["message"], str), body
    assert isinstance(body["version"], str), body
    # A browser still gets the page.
    page = srv.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert page.headers["Content-Type"].startswith("text/html")


def test_s4_health(srv):
    r = srv.get("/health")
    assert r.status_code == 200
    body = body_of(r)
    assert (body["status"], body["execution_mode"]) == ("healthy", "secure"), body
    assert body["config"] == {"default_timeout": ANON_TIMEOUT, "default_allow_network": False,
                              "max_output_size": 1 << 20}, body
    # pybox's own health endpoint is unchanged.
    assert body_of(srv.get("/v1/health"))["status"] == "ok"


def test_s4_documented_request(srv):
    # timeout 30 is over the anonymous limit: it runs with that limit, and says so.
    r = post(srv, {"code": "print(\"Hello, World!\")", "timeout": 30, "allow_network": False})
    body = check_s4(r, "Hello, World!\n", 0)
    assert body["stderr"] == "", body
    assert (body["timeout_applied"], body["timeout_clamped"]) == (ANON_TIMEOUT, True), body
    check_every_shape(body)


def test_s4_error_handling(srv):
    body = check_s4(post(srv, s4("print(1/0)")), "", 1)
    assert "Traceback" in body["stderr"] and "ZeroDivisionError" in body["stderr"], body


def test_s4_forbidden_import_is_return_code_1(srv):
    body = check_s4(post(srv, s4("import math\nimport subprocess\n")), "", 1)
    assert "ForbiddenImportError" in body["stderr"] and "subprocess" in body["stderr"], body


def test_s4_syntax_error_is_return_code_1(srv):
    body = check_s4(post(srv, s4("x = 1\nif x\n    print(x)\n")), "", 1)
    assert "SyntaxError" in body["stderr"], body


def test_s4_timeout_is_minus_one(srv):
    t0 = time.monotonic()
    body = check_s4(post(srv, s4("print('spinning', flush=True)\nwhile True:\n    pass",
                                 timeout=1)), "spinning\n", -1)
    assert time.monotonic() - t0 < 8 * SLOW
    assert "TimeoutError" in body["stderr"], body
    assert (body["timeout_applied"], body["timeout_clamped"]) == (1, False), body


def test_s4_files_both_ways(srv):
    code = ("import csv\n"
            "rows = list(csv.DictReader(open('data.csv')))\n"
            "total = sum(int(r['value']) for r in rows)\n"
            "print(f'Total: {total}')\n"
            "open('result.txt', 'w').write(str(total))\n"
            "open('bytes.bin', 'wb').write(bytes(range(256)))\n")
    data = b"id,value\n1,100\n2,200\n3,300\n"
    # The input file does not come back; every file the script made does.
    check_s4(post(srv, s4(code, {"data.csv": data})), "Total: 600\n", 0,
             {"result.txt": b"600", "bytes.bin": bytes(range(256))})


def test_s4_files_without_csv(srv):
    # The same round trip with no module beyond the allowlist pybox always had.
    code = ("data = open('in.txt', 'rb').read()\n"
            "open('upper.txt', 'wb').write(data.upper())\n"
            "print(len(data))")
    check_s4(post(srv, s4(code, {"in.txt": b"some text"})), "9\n", 0,
             {"upper.txt": b"SOME TEXT"})


def test_s4_execute_with_files(srv):
    r = requests.post(srv.url + "/execute-with-files", timeout=60,
                      data={"code": "print(open('a.txt').read() + open('b.txt').read())\n"
                                    "open('out.txt', 'w').write('made')",
                            "timeout": "30", "allow_network": "false"},
                      files=[("files", ("a.txt", b"first ")), ("files", ("b.txt", b"second"))])
    body = check_s4(r, "first second\n", 0, {"out.txt": b"made"})
    assert isinstance(body["execution_time"], float), body
    assert body["timeout_applied"] == ANON_TIMEOUT and body["timeout_clamped"] is True, body
    # Every execution is a 200 there too.
    r = requests.post(srv.url + "/execute-with-files", timeout=60,
                      data={"code": "raise ValueError('no')", "timeout": "5"})
    assert check_s4(r, "", 1)["stderr"].endswith("ValueError: no\n")


@pytest.mark.parametrize("bad,kind", [
    (0, "greater_than_equal"), (301, "less_than_equal"), ("abc", "int_type"),
    (2.5, "int_from_float"), (None, "int_type"),
])
def test_s4_422_timeout(srv, bad, kind):
    r = post(srv, s4("print(1)", timeout=bad))
    assert r.status_code == 422, r.text
    detail = body_of(r)["detail"]
    assert isinstance(detail, list) and len(detail) == 1, detail
    assert (detail[0]["loc"], detail[0]["type"]) == (["body", "timeout"], kind), detail
    assert isinstance(detail[0]["msg"], str) and detail[0]["msg"], detail


def test_s4_422_other_fields(srv):
    for body, loc in [({"timeout": 5, "allow_network": False}, ["body", "code"]),
                      (s4(5), ["body", "code"]),
                      (s4("print(1)", allow_network="no"), ["body", "allow_network"]),
                      (s4("print(1)", files=[]), ["body", "files"]),
                      (s4("print(1)", files={"a.txt": 1}), ["body", "files", "a.txt"])]:
        r = post(srv, body)
        assert r.status_code == 422, (body, r.text)
        assert [d["loc"] for d in body_of(r)["detail"]] == [loc], r.text
    r = requests.post(srv.url + "/execute-with-files", timeout=60,
                      data={"code": "print(1)", "timeout": "0"})
    assert r.status_code == 422, r.text
    assert body_of(r)["detail"][0]["loc"] == ["body", "timeout"], r.text
    r = requests.post(srv.url + "/execute-with-files", timeout=60, data={"timeout": "5"},
                      files=[("files", ("a.txt", b"x"))])
    assert r.status_code == 422 and body_of(r)["detail"][0]["loc"] == ["body", "code"], r.text


def test_s4_upload_booleans_and_text_files_part(srv):
    # The form's allow_network is read as pydantic reads a boolean from a string: what
    # requests sends for data={"allow_network": False} ("False") is false, any case.
    for word in ("False", "false", "0", "off", "f", "n", "NO"):
        r = requests.post(srv.url + "/execute-with-files", timeout=60,
                          data={"code": "print(1)", "timeout": "5", "allow_network": word})
        check_s4(r, "1\n", 0)
    r = requests.post(srv.url + "/execute-with-files", timeout=60,
                      data={"code": "print(1)", "allow_network": True})
    assert r.status_code == 403, r.text
    # Empty and unknown words are no boolean: FastAPI's 422.
    for word in ("", "maybe"):
        r = requests.post(srv.url + "/execute-with-files", timeout=60,
                          data={"code": "print(1)", "allow_network": word})
        assert r.status_code == 422, (word, r.text)
        detail = body_of(r)["detail"]
        assert [(d["loc"], d["type"]) for d in detail] == [
            (["body", "allow_network"], "bool_parsing")], r.text
    # A text part named `files` is not an upload: a 422 too.
    r = requests.post(srv.url + "/execute-with-files", timeout=60,
                      data={"code": "print(1)", "files": "abc"},
                      files=[("files", ("a.txt", b"x"))])
    assert r.status_code == 422, r.text
    assert body_of(r)["detail"][0]["loc"][:2] == ["body", "files"], r.text


def test_s4_400_bad_base64(srv):
    r = post(srv, s4("print(1)", files={"a.txt": "%%% not base64"}))
    assert r.status_code == 400, r.text
    body = body_of(r)
    assert isinstance(body["detail"], str) and "base64" in body["detail"], body


def test_s4_network_refused(srv):
    r = post(srv, s4("print(1)", allow_network=True))
    assert r.status_code == 403, r.text
    assert isinstance(body_of(r)["detail"], str), r.text


# ---------------------------------------------------------------------------------------------
# The timeout clamp, on /execute only


def test_timeout_clamp_applies_the_callers_limit(start_server):
    short = start_server("--rpm", "1000", "--rpd", "1000", "--timeout", "2")
    t0 = time.monotonic()
    body = check_s4(post(short, s4("while True:\n    pass")), "", -1)
    elapsed = time.monotonic() - t0
    assert (body["timeout_applied"], body["timeout_clamped"]) == (2, True), body
    assert 1.5 < elapsed < 2 + 6 * SLOW, f"ran {elapsed:.1f} s with a limit of 2 s"
    # /v1/execute keeps refusing a timeout over the caller's limit.
    r = short.v1({"code": "print(1)", "timeout": 30})
    assert r.status_code == 400, r.text
    assert body_of(r)["error_details"]["type"] == "ValidationError"
