"""Every limit holds, for root too: processes/threads, memory, CPU, wall time, output, disk."""
import re

from conftest import MIB

PIDS_LIMIT = 10
DISK_LIMIT = 64 * MIB
INODE_LIMIT = 2048


def _count(res, label):
    m = re.search(rf"^{label} (\d+)", res.data["stdout"], re.M)
    assert m, f"script did not report {label}: {res!r}"
    return int(m.group(1))


FORK_HOLD = r"""
import os, time, errno
forked = 0
failure = None
for i in range(60):
    try:
        pid = os.fork()
    except OSError as e:
        failure = errno.errorcode.get(e.errno, e.errno)
        break
    if pid == 0:
        time.sleep(30)          # stay alive: every successful fork counts at once
        os._exit(0)
    forked += 1
print("FORKED", forked, failure, flush=True)
time.sleep(0.5)                 # let the host see the peak
"""


def test_fork_bomb_never_exceeds_pids_limit(pybox):
    """Invariant: however hard root's script forks, at most `pids` (10) processes of the
    execution are alive at once, and pybox returns promptly (children that sleep 30 s do not
    keep it waiting)."""
    res = pybox(FORK_HOLD, "--timeout", "20", "--memory", "128", allow_all=True, monitor=True)
    assert res.data is not None, res
    forked = _count(res, "FORKED")
    assert forked + 1 <= PIDS_LIMIT, f"{forked} children alive next to the parent: {res!r}"
    assert "EAGAIN" in res.data["stdout"], f"fork never failed: {res!r}"
    assert res.max_user_procs <= PIDS_LIMIT, f"host saw {res.max_user_procs} processes: {res!r}"
    assert res.max_user_procs >= 2, "the host-side monitor saw nothing: it proves nothing"
    assert res.data["status"] == "ok", res
    assert res.elapsed < 15, f"pybox took {res.elapsed:.1f} s: {res!r}"


def test_fork_bomb_respects_configured_pids_limit(pybox):
    """Invariant: a configured --limit pids=4 holds too: at most 4 processes alive at once."""
    res = pybox(FORK_HOLD, "--timeout", "20", "--memory", "128", "--limit", "pids=4",
                allow_all=True, monitor=True)
    assert res.data is not None, res
    forked = _count(res, "FORKED")
    assert forked + 1 <= 4, res
    assert res.max_user_procs <= 4, res
    assert res.elapsed < 15, res


def test_exponential_fork_bomb_is_contained(pybox):
    """Invariant: a classic exponential fork bomb (every process forks forever) stays within
    the pids limit on the host and ends at the wall limit with status timeout."""
    code = r"""
import os, time
while True:
    try:
        os.fork()
    except OSError:
        time.sleep(0.001)
"""
    res = pybox(code, "--timeout", "2", "--memory", "128", "--limit", "cpu=1", allow_all=True,
                monitor=True)
    assert res.data is not None, res
    assert res.data["status"] == "timeout", res
    assert res.status == 124, res
    assert res.max_user_procs <= PIDS_LIMIT, res
    assert res.elapsed < 15, res


def test_thread_bomb_never_exceeds_pids_limit(pybox):
    """Invariant: threads count against the same limit: at most 10 tasks at once, the thread
    bomb gets an error instead of more threads, and pybox returns promptly."""
    code = r"""
import threading
ev = threading.Event()
started = 0
failure = None
for i in range(200):
    t = threading.Thread(target=ev.wait, args=(30,), daemon=True)
    try:
        t.start()
    except RuntimeError as e:
        failure = str(e)
        break
    started += 1
print("THREADS", started, repr(failure), flush=True)
import time; time.sleep(0.5)
ev.set()
"""
    res = pybox(code, "--timeout", "20", "--memory", "128", allow_all=True, monitor=True)
    assert res.data is not None, res
    started = _count(res, "THREADS")
    assert started + 1 <= PIDS_LIMIT, res
    assert "can't start new thread" in res.data["stdout"], res
    assert res.max_user_threads <= PIDS_LIMIT, res
    assert res.max_user_threads >= 2, "the host-side monitor saw nothing: it proves nothing"
    assert res.data["status"] == "ok", res
    assert res.elapsed < 15, res


def test_memory_bomb_is_killed(pybox):
    """Invariant: touching far more memory than --memory 64 ends the run with status
    memory_limit and exit status 137."""
    code = r"""
hog = []
for i in range(1024):
    hog.append(b"\x01" * (1 << 20))   # 1 MiB, every page written
print("SURVIVED", len(hog))
"""
    res = pybox(code, "--timeout", "20", "--memory", "64", "--limit", "cpu=10")
    assert res.data is not None, res
    assert "SURVIVED" not in res.data["stdout"], res
    assert res.data["status"] == "memory_limit", res
    assert res.status == 137, res
    assert res.data["error"]["type"] == "MemoryError", res
    assert res.elapsed < 20, res


def test_memory_split_across_processes_is_limited(pybox):
    """Invariant: the memory limit is for the whole execution, not per process: five children
    touching 30 MiB each cannot hold 150 MiB under --memory 64 (status memory_limit)."""
    code = r"""
import os, time
kids = []
for i in range(5):
    pid = os.fork()
    if pid == 0:
        hog = b"\x01" * (30 << 20)
        time.sleep(2)
        os._exit(0)
    kids.append(pid)
codes = [os.waitpid(k, 0)[1] for k in kids]
print("ALLSURVIVED" if all(c == 0 for c in codes) else "SOMEKILLED", codes)
"""
    res = pybox(code, "--timeout", "20", "--memory", "64", allow_all=True)
    assert res.data is not None, res
    assert "ALLSURVIVED" not in res.data["stdout"], res
    assert res.data["status"] == "memory_limit", res
    assert res.status == 137, res


SPIN = "while True:\n    pass\n"


def test_cpu_spin_hits_cpu_limit(pybox):
    """Invariant: a CPU spin with --limit cpu=1 and a wall limit of 20 s ends as a timeout
    on the CPU limit, before the wall limit (normally after about 1-2 s)."""
    res = pybox(SPIN, "--timeout", "20", "--limit", "cpu=1")
    assert res.data is not None, res
    assert res.data["status"] == "timeout", res
    assert res.status == 124, res
    assert "CPU" in res.data["error"]["message"], res
    assert res.elapsed < 18, res


def test_cpu_limit_is_enforced_at_the_limit(pybox):
    """Invariant: --limit cpu=1 lets the script use about 1 s of CPU, not twice that (the job
    is pid 1 of its pid namespace, which ignores the SIGXCPU sent at the soft limit; only the
    hard limit a second later kills it)."""
    res = pybox(SPIN, "--timeout", "20", "--limit", "cpu=1")
    assert res.data is not None, res
    assert res.data["status"] == "timeout", res
    assert res.data["cpu_ms"] < 1600, f"1 s CPU limit, but {res.data['cpu_ms']} ms used: {res!r}"


def test_cpu_limit_holds_whatever_the_option_order(pybox):
    """Invariant: an explicit --limit cpu=1 holds even when --timeout (documented as the
    wall-clock limit) comes after it on the command line."""
    res = pybox(SPIN, "--limit", "cpu=1", "--timeout", "8")
    assert res.data is not None, res
    assert res.data["status"] == "timeout", res
    assert "CPU" in res.data["error"]["message"], (
        f"cpu=1 was overridden by --timeout: {res.data['error']['message']!r} after "
        f"{res.data['cpu_ms']} ms of CPU")


def test_sleep_past_wall_limit(pybox):
    """Invariant: a script sleeping 60 s under --timeout 1 is stopped at the wall limit:
    status timeout, exit status 124, pybox back within a few seconds."""
    res = pybox("import time\ntime.sleep(60)\nprint('WOKE')\n", "--timeout", "1")
    assert res.data is not None, res
    assert res.data["status"] == "timeout", res
    assert res.status == 124, res
    assert "wall" in res.data["error"]["message"], res
    assert "WOKE" not in res.data["stdout"], res
    assert res.elapsed < 8, res


def test_sleep_past_wall_limit_without_json(pybox):
    """Invariant: the same timeout without --json gives exit status 124 and one pybox line."""
    res = pybox("import time\ntime.sleep(60)\n", "--timeout", "1", json_out=False)
    assert res.status == 124, res
    assert "pybox:" in res.stderr and "time limit" in res.stderr, res
    assert res.elapsed < 8, res


def _flood(fd):
    # One preallocated buffer and raw writes: the flood allocates nothing per iteration, so
    # it ends on the wall limit and not on memory (an ASan build's allocator quarantine would
    # otherwise turn allocation churn into a memory_limit).
    return f"import os\nbuf = b'x' * 65536\nwhile True:\n    os.write({fd}, buf)\n"


def test_stdout_flood_is_truncated(pybox):
    """Invariant: an endless stdout flood keeps exactly 1 MiB, sets stdout_truncated, and
    pybox returns shortly after the wall limit."""
    res = pybox(_flood(1), "--timeout", "2", "--limit", "cpu=2", allow_all=True)
    assert res.data is not None, res
    assert res.data["stdout_truncated"] is True, res
    assert len(res.data["stdout"].encode()) == MIB, len(res.data["stdout"])
    assert res.data["stderr_truncated"] is False, res
    assert res.data["status"] == "timeout", res
    assert res.elapsed < 12, res


def test_stderr_flood_is_truncated(pybox):
    """Invariant: an endless stderr flood keeps exactly 1 MiB, sets stderr_truncated, and
    pybox returns shortly after the wall limit."""
    res = pybox(_flood(2), "--timeout", "2", "--limit", "cpu=2", allow_all=True)
    assert res.data is not None, res
    assert res.data["stderr_truncated"] is True, res
    assert len(res.data["stderr"].encode()) == MIB, len(res.data["stderr"])
    assert res.data["stdout_truncated"] is False, res
    assert res.data["status"] == "timeout", res
    assert res.elapsed < 12, res


def test_large_finite_write_is_truncated(pybox):
    """Invariant: a 5 MiB write completes (status ok) and 1 MiB of it is kept, flagged."""
    code = "import sys\nsys.stdout.write('z' * (5 << 20))\nsys.stdout.flush()\n" \
           "sys.stderr.write('e' * (5 << 20))\n"
    res = pybox(code, "--timeout", "10")
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    assert res.status == 0, res
    assert res.data["stdout_truncated"] is True and res.data["stderr_truncated"] is True, res
    assert res.data["stdout"] == "z" * MIB, len(res.data["stdout"])
    assert res.data["stderr"] == "e" * MIB, len(res.data["stderr"])


DISK_FILL = r"""
import os, errno
total = 0
errors = []
chunk = b"\x01" * (1 << 20)
for i in range(200):
    for d in ("/work", "/tmp", "/dev/shm"):
        try:
            with open(f"{d}/fill{i}", "wb", buffering=0) as f:
                for _ in range(4):
                    n = f.write(chunk)
                    total += n
                    if n < len(chunk):
                        raise OSError(errno.ENOSPC, "short write")
        except OSError as e:
            errors.append(errno.errorcode.get(e.errno, str(e.errno)))
    if len(errors) >= 6 or total > (1 << 30):
        break
# Top up each place page by page until nothing more fits.
page = b"\x01" * 4096
for d in ("/work", "/tmp", "/dev/shm"):
    try:
        with open(f"{d}/topup", "wb", buffering=0) as f:
            while total <= (1 << 30):
                n = f.write(page)
                total += n
    except OSError as e:
        errors.append(errno.errorcode.get(e.errno, str(e.errno)))
print("TOTAL", total)
print("ERRORS", sorted(set(errors)))
"""


def test_disk_fill_is_capped(pybox):
    """Invariant: /work, /tmp and /dev/shm together hold at most 64 MiB: filling all three
    stops with ENOSPC/EFBIG having written no more than the cap."""
    res = pybox(DISK_FILL, "--timeout", "20", "--memory", "256", allow_all=True)
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    total = _count(res, "TOTAL")
    assert total <= DISK_LIMIT + MIB, f"{total} bytes written: {res!r}"
    assert re.search(r"ENOSPC|EFBIG", res.data["stdout"]), res


def test_disk_fill_respects_configured_cap(pybox):
    """Invariant: a configured --limit disk=8M holds: at most 8 MiB written in all."""
    res = pybox(DISK_FILL, "--timeout", "20", "--memory", "128", "--limit", "disk=8M",
                allow_all=True)
    assert res.data is not None, res
    total = _count(res, "TOTAL")
    assert total <= 8 * MIB + 256 * 1024, f"{total} bytes written: {res!r}"
    assert re.search(r"ENOSPC|EFBIG", res.data["stdout"]), res


def test_inode_exhaustion_is_capped(pybox):
    """Invariant: at most 2048 files fit in /work + /tmp + /dev/shm together."""
    code = r"""
import os, errno
n = 0
failure = None
try:
    while n < 100000:
        for d in ("/work", "/tmp", "/dev/shm"):
            open(f"{d}/f{n}", "wb").close()
            n += 1
except OSError as e:
    failure = errno.errorcode.get(e.errno, e.errno)
try:
    while n < 100000:
        os.mkdir(f"/work/d{n}")
        n += 1
except OSError as e:
    pass
print("CREATED", n)
print("FAILURE", failure)
"""
    res = pybox(code, "--timeout", "20", "--memory", "128", allow_all=True)
    assert res.data is not None, res
    created = _count(res, "CREATED")
    assert created <= INODE_LIMIT, res
    assert "FAILURE ENOSPC" in res.data["stdout"], res


def test_open_files_are_capped(pybox):
    """Invariant: a process cannot hold more than `nofile` (256) open files, nor raise its own
    limit above that."""
    code = r"""
import errno, os, resource
open("/work/target", "w").close()
held = []
failure = None
try:
    while len(held) < 100000:
        held.append(os.open("/work/target", os.O_RDONLY))
except OSError as e:
    failure = errno.errorcode.get(e.errno, e.errno)
print("OPENED", len(held))
print("FAILURE", failure)
try:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20))
    print("RAISED")
except (ValueError, OSError) as e:
    print("NOT-RAISED", type(e).__name__)
"""
    res = pybox(code, "--timeout", "10", allow_all=True)
    assert res.data is not None, res
    assert _count(res, "OPENED") + 3 <= 256, res
    assert "FAILURE EMFILE" in res.data["stdout"], res
    assert "NOT-RAISED" in res.data["stdout"], res
