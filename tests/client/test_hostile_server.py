"""A hostile server names the returned files: nothing may be written outside --out.

The attack: a fake pybox server on loopback (http.server, in this process) answers
POST /v1/execute with a well-formed result object whose `files` name `../victim.txt`,
`/etc/x`, `a/b`, or a file the request never asked back.  `pybox run --server URL --out out
--return result.txt --force` used to write `../victim.txt` over the victim next to out/.

Invariants proved, through `pybox run --server`, libpybox (client_driver) and the Python
package:
  - the victim files keep their contents, and no file appears outside out/;
  - libpybox refuses such an answer as PYBOX_E_PROTOCOL, naming the file, and keeps no file
    of it (so pybox run saves none, not even the one it asked for);
  - an answer that returns only what was asked (a name, a pattern's matches, the pattern's own
    "not found") is taken and saved, so the refusal is of the names, not of the fake server.

Run with Debian's interpreter: /usr/bin/python3 -m pytest -q tests/client/test_hostile_server.py
"""
import base64
import json
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pybox import Sandbox
from pybox.errors import ServerError

DRIVER = os.environ.get("PYBOX_CLIENT_DRIVER") or str(
    Path(__file__).resolve().parents[2] / "build" / "client_driver")
TIMEOUT = 60
VICTIM = b"the victim's own contents\n"
EVIL = b"written by the hostile server\n"


def result_object(files):
    """A result object of docs/api.md returning `files` ({name: bytes or error string})."""
    entries = {}
    for name, data in files.items():
        if isinstance(data, str):
            entries[name] = {"error": data}
        else:
            entries[name] = {"content_base64": base64.b64encode(data).decode(), "size": len(data)}
    return {"status": "ok", "exit_code": 0, "signal": None, "stdout": "", "stderr": "",
            "stdout_truncated": False, "stderr_truncated": False, "result": None,
            "outputs": [], "files": entries, "error": None, "duration_ms": 1.0, "cpu_ms": 1.0,
            "max_rss_kb": 1000}


class FakeServer:
    """POST /v1/execute answers `self.files` as a result object; `self.bodies` the requests."""

    def __init__(self):
        fake = self
        self.files = {}
        self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                fake.bodies.append(json.loads(self.rfile.read(n)))
                body = json.dumps(result_object(fake.files)).encode()
                self.send_response(200 if self.path == "/v1/execute" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(TIMEOUT)


@pytest.fixture
def fake():
    f = FakeServer()
    yield f
    f.close()


@pytest.fixture
def place(tmp_path):
    """tmp/{s.py, out/, victim.txt, out/x/ ...}: the script, --out, and victims around it."""
    (tmp_path / "s.py").write_text("print('hi')\n")
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "victim.txt").write_bytes(VICTIM)
    (out / "a").mkdir()  # a/b would land here through a path join
    return tmp_path


def snapshot(root):
    """Every file under `root` with its contents."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


HOSTILE = {
    "parent": "../victim.txt",
    "absolute": "/etc/x",
    "subdirectory": "a/b",
    "not asked": "other.txt",
    "dot": ".",
    "glob of another name": "resul?.txt",
}


def pybox_run(pybox_bin, place, url, *args):
    return subprocess.run([pybox_bin, "run", str(place / "s.py"), "--server", url,
                           "--out", str(place / "out"), *args],
                          cwd=place, capture_output=True, timeout=TIMEOUT)


@pytest.mark.parametrize("name", HOSTILE.values(), ids=HOSTILE.keys())
def test_pybox_run_writes_nothing_for_a_hostile_name(pybox_bin, fake, place, name):
    fake.files = {"result.txt": b"asked\n", name: EVIL}
    before = snapshot(place)
    etc_before = os.path.exists("/etc/x")
    r = pybox_run(pybox_bin, place, fake.url, "--return", "result.txt", "--force")
    assert len(fake.bodies) == 1, "the fake server was not asked"
    assert r.returncode != 0, r
    assert b"not a flat name the request asked back" in r.stderr, r.stderr
    assert name.encode() in r.stderr, r.stderr
    # Nothing written anywhere: not the victim, not out/, not /etc.
    assert snapshot(place) == before
    assert (place / "victim.txt").read_bytes() == VICTIM
    assert os.path.exists("/etc/x") == etc_before


def test_pybox_run_all_hostile_names_at_once(pybox_bin, fake, place):
    fake.files = {"result.txt": b"asked\n", **{n: EVIL for n in HOSTILE.values()}}
    before = snapshot(place)
    r = pybox_run(pybox_bin, place, fake.url, "--return", "result.txt", "--force")
    assert r.returncode != 0 and b"PROTOCOL" not in r.stdout
    assert snapshot(place) == before


def test_pybox_run_never_writes_through_a_symlink_in_out(pybox_bin, fake, place):
    """--force replaces a file in out/, never the target of a symlink there."""
    os.symlink(place / "victim.txt", place / "out" / "result.txt")
    fake.files = {"result.txt": EVIL}
    r = pybox_run(pybox_bin, place, fake.url, "--return", "result.txt", "--force")
    assert r.returncode != 0, r
    assert (place / "victim.txt").read_bytes() == VICTIM


def test_pybox_run_saves_what_was_asked(pybox_bin, fake, place):
    """The control: names asked, a pattern's matches and its "not found" are saved or said."""
    fake.files = {"result.txt": b"asked\n", "p1.png": b"1", "p2.png": b"2",
                  "*.csv": "not found"}
    r = pybox_run(pybox_bin, place, fake.url, "--return", "result.txt", "--return", "*.png",
                  "--return", "*.csv")
    assert r.returncode == 0, r
    assert fake.bodies[0]["return_files"] == ["result.txt", "*.png", "*.csv"]
    assert (place / "out" / "result.txt").read_bytes() == b"asked\n"
    assert (place / "out" / "p1.png").read_bytes() == b"1"
    assert (place / "out" / "p2.png").read_bytes() == b"2"
    assert b"returned file `*.csv`: not found" in r.stderr
    assert (place / "victim.txt").read_bytes() == VICTIM


def driver(place, url, *returns):
    args = [DRIVER, "--server", url]
    for n in returns:
        args += ["--return", n]
    r = subprocess.run([*args, str(place / "s.py")], cwd=place, capture_output=True,
                       timeout=TIMEOUT, check=True)
    return json.loads(r.stdout)


@pytest.mark.parametrize("name", HOSTILE.values(), ids=HOSTILE.keys())
def test_libpybox_refuses_a_hostile_name(fake, place, name):
    fake.files = {"result.txt": b"asked\n", name: EVIL}
    before = snapshot(place)
    out = driver(place, fake.url, "result.txt")
    assert out["rc"] == "PYBOX_E_PROTOCOL", out
    assert f"`{name}`" in out["message"], out
    assert snapshot(place) == before


def test_libpybox_refuses_any_file_when_none_was_asked(fake, place):
    """POST /v1/execute without return_files returns no file: any file is unasked."""
    fake.files = {"result.txt": b"x"}
    out = driver(place, fake.url)
    assert "return_files" not in fake.bodies[0]
    assert out["rc"] == "PYBOX_E_PROTOCOL", out


def test_libpybox_takes_what_was_asked(fake, place):
    fake.files = {"result.txt": b"asked\n", "p1.png": b"1", "*.csv": "not found"}
    out = driver(place, fake.url, "result.txt", "*.png", "*.csv")
    assert out["rc"] == "PYBOX_OK", out
    assert out["files"] == {"result.txt": 6, "p1.png": 1, "*.csv": "not found"}


def test_python_package_writes_no_file(fake, place, monkeypatch):
    """The package writes no file itself (python/pybox), and refuses an answer returning a
    name that is not flat or was not asked, so a caller saving Result.files by name is safe."""
    fake.files = {"result.txt": b"asked\n", **{n: EVIL for n in HOSTILE.values()}}
    before = snapshot(place)
    monkeypatch.chdir(place / "out")
    with pytest.raises(ServerError, match="not a flat name the request asked back"):
        Sandbox(url=fake.url).run("print('hi')", return_files=["result.txt"])
    assert len(fake.bodies) == 1
    assert snapshot(place) == before


@pytest.mark.parametrize("name", ["../victim.txt", "/etc/x", "a/b", ".", "other.txt"])
def test_python_package_refuses_each_hostile_name(fake, name):
    fake.files = {"result.txt": b"asked\n", name: EVIL}
    with pytest.raises(ServerError) as e:
        Sandbox(url=fake.url).run("print('hi')", return_files=["result.txt", "*.png"])
    assert e.value.type == "BadResponse", e.value


def test_python_package_takes_what_was_asked(fake):
    fake.files = {"result.txt": b"asked\n", "p1.png": b"1", "*.csv": "not found"}
    r = Sandbox(url=fake.url).run("print('hi')", return_files=["result.txt", "*.png", "*.csv"])
    assert r.files == {"result.txt": b"asked\n", "p1.png": b"1"}, r
    assert r.file_errors == {"*.csv": "not found"}, r
