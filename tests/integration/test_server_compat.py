"""POST /execute, the compatible dialect (docs/api.md).

The documented example requests are sent verbatim; every success is checked against the whole
documented response shape, and every error type against its HTTP status.
"""
import base64
import datetime
import re
import struct
import time
import zlib

import pytest

from conftest import REPO, SLOW, b64, body_of, expect_error

# The documented examples, byte for byte as a client sends them.
HELLO_EXAMPLE = {"code": "print('Hello, World!')"}
STDIN_EXAMPLE = {"code": "import sys\ndata = sys.stdin.read()\nprint(data.upper())",
                 "stdin_data": "hello"}


@pytest.fixture(scope="module")
def srv(module_start_server):
    # Preloaded zygote (numpy, PIL) as in production; quotas high enough for the whole module.
    return module_start_server("--rpm", "1000", "--rpd", "100000", "--timeout", "5",
                               "--max-concurrency", "4", preload=True)


# ---------------------------------------------------------------------------------------------
# helpers


def parse_iso_utc(text):
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)", text), text
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - t).total_seconds()) < 300, f"timestamp_utc {text} is not now ({now})"
    return t


def check_success(resp, admin=False):
    """Assert the whole documented success shape; returns the body."""
    body = body_of(resp)
    assert resp.status_code == 200, resp.text
    assert resp.headers.get("X-Request-Id")
    assert body["status"] == "success", body
    parse_iso_utc(body["timestamp_utc"])

    user = body["user_info"]
    assert user["ip_address"] == "127.0.0.1", user
    if admin:
        assert user.get("role") == "admin", user
        assert user.get("rate_limits_applied") is False, user
    else:
        for k in ("daily_quota_limit", "requests_today", "requests_remaining_today"):
            assert isinstance(user[k], int) and not isinstance(user[k], bool), (k, user)
        assert user["requests_today"] >= 1, user
        assert user["requests_remaining_today"] == user["daily_quota_limit"] - \
            user["requests_today"], user

    st = body["server_status"]
    # The documented string; the host's load average is a field of its own.
    assert st["load"] in ("normal", "high"), st
    assert isinstance(st["load_average"], (int, float)) and st["load_average"] >= 0, st
    assert isinstance(st["active_processes_at_request"], int), st
    assert 0 <= st["active_processes_at_request"] <= st["max_concurrent_processes"], st
    assert st["max_concurrent_processes"] == 4, st

    ctx = body["request_context"]
    assert isinstance(ctx["code_length"], int), ctx
    assert isinstance(ctx["attachment_count"], int), ctx
    assert isinstance(ctx["stdin_provided"], bool), ctx
    assert isinstance(ctx["processed_attachments"], list), ctx
    assert len(ctx["processed_attachments"]) == ctx["attachment_count"], ctx

    ex = body["execution_details"]
    assert ex["success"] is True, ex
    assert isinstance(ex["stdout"], str) and isinstance(ex["stderr"], str), ex
    assert ex["exit_code"] == 0, ex
    assert isinstance(ex["execution_duration_sec"], (int, float)), ex
    assert 0 <= ex["execution_duration_sec"] < 60, ex
    assert isinstance(ex["output_files"], dict), ex
    return body


def make_png(width, height):
    """A small RGB PNG (8-bit, colour type 2), built with zlib and struct only."""
    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter: none
        for x in range(width):
            raw += bytes(((x * 40) % 256, (y * 50) % 256, ((x + y) * 30) % 256))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(raw)))
            + chunk(b"IEND", b""))


def png_header(data):
    """(width, height, bit depth, colour type) from a PNG's signature and IHDR."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"not a PNG: {data[:16]!r}"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, (length, kind)
    width, height, depth, ctype = struct.unpack(">IIBB", data[16:26])
    crc = struct.unpack(">I", data[29:33])[0]
    assert crc == zlib.crc32(data[12:29]) & 0xffffffff, "IHDR CRC mismatch"
    return width, height, depth, ctype


# ---------------------------------------------------------------------------------------------
# the documented examples, verbatim


def test_hello_world_example_verbatim(srv):
    r = srv.post("/execute", data=b'{"code": "print(\'Hello, World!\')"}')
    body = check_success(r)
    assert body["execution_details"]["stdout"] == "Hello, World!\n"
    assert body["execution_details"]["stderr"] == ""
    assert body["execution_details"]["output_files"] == {}
    ctx = body["request_context"]
    assert ctx == {"code_length": len(HELLO_EXAMPLE["code"]), "attachment_count": 0,
                   "stdin_provided": False, "processed_attachments": []}, ctx


def test_stdin_example_verbatim(srv):
    r = srv.post("/execute", data=(b'{"code": "import sys\\ndata = sys.stdin.read()\\n'
                                   b'print(data.upper())", "stdin_data": "hello"}'))
    body = check_success(r)
    assert body["execution_details"]["stdout"] == "HELLO\n"
    assert body["request_context"]["stdin_provided"] is True
    assert body["request_context"]["code_length"] == len(STDIN_EXAMPLE["code"])


def test_attachment_round_trip(srv):
    content = b"first line\nsecond line\n"
    r = srv.execute({
        "code": ("with open('notes.txt') as f:\n    text = f.read()\n"
                 "with open('upper.txt', 'w') as f:\n    f.write(text.upper())\n"
                 "print(len(text))\n"),
        "attachments": [{"filename": "notes.txt", "content_base_64": b64(content)}],
        "return_files": ["upper.txt", "never_written.txt"],
    })
    body = check_success(r)
    ex = body["execution_details"]
    assert ex["stdout"] == f"{len(content)}\n"
    out = ex["output_files"]
    assert set(out) == {"upper.txt", "never_written.txt"}, out
    assert base64.b64decode(out["upper.txt"]["content_base64"], validate=True) == content.upper()
    assert out["upper.txt"]["size_bytes"] == len(content)
    assert set(out["never_written.txt"]) == {"error"}, out
    assert isinstance(out["never_written.txt"]["error"], str) and out["never_written.txt"]["error"]
    ctx = body["request_context"]
    assert ctx["attachment_count"] == 1
    assert ctx["processed_attachments"] == [{"filename": "notes.txt", "size_bytes": len(content)}]


def test_two_attachments_binary(srv):
    blob = bytes(range(256)) * 4
    r = srv.execute({
        "code": ("a = open('a.bin', 'rb').read()\nb = open('b.bin', 'rb').read()\n"
                 "open('c.bin', 'wb').write(a + b)\nprint(len(a), len(b))\n"),
        "attachments": [{"filename": "a.bin", "content_base_64": b64(blob)},
                        {"filename": "b.bin", "content_base_64": b64(b"\x00\xff")}],
        "return_files": ["c.bin"],
    })
    body = check_success(r)
    assert body["execution_details"]["stdout"] == "1024 2\n"
    c = body["execution_details"]["output_files"]["c.bin"]
    assert base64.b64decode(c["content_base64"]) == blob + b"\x00\xff"
    assert c["size_bytes"] == 1026
    assert body["request_context"]["processed_attachments"] == [
        {"filename": "a.bin", "size_bytes": 1024}, {"filename": "b.bin", "size_bytes": 2}]


def test_pillow_grayscale_round_trip(srv):
    png = make_png(13, 7)
    assert png_header(png) == (13, 7, 8, 2)
    r = srv.execute({
        "code": ("from PIL import Image\n"
                 "img = Image.open('input.png')\n"
                 "gray = img.convert('L')\n"
                 "gray.save('gray.png')\n"
                 "print(img.size, img.mode, gray.mode)\n"),
        "attachments": [{"filename": "input.png", "content_base_64": b64(png)}],
        "return_files": ["gray.png"],
    })
    body = check_success(r)
    ex = body["execution_details"]
    assert ex["stdout"] == "(13, 7) RGB L\n", ex
    out = ex["output_files"]["gray.png"]
    data = base64.b64decode(out["content_base64"], validate=True)
    assert out["size_bytes"] == len(data)
    width, height, depth, ctype = png_header(data)
    assert (width, height) == (13, 7)
    assert (depth, ctype) == (8, 0), "expected an 8-bit greyscale PNG (mode L)"
    assert body["request_context"]["processed_attachments"] == [
        {"filename": "input.png", "size_bytes": len(png)}]


# ---------------------------------------------------------------------------------------------
# the extensions of the other documented systems: script/main(), files map, timeout


def test_script_with_main_returns_result_and_stdout(srv):
    r = srv.execute({"script": ("def main():\n    print('working')\n"
                                "    return {'answer': 42, 'items': [1, 2.5, 'x', None]}\n")})
    body = check_success(r)
    assert body["result"] == {"answer": 42, "items": [1, 2.5, "x", None]}, body
    # The main() runner documents what main() printed without its line break.
    assert body["stdout"] == "working", body
    assert body["execution_details"]["stdout"] == "working\n"


def test_nul_bytes_in_the_output_are_kept_in_every_shape(srv):
    # A NUL byte in what the script wrote is text like any other: S4's stderr, S2's error and
    # S3's stdout carry all of it, as execution_details does.
    code = 'import sys\nsys.stderr.write("a\\0b\\n")\nprint("x\\0y")\n'
    s4 = body_of(srv.execute({"code": code, "timeout": 5}))
    assert s4["execution_details"]["stderr"] == "a\0b\n", s4
    assert (s4["stderr"], s4["stdout"], s4["error"]) == ("a\0b\n", "x\0y\n", "a\0b\n"), s4
    s2 = check_success(srv.execute({"code": code}))
    assert (s2["error"], s2["output"]) == ("a\0b\n", "x\0y\n"), s2
    s3 = check_success(srv.execute({"script": "def main():\n    print('p\\0q')\n    return 1\n"}))
    assert (s3["stdout"], s3["result"]) == ("p\0q", 1), s3
    assert s3["execution_details"]["stdout"] == "p\0q\n", s3


def test_files_map(srv):
    r = srv.execute({
        "code": "print(open('in.txt').read()[::-1])\nopen('out.txt', 'w').write('done')\n",
        "files": {"in.txt": b64(b"abc")},
        "return_files": ["out.txt"],
    })
    body = check_success(r)
    assert body["execution_details"]["stdout"] == "cba\n"
    assert base64.b64decode(body["execution_details"]["output_files"]["out.txt"]
                            ["content_base64"]) == b"done"
    assert body["request_context"]["attachment_count"] == 1


def test_timeout_field(srv):
    # A request with `timeout` follows the FastAPI server's rules: every execution is a 200, a
    # timeout is return_code -1; the error shape still says TimeoutError.
    t0 = time.monotonic()
    r = srv.execute({"code": "import time\nprint('start', flush=True)\ntime.sleep(30)\n",
                     "timeout": 1})
    elapsed = time.monotonic() - t0
    assert r.status_code == 200, r.text
    body = body_of(r)
    assert body["status"] == "error" and body["error_details"]["type"] == "TimeoutError", body
    assert body["return_code"] == -1 and body["stdout"] == "start\n", body
    assert elapsed < 8 * SLOW, f"a 1 s timeout took {elapsed:.1f} s"


def test_timeout_within_limit_succeeds(srv):
    r = srv.execute({"code": "import time\ntime.sleep(0.2)\nprint('ok')", "timeout": 3})
    assert check_success(r)["execution_details"]["stdout"] == "ok\n"


def test_timeout_over_callers_limit_is_clamped(srv):
    # --timeout 5 for this server: 60 s runs with 5 s, and the answer says so.
    body = check_success(srv.execute({"code": "print(1)", "timeout": 60}))
    assert (body["timeout_applied"], body["timeout_clamped"]) == (5, True), body


def test_timeout_out_of_range_refused(srv):
    body = expect_error(srv.execute({"code": "print(1)", "timeout": 600}), 422,
                        "UnprocessableEntity")
    assert body["detail"][0]["loc"] == ["body", "timeout"], body


def test_server_timeout_applies_without_field(srv):
    # --timeout 5 for this server.
    t0 = time.monotonic()
    r = srv.execute({"code": "while True:\n    pass\n"})
    expect_error(r, 400, "TimeoutError")
    assert time.monotonic() - t0 < 15 * SLOW


# ---------------------------------------------------------------------------------------------
# error types and statuses


def test_validation_error_missing_code(srv):
    expect_error(srv.execute({"stdin_data": "x"}), 400, ("ValidationError", "InvalidRequest"))


def test_invalid_request_malformed_json(srv):
    expect_error(srv.post("/execute", data=b'{"code": '), 400, ("InvalidRequest",
                                                                 "ValidationError"))


def test_syntax_error(srv):
    body = expect_error(srv.execute({"code": "def f(:\n    pass\n"}), 400, "SyntaxError")
    assert "/" not in body["error_details"]["message"].replace("main.py", ""), \
        "a host path leaks into the SyntaxError message"


@pytest.mark.parametrize("code,module", [
    ("import os\nprint(os.getcwd())", "os"),
    ("import socket", "socket"),
    ("from subprocess import run", "subprocess"),
    ("import math\nimport ctypes", "ctypes"),
])
def test_forbidden_import(srv, code, module):
    body = expect_error(srv.execute({"code": code}), 400, "ForbiddenImportError")
    assert body["error_details"]["disallowed"] == [module], body


def test_forbidden_import_lists_every_module(srv):
    body = expect_error(srv.execute({"code": "import os, sys, subprocess\n"}), 400,
                        "ForbiddenImportError")
    assert sorted(body["error_details"]["disallowed"]) == ["os", "subprocess"], body


def test_allowed_imports(srv):
    r = srv.execute({"code": ("import math, json, numpy, PIL, sys\n"
                              "print(json.dumps([math.floor(2.5), int(numpy.arange(4).sum())]))")})
    assert check_success(r)["execution_details"]["stdout"] == "[2, 6]\n"


def test_runtime_error_carries_the_output(srv):
    r = srv.execute({"code": ("import sys\nprint('partial output')\n"
                              "print('to stderr', file=sys.stderr)\nraise ValueError('boom')\n")})
    body = expect_error(r, 400, "RuntimeError")
    details = body["error_details"]
    # The execution's output rides in error_details.execution_details.
    ex = details["execution_details"]
    assert ex["success"] is False
    assert ex["stdout"] == "partial output\n", ex
    assert "to stderr" in ex["stderr"] and "ValueError: boom" in ex["stderr"], ex
    assert ex["exit_code"] == 1, ex
    assert 'File "main.py"' in ex["stderr"], ex
    assert str(REPO) not in ex["stderr"] and "/tmp/" not in ex["stderr"], ex


def test_runtime_error_nonzero_exit(srv):
    body = expect_error(srv.execute({"code": "import sys\nprint('bye')\nsys.exit(3)\n"}), 400,
                        "RuntimeError")
    ex = body["error_details"]["execution_details"]
    assert ex["exit_code"] == 3 and ex["stdout"] == "bye\n", ex
    assert "3" in body["error_details"]["message"]


def test_memory_limit_is_runtime_error(srv):
    body = expect_error(srv.execute({"code": "print('allocating', flush=True)\n"
                                             "b = b'x' * (600 << 20)\nprint(len(b))"}), 400,
                        "RuntimeError")
    ex = body["error_details"]["execution_details"]
    assert ex["success"] is False and ex["stdout"] == "allocating\n", ex


def test_allow_network_refused_for_anonymous(srv):
    expect_error(srv.execute({"code": "print(1)", "allow_network": True}), 403)


def test_allow_network_false_is_fine(srv):
    check_success(srv.execute({"code": "print(1)", "allow_network": False}))


def test_code_over_2000_chars_refused_for_anonymous(srv):
    code = "x = 1\n" + "# padding\n" * 200 + "print(x)\n"  # 2015 characters
    assert len(code) > 2000
    body = expect_error(srv.execute({"code": code}), 400, "ValidationError")
    assert "2000" in body["error_details"]["message"], body
    exactly = "print(1)" + " " * (2000 - len("print(1)"))
    check_success(srv.execute({"code": exactly}))


def test_code_over_2000_chars_accepted_with_admin_key(srv):
    code = "x = 1\n" + "# padding\n" * 500 + "print(x)\n"
    body = check_success(srv.execute({"code": code}, key=srv.admin_key), admin=True)
    assert body["execution_details"]["stdout"] == "1\n"
    assert body["request_context"]["code_length"] == len(code)
    # The same key in the body, as the documented `api_key` field.
    body = check_success(srv.execute({"code": code, "api_key": srv.admin_key}), admin=True)
    assert body["execution_details"]["stdout"] == "1\n"


def test_code_length_counts_characters_not_bytes(srv):
    code = "print('" + "é" * 1900 + "')"  # 1909 characters, 3809 bytes
    body = check_success(srv.execute({"code": code}))
    assert body["request_context"]["code_length"] == len(code)


def test_admin_success_shape(srv):
    body = check_success(srv.execute(HELLO_EXAMPLE, key=srv.admin_key), admin=True)
    assert body["execution_details"]["stdout"] == "Hello, World!\n"


def test_bad_api_key_in_body_is_401(srv):
    expect_error(srv.execute({"code": "print(1)", "api_key": "not-a-key"}), 401)


def test_output_file_too_many_requested_names(srv):
    r = srv.execute({"code": "print(1)", "return_files": [f"f{i}.txt" for i in range(1000)]})
    expect_error(r, 400, "ValidationError")
