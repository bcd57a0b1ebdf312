"""GET /v1/info reports the limits, rate limits and allowed modules of the running server, and
the docs page, its assets and /docs are served from the binary with their security headers."""
import re

import pytest

from conftest import body_of


@pytest.fixture(scope="module")
def srv(module_start_server):
    return module_start_server("--rpm", "7", "--rpd", "40", "--timeout", "3", "--memory", "96",
                               "--code-chars", "1234", "--max-concurrency", "3",
                               "--limit", "files=4", "--limit", "stdout=64K",
                               "--limit", "answer=5M")


def test_info_reflects_the_flags(srv):
    r = srv.get("/v1/info")
    assert r.status_code == 200
    info = body_of(r)
    assert info["name"] == "pybox"
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["version"]), info["version"]
    assert info["policy"] == "anonymous"
    limits = info["limits"]
    assert limits["timeout_s"] == 3
    assert limits["memory_mb"] == 96
    assert limits["code_chars"] == 1234
    assert limits["input_files"] == 4
    assert limits["stdout_bytes"] == 64 * 1024
    assert limits["answer_bytes"] == 5 * 1024 * 1024
    for k in ("cpu_s", "stdin_bytes", "stderr_bytes", "input_file_bytes", "return_files",
              "return_file_bytes", "pids", "disk_bytes", "disk_inodes", "body_bytes"):
        assert isinstance(limits[k], (int, float)) and limits[k] > 0, (k, limits)
    assert info["rate_limits"] == {"requests_per_minute": 7, "requests_per_day": 40}
    assert info["max_concurrency"] == 3
    assert info["network"] is False
    assert info["dialects"] == ["/execute", "/v1/execute"]
    assert "numpy" in info["allowed_modules"] and "PIL" in info["allowed_modules"]
    assert "os" not in info["allowed_modules"] and "subprocess" not in info["allowed_modules"]
    assert r.headers.get("X-Request-Id") == info["request_id"]


def test_info_limits_are_the_ones_enforced(srv):
    """The code limit /v1/info reports is the one /v1/execute applies."""
    n = body_of(srv.get("/v1/info"))["limits"]["code_chars"]
    ok = srv.v1({"code": "#" * (n - 9) + "\nprint(1)"})
    assert ok.status_code == 200 and body_of(ok)["stdout"] == "1\n", ok.text
    over = srv.v1({"code": "#" * n + "\nprint(1)"})
    assert over.status_code == 413, over.text
    assert body_of(over)["error_details"]["type"] == "PayloadTooLarge", over.text


def test_info_is_in_openapi(srv):
    doc = body_of(srv.get("/openapi.json"))
    op = doc["paths"]["/v1/info"]["get"]
    assert "200" in op["responses"]
    schema = doc["components"]["schemas"]["Info"]
    info = body_of(srv.get("/v1/info"))
    assert set(schema["required"]) <= set(info), (schema["required"], list(info))


@pytest.mark.parametrize("path, ctype", [
    ("/", "text/html; charset=utf-8"),
    ("/docs", "text/html; charset=utf-8"),
    ("/assets/app.js", "text/javascript; charset=utf-8"),
    ("/assets/docs.js", "text/javascript; charset=utf-8"),
    ("/assets/common.js", "text/javascript; charset=utf-8"),
    ("/assets/app.css", "text/css; charset=utf-8"),
    ("/assets/favicon.svg", "image/svg+xml"),
])
def test_pages_and_assets(srv, path, ctype):
    r = srv.get(path)
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Type"] == ctype
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers.get("X-Request-Id")
    etag = r.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{20}"', etag), etag
    again = srv.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert srv.get(path, headers={"If-None-Match": '"0000"'}).status_code == 200


def test_pages_have_no_inline_script_or_outside_origin(srv):
    for path in ("/", "/docs"):
        html = srv.get(path).text
        for tag in re.findall(r"<script[^>]*>", html):
            assert re.search(r'src="/assets/[a-z]+\.js"', tag), tag
        assert "<script>" not in html and " on" + "click=" not in html
        assert "http://" not in html.replace("http://HOST:PORT", "") and "https://" not in html


def test_root_json_for_api_clients(srv):
    r = srv.get("/", headers={"Accept": "application/json"})
    assert r.status_code == 200
    assert body_of(r)["openapi"] == "/openapi.json"


def test_unknown_assets_are_json_404(srv):
    for path in ("/assets/nope.js", "/assets/", "/assets/../index.html", "/docs/x"):
        r = srv.get(path)
        assert r.status_code == 404, (path, r.status_code)
        assert body_of(r)["error_details"]["type"] == "NotFound"
    r = srv.request("POST", "/docs")
    assert r.status_code == 405
