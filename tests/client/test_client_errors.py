"""Each way a request can fail maps to its exception: against real `pybox serve` processes
(server down, bad key, 429, 503, 413, 400), a stand-in HTTP server for answers pybox should
never give (500, HTML, 404), and the `pybox` binary in local mode."""
import builtins
import http.server
import os
import socket
import stat
import subprocess
import threading
import time

import pytest

import pybox
from pybox import Sandbox

SLOW = 3.0  # generous: the sleeper below must be seen in flight even under ASan


def closed_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------
# Remote mode against real servers


def test_server_down_is_connection_error():
    sb = Sandbox(url=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(pybox.ConnectionError) as e:
        sb.run("print(1)")
    err = e.value
    assert isinstance(err, pybox.PyboxError) and isinstance(err, builtins.ConnectionError)
    assert err.status is None
    assert "cannot reach the pybox server" in str(err)


def test_stopped_server_is_connection_error(start_server):
    server = start_server()
    sb = Sandbox(url=server.url)
    assert sb.run("print(1)").stdout == "1\n"
    server.stop_and_check()
    with pytest.raises(pybox.ConnectionError):
        sb.run("print(1)")


def test_server_that_never_answers_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # accepted by the kernel, never answered
    try:
        sb = Sandbox(url=f"http://127.0.0.1:{listener.getsockname()[1]}", request_timeout=1)
        t0 = time.monotonic()
        with pytest.raises(pybox.ConnectionError, match="timed out"):
            sb.run("print(1)")
        assert time.monotonic() - t0 < 10
    finally:
        listener.close()


@pytest.fixture(scope="module")
def plain_server(module_start_server):
    return module_start_server("--rpm", "1000", "--rpd", "100000")


def test_bad_key_is_unauthorized(plain_server):
    with pytest.raises(pybox.Unauthorized) as e:
        Sandbox(url=plain_server.url, api_key="pbx_not-a-real-key").run("print(1)")
    assert e.value.status == 401 and e.value.type == "Unauthorized"
    assert e.value.request_id
    assert "not valid" in e.value.message


def test_revoked_key_is_unauthorized(plain_server, pybox_bin, create_key):
    key = create_key(plain_server, "soon-revoked")
    sb = Sandbox(url=plain_server.url, api_key=key)
    assert sb.run("print(2)").stdout == "2\n"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYBOX")}
    subprocess.run([pybox_bin, "keys", "revoke", "soon-revoked", "--data",
                    str(plain_server.data_dir)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with pytest.raises(pybox.Unauthorized):
        sb.run("print(2)")


def test_refusals_keep_the_server_type_and_message(plain_server):
    sb = Sandbox(url=plain_server.url)
    with pytest.raises(pybox.RequestTooLarge) as e:
        sb.run("x = 1\n" + "#" * 3000)  # anonymous callers: 2000 characters of code
    assert e.value.status == 413 and e.value.type == "PayloadTooLarge"
    assert "the limit is 2000" in e.value.message
    assert isinstance(e.value, pybox.InvalidRequest) and isinstance(e.value, ValueError)
    with pytest.raises(pybox.InvalidRequest) as e:
        sb.run("print(1)", return_files=["a/b"])
    assert e.value.status == 400 and e.value.type == "ValidationError"
    assert "`return_files[0]`" in e.value.message


def test_url_with_trailing_slash_and_the_result_carries_the_request_id(plain_server):
    r = Sandbox(url=plain_server.url + "/").run("print(3)")
    assert r.stdout == "3\n" and r.request_id


def test_429_is_rate_limited_with_retry_after(start_server):
    server = start_server("--rpm", "1")
    sb = Sandbox(url=server.url)
    assert sb.run("print(1)").status == "ok"
    with pytest.raises(pybox.RateLimited) as e:
        sb.run("print(1)")
    err = e.value
    assert err.status == 429 and err.type == "RateLimitExceeded"
    assert isinstance(err.retry_after, int) and 0 < err.retry_after <= 60
    assert "per minute" in err.message


def test_503_is_server_busy(start_server):
    server = start_server("--max-concurrency", "1", "--queue", "0")
    sb = Sandbox(url=server.url)
    sleeper = {}

    def sleep():
        sleeper["result"] = sb.run("import time\ntime.sleep(8)\nprint('woke')", timeout=10)

    th = threading.Thread(target=sleep)
    th.start()
    try:
        deadline = time.monotonic() + 10 * SLOW
        while time.monotonic() < deadline:
            health = server.get("/v1/health").json()
            if health.get("active_executions", 0) >= 1:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the sleeper never became active")
        with pytest.raises(pybox.ServerBusy) as e:
            sb.run("print(1)")
        err = e.value
        assert err.status == 503 and err.type == "ServerBusy"
        assert err.retry_after is not None and err.retry_after >= 1
    finally:
        th.join(30)
    assert sleeper["result"].stdout == "woke\n"


def test_413_is_request_too_large(start_server):
    server = start_server("--max-body", "4096")
    sb = Sandbox(url=server.url)
    assert sb.run("print(len(open('small').read()))", files={"small": b"x" * 100}).stdout == \
        "100\n"
    for size in (10_000, 6 << 20):  # small: read and refused; large: refused before it is read
        with pytest.raises(pybox.RequestTooLarge) as e:
            sb.run("print(1)", files={"big.bin": b"\x00" * size})
        err = e.value
        assert isinstance(err, pybox.InvalidRequest)
        assert err.status == 413 and err.type == "PayloadTooLarge", err
        assert "4096" in err.message


# ---------------------------------------------------------------------------------------------
# Answers pybox never gives, from a stand-in server


class _Handler(http.server.BaseHTTPRequestHandler):
    answers = {}

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, ctype, body, headers = self.answers[self.path]
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def fake_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize("path,answer,exc,check", [
    ("/a", (500, "text/html", b"<h1>oops</h1>", {}), pybox.ServerError,
     lambda e: e.status == 500 and "oops" in e.message),
    ("/b", (502, "application/json",
            b'{"status":"error","error_details":{"type":"BadGateway","message":"upstream"}}', {}),
     pybox.ServerError, lambda e: e.type == "BadGateway" and e.message == "upstream"),
    ("/c", (200, "text/plain", b"hello", {}), pybox.ServerError, lambda e: e.status == 200),
    ("/d", (200, "application/json", b'{"status": "weird"}', {}), pybox.ServerError,
     lambda e: "malformed result" in e.message),
    ("/e", (404, "application/json",
            b'{"status":"error","error_details":{"type":"NotFound","message":"no such route"}}',
            {}), pybox.PyboxError, lambda e: e.status == 404 and "pybox server" in e.message),
    ("/f", (429, "application/json", b"{}", {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}),
     pybox.RateLimited, lambda e: e.retry_after > 1000),
    ("/g", (503, "text/plain", b"busy", {}), pybox.ServerBusy, lambda e: e.retry_after is None),
    ("/h", (200, "application/json", b'{"status": "ok", "files": [1]}', {}), pybox.ServerError,
     lambda e: "malformed result" in e.message),
    ("/i", (429, "application/json", b"{}", {"Retry-After": "\u00b2"}), pybox.RateLimited,
     lambda e: e.retry_after is None),
    ("/j", (200, "application/json", b'{"status": "ok", "stdout": "' + b"x" * 5000 + b'"}', {}),
     pybox.ServerError, lambda e: "over 4096 bytes" in e.message),
    # Only some fields of a result object: refused, as libpybox refuses it.
    ("/k", (200, "application/json", b'{"status": "ok", "stdout": "1\\n"}', {}),
     pybox.ServerError, lambda e: "malformed result" in e.message),
])
def test_unexpected_answers(fake_server, path, answer, exc, check, monkeypatch):
    monkeypatch.setattr(pybox._remote, "MAX_ANSWER", 4096)
    _Handler.answers[path + "/v1/execute"] = answer
    with pytest.raises(exc) as e:
        Sandbox(url=fake_server + path).run("print(1)")
    assert check(e.value), e.value


# ---------------------------------------------------------------------------------------------
# Local mode


def test_binary_not_found(monkeypatch, tmp_path):
    with pytest.raises(pybox.BinaryNotFound, match="no runnable `pybox` binary") as e:
        Sandbox(binary=str(tmp_path / "no-such-pybox"))
    assert isinstance(e.value, pybox.PyboxError)
    monkeypatch.setenv("PYBOX_BIN", str(tmp_path / "nope"))
    with pytest.raises(pybox.BinaryNotFound, match="PYBOX_BIN"):
        Sandbox()
    monkeypatch.delenv("PYBOX_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pybox.BinaryNotFound, match="PATH"):
        Sandbox()


def test_binary_found_on_path_and_from_pybox_bin(monkeypatch, tmp_path, pybox_bin):
    monkeypatch.delenv("PYBOX_BIN", raising=False)
    (tmp_path / "pybox").symlink_to(pybox_bin)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert Sandbox().binary == str(tmp_path / "pybox")
    monkeypatch.setenv("PYBOX_BIN", pybox_bin)
    assert Sandbox().binary == pybox_bin
    assert Sandbox().run("print(4)").stdout == "4\n"


def fake_binary(tmp_path, script):
    path = tmp_path / "fake-pybox"
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_local_failures_of_pybox_itself_are_server_errors(tmp_path):
    sb = Sandbox(binary=fake_binary(tmp_path, "echo 'pybox: cannot start the jail' >&2\n"
                                              "exit 125\n"))
    with pytest.raises(pybox.ServerError, match="cannot start the jail"):
        sb.run("print(1)")
    sb = Sandbox(binary=fake_binary(tmp_path, "kill -9 $$\n"))
    with pytest.raises(pybox.ServerError, match="killed by signal 9"):
        sb.run("print(1)")
    sb = Sandbox(binary=fake_binary(tmp_path, "sleep 30\n"), request_timeout=0.5)
    with pytest.raises(pybox.ServerError, match="did not finish"):
        sb.run("print(1)")


def test_local_usage_errors_are_invalid_requests(local_sandbox):
    with pytest.raises(pybox.InvalidRequest) as e:
        local_sandbox.run("print(1)", files={"../x": b"1"})
    assert e.value.type == "ValidationError" and "invalid file name `../x`" in e.value.message
    with pytest.raises(pybox.InvalidRequest, match="containing `=`"):
        local_sandbox.run("print(1)", files={"a=b": b"1"})
    with pytest.raises(pybox.InvalidRequest, match="`timeout` must be between 0 and 3600"):
        local_sandbox.run("print(1)", timeout=10_000_000)


def test_local_request_too_large(local_sandbox):
    with pytest.raises(pybox.RequestTooLarge) as e:
        local_sandbox.run("print(1)", stdin="x" * (9 << 20))
    assert "larger than its limit" in e.value.message


def test_local_mode_ignores_pybox_variables_of_the_environment(monkeypatch, local_sandbox):
    monkeypatch.setenv("PYBOX_TIMEOUT", "0.2")
    monkeypatch.setenv("PYBOX_LIMITS", "stdout=10")
    r = local_sandbox.run("import time\ntime.sleep(0.5)\nprint('x' * 100)")
    assert r.status == "ok" and len(r.stdout) == 101, r


# ---------------------------------------------------------------------------------------------
# Construction and the environment


def test_from_env(pybox_bin):
    sb = Sandbox.from_env({"PYBOX_SERVER": "http://127.0.0.1:9", "PYBOX_API_KEY": "k",
                           "PYBOX_TIMEOUT": "2.5", "PYBOX_MEMORY_MB": "64",
                           "PYBOX_NETWORK": "no"})
    assert sb.mode == "remote" and sb.url == "http://127.0.0.1:9"
    assert sb._backend.api_key == "k"
    assert sb.timeout == 2.5 and sb.memory_mb == 64 and sb.network is False
    sb = Sandbox.from_env({"PYBOX_BIN": pybox_bin, "PYBOX_NETWORK": "1"})
    assert sb.mode == "local" and sb.binary == pybox_bin and sb.network is True
    assert sb.timeout is None and sb.memory_mb is None
    sb = Sandbox.from_env({"PYBOX_SERVER": "", "PYBOX_BIN": pybox_bin}, timeout=3)
    assert sb.mode == "local" and sb.timeout == 3
    for bad in ({"PYBOX_TIMEOUT": "soon"}, {"PYBOX_MEMORY_MB": "lots"},
                {"PYBOX_NETWORK": "maybe"}, {"PYBOX_TIMEOUT": "-1"}):
        with pytest.raises(pybox.InvalidRequest):
            Sandbox.from_env({"PYBOX_BIN": pybox_bin, **bad})


def test_from_env_reads_os_environ(monkeypatch, client_server):
    monkeypatch.setenv("PYBOX_SERVER", client_server.url)
    monkeypatch.setenv("PYBOX_API_KEY", client_server.client_key)
    monkeypatch.setenv("PYBOX_TIMEOUT", "5")
    sb = Sandbox.from_env()
    assert sb.mode == "remote" and sb.timeout == 5
    assert sb.run("print(5)").stdout == "5\n"


def test_constructor_misuse(pybox_bin):
    with pytest.raises(ValueError):
        Sandbox(url="ftp://example.org")
    with pytest.raises(ValueError):
        Sandbox(api_key="k", binary=pybox_bin)
    with pytest.raises(ValueError):
        Sandbox(url="http://127.0.0.1:9", binary=pybox_bin)
    with pytest.raises(pybox.InvalidRequest):
        Sandbox(binary=pybox_bin, timeout=-3)
    assert "local" in repr(Sandbox(binary=pybox_bin))
    assert os.path.isabs(Sandbox(binary=pybox_bin).binary)
