"""A warm spare's holder of its job's memory (src/engine/holder.c): it has exactly the job's
confinement, holds no fd, blocks every signal, is out of user code's reach, and nothing of it
outlives the execution."""
import os
import re
import signal
import time

from conftest import body_of, proc_status as _status, wait_for as _wait

# Anonymous callers who may import os and signal, and send many requests.
OPEN = ("--modules", "all", "--rpm", "1000", "--rpd", "100000")


def _holders(server_pid):
    """The pybox-holder processes below the server: {pid: status}."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = _status(entry)
        except OSError:
            continue
        if st.get("Name") == "pybox-holder":
            out[int(entry)] = st
    return {p: s for p, s in out.items() if _descends(p, server_pid)}


def _descends(pid, root):
    while pid > 1:
        try:
            pid = int(_status(pid)["PPid"])
        except (OSError, KeyError, ValueError):
            return False
        if pid == root:
            return True
    return False


def _job_of(holder_pid):
    """The job whose memory the holder keeps: its sibling (a child of the same cell) with the
    same address space, by /proc/PID/maps."""
    cell = int(_status(holder_pid)["PPid"])
    with open(f"/proc/{holder_pid}/maps") as f:
        maps = f.read()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == holder_pid:
            continue
        try:
            st = _status(entry)
            if int(st["PPid"]) != cell:
                continue
            with open(f"/proc/{entry}/maps") as f:
                if f.read() == maps:
                    return int(entry), st
        except (OSError, KeyError, ValueError):
            continue
    return None


def _asleep(server_pid):
    """The holders, once there are some and every one sleeps (a new one runs for a moment)."""
    holders = _holders(server_pid)
    return holders if holders and all(st["State"].startswith("S")
                                      for st in holders.values()) else None


def test_each_spare_has_a_confined_holder(start_server):
    """Invariant: an idle spare's holder is the cell's child, runs as the job's uid in the job's
    address space, with the job's confinement (no capabilities, no_new_privs, the seccomp
    filter), every signal blocked and no fd at all."""
    srv = start_server(*OPEN)
    holders = _wait("the spares' holders asleep", lambda: _asleep(srv.pid))
    for pid, st in holders.items():
        blocked = int(st["SigBlk"], 16)
        for sig in list(range(1, 32)) + list(range(34, 65)):
            if sig not in (signal.SIGKILL, signal.SIGSTOP):
                assert blocked & (1 << (sig - 1)), (sig, st["SigBlk"])
        assert st["CapEff"] == "0000000000000000" and st["CapPrm"] == "0000000000000000", st
        assert st["CapBnd"] == "0000000000000000", st
        assert st["NoNewPrivs"] == "1" and st["Seccomp"] == "2", st
        assert st["State"].startswith("S"), st
        assert os.listdir(f"/proc/{pid}/fd") == [], os.listdir(f"/proc/{pid}/fd")
        job = _job_of(pid)
        assert job is not None, "no job shares the holder's address space"
        job_pid, job_st = job
        assert job_st["Uid"] == st["Uid"] and job_st["Gid"] == st["Gid"], (job_st, st)
        assert job_st["Seccomp"] == "2"


def test_user_code_cannot_wake_the_holder(start_server):
    """Attack: the code signals every pid of its namespace with every catchable signal (and
    SIGSTOP, SIGCONT) and tries to overwrite memory it shares with the holder.  The holder
    never returns to code: it stays asleep until the execution ends, then it is gone, and the
    answer is whole."""
    srv = start_server(*OPEN)
    _wait("the spares' holders", lambda: _holders(srv.pid))
    code = r"""
import os, signal
hit = 0
for pid in range(2, 200):
    if pid == os.getpid():
        continue
    for sig in list(range(1, 32)) + [signal.SIGSTOP, signal.SIGCONT]:
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            os.kill(pid, sig)
            hit += 1
        except (ProcessLookupError, PermissionError):
            pass
    try:
        os.kill(pid, signal.SIGSTOP)
        os.kill(pid, signal.SIGCONT)
    except (ProcessLookupError, PermissionError):
        pass
print("signalled", hit > 0)
print("done")
"""
    r = srv.v1({"code": code})
    body = body_of(r)
    assert r.status_code == 200 and body["status"] == "ok", r.text
    assert body["stdout"] == "signalled True\ndone\n", body
    # The holders of the spares made since fall asleep; the one of that execution is gone.
    _wait("the new spares' holders asleep", lambda: _asleep(srv.pid))
    srv.stop_and_check()  # no jail process, mount or cgroup is left


def test_an_execution_keeps_every_process_but_its_holder_until_reaped(start_server):
    """The report waits for every process the code started (killed and reaped: their output
    is in the answer, whole), though not for the holder's teardown."""
    srv = start_server(*OPEN)
    _wait("the spares' holders", lambda: _holders(srv.pid))
    code = r"""
import os, sys, time
for i in range(3):
    if os.fork() == 0:
        os.setsid()
        time.sleep(0.2)
        sys.stdout.write("late %d\n" % i)
        sys.stdout.flush()
        time.sleep(30)
        os._exit(0)
time.sleep(0.6)
print("parent")
"""
    t0 = time.monotonic()
    r = srv.v1({"code": code, "timeout": 10})
    assert time.monotonic() - t0 < 8, "the children were waited for, not killed"
    body = body_of(r)
    assert r.status_code == 200 and body["status"] == "ok", r.text
    lines = sorted(body["stdout"].splitlines())
    assert lines == ["late 0", "late 1", "late 2", "parent"], body
    srv.stop_and_check()


def test_pids_limit_is_the_codes_own(start_server):
    """The holder takes no process from the code: a spare's execution may start as many as one
    forked on demand."""
    srv = start_server(*OPEN)
    _wait("the spares' holders", lambda: _holders(srv.pid))
    code = r"""
import os, time
kids = []
try:
    while True:
        pid = os.fork()
        if pid == 0:
            time.sleep(5)
            os._exit(0)
        kids.append(pid)
except OSError:
    pass
print(len(kids))
"""
    warm = body_of(srv.v1({"code": code}))
    forked = body_of(srv.v1({"code": code, "timeout": 7}))  # other limits: forked on demand
    assert warm["status"] == "ok" and forked["status"] == "ok", (warm, forked)
    assert int(warm["stdout"]) == int(forked["stdout"]) > 0, (warm, forked)
    pool = srv.get("/metrics").text
    warm = re.search(r'^pybox_pool_executions_total\{cell="warm"\} (\d+)$', pool, re.M)
    assert warm and int(warm.group(1)) == 1, pool  # the first only: the second's limits differ
