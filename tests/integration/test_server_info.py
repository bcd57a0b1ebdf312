"""GET /v1/info reports the limits, rate limits and allowed modules of the running server (those
`pybox serve --modules` adds too, and for every caller), and the docs page, its assets and /docs
are served from the binary with their security headers."""
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


# ---------------------------------------------------------------------------------------------
# pybox serve --modules (PYBOX_MODULES): the anonymous allowlist, the base of every caller's


def imports(srv, code, **kw):
    r = srv.v1({"code": code}, **kw)
    assert r.status_code == 200, r.text
    return body_of(r)


def test_serve_modules_widens_the_allowlist_for_every_caller(start_server):
    from test_server_admission import create_key

    s = start_server("--modules", "colorsys, graphlib")
    info = body_of(s.get("/v1/info"))
    assert {"colorsys", "graphlib", "numpy"} <= set(info["allowed_modules"]), info
    assert info["allowed_modules"].count("colorsys") == 1
    assert info["all_modules"] is False
    ok = imports(s, "import colorsys, graphlib\nprint(colorsys.rgb_to_hsv(1, 0, 0))")
    assert ok["status"] == "ok" and ok["stdout"] == "(0.0, 1.0, 1)\n", ok
    refused = imports(s, "import os")
    assert refused["status"] == "rejected", refused
    assert refused["error"]["disallowed"] == ["os"], refused
    # A key's modules add to the server's: it keeps colorsys and gets its own.
    key = create_key(s, "dora", "--modules", "shelve")
    info = body_of(s.get("/v1/info", headers={"X-API-Key": key}))
    assert {"colorsys", "graphlib", "shelve"} <= set(info["allowed_modules"]), info
    assert imports(s, "import colorsys, shelve", key=key)["status"] == "ok"
    assert imports(s, "import shelve")["status"] == "rejected"


def test_without_serve_modules_they_stay_refused(srv):
    assert "colorsys" not in body_of(srv.get("/v1/info"))["allowed_modules"]
    assert imports(srv, "import colorsys")["status"] == "rejected"


def test_pybox_modules_all_lifts_the_allowlist(start_server):
    s = start_server(env={"PYBOX_MODULES": "all"})
    info = body_of(s.get("/v1/info"))
    assert info["all_modules"] is True, info
    assert imports(s, "import os\nprint(os.getcwd())")["stdout"] == "/work\n"


@pytest.mark.parametrize("value,message", [
    ("a-b", "`a-b` is not a module name"),
    ("1abc", "`1abc` is not a module name"),
    ("x..y", "`x..y` is not a module name"),
    (",", "needs `all` or a list of modules"),
    ("m" * 3000, "the module list is over 2048 bytes"),
])
def test_serve_modules_refuses_what_is_not_a_list(value, message):
    import subprocess

    from conftest import PYBOX, clean_env

    for argv, env in ((["--modules", value], {}), ([], {"PYBOX_MODULES": value})):
        p = subprocess.run([PYBOX, "serve", "--listen", "127.0.0.1:0", *argv],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                           env=clean_env(env))
        assert p.returncode == 2, (argv, env, p.returncode, p.stderr)
        assert message in p.stderr, p.stderr
