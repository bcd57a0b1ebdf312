"""The warm pool: executions served by pre-forked cells of one zygote see nothing of an
earlier or a concurrent execution."""
import os
import re
import secrets
import threading
import time

import pytest

from conftest import SLOW, wait_metric
from pybox_host import cgroup_dirs, wait_jail_file  # tests/ is on sys.path (conftest.py)

# What one execution leaves behind, everywhere it can: files in /work, /tmp and /dev/shm, a
# SysV shared memory segment, its environment, builtins and numpy monkeypatched, an open fd.
POLLUTE = r"""
import builtins, ctypes, os, sys, time, random
import numpy
open('/work/left.txt', 'w').write('x')
open('/tmp/left.txt', 'w').write('x')
open('/dev/shm/left.txt', 'w').write('x')
libc = ctypes.CDLL(None, use_errno=True)
shm = libc.shmget(0x5eed, 4096, 0o1666)  # IPC_CREAT | 0666
print('SHM', shm)
os.environ['POLLUTED'] = '1'
builtins.len = lambda x: -1
numpy.pybox_mark = 'polluted'
numpy.random.seed(1234)
random.seed(1234)
keep = os.open('/work/left.txt', os.O_RDONLY)
print('RANDOM', random.random(), numpy.random.rand())
sys.stdout.flush()
if os.environ.get('READY'):
    open('/work/' + os.environ['READY'], 'w').close()  # the host sees this: polluted, holding
time.sleep(float(os.environ.get('HOLD', '0') or 0))
"""

INSPECT = r"""
import builtins, ctypes, errno, os, random
import numpy
libc = ctypes.CDLL(None, use_errno=True)
seen = []
for p in ('/work/left.txt', '/tmp/left.txt', '/dev/shm/left.txt'):
    if os.path.exists(p):
        seen.append(p)
if libc.shmget(0x5eed, 0, 0) >= 0:
    seen.append('sysv-shm')
if 'POLLUTED' in os.environ:
    seen.append('environ')
if builtins.len('ab') != 2:
    seen.append('builtins')
if getattr(numpy, 'pybox_mark', None):
    seen.append('numpy-module')
for fd in range(4, 256):
    try:
        os.fstat(fd)
        seen.append('fd%d' % fd)
    except OSError:
        pass
print('SEEN', sorted(seen))
print('RANDOM', random.random(), numpy.random.rand())
"""


@pytest.fixture(scope="module")
def pooled(module_start_server):
    return module_start_server("--spares", "2:4", "--rpm", "1000", "--rpd", "100000",
                               preload=True)


def run(srv, code, hold=0, ready=""):
    """Run `code` (admin, /v1/execute) with HOLD and READY in its environment; its stdout."""
    prefix = "import os\nos.environ['HOLD'] = '%s'\nos.environ['READY'] = '%s'\n" % (hold, ready)
    r = srv.admin({"code": prefix + code}, v1=True)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok", body
    return body["stdout"]


def shm_id(out):
    """The SysV segment id the polluter printed (-1 when shmget failed)."""
    m = re.search(r"^SHM (-?\d+)$", out, re.M)
    assert m, out
    return int(m.group(1))


def randoms(out):
    m = re.search(r"RANDOM (\S+) (\S+)", out)
    return m.group(1), m.group(2)


def pool_hits(srv):
    text = srv.get("/metrics").text
    m = re.search(r'pybox_pool_executions_total\{cell="warm"\} (\d+)', text)
    return int(m.group(1)) if m else 0


def test_later_execution_sees_nothing_of_an_earlier_one(pooled):
    before = pool_hits(pooled)
    polluted = run(pooled, POLLUTE)
    assert shm_id(polluted) >= 0, polluted
    for _ in range(3):
        out = run(pooled, INSPECT)
        assert "SEEN []" in out, out
        # The polluter seeded both generators with 1234; nobody after it repeats its values.
        assert randoms(out) != randoms(polluted), (out, polluted)
    assert pool_hits(pooled) > before, "no execution was served by a pre-forked cell"


def test_concurrent_execution_sees_nothing(pooled):
    results = {}
    ready = "ready-" + secrets.token_hex(8)

    def polluter():
        results["p"] = run(pooled, POLLUTE, hold=4, ready=ready)

    t = threading.Thread(target=polluter)
    t.start()
    try:
        # Once the polluter has left everything behind and holds its cell, others run beside it.
        wait_jail_file("/work/" + ready, 30 * SLOW)
        for _ in range(2):
            out = run(pooled, INSPECT)
            assert "SEEN []" in out, out
        assert t.is_alive(), "the polluter ended before the inspections: they did not run beside it"
    finally:
        t.join()
    assert shm_id(results["p"]) >= 0, results


def test_two_executions_never_share_random_state(pooled):
    code = "import random, numpy\nprint('RANDOM', random.random(), numpy.random.rand())\n"
    outs = {randoms(run(pooled, code)) for _ in range(6)}
    assert len(outs) == 6, outs


def test_page_faults_are_counted(pooled):
    """Page faults of jobs are reported, split at the moment the code arrives."""
    run(pooled, "print(1)\n")
    text = pooled.get("/metrics").text
    prep = re.search(r'pybox_job_page_faults_total\{phase="prepare"\} (\d+)', text)
    ran = re.search(r'pybox_job_page_faults_total\{phase="run"\} (\d+)', text)
    assert prep and ran, text
    assert int(ran.group(1)) > 0
    assert int(prep.group(1)) > 0, "no warm spare was used"


def warm_body(srv, body):
    """POST `body` (admin, /v1/execute) on a warm spare: its JSON, the spare's use proven by the
    pool's warm count."""
    deadline = time.monotonic() + 30 * SLOW
    # Both engines' spares (the anonymous callers' and the keyed callers'), at least one each.
    while metric(srv, "pybox_cells_idle") < 2:
        assert time.monotonic() < deadline, "no spare became ready"
        time.sleep(0.02)
    before = pool_hits(srv)
    r = srv.admin(body, v1=True)
    assert r.status_code == 200, r.text
    assert pool_hits(srv) == before + 1, "the execution did not run in a warm spare"
    return r.json()


def test_a_warm_jobs_input_files_are_in_place_before_its_code_runs(pooled):
    """A spare's job gets its execution straight from the supervisor, before its cell has
    written the input files: it must wait for them.  4 MiB in two files, read by the first
    statement, come out whole."""
    import base64
    import hashlib
    big = secrets.token_bytes(3 << 20)
    small = secrets.token_bytes(1 << 20)
    code = ("import hashlib, os\n"
            "print(sorted(os.listdir('.')))\n"
            "for n in ('big.bin', 'small.bin'):\n"
            "    print(n, hashlib.sha256(open(n, 'rb').read()).hexdigest())\n")
    body = warm_body(pooled, {"code": code, "files": [
        {"name": "big.bin", "content_base64": base64.b64encode(big).decode()},
        {"name": "small.bin", "content_base64": base64.b64encode(small).decode()}]})
    assert body["status"] == "ok", body
    assert body["stdout"] == "['big.bin', 'small.bin']\nbig.bin %s\nsmall.bin %s\n" % (
        hashlib.sha256(big).hexdigest(), hashlib.sha256(small).hexdigest()), body


def test_a_warm_jobs_wall_clock_starts_with_its_execution(start_server):
    """The spare's cell learns of the execution after its job: the wall limit still holds from
    the job's start, and a job that outlives it is killed and reported as timed out.  (Spares
    are made with the server's limits: its timeout is 1 s here.)"""
    srv = start_server("--spares", "1:1", "--timeout", "1", "--rpm", "1000", "--rpd", "100000")
    body = warm_body(srv, {"code": "import time\nprint('up', flush=True)\ntime.sleep(30)\n"})
    assert body["status"] == "timeout", body
    assert body["stdout"] == "up\n", body
    assert 1000 <= body["duration_ms"] < 5000, body


def zygotes_of(server_pid):
    """Host pids of the `pybox-zygote` processes descending from the server."""
    import os
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % entry) as f:
                comm = f.read().strip()
            with open("/proc/%s/status" % entry) as f:
                ppid = int(re.search(r"^PPid:\s+(\d+)", f.read(), re.M).group(1))
        except (OSError, AttributeError):
            continue
        if comm == "pybox-zygote" and ppid == server_pid:
            found.append(int(entry))
    return found


def metric(srv, name):
    m = re.search(r"^%s (\d+)" % re.escape(name), srv.get("/metrics").text, re.M)
    return int(m.group(1)) if m else None


def dead(pid):
    """True once `pid` is a zombie or gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            return re.search(r"^State:\s+[ZX]", f.read(), re.M) is not None
    except OSError:
        return True


@pytest.mark.parametrize("spares", ["0:0", "2:2"])
def test_dead_zygote_is_replaced(start_server, spares):
    """A zygote that dies is replaced: the next requests succeed, cold or warm.  Each server has
    two zygotes (anonymous callers, key holders): both are killed, both come back."""
    import signal
    srv = start_server("--spares", spares, "--rpm", "1000")
    assert run(srv, "print(1)\n").strip() == "1"
    anon = srv.v1({"code": "print(0)"})
    assert anon.status_code == 200 and anon.json()["stdout"] == "0\n", anon.text
    zygotes = zygotes_of(srv.pid)
    assert len(zygotes) == 2, zygotes
    for z in zygotes:
        os.kill(z, signal.SIGKILL)
    # The next requests must find them dead, not race their deaths.
    deadline = time.monotonic() + 10 * SLOW
    while not all(dead(z) for z in zygotes):
        assert time.monotonic() < deadline, "a SIGKILLed zygote did not die"
        time.sleep(0.01)
    for _ in range(3):
        assert run(srv, "print(2)\n").strip() == "2"
        anon = srv.v1({"code": "print(3)"})
        assert anon.status_code == 200 and anon.json()["stdout"] == "3\n", anon.text
    after = zygotes_of(srv.pid)
    assert len(after) == 2 and not set(after) & set(zygotes), (zygotes, after)
    assert metric(srv, "pybox_zygotes_started_total") == 4


def test_zygotes_are_recycled_with_a_fresh_hash_seed(start_server):
    """After N executions the zygote is replaced (no request lost), and str hashes change."""
    srv = start_server("--recycle", "3:0", "--spares", "0:0", "--rpm", "1000")
    hashes = [run(srv, "print(hash('pybox'))\n").strip() for _ in range(9)]
    assert metric(srv, "pybox_zygotes_started_total") >= 3
    assert hashes[0] == hashes[1] == hashes[2], hashes
    assert len(set(hashes)) >= 2, hashes


def test_an_idle_server_retires_its_zygotes_on_time(start_server):
    """Recycling by time holds without traffic: a zygote past its time, and the spares forked
    from it, are gone though no execution came to notice it; new spares wait, from new zygotes.
    (A zygote's children share its address-space layout: it must not outlive its time.)"""
    srv = start_server("--recycle", "0:3", "--spares", "2:2", "--rpm", "1000")
    assert run(srv, "print(1)\n").strip() == "1"
    first = set(zygotes_of(srv.pid))
    assert len(first) == 2, first
    deadline = time.monotonic() + 30 * SLOW
    while True:
        now = set(zygotes_of(srv.pid))
        if not now & first and len(now) == 2 and metric(srv, "pybox_cells_idle") >= 4:
            break
        assert time.monotonic() < deadline, (
            f"zygotes {sorted(first)} still alive or the pool not refilled: {sorted(now)}, "
            f"{metric(srv, 'pybox_cells_idle')} idle")
        time.sleep(0.1)
    assert metric(srv, "pybox_zygotes_started_total") >= 4
    assert run(srv, "print(2)\n").strip() == "2"


def test_recycling_loses_no_running_execution(start_server):
    """Executions running on a zygote being retired finish normally."""
    srv = start_server("--recycle", "2:0", "--rpm", "1000", "--max-concurrency", "4")
    outs = []

    def slow(i):
        outs.append(run(srv, "import time\ntime.sleep(1)\nprint(%d)\n" % i).strip())

    threads = [threading.Thread(target=slow, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outs) == ["0", "1", "2", "3"], outs


# ---------------------------------------------------------------------------------------------
# The pool of cell cgroups: reset and taken again rather than created and removed per execution.


def result(srv, body, status):
    """Run `body` (admin, /v1/execute) and require the result `status`; returns the result."""
    r = srv.admin(body, v1=True)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["status"] == status, res
    return res


def cgroups_total(srv):
    """(created, reused) from pybox_cgroups_total."""
    text = srv.get("/metrics").text
    created = re.search(r'^pybox_cgroups_total\{how="created"\} (\d+)$', text, re.M)
    reused = re.search(r'^pybox_cgroups_total\{how="reused"\} (\d+)$', text, re.M)
    assert created and reused, "no pybox_cgroups_total in /metrics"
    return int(created.group(1)), int(reused.group(1))


def cgroup_parents(server_pid):
    """The server's own cgroup parents, pybox-<pid>-<n>, one per hierarchy."""
    return cgroup_dirs(lambda name: name.startswith("pybox-%d-" % server_pid))


def cell_dirs(parent):
    return sorted(e.path for e in os.scandir(parent)
                  if e.is_dir(follow_symlinks=False) and e.name.startswith("cell-"))


def memory_parent(server_pid):
    """The server's cgroup v1 memory parents (one per engine: anonymous callers, key holders),
    or None (no v1 memory controller here)."""
    found = [p for p in cgroup_parents(server_pid)
             if os.path.exists(os.path.join(p, "memory.oom_control"))]
    if found:
        return found
    with open("/proc/self/mounts") as f:
        v1_memory = any(len(w) > 3 and w[2] == "cgroup" and "memory" in w[3].split(",")
                        for w in (line.split() for line in f))
    assert not v1_memory, "cgroup v1 memory is mounted, yet pybox serve made no parent in it"
    return None


def all_cell_dirs(parents):
    return sorted(c for p in parents for c in cell_dirs(p))


def oom_kills(cell):
    with open(os.path.join(cell, "memory.oom_control")) as f:
        m = re.search(r"^oom_kill (\d+)$", f.read(), re.M)
    return int(m.group(1)) if m else 0


def test_cell_cgroups_are_reused_and_bounded(start_server):
    spares_max = 4
    bound = spares_max + 8 + 2  # spares, the engine's extra pool, the cells at work
    srv = start_server("--spares", "2:%d" % spares_max, "--rpm", "1000", "--rpd", "100000")
    pid = srv.pid
    parents = cgroup_parents(pid)
    assert parents, "pybox serve made no cgroup parent pybox-%d-* under /sys/fs/cgroup" % pid
    for i in range(20):
        body = {"code": "print(%d)\n" % i}
        if i % 2:
            body["memory_mb"] = 128  # not what the spares were made for: a cell on demand
        assert result(srv, body, "ok")["stdout"] == "%d\n" % i
        for p in parents:
            n = len(cell_dirs(p))
            assert n <= bound, "%d cell cgroups in %s after %d executions" % (n, p, i + 1)
    created, reused = cgroups_total(srv)
    assert reused > 0, (created, reused)
    assert created + reused >= 20, (created, reused)
    assert created <= bound, "%d cell cgroups created for 20 executions" % created
    srv.stop_and_check()
    assert cgroup_parents(pid) == [], "cgroups of the stopped server remain"


def test_oom_in_a_reused_cgroup_never_marks_a_later_execution(start_server):
    # No spares: every execution takes the cgroup the one before it gave back.
    srv = start_server("--spares", "0:0", "--rpm", "1000", "--rpd", "100000")
    pid = srv.pid
    mem = memory_parent(pid)
    created0, reused0 = cgroups_total(srv)
    cells0 = all_cell_dirs(mem) if mem else None
    hog = "b = b'x' * (%d << 20)\nprint(len(b))\n"

    result(srv, {"code": hog % 200, "memory_mb": 64}, "memory_limit")
    if mem:
        # Its cgroup was kept (not removed and replaced), with the kernel's OOM count in it.
        assert all_cell_dirs(mem) == cells0, (cells0, all_cell_dirs(mem))
        assert sum(oom_kills(c) for c in cells0) >= 1, "no OOM kill counted in any cell"
    for i in range(3):
        assert result(srv, {"code": "print(%d)\n" % i}, "ok")["stdout"] == "%d\n" % i
    # The limits of each use are its own: 100 MiB fits 128 MiB, not 64 MiB.
    assert result(srv, {"code": hog % 100, "memory_mb": 128}, "ok")["stdout"] == "%d\n" % (
        100 << 20)
    result(srv, {"code": hog % 100, "memory_mb": 64}, "memory_limit")
    assert result(srv, {"code": "print('after')\n"}, "ok")["stdout"] == "after\n"
    # The server's default (256 MiB) again: no 64 MiB cap left behind.
    assert result(srv, {"code": hog % 150}, "ok")["stdout"] == "%d\n" % (150 << 20)
    created, reused = cgroups_total(srv)
    assert created == created0, "a cgroup was created instead of reused: %d -> %d" % (
        created0, created)
    assert reused - reused0 == 8, (reused0, reused)
    if mem:
        assert all_cell_dirs(mem) == cells0, (cells0, all_cell_dirs(mem))
        # The kernel still counts the old kills in the cell the later executions ran in.
        assert sum(oom_kills(c) for c in cells0) >= 2
    srv.stop_and_check()
    assert cgroup_parents(pid) == [], "cgroups of the stopped server remain"
