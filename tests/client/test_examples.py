"""The Python examples in examples/python run as documented, in local mode and against a server,
and print what they promise."""
import os
import subprocess

import pytest

from pybox_integration_conftest import PYBOX, REPO  # loaded by this directory's conftest

EXAMPLES = REPO / "examples" / "python"

EXPECTED = {
    "hello.py": ["status=ok exit_code=0", "hello from linux in the sandbox"],
    "files_roundtrip.py": ["report written", "3 sales, total 49", "pears: 30", "apples: 12",
                           "plums: 7", "not-written.txt: not found"],
    "main_mode.py": ["computing statistics of 8 numbers",
                     'main() returned {"mean": 5, "sorted": [9, 7, 5, 5, 4, 4, 4, 2], '
                     '"stdev": 2.0}'],
    "session.py": ["call 2: total = 49", "streamed: pears 61", "streamed: plums 14",
                   "status: ok"],
    "agent_tool.py": ["run_python -> 2432902008176640000",
                      "ZeroDivisionError: division by zero", "[error] division by zero",
                      "[rejected] import of 'socket' not allowed"],
}


def test_every_example_is_checked():
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


def run_example(name, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYBOX")}
    base.update(PYTHONPATH=str(REPO / "python"), **env)
    return subprocess.run(["/usr/bin/python3", str(EXAMPLES / name)], env=base,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                          cwd=str(REPO))


@pytest.mark.parametrize("mode", ["local", "remote"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example(name, mode, request):
    if mode == "local":
        p = run_example(name, PYBOX_BIN=PYBOX)
    else:
        server = request.getfixturevalue("client_server")
        p = run_example(name, PYBOX_SERVER=server.url, PYBOX_API_KEY=server.client_key)
    out = p.stdout.decode()
    assert p.returncode == 0, f"{name} ({mode}) exited {p.returncode}\n{out}\n{p.stderr.decode()}"
    lines = out.splitlines()
    for want in EXPECTED[name]:
        assert any(want in line for line in lines), f"{name} ({mode}): no {want!r} in\n{out}"
    if name == "hello.py":
        assert lines[0].startswith(f"[{mode}]")
