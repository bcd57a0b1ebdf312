"""User code that forks, starts threads or logs behaves as under python3, in warm spares and in
cells forked on demand alike (the zygote forks its cells without CPython's at-fork hooks and each
job puts them back: tests that they are back)."""
import json
import subprocess

import pytest

from conftest import PYBOX, clean_env

FORKS = r"""
import logging, os, random, threading
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(w, repr(random.random()).encode())
    os._exit(0)
os.close(w)
child = float(os.read(r, 100))
os.waitpid(pid, 0)
print("random differs after fork:", child != random.random())
seen = []
t = threading.Thread(target=lambda: seen.append(threading.current_thread() is not threading.main_thread()))
t.start()
t.join()
print("thread ran apart from main:", seen == [True])
print("main thread is this one:", threading.main_thread().ident == threading.get_ident())
print("threads left:", threading.active_count())
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
logging.info("logging works")
"""

EXPECTED_OUT = ("random differs after fork: True\n"
                "thread ran apart from main: True\n"
                "main thread is this one: True\n"
                "threads left: 1\n")


@pytest.fixture(scope="module")
def server(module_start_server):
    return module_start_server("--spares", "2:2", "--rpm", "1000", "--rpd", "100000")


def test_fork_threads_logging_in_warm_cells(server):
    # Several in a row: the first ones find spares, all must behave the same.
    for _ in range(4):
        r = server.admin({"code": FORKS}, v1=True)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "ok", body
        assert body["stdout"] == EXPECTED_OUT
        assert body["stderr"] == "INFO logging works\n"


def test_fork_threads_logging_on_demand():
    # pybox run forks its cell on demand.
    p = subprocess.run([PYBOX, "run", "--allow-all-imports", "--json", "-"], input=FORKS,
                       capture_output=True, text=True, env=clean_env(), timeout=120)
    assert p.returncode == 0, p.stderr
    body = json.loads(p.stdout)
    assert body["stdout"] == EXPECTED_OUT
    assert body["stderr"] == "INFO logging works\n"
