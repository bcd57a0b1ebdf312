"""Executions that run at the same time: a hostile one never holds up the others, and none can
reach another through SysV IPC or an abstract unix socket."""
import secrets
import threading
import time

import pytest

from conftest import SLOW
from pybox_host import FORK_BOMB, SPIN, jail_file_pid, wait_jail_file


MEMORY_HOG = """
blocks = []
while True:
    blocks.append(bytearray(16 << 20))
"""

# Creates a SysV message queue and semaphore set with a known key and an abstract unix socket,
# reports what it managed, then holds them while the test looks from another execution.
HOLDER = r"""
import ctypes, socket, time
libc = ctypes.CDLL(None, use_errno=True)
msq = libc.msgget(0x5eed1, 0o1666)   # IPC_CREAT | 0666
sem = libc.semget(0x5eed2, 1, 0o1666)
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind("\0pybox-neighbour")
    s.listen(1)
    sock = "bound"
except OSError as e:
    sock = "refused:%d" % e.errno
print("HOLD", msq, sem, sock, flush=True)
open("/work/HELD", "w").close()  # the host waits for this: all made, now held
time.sleep(3)
"""

LOOKER = r"""
import ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
seen = []
if libc.msgget(0x5eed1, 0) >= 0:
    seen.append("msgqueue")
if libc.semget(0x5eed2, 0, 0) >= 0:
    seen.append("semaphore")
try:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect("\0pybox-neighbour")
    seen.append("abstract-socket")
except OSError:
    pass
print("SEEN", sorted(seen))
"""


@pytest.fixture(scope="module")
def server(module_start_server):
    return module_start_server("--max-concurrency", "6", "--spares", "2:4", "--rpm", "1000",
                               "--rpd", "100000", "--timeout", "30")


def marked(code):
    """`code` that first writes /work/<a new name> the host can wait for; (code, that path)."""
    path = "/work/started-" + secrets.token_hex(8)
    return "open(%r, 'w').close()\n" % path + code, path


def start(srv, code, timeout, results, name):
    def go():
        r = srv.admin({"code": code, "timeout": timeout}, v1=True)
        results[name] = (r.status_code, r.json(), time.monotonic())

    t = threading.Thread(target=go)
    t.start()
    return t


def test_hostile_neighbours_do_not_hold_up_others(server):
    results = {}
    hostile, started = [], []
    for code, name in ((SPIN, "spin"), (FORK_BOMB, "forkbomb"), (MEMORY_HOG, "memory")):
        code, path = marked(code)
        hostile.append(start(server, code, 6, results, name))
        started.append(path)
    try:
        # The spinner and the fork bomb are at it (until their time limit); the memory hog,
        # killed as soon as it reaches its limit, has started or is already done.
        wait_jail_file(started[0], 30 * SLOW)
        wait_jail_file(started[1], 30 * SLOW)
        deadline = time.monotonic() + 30 * SLOW
        while jail_file_pid(started[2]) is None and "memory" not in results:
            assert time.monotonic() < deadline, "the memory hog neither started nor ended"
            time.sleep(0.02)
        for i in range(3):
            r = server.admin({"code": "print(%d)" % i}, v1=True)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "ok" and r.json()["stdout"] == "%d\n" % i, r.json()
        done = time.monotonic()
    finally:
        for t in hostile:
            t.join()
    # The ordinary executions were answered while the spinner still ran to its time limit.
    assert all(name in results for name in ("spin", "forkbomb", "memory")), results
    assert done < results["spin"][2], "print(1) waited for the spinning neighbour to end"
    assert results["spin"][1]["status"] == "timeout", results["spin"][1]
    assert results["memory"][1]["status"] == "memory_limit", results["memory"][1]
    assert results["forkbomb"][1]["status"] in ("timeout", "killed", "error"), \
        results["forkbomb"][1]


def test_no_sysv_ipc_or_abstract_socket_between_executions(server):
    results = {}
    held = "held-" + secrets.token_hex(8)
    holder = start(server, HOLDER.replace("HELD", held), 10, results, "holder")
    try:
        wait_jail_file("/work/" + held, 30 * SLOW)
        r = server.admin({"code": LOOKER}, v1=True)
        assert r.status_code == 200, r.text
        assert r.json()["stdout"] == "SEEN []\n", r.json()
        assert holder.is_alive(), "the holder ended before the look: it was not beside it"
    finally:
        holder.join()
    out = results["holder"][1]["stdout"]
    # The holder itself got its queue and semaphore (its own IPC namespace) and no socket at all.
    fields = out.split()
    assert fields[0] == "HOLD" and int(fields[1]) >= 0 and int(fields[2]) >= 0, out
    assert fields[3].startswith("refused"), out
