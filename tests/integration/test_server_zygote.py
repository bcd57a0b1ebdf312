"""Zygotes outlive the threads that needed them: a zygote started while serving one connection
(on a recycle, with no warm pool to start it from its own thread) keeps serving after that
connection and its thread are gone.

SIGHUP replaces the zygotes: a new jail sees the host's Python installation as it is now, so a
package installed while the server runs (here a .pth file, which site reads only when an
interpreter starts, and the directory it names) is importable once the reload is logged, while
an execution running on the old zygote finishes there."""
import re
import secrets
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from conftest import SLOW, body_of

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pybox_host import wait_jail_file  # noqa: E402

# A directory the jail's view of the Python installation covers (src/sandbox/rootfs.c).
DIST = Path("/usr/lib/python3/dist-packages")
RELOADED = "pybox: SIGHUP received: zygotes replaced; new executions see the Python installation " \
           "as it is now"


def metric(srv, name):
    text = srv.get("/metrics").text
    m = re.search(r"^%s (\d+)" % re.escape(name), text, re.M)
    assert m, name
    return int(m.group(1))


def test_zygote_survives_the_connection_that_started_it(start_server):
    srv = start_server("--spares", "0:0", "--recycle", "3:0", "--rpm", "1000", "--rpd", "100000")
    for i in range(7):
        # A new connection each time: its server thread ends when it closes.
        r = requests.post(srv.url + "/v1/execute", json={"code": "print(%d)" % i},
                          headers={"Authorization": "Bearer " + srv.admin_key,
                                   "Connection": "close"}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["stdout"] == "%d\n" % i
    # Executions 1-3 on the keyed callers' first zygote, 4-6 on its second, 7 on its third:
    # recycled, never replaced because one died.  The anonymous callers' zygote is the fourth.
    assert metric(srv, "pybox_zygotes_started_total") == 4
    assert "the zygote died" not in srv.log_text()


class HostPackage:
    """A package installed on the host as pip or dpkg may leave one: a directory in
    dist-packages holding a module, and a .pth file there naming the directory. Removed at the
    end of the test, whatever happens (every Python of the host reads the .pth meanwhile: it
    only adds that directory to sys.path)."""

    def __init__(self):
        tag = secrets.token_hex(6)
        self.module = f"pbx_reload_{tag}"
        self.dir = DIST / f"pybox_test_reload_{tag}"
        self.pth = DIST / f"pybox-test-reload-{tag}.pth"

    def install(self):
        self.dir.mkdir()
        (self.dir / f"{self.module}.py").write_text("VALUE = 'installed since'\n")
        self.pth.write_text(self.dir.name + "\n")

    def remove(self):
        self.pth.unlink(missing_ok=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def package():
    p = HostPackage()
    yield p
    p.remove()


def wait_log(srv, line, count, timeout=60.0):
    """Poll the server's stderr until `line` is in it `count` times; fails after `timeout` s."""
    deadline = time.monotonic() + timeout * SLOW
    while srv.log_text().count(line) < count:
        assert srv.proc.poll() is None, srv.log_text()[-4000:]
        assert time.monotonic() < deadline, f"no {line!r} in the log:\n{srv.log_text()[-4000:]}"
        time.sleep(0.05)


def imports(srv, module, key=None):
    r = srv.v1({"code": f"import {module}\nprint({module}.VALUE)"}, key=key)
    assert r.status_code == 200, r.text
    return body_of(r)


def test_sighup_shows_a_package_installed_since_the_start(start_server, package):
    # Anonymous callers may import it too: both engines' zygotes are replaced.
    srv = start_server("--rpm", "1000", "--rpd", "100000", "--modules", package.module)
    assert imports(srv, package.module)["status"] == "error"
    package.install()
    # The zygotes read the .pth files when they started: not this one.
    for key in (None, srv.admin_key):
        res = imports(srv, package.module, key=key)
        assert res["status"] == "error", res
        assert "ModuleNotFoundError" in res["error"]["type"] + res["stderr"], res
    started = metric(srv, "pybox_zygotes_started_total")
    srv.proc.send_signal(signal.SIGHUP)
    wait_log(srv, RELOADED, 1)
    assert metric(srv, "pybox_zygotes_started_total") == started + 2
    deadline = time.monotonic() + 30 * SLOW
    for key in (None, srv.admin_key):
        while True:
            res = imports(srv, package.module, key=key)
            if res["status"] == "ok" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert res["status"] == "ok" and res["stdout"] == "installed since\n", res
    # Once more, idle: the server goes on serving, and stops clean (the fixture checks).
    srv.proc.send_signal(signal.SIGHUP)
    wait_log(srv, RELOADED, 2)
    assert imports(srv, package.module)["stdout"] == "installed since\n"


def test_sighup_lets_running_executions_finish(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "100000")
    ready = f"/work/running-{secrets.token_hex(6)}"
    code = (f"import time\nopen({ready!r}, 'w').close()\ntime.sleep({2 * SLOW})\n"
            "print('finished on the old zygote')")
    out = {}

    def run():
        out["r"] = srv.v1({"code": code}, key=srv.admin_key)

    t = threading.Thread(target=run)
    t.start()
    try:
        wait_jail_file(ready, 30 * SLOW)
        srv.proc.send_signal(signal.SIGHUP)
        wait_log(srv, RELOADED, 1)
    finally:
        t.join(60 * SLOW)
    res = body_of(out["r"])
    assert res["status"] == "ok" and res["stdout"] == "finished on the old zygote\n", res
    # New work runs on the new zygote.
    assert body_of(srv.v1({"code": "print(1)"}, key=srv.admin_key))["stdout"] == "1\n"
