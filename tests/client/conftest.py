"""Fixtures of the Python client's tests: the package from python/, the built `pybox` binary,
and real `pybox serve` processes started by the integration suite's Server helper (which also
proves, at teardown, that nothing of a server survives it).

The binary comes from env PYBOX (ctest sets it; PYBOX_BIN too), else <repo>/build/pybox. Run
with Debian's interpreter: /usr/bin/python3 -m pytest -q tests/client

Fixtures:
  pybox_bin            absolute path of the binary
  create_key           create_key(server, name, *opts) -> token, by `pybox keys create`
  start_server         the integration suite's function-scoped server factory
  module_start_server  the same, module-scoped
  client_server        a module-scoped server with an API key of unlimited rates (.client_key)
  local_sandbox        Sandbox(binary=pybox_bin)
  remote_sandbox       Sandbox(url=client_server.url, api_key=client_server.client_key)
  sandbox              each of the two, in turn (params "local", "remote")
Every test also checks that the client left nothing in the temporary directory.
"""
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))

# The integration suite's conftest, under a name of its own so that it does not collide with
# this conftest module.
_spec = importlib.util.spec_from_file_location("pybox_integration_conftest",
                                               REPO / "tests" / "integration" / "conftest.py")
itc = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = itc
_spec.loader.exec_module(itc)

from pybox import Sandbox  # noqa: E402

PYBOX = itc.PYBOX
SLOW = itc.SLOW
clean_env = itc.clean_env
start_server = itc.start_server
module_start_server = itc.module_start_server
_binary_exists = itc._binary_exists


def create_key(server, name, *opts):
    """`pybox keys create` in the server's data directory; returns the token."""
    p = subprocess.run([PYBOX, "keys", "create", "--name", name, *opts, "--data",
                        str(server.data_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=clean_env(), timeout=60, check=False)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p.stdout.decode().strip()


@pytest.fixture(name="create_key", scope="session")
def _create_key_fixture():
    """create_key(server, name, *opts): a new API key of that server."""
    return create_key


@pytest.fixture(scope="session")
def pybox_bin():
    return PYBOX


@pytest.fixture(scope="module")
def client_server(module_start_server):
    """A server whose key `client` has no rate limits but the anonymous policy otherwise (the
    import allowlist, 10 s, 256 MiB), so that it answers like local mode does."""
    server = module_start_server()
    server.client_key = create_key(server, "client", "--rpm", "unlimited", "--rpd", "unlimited")
    return server


@pytest.fixture
def local_sandbox(pybox_bin):
    return Sandbox(binary=pybox_bin)


@pytest.fixture
def remote_sandbox(client_server):
    return Sandbox(url=client_server.url, api_key=client_server.client_key)


@pytest.fixture(params=["local", "remote"])
def sandbox(request):
    return request.getfixturevalue(f"{request.param}_sandbox")


@pytest.fixture(autouse=True)
def _no_temporary_leftovers(tmp_path, monkeypatch):
    """The client's temporary files go to a directory of this test, which must end empty."""
    tmp = tmp_path / "client-tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    yield
    left = sorted(n for n in os.listdir(tmp) if n.startswith("pybox-client-"))
    assert not left, f"the client left temporary files behind: {left}"
