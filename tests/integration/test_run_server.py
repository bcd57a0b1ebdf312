"""`pybox run --server URL` gives what local `pybox run` gives: the same stdout, stderr, exit
status, --json object (but its timings) and --out files, for the same scripts; and a request that
does not run exits with its documented status."""
import json
import os
import socket
import subprocess

import pytest

from conftest import PYBOX, SLOW, clean_env

# name -> (script, extra arguments, files to create {name: bytes}, stdin bytes or None)
SCRIPTS = {
    "hello": ("print('hello')\n", [], {}, None),
    "stdin and stderr": ("import sys\nd = sys.stdin.read()\nprint(d.upper())\n"
                         "print('to stderr', file=sys.stderr)\n", [], {}, b"abc\n"),
    "exit 3": ("import sys\nprint('bye')\nsys.exit(3)\n", [], {}, None),
    "exception": ("print('before')\n1 / 0\n", [], {}, None),
    "main": ("def main():\n    return {'x': [1, 2.5, None], 'y': 0.1 + 0.2, 's': 'caf\u00e9'}\n",
             ["--main"], {}, None),
    "files": ("d = open('in.bin', 'rb').read()\nopen('out.bin', 'wb').write(d[::-1])\n"
              "open('t.txt', 'w').write('text')\n",
              ["--file", "in.bin=IN", "--return", "out.bin", "--return", "t.txt",
               "--return", "missing.txt"], {"IN": bytes(range(256))}, None),
    "timeout": ("import time\nprint('start', flush=True)\ntime.sleep(5)\n", ["--timeout", "1"],
                {}, None),
    "memory": ("b = b'x' * (200 << 20)\n", ["--memory", "64"], {}, None),
    "forbidden import": ("import socket\n", [], {}, None),
    "syntax error": ("def f(:\n", [], {}, None),
    "unicode": ("print('h\u00e9llo \u2713 \U0001F600')\n", [], {}, None),
}


@pytest.fixture(scope="module")
def server(module_start_server):
    return module_start_server("--rpm", "100000", "--rpd", "1000000")


def run(tmp_path, argv, stdin=None, env=None):
    """pybox run ARGV; stdin (bytes) is piped in, else pybox's stdin is /dev/null (a stdin
    that is not a terminal is the script's)."""
    return subprocess.run([PYBOX, "run"] + argv, input=stdin,
                          stdin=subprocess.DEVNULL if stdin is None else None,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
                          timeout=120 * SLOW, env=clean_env(env))


def prepare(tmp_path, name, script, args, files):
    d = tmp_path / name.replace(" ", "_")
    (d / "out").mkdir(parents=True)
    (d / "script.py").write_text(script)
    args = list(args)
    for fname, data in files.items():
        (d / fname).write_bytes(data)
        args = [a.replace("=" + fname, "=" + str(d / fname)) for a in args]
    return d, args


def without_timings(text):
    obj = json.loads(text)
    for k in ("duration_ms", "cpu_ms", "max_rss_kb"):
        assert k in obj
        del obj[k]
    return obj


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_same_output_status_and_files(server, tmp_path, name):
    script, args, files, stdin = SCRIPTS[name]
    results = {}
    for mode, extra in (("local", []), ("remote", ["--server", server.url])):
        d, margs = prepare(tmp_path / mode, name, script, args, files)
        p = run(d, ["script.py", "--out", str(d / "out")] + margs + extra, stdin=stdin)
        out_files = {f.name: f.read_bytes() for f in (d / "out").iterdir()}
        results[mode] = (p, out_files)
    (lp, lfiles), (rp, rfiles) = results["local"], results["remote"]
    assert rp.returncode == lp.returncode, (lp.stderr, rp.stderr)
    assert rp.stdout == lp.stdout
    assert rp.stderr == lp.stderr
    assert rfiles == lfiles
    if name == "files":
        assert lfiles == {"out.bin": bytes(range(256))[::-1], "t.txt": b"text"}
        assert b"missing.txt" in lp.stderr
    expected_status = {"exit 3": 3, "exception": 1, "timeout": 124, "memory": 137,
                       "forbidden import": 126, "syntax error": 126}.get(name, 0)
    assert lp.returncode == expected_status, lp.stderr


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_same_json(server, tmp_path, name):
    script, args, files, stdin = SCRIPTS[name]
    args = [a for a in args]
    out = {}
    for mode, extra in (("local", []), ("remote", ["--server", server.url])):
        d, margs = prepare(tmp_path / mode, name, script, args, files)
        p = run(d, ["script.py", "--json"] + margs + extra, stdin=stdin)
        assert p.stdout.count(b"\n") == 1, p.stdout
        out[mode] = (p.returncode, without_timings(p.stdout), p.stderr)
    assert out["remote"] == out["local"]


def test_env_selects_the_server(server, tmp_path):
    (tmp_path / "s.py").write_text("print(6 * 7)\n")
    p = run(tmp_path, ["s.py", "--json"], env={"PYBOX_SERVER": server.url})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["stdout"] == "42\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_errors_exit_with_their_status(server, tmp_path):
    (tmp_path / "s.py").write_text("print(1)\n")
    p = run(tmp_path, ["s.py", "--server", f"http://127.0.0.1:{free_port()}"])
    assert p.returncode == 69
    assert p.stdout == b"" and p.stderr.startswith(b"pybox: ") and p.stderr.count(b"\n") == 1
    p = run(tmp_path, ["s.py", "--server", server.url, "--api-key", "wrong"])
    assert p.returncode == 77, p.stderr
    assert b"401" in p.stderr
    p = run(tmp_path, ["s.py", "--server", server.url, "--timeout", "100"])
    assert p.returncode == 2, p.stderr
    assert b"timeout" in p.stderr
    p = run(tmp_path, ["s.py", "--server", server.url, "--limit", "pids=5"])
    assert p.returncode == 2
    p = run(tmp_path, ["s.py", "--api-key", "k"])
    assert p.returncode == 2


def test_password_in_server_url_never_printed(tmp_path):
    (tmp_path / "s.py").write_text("print(1)\n")
    p = run(tmp_path, ["s.py", "--server", f"http://user:s3cret@127.0.0.1:{free_port()}"])
    assert p.returncode == 69
    assert b"s3cret" not in p.stderr and b"user" not in p.stderr, p.stderr
    assert b"127.0.0.1" in p.stderr, p.stderr


def test_rate_limited_exits_75(start_server, tmp_path):
    s = start_server("--rpm", "1")
    (tmp_path / "s.py").write_text("print(1)\n")
    assert run(tmp_path, ["s.py", "--server", s.url]).returncode == 0
    p = run(tmp_path, ["s.py", "--server", s.url])
    assert p.returncode == 75, p.stderr
    assert b"retry in" in p.stderr
