"""sandbox_executor, the documented client-library interface on top of pybox: its README examples
run unchanged in local mode (pybox.Sandbox, the built binary) and in remote mode against a fake
server of the documented shape, which checks every request it receives; then each mapping
(return codes, files, limits, network), the configuration from the environment and `.env`, and
the failures that raise SandboxException.

The fake server (FakeServer) listens on a free loopback port in a thread of the test. It plays
a server of the documented shape: it checks the request (path, Bearer key, JSON body with
exactly `code`, `timeout`, `allow_network`, `files`), runs the code with this interpreter in a
directory of the test, and answers `stdout`, `stderr`, `return_code` and `output_files`. It
stands in for a server until `pybox serve` answers that shape at `POST /execute`;
pending_sandbox_executor_server.py runs the same examples against the real server.
"""
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import pybox
import sandbox_executor
from sandbox_executor import (ClientConfig, ExecutionMode, ExecutionResult, SandboxClient,
                              SandboxException)
from sandbox_executor._config import parse_env

from pybox_integration_conftest import REPO  # loaded by this directory's conftest

SANDBOX_VARIABLES = ("SANDBOX_MODE", "SANDBOX_TIMEOUT", "SANDBOX_ALLOW_NETWORK",
                     "SANDBOX_MAX_MEMORY_MB", "SANDBOX_SERVER_URL", "SANDBOX_API_KEY",
                     "SANDBOX_API_TIMEOUT")
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                   "ALL_PROXY")
FAKE_KEY = "s4-test-key"

# The README examples, as written there.
FIBONACCI = '''
def fibonacci(n):
    if n <= 1:
        return n
    return fibonacci(n - 1) + fibonacci(n - 2)

print(f"Fibonacci: {[fibonacci(i) for i in range(10)]}")
'''

CIRCLE = '''
import math

radius = 5
area = math.pi * radius ** 2
print(f"Circle area: {area:.2f}")
'''

CSV_CODE = '''
import csv

with open('data.csv', 'r') as f:
    reader = csv.DictReader(f)
    total = sum(int(row['value']) for row in reader)

print(f"Total: {total}")

with open('result.txt', 'w') as f:
    f.write(f"Total: {total}")
'''
CSV_DATA = b"id,value\n1,100\n2,200\n3,300\n"

DIVISION = "print(1/0)"

SPINNER = "while True:\n    pass\n"


class PythonExecutorTool:
    """The README's agent tool: the script's stdout, or its error."""

    name = "python_executor"
    description = "Execute Python code in a secure sandbox"

    def __init__(self, **client_args):
        self.client = SandboxClient(**client_args)

    def run(self, code: str) -> str:
        result = self.client.execute(code)
        if result.success:
            return result.stdout
        return f"Error: {result.stderr}"


def check_fibonacci(result):
    assert result.success and result.return_code == 0, result
    assert result.stdout == "Fibonacci: [0, 1, 1, 2, 3, 5, 8, 13, 21, 34]\n"
    assert result.output_files == {}


def check_circle(result):
    assert result.success, result
    assert result.stdout == "Circle area: 78.54\n"


def check_csv(result):
    assert result.success, result
    assert result.stdout == "Total: 600\n"
    assert result.get_file_content("result.txt") == b"Total: 600"
    assert result.get_file_content("result.txt").decode() == "Total: 600"
    # The input comes not back; only what the script created does.
    assert result.output_files == {"result.txt": b"Total: 600"}


def check_division(result):
    assert result.success is False
    assert result.return_code == 1
    assert result.stdout == ""
    assert "Traceback (most recent call last):" in result.stderr
    assert result.stderr.rstrip().endswith("ZeroDivisionError: division by zero"), result.stderr


def check_agent_tool(tool):
    assert tool.run("print(sum(range(10)))") == "45\n"
    answer = tool.run(DIVISION)
    assert answer.startswith("Error: Traceback (most recent call last):"), answer
    assert "ZeroDivisionError: division by zero" in answer


# --- the fake server ----------------------------------------------------------------------

class FakeServer(ThreadingHTTPServer):
    """A server of the documented shape on 127.0.0.1:<free port>; see the module docstring.

    requests: every request received, as (method, path, headers (lower-case names), body);
        body is the decoded JSON, or the raw bytes when it is not JSON.
    answer: when set, (status, body bytes, headers) sent instead of running the code.
    health_status: the status of GET /health.
    """

    daemon_threads = True

    def __init__(self, work_root, api_key=FAKE_KEY):
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.work_root = Path(work_root)
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.api_key = api_key
        self.requests = []
        self.answer = None
        self.health_status = 200
        self._lock = threading.Lock()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, method, path, headers, body):
        with self._lock:
            self.requests.append((method, path, headers, body))

    def last_body(self):
        with self._lock:
            return self.requests[-1][3]

    def run(self, body):
        """Run the request's code as the documented server does; return the answer object."""
        inputs = {name: base64.b64decode(data, validate=True)
                  for name, data in body["files"].items()}
        with tempfile.TemporaryDirectory(dir=self.work_root, prefix="run-") as work:
            for name, data in inputs.items():
                Path(work, name).write_bytes(data)
            try:
                p = subprocess.run([sys.executable, "-I", "-c", body["code"]], cwd=work,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, timeout=body["timeout"],
                                   env={"PATH": "/usr/bin:/bin"})
                stdout, stderr, code = p.stdout.decode(), p.stderr.decode(), p.returncode
            except subprocess.TimeoutExpired:
                stdout, stderr, code = "", f"Execution timed out after {body['timeout']} s", -1
            files = {e.name: base64.b64encode(Path(e.path).read_bytes()).decode()
                     for e in os.scandir(work)
                     if e.is_file(follow_symlinks=False) and e.name not in inputs}
        return {"stdout": stdout, "stderr": stderr, "return_code": code, "output_files": files}


def _refusal(body):
    """What is wrong with an /execute body, in the documented validation's words; or None."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if set(body) != {"code", "timeout", "allow_network", "files"}:
        return f"fields {sorted(body)}, not code, timeout, allow_network, files"
    if not isinstance(body["code"], str):
        return "code is not a string"
    timeout = body["timeout"]
    if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
            or not 1 <= timeout <= 300):
        return f"timeout {timeout!r} is not a number in 1..300"
    if not isinstance(body["allow_network"], bool):
        return "allow_network is not a bool"
    if (not isinstance(body["files"], dict)
            or not all(isinstance(v, str) for v in body["files"].values())):
        return "files is not an object of base64 strings"
    return None


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, body, headers=()):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.server.record("GET", self.path, headers, None)
        if self.path != "/health":
            return self._send(404, {"detail": "Not Found"})
        self._send(self.server.health_status,
                   {"status": "healthy", "execution_mode": "secure",
                    "config": {"default_timeout": 30, "default_allow_network": False,
                               "max_output_size": 1 << 20}})

    def do_POST(self):
        headers = {k.lower(): v for k, v in self.headers.items()}
        raw = self.rfile.read(int(headers.get("content-length", "0")))
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        self.server.record("POST", self.path, headers, body)
        if self.server.answer is not None:
            status, data, extra = self.server.answer
            return self._send(status, data, extra)
        if self.path != "/execute":
            return self._send(404, {"detail": "Not Found"})
        if self.server.api_key and headers.get("authorization") != f"Bearer {self.server.api_key}":
            return self._send(401, {"detail": "Invalid or missing API key"})
        if headers.get("content-type") != "application/json":
            return self._send(422, {"detail": [{"msg": "not application/json"}]})
        wrong = _refusal(body)
        if wrong:
            return self._send(422, {"detail": [{"loc": ["body"], "msg": wrong}]})
        self._send(200, self.server.run(body))


@pytest.fixture
def fake_server(tmp_path, monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    server = FakeServer(tmp_path / "fake-server")
    thread = threading.Thread(target=server.serve_forever, name="fake-server", daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=30)
    assert not thread.is_alive()
    assert os.listdir(server.work_root) == [], "the fake server left a run directory"


@pytest.fixture
def local_env(pybox_bin, monkeypatch):
    """An environment in which SandboxClient() is local mode with the built binary."""
    for name in SANDBOX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PYBOX_BIN", pybox_bin)


@pytest.fixture
def local_args(local_env):
    return {}


@pytest.fixture
def remote_args(fake_server):
    return {"server_url": fake_server.url, "api_key": FAKE_KEY}


@pytest.fixture(params=["local", "remote"])
def client_args(request):
    """SandboxClient's arguments, for local mode and then for the fake server."""
    return request.getfixturevalue(f"{request.param}_args")


@pytest.fixture
def client(client_args):
    return SandboxClient(**client_args)


# --- the README examples, in both modes ----------------------------------------------------

def test_readme_fibonacci(client):
    check_fibonacci(client.execute(FIBONACCI))


def test_readme_circle_area(client):
    check_circle(client.execute(CIRCLE))


def test_readme_division_by_zero(client):
    check_division(client.execute(DIVISION))


def test_readme_agent_tool(client_args):
    check_agent_tool(PythonExecutorTool(**client_args))


def test_readme_csv_remote(remote_args):
    # Local mode: pending_sandbox_executor_server.py (pybox's allowlist has no `csv` yet).
    client = SandboxClient(**remote_args)
    check_csv(client.execute(CSV_CODE, input_files={"data.csv": CSV_DATA}))


def test_readme_health_check(client):
    assert client.health_check() is True


# --- the same semantics in both modes ------------------------------------------------------

def test_exit_status_is_the_return_code(client):
    r = client.execute("import sys\nprint('bye')\nsys.exit(3)")
    assert (r.return_code, r.success, r.stdout) == (3, False, "bye\n")


def test_timeout_is_return_code_minus_one(client_args):
    client = SandboxClient(timeout=1, **client_args)
    r = client.execute("print('start', flush=True)\n" + SPINNER)
    assert r.return_code == -1 and r.success is False, r
    # The per-call timeout overrides the client's.
    r = SandboxClient(**client_args).execute(SPINNER, timeout=1)
    assert r.return_code == -1, r


def test_files_in_and_out(client):
    code = ("data = open('in.txt', 'rb').read()\n"
            "open('upper.txt', 'wb').write(data.upper())\n"
            "open('bytes.bin', 'wb').write(bytes(range(256)))\n"
            "open('in.txt', 'ab').write(b' changed')\n"
            "print(len(data))")
    r = client.execute(code, input_files={"in.txt": "some text", "other.dat": b"\x00\xff"})
    assert r.success, r
    assert r.stdout == "9\n"
    assert r.output_files == {"upper.txt": b"SOME TEXT", "bytes.bin": bytes(range(256))}
    assert r.get_file_content("bytes.bin") == bytes(range(256))
    assert r.get_file_content("in.txt") is None
    assert r.get_file_content("missing.txt") is None


def test_a_script_that_writes_nothing_has_no_output_files(client):
    r = client.execute("print(open('in.txt').read())", input_files={"in.txt": b"kept"})
    assert r.success and r.stdout == "kept\n" and r.output_files == {}, r


# --- local mode: pybox's sandbox -----------------------------------------------------------

def test_local_forbidden_import_is_return_code_one(local_env):
    r = SandboxClient().execute("import math\nimport subprocess\nsubprocess.run(['id'])")
    assert r.return_code == 1 and not r.success
    assert "ForbiddenImportError" in r.stderr and "subprocess" in r.stderr, r.stderr
    assert r.stdout == "" and r.output_files == {}


def test_local_syntax_error_is_return_code_one(local_env):
    r = SandboxClient().execute("x = 1\nif x\n    print(x)\n")
    assert r.return_code == 1
    assert "SyntaxError" in r.stderr, r.stderr


def test_local_timeout_says_so_in_stderr(local_env):
    r = SandboxClient(timeout=1).execute("print('start', flush=True)\n" + SPINNER)
    assert r.return_code == -1
    assert r.stdout == "start\n"
    assert r.stderr.startswith("TimeoutError: "), r.stderr


def test_local_max_memory_mb_is_the_memory_limit(local_env):
    code = "block = bytearray(48 << 20)\nprint(len(block) >> 20)"
    assert SandboxClient(max_memory_mb=128).execute(code).stdout == "48\n"
    r = SandboxClient(max_memory_mb=32).execute(code)
    assert r.return_code == -9 and not r.success, r
    assert "MemoryError: " in r.stderr and "32 MiB" in r.stderr, r.stderr


def test_local_simple_mode_is_the_same_sandbox(local_env):
    client = SandboxClient(mode=ExecutionMode.SIMPLE)
    assert client.mode is ExecutionMode.SIMPLE
    check_fibonacci(client.execute(FIBONACCI))
    r = client.execute("import os\nprint(os.getuid())")
    assert r.return_code == 1 and "ForbiddenImportError" in r.stderr, r
    assert SandboxClient(mode="simple").mode is ExecutionMode.SIMPLE


def test_local_network_is_refused(local_env):
    with pytest.raises(SandboxException) as e:
        SandboxClient(allow_network=True).execute("print(1)")
    assert isinstance(e.value.__cause__, pybox.Forbidden)
    assert "network" in str(e.value)
    with pytest.raises(SandboxException):
        SandboxClient().execute("print(1)", allow_network=True)
    assert SandboxClient().execute("print(1)", allow_network=False).stdout == "1\n"


def test_local_output_file_over_its_limit_is_said_in_stderr(local_env):
    r = SandboxClient().execute("open('big.bin', 'wb').write(b'x' * (9 << 20))\n"
                                "open('small.txt', 'w').write('ok')")
    assert r.success, r
    assert r.output_files == {"small.txt": b"ok"}
    assert "output file `big.bin` not returned: file too large" in r.stderr, r.stderr


def test_local_without_a_binary(tmp_path, local_env):
    client = SandboxClient(binary=str(tmp_path / "no-such-pybox"))
    assert client.health_check() is False
    with pytest.raises(SandboxException) as e:
        client.execute("print(1)")
    assert isinstance(e.value.__cause__, pybox.BinaryNotFound)


def test_local_invalid_requests_raise(local_env):
    client = SandboxClient()
    with pytest.raises(SandboxException, match="input files"):
        client.execute("pass", input_files={"a": b"", "b": b"", "c": b""})
    with pytest.raises(SandboxException, match="timeout"):
        client.execute("pass", timeout=0)
    with pytest.raises(SandboxException):
        client.execute("pass", input_files={"a": 3})


# --- remote mode: what the fake server received ---------------------------------------------

def test_remote_request_shape(fake_server):
    client = SandboxClient(server_url=fake_server.url + "/", api_key=FAKE_KEY)
    r = client.execute("print('hi')", input_files={"a.txt": b"A\x00"})
    assert r.stdout == "hi\n"
    method, path, headers, body = fake_server.requests[-1]
    assert (method, path) == ("POST", "/execute")
    assert headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert headers["content-type"] == "application/json"
    assert body == {"code": "print('hi')", "timeout": 30, "allow_network": False,
                    "files": {"a.txt": base64.b64encode(b"A\x00").decode()}}
    assert type(body["timeout"]) is int

    client.execute("pass", timeout=7, allow_network=True)
    assert fake_server.last_body() == {"code": "pass", "timeout": 7, "allow_network": True,
                                       "files": {}}
    client.execute("pass", timeout=2.5)
    assert fake_server.last_body()["timeout"] == 2.5


def test_remote_without_a_key_sends_no_authorization(fake_server):
    fake_server.api_key = None
    SandboxClient(server_url=fake_server.url).execute("pass")
    assert "authorization" not in fake_server.requests[-1][2]


def test_remote_wrong_key_raises(fake_server):
    with pytest.raises(SandboxException) as e:
        SandboxClient(server_url=fake_server.url, api_key="wrong").execute("pass")
    assert e.value.status_code == 401
    assert "Invalid or missing API key" in str(e.value)
    assert e.value.details == {"detail": "Invalid or missing API key"}


@pytest.mark.parametrize("status, body", [
    (500, b"Internal Server Error"),
    (503, json.dumps({"detail": "busy"}).encode()),
    (422, json.dumps({"detail": [{"loc": ["body", "timeout"], "msg": "too large"}]}).encode()),
    (400, json.dumps({"detail": "Invalid base64"}).encode()),
    (429, b""),
])
def test_remote_non_2xx_raises(fake_server, status, body):
    fake_server.answer = (status, body, ())
    client = SandboxClient(server_url=fake_server.url, api_key=FAKE_KEY)
    with pytest.raises(SandboxException) as e:
        client.execute("print(1)")
    assert e.value.status_code == status
    assert str(e.value).endswith(f"(HTTP {status})"), str(e.value)


def test_remote_redirect_is_not_followed(fake_server):
    fake_server.answer = (307, b"{}", (("Location", fake_server.url + "/elsewhere"),))
    with pytest.raises(SandboxException) as e:
        SandboxClient(server_url=fake_server.url, api_key=FAKE_KEY).execute("print(1)")
    assert e.value.status_code == 307
    assert [p for _, p, _, _ in fake_server.requests] == ["/execute"]


def test_remote_wrong_path_raises(fake_server):
    with pytest.raises(SandboxException) as e:
        SandboxClient(server_url=fake_server.url + "/api", api_key=FAKE_KEY).execute("pass")
    assert e.value.status_code == 404
    assert fake_server.requests[-1][1] == "/api/execute"


@pytest.mark.parametrize("answer", [
    b"not json",
    b"[]",
    json.dumps({"output": "1\n", "error": "", "returncode": 0}).encode(),
    json.dumps({"stdout": "", "stderr": "", "return_code": "0", "output_files": {}}).encode(),
    json.dumps({"stdout": "", "stderr": "", "return_code": 0,
                "output_files": {"a": "not base64!"}}).encode(),
])
def test_remote_answer_that_is_not_a_result_raises(fake_server, answer):
    fake_server.answer = (200, answer, ())
    with pytest.raises(SandboxException, match="not an execution result") as e:
        SandboxClient(server_url=fake_server.url, api_key=FAKE_KEY).execute("print(1)")
    assert e.value.status_code == 200


def test_remote_output_files_are_decoded(fake_server):
    fake_server.answer = (200, json.dumps({
        "stdout": "", "stderr": "", "return_code": 0,
        "output_files": {"x.bin": base64.b64encode(b"\x00\x01").decode()}}).encode(), ())
    r = SandboxClient(server_url=fake_server.url).execute("pass")
    assert r.output_files == {"x.bin": b"\x00\x01"} and r.success


def test_remote_health_check(fake_server):
    client = SandboxClient(server_url=fake_server.url, api_key=FAKE_KEY)
    assert client.health_check() is True
    assert fake_server.requests[-1][:2] == ("GET", "/health")
    fake_server.health_status = 503
    assert client.health_check() is False


def test_remote_unreachable_server(fake_server):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = SandboxClient(server_url=f"http://127.0.0.1:{port}")
    assert client.health_check() is False
    with pytest.raises(SandboxException, match="no answer") as e:
        client.execute("print(1)")
    assert e.value.status_code is None


@pytest.mark.parametrize("url", ["ftp://example.com", "file:///etc/passwd", "127.0.0.1:8080",
                                 "http://", "http://host:99999", "http://host/?q=1"])
def test_bad_server_url(url):
    with pytest.raises(ValueError):
        SandboxClient(server_url=url)


# --- configuration -------------------------------------------------------------------------

def test_defaults():
    client = SandboxClient()
    assert client.server_url is None and not client.is_remote
    assert (client.timeout, client.allow_network, client.mode, client.max_memory_mb,
            client.api_timeout, client.api_key) == (30, False, ExecutionMode.SECURE, 128, 60,
                                                    None)
    assert ClientConfig() == ClientConfig(server_url=None, mode=ExecutionMode.SECURE, timeout=30,
                                          allow_network=False, max_memory_mb=128,
                                          api_timeout=60, api_key=None)


@pytest.mark.parametrize("kw", [dict(timeout=0), dict(timeout="30"), dict(max_memory_mb=1.5),
                                dict(max_memory_mb=0), dict(api_timeout=-1),
                                dict(mode="fast")])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        SandboxClient(**kw)


def test_from_config(fake_server):
    config = ClientConfig(server_url=fake_server.url, mode=ExecutionMode.SIMPLE, timeout=12,
                          allow_network=False, max_memory_mb=64, api_timeout=90,
                          api_key=FAKE_KEY)
    client = SandboxClient.from_config(config)
    assert (client.server_url, client.mode, client.timeout, client.max_memory_mb,
            client.api_timeout, client.api_key) == (fake_server.url, ExecutionMode.SIMPLE, 12,
                                                    64, 90, FAKE_KEY)
    check_fibonacci(client.execute(FIBONACCI))
    assert fake_server.last_body()["timeout"] == 12


def test_from_config_local(local_env):
    client = SandboxClient.from_config(ClientConfig(timeout=1, max_memory_mb=32))
    assert not client.is_remote
    assert client.execute(SPINNER).return_code == -1
    assert client.execute("b = bytearray(48 << 20)").return_code == -9


def test_from_env_variables_local(local_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("SANDBOX_MODE", "SIMPLE")
    monkeypatch.setenv("SANDBOX_TIMEOUT", "1")
    monkeypatch.setenv("SANDBOX_ALLOW_NETWORK", "false")
    monkeypatch.setenv("SANDBOX_MAX_MEMORY_MB", "32")
    client = SandboxClient.from_env()
    assert (client.server_url, client.mode, client.timeout, client.allow_network,
            client.max_memory_mb) == (None, ExecutionMode.SIMPLE, 1, False, 32)
    assert client.execute(SPINNER).return_code == -1
    assert client.execute("b = bytearray(48 << 20)").return_code == -9
    check_circle(client.execute(CIRCLE))


def test_from_env_variables_remote(fake_server, local_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SANDBOX_SERVER_URL", fake_server.url)
    monkeypatch.setenv("SANDBOX_API_KEY", FAKE_KEY)
    monkeypatch.setenv("SANDBOX_TIMEOUT", "9")
    monkeypatch.setenv("SANDBOX_ALLOW_NETWORK", "yes")
    monkeypatch.setenv("SANDBOX_API_TIMEOUT", "5")
    client = SandboxClient.from_env()
    assert client.is_remote and client.api_timeout == 5
    check_fibonacci(client.execute(FIBONACCI))
    assert fake_server.last_body()["timeout"] == 9
    assert fake_server.last_body()["allow_network"] is True
    assert fake_server.requests[-1][2]["authorization"] == f"Bearer {FAKE_KEY}"


def test_from_env_dotenv_file(fake_server, local_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "# the sandbox's settings\n"
        "\n"
        'export SANDBOX_MODE="simple"   # quoted, then a comment\n'
        "SANDBOX_TIMEOUT = 5\n"
        "SANDBOX_MAX_MEMORY_MB=64 # a comment after a value\n"
        "SANDBOX_ALLOW_NETWORK='no'\n"
        f"SANDBOX_SERVER_URL={fake_server.url}\n"
        f'SANDBOX_API_KEY="{FAKE_KEY}"\n'
        "this line is not an assignment\n")
    client = SandboxClient.from_env()
    assert (client.mode, client.timeout, client.max_memory_mb, client.allow_network,
            client.server_url, client.api_key) == (ExecutionMode.SIMPLE, 5, 64, False,
                                                   fake_server.url, FAKE_KEY)
    check_circle(client.execute(CIRCLE))
    assert fake_server.last_body()["timeout"] == 5

    # The environment wins over the file; an empty variable counts as unset.
    monkeypatch.setenv("SANDBOX_TIMEOUT", "7")
    monkeypatch.setenv("SANDBOX_MODE", "secure")
    monkeypatch.setenv("SANDBOX_MAX_MEMORY_MB", "")
    client = SandboxClient.from_env()
    assert (client.timeout, client.mode, client.max_memory_mb) == (7, ExecutionMode.SECURE, 64)
    client.execute("pass")
    assert fake_server.last_body()["timeout"] == 7

    # Another file, or none.
    (tmp_path / "other.env").write_text("SANDBOX_TIMEOUT=3\n")
    monkeypatch.delenv("SANDBOX_TIMEOUT")
    assert SandboxClient.from_env(env_file=tmp_path / "other.env").timeout == 3
    assert SandboxClient.from_env(env_file=None).server_url is None


def test_from_env_dotenv_local(local_env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SANDBOX_TIMEOUT=1\nSANDBOX_MAX_MEMORY_MB=32\n")
    client = SandboxClient.from_env()
    assert not client.is_remote and client.timeout == 1 and client.max_memory_mb == 32
    assert client.execute(SPINNER).return_code == -1
    check_fibonacci(client.execute(FIBONACCI))


@pytest.mark.parametrize("name, value, words", [
    ("SANDBOX_MODE", "fast", "SANDBOX_MODE"),
    ("SANDBOX_TIMEOUT", "soon", "SANDBOX_TIMEOUT"),
    ("SANDBOX_TIMEOUT", "-1", "SANDBOX_TIMEOUT"),
    ("SANDBOX_API_TIMEOUT", "nan", "SANDBOX_API_TIMEOUT"),
    ("SANDBOX_MAX_MEMORY_MB", "1.5", "SANDBOX_MAX_MEMORY_MB"),
    ("SANDBOX_ALLOW_NETWORK", "maybe", "SANDBOX_ALLOW_NETWORK"),
    ("SANDBOX_SERVER_URL", "ftp://x", "SANDBOX_SERVER_URL: server_url"),
])
def test_from_env_invalid_values(name, value, words):
    with pytest.raises(ValueError, match=words):
        SandboxClient.from_env(env_file=None, environ={name: value})


def test_from_env_malformed_dotenv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in SANDBOX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text('SANDBOX_MODE=secure\nSANDBOX_API_KEY="abc\n')
    with pytest.raises(ValueError, match=r"\.env:2: SANDBOX_API_KEY"):
        SandboxClient.from_env()
    (tmp_path / ".env").write_text("SANDBOX_API_KEY='abc' def\n")
    with pytest.raises(ValueError, match=r"\.env:1"):
        SandboxClient.from_env()


def test_parse_env():
    text = ("# comment\n"
            "A=1\n"
            "  B = two words  \n"
            "C='single # not a comment $HOME \\n'\n"
            'D="tab\\there \\"quoted\\" \\\\ \\$x"  # comment\n'
            'E="first\n'
            'second"\n'
            "F=\n"
            "G= # only a comment\n"
            "H=a#b\n"
            "export I=exported\n"
            "A=again\n"
            "=nokey\n"
            "no equals sign\n"
            "J.K=dotted\n")
    assert parse_env(text) == {
        "A": "again", "B": "two words", "C": "single # not a comment $HOME \\n",
        "D": 'tab\there "quoted" \\ $x', "E": "first\nsecond", "F": "", "G": "", "H": "a#b",
        "I": "exported", "J.K": "dotted"}


# --- the package ---------------------------------------------------------------------------

def test_result_object():
    r = ExecutionResult(stdout="", stderr="", return_code=0, output_files={"a": b"1"})
    assert r.success and r.get_file_content("a") == b"1" and r.get_file_content("b") is None
    assert not ExecutionResult(stdout="", stderr="", return_code=-1).success
    assert "<1 bytes>" in repr(r)
    assert issubclass(SandboxException, Exception)
    assert sandbox_executor.__all__ == ["SandboxClient", "ClientConfig", "ExecutionMode",
                                        "ExecutionResult", "SandboxException", "__version__"]


def test_installed_with_pybox(tmp_path, pybox_bin):
    """`pip install ./python` installs sandbox_executor beside pybox, and it runs."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "python", src, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYBOX", "SANDBOX_")) and k not in ("PYTHONPATH",
                                                                    "PIP_INDEX_URL")}

    def sh(*argv, **kw):
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
                           env=kw.pop("env", env), **kw)
        assert p.returncode == 0, f"{argv} exited {p.returncode}:\n{p.stdout.decode()}"
        return p.stdout.decode()

    sh("/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv))
    py = str(venv / "bin" / "python")
    sh(py, "-m", "pip", "install", "--no-build-isolation", "--no-index", "--no-cache-dir",
       "--disable-pip-version-check", str(src))
    out = sh(py, "-c", """
import importlib.resources, sys
import sandbox_executor
from sandbox_executor import SandboxClient
assert sandbox_executor.__file__.startswith(sys.prefix), sandbox_executor.__file__
assert importlib.resources.files("sandbox_executor").joinpath("py.typed").is_file()
r = SandboxClient().execute("print(sum(range(10)))")
print(r.return_code, r.stdout.strip())
""", env={**env, "PYBOX_BIN": pybox_bin}, cwd=str(tmp_path))
    assert out.split() == ["0", "45"]
