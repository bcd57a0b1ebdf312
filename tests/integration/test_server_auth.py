"""How a request names its API key, and what /v1/info says for it.

A key goes in `Authorization: Bearer KEY` or in `X-API-Key: KEY` (or, on POST /execute, in the
body's `api_key`). A header that tries to authenticate and fails to (no scheme, another scheme,
an empty token, a header twice, two headers naming different keys) is a 401 that says the
expected form, on every endpoint that reads keys: it is never served as anonymous, so nothing of
the anonymous quota is charged. GET /v1/info answers the policy of the caller that asks: the
anonymous one without a key, the key's with one, a 401 for a key that is not valid.
"""
import pytest

from conftest import body_of, expect_error
from test_server_admission import create_key, ok

HELLO = {"code": "print('Hello, World!')"}

# Headers that try to authenticate and fail to; `KEY` is replaced by a valid key.
MALFORMED = [
    ({"Authorization": "KEY"}, "Authorization: Bearer KEY"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "Authorization: Bearer KEY"),
    ({"Authorization": "Token KEY"}, "Authorization: Bearer KEY"),
    ({"Authorization": "BearerKEY"}, "Authorization: Bearer KEY"),
    ({"Authorization": ""}, "Authorization: Bearer KEY"),
    ({"Authorization": "Bearer"}, "Authorization: Bearer KEY"),
    ({"Authorization": "Bearer   "}, "Authorization: Bearer KEY"),
    ({"X-API-Key": ""}, "X-API-Key: KEY"),
    ({"Authorization": "Bearer KEY", "X-API-Key": "other"}, "Authorization: Bearer KEY"),
]


@pytest.fixture(scope="module")
def srv(module_start_server):
    """Anonymous callers: 2 requests a UTC day, so a request served as anonymous would show."""
    return module_start_server("--rpm", "100", "--rpd", "2", "--timeout", "5",
                               "--memory", "128", "--code-chars", "500")


@pytest.fixture(scope="module")
def key(srv):
    return create_key(srv, "alice", "--rpm", "50", "--rpd", "500", "--timeout", "20",
                      "--memory", "200", "--modules", "csv_extra_mod,mod2")


def fill(headers, key):
    return {k: v.replace("KEY", key) for k, v in headers.items()}


def test_x_api_key_is_taken_as_bearer_is(srv, key):
    for headers in ({"Authorization": f"Bearer {key}"}, {"Authorization": f"bearer  {key}"},
                    {"X-API-Key": key}, {"x-api-key": key},
                    {"Authorization": f"Bearer {key}", "X-API-Key": key}):
        body = ok(srv.execute(HELLO, headers=headers, source="127.0.0.21"))
        assert body["user_info"].get("key_name") == "alice", (headers, body["user_info"])
        r = srv.v1(HELLO, headers=headers, source="127.0.0.21")
        assert r.status_code == 200 and body_of(r)["stdout"] == "Hello, World!\n", r.text
    # Not charged to the address: its anonymous quota is whole.
    assert body_of(srv.get("/v1/info", source="127.0.0.21"))["policy"] == "anonymous"
    ok(srv.execute(HELLO, source="127.0.0.21"))


@pytest.mark.parametrize("headers,form", MALFORMED)
@pytest.mark.parametrize("path", ["/execute", "/v1/execute", "/v1/info"])
def test_a_malformed_credential_is_401_saying_the_form(srv, key, headers, form, path):
    h = fill(headers, key)
    if path == "/v1/info":
        r = srv.get(path, headers=h, source="127.0.0.22")
    else:
        r = srv.post(path, HELLO, headers=h, source="127.0.0.22")
    body = expect_error(r, 401, "Unauthorized")
    message = body["error_details"]["message"]
    assert form in message, message
    assert key not in message, message
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers


def test_a_malformed_header_never_falls_back_to_anonymous(srv, key):
    """Not with a valid `api_key` in the body either; and none of it is charged."""
    src = "127.0.0.23"
    for headers, _ in MALFORMED:
        h = fill(headers, key)
        expect_error(srv.execute(HELLO, headers=h, source=src), 401, "Unauthorized")
        expect_error(srv.execute(dict(HELLO, api_key=key), headers=h, source=src), 401,
                     "Unauthorized")
        expect_error(srv.v1(HELLO, headers=h, source=src), 401, "Unauthorized")
    expect_error(srv.execute(HELLO, headers={"X-API-Key": "not-a-key"}, source=src), 401,
                 "Unauthorized")
    # The address's 2 anonymous requests of the day are still there.
    assert ok(srv.execute(HELLO, source=src))["user_info"]["requests_today"] == 1
    assert ok(srv.execute(HELLO, source=src))["user_info"]["requests_today"] == 2


def test_a_header_twice_is_401(srv, key):
    for name, value in (("Authorization", f"Bearer {key}"), ("X-API-Key", key)):
        raw, _ = srv.raw([(f"GET /v1/info HTTP/1.1\r\nHost: x\r\n{name}: {value}\r\n"
                           f"{name}: {value}\r\nConnection: close\r\n\r\n").encode()])
        assert raw.startswith(b"HTTP/1.1 401 "), raw[:300]
        assert b"more than one " + name.encode() in raw, raw


def test_preflight_allows_x_api_key(srv):
    r = srv.request("OPTIONS", "/v1/execute", headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key, content-type"})
    assert r.status_code == 204
    allowed = [h.strip().lower() for h in r.headers["Access-Control-Allow-Headers"].split(",")]
    assert "x-api-key" in allowed and "authorization" in allowed, allowed


def test_info_without_a_key_is_the_anonymous_policy(srv):
    info = body_of(srv.get("/v1/info"))
    assert info["policy"] == "anonymous" and info["key_name"] is None
    assert info["rate_limits"] == {"requests_per_minute": 100, "requests_per_day": 2}
    limits = info["limits"]
    assert limits["timeout_s"] == limits["default_timeout_s"] == 5
    assert limits["memory_mb"] == limits["default_memory_mb"] == 128
    assert limits["code_chars"] == 500
    assert info["all_modules"] is False
    assert "csv_extra_mod" not in info["allowed_modules"]


@pytest.mark.parametrize("how", ["bearer", "x-api-key"])
def test_info_with_a_key_is_the_keys_policy(srv, key, how):
    headers = {"Authorization": f"Bearer {key}"} if how == "bearer" else {"X-API-Key": key}
    info = body_of(srv.get("/v1/info", headers=headers))
    assert info["policy"] == "key" and info["key_name"] == "alice", info
    assert info["rate_limits"] == {"requests_per_minute": 50, "requests_per_day": 500}
    limits = info["limits"]
    # The longest timeout and the most memory it may ask; without asking, the server's.
    assert limits["timeout_s"] == 20 and limits["default_timeout_s"] == 5, limits
    assert limits["memory_mb"] == 200 and limits["default_memory_mb"] == 128, limits
    # Key holders send code up to the code limit, not the anonymous one.
    assert limits["code_chars"] > 500, limits
    assert {"csv_extra_mod", "mod2", "numpy"} <= set(info["allowed_modules"]), info
    assert info["all_modules"] is False


def test_info_limits_are_the_ones_a_key_gets(srv, key):
    """What /v1/info says a key may ask, /v1/execute lets it ask, and no more."""
    limits = body_of(srv.get("/v1/info", headers={"X-API-Key": key}))["limits"]
    r = srv.v1({"code": "print(1)", "timeout": limits["timeout_s"],
                "memory_mb": limits["memory_mb"]}, key=key)
    assert r.status_code == 200 and body_of(r)["status"] == "ok", r.text
    expect_error(srv.v1({"code": "print(1)", "timeout": limits["timeout_s"] + 1}, key=key), 400,
                 "ValidationError")
    expect_error(srv.v1({"code": "print(1)", "memory_mb": limits["memory_mb"] + 1}, key=key),
                 400, "ValidationError")


def test_info_for_the_admin_key(srv):
    info = body_of(srv.get("/v1/info", headers={"Authorization": f"Bearer {srv.admin_key}"}))
    assert info["policy"] == "admin" and info["key_name"] is None
    assert info["rate_limits"] == {"requests_per_minute": None, "requests_per_day": None}
    assert info["all_modules"] is True


def test_info_with_a_bad_key_is_401(srv, key):
    for headers in ({"Authorization": "Bearer not-a-key"}, {"X-API-Key": "not-a-key"}):
        body = expect_error(srv.get("/v1/info", headers=headers), 401, "Unauthorized")
        assert "not valid" in body["error_details"]["message"], body
