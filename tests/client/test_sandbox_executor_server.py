"""sandbox_executor against a real `pybox serve` (its POST /execute in the FastAPI server's
shape, GET /health), and the README's CSV example in local mode: every documented example of the
library, through both of its modes.
"""
import pytest

from sandbox_executor import SandboxClient, SandboxException

from test_sandbox_executor import (CIRCLE, CSV_CODE, CSV_DATA, DIVISION, FIBONACCI, SPINNER,
                                   PythonExecutorTool, check_agent_tool, check_circle,
                                   check_csv, check_division, check_fibonacci)


@pytest.fixture
def server_args(client_server):
    return {"server_url": client_server.url, "api_key": client_server.client_key}


@pytest.fixture
def server_client(server_args):
    return SandboxClient(**server_args)


# --- SERVER: the README examples against `pybox serve` -------------------------------------

def test_server_readme_fibonacci(server_client):
    check_fibonacci(server_client.execute(FIBONACCI))


def test_server_readme_circle_area(server_client):
    check_circle(server_client.execute(CIRCLE))


def test_server_readme_division_by_zero(server_client):
    check_division(server_client.execute(DIVISION))


def test_server_readme_agent_tool(server_args):
    check_agent_tool(PythonExecutorTool(**server_args))


def test_server_readme_csv(server_client):
    # SERVER and CSV (the key's policy is the anonymous allowlist).
    check_csv(server_client.execute(CSV_CODE, input_files={"data.csv": CSV_DATA}))


def test_server_health_check(server_client):
    assert server_client.health_check() is True


# --- SERVER: the same semantics as local mode ----------------------------------------------

def test_server_exit_status(server_client):
    r = server_client.execute("import sys\nprint('bye')\nsys.exit(3)")
    assert (r.return_code, r.stdout) == (3, "bye\n")


def test_server_timeout_is_minus_one(server_client):
    r = server_client.execute(SPINNER, timeout=1)
    assert r.return_code == -1 and not r.success, r


def test_server_default_timeout_is_capped_not_refused(server_client):
    # The client sends timeout 30, over the key's 10 s: it runs with the caller's limit.
    r = server_client.execute("print('ok')")
    assert r.success and r.stdout == "ok\n", r


def test_server_forbidden_import_is_one(server_client):
    r = server_client.execute("import math\nimport subprocess\n")
    assert r.return_code == 1
    assert "ForbiddenImportError" in r.stderr and "subprocess" in r.stderr, r.stderr


def test_server_syntax_error_is_one(server_client):
    r = server_client.execute("x = 1\nif x\n    print(x)\n")
    assert r.return_code == 1 and "SyntaxError" in r.stderr, r.stderr


def test_server_files_in_and_out(server_client):
    code = ("data = open('in.txt', 'rb').read()\n"
            "open('upper.txt', 'wb').write(data.upper())\n"
            "open('bytes.bin', 'wb').write(bytes(range(256)))\n"
            "print(len(data))")
    r = server_client.execute(code, input_files={"in.txt": b"some text"})
    assert r.success and r.stdout == "9\n", r
    assert r.output_files == {"upper.txt": b"SOME TEXT", "bytes.bin": bytes(range(256))}


def test_server_network_is_refused(server_client):
    with pytest.raises(SandboxException) as e:
        server_client.execute("print(1)", allow_network=True)
    assert e.value.status_code in (403, 501)


def test_server_wrong_key_raises(client_server):
    with pytest.raises(SandboxException) as e:
        SandboxClient(server_url=client_server.url, api_key="not-a-key").execute("print(1)")
    assert e.value.status_code == 401


def test_server_anonymous(client_server):
    check_fibonacci(SandboxClient(server_url=client_server.url).execute(FIBONACCI))


# --- CSV: the README's CSV example in local mode -------------------------------------------

def test_local_readme_csv(pybox_bin, monkeypatch):
    monkeypatch.setenv("PYBOX_BIN", pybox_bin)
    client = SandboxClient()
    check_csv(client.execute(CSV_CODE, input_files={"data.csv": CSV_DATA}))
