"""A crash loses nothing it can keep.

`pybox serve` killed with executions in flight (SIGKILL, or a crash: SIGSEGV, SIGABRT) leaves no
process and no mount of its jail once the kernel has ended it; what the kernel cannot end, its
cgroup directories, the next `pybox serve` on the same data directory removes at start (and
keeps trying while a member is still exiting); and the store comes through whole: keys still
authenticate, quota counts and audit rows are kept, `PRAGMA integrity_check` says ok.

The servers are real (`pybox serve --listen 127.0.0.1:0 --data DIR --url-file DIR/url`), started
and inspected with the integration suite's helpers (tests/integration/conftest.py).
"""
import importlib.util
import os
import resource
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import JAIL_USER_UID, remove_cgroup
from pybox_host import FORK_BOMB, SPIN

# The integration suite's conftest, under a name of its own: pytest has imported this
# directory's conftest as `conftest`.
_spec = importlib.util.spec_from_file_location(
    "pybox_integration_conftest",
    Path(__file__).resolve().parents[1] / "integration" / "conftest.py")
it = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(it)

KEY_NAME = "crash"
DONE_BEFORE = 2  # executions of the key that end before the crash (quota and audit rows)

# Deadlines (seconds) of the waits below, scaled for sanitizer builds.
BUSY_WAIT = 60 * it.SLOW
GONE_WAIT = 20 * it.SLOW
REAP_WAIT = 20 * it.SLOW


# Children (one of them a double-forked daemon in a session of its own) and threads, all asleep:
# eight tasks of the ten the pids limit allows a cell, counting the cell itself.
SLEEPER = """
import os, threading, time
for _ in range(2):
    if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(600)
    os._exit(0)
for _ in range(3):
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
time.sleep(600)
"""
SLEEPER_THREADS = 4

# Plain system calls: no buffer is allocated per file (a sanitizer build's quarantine would
# keep every freed one and reach the memory limit).
WRITER = """
import os
data = b"x" * 65536
i = 0
while True:
    fd = os.open("/work/f%d" % (i % 64), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.write(fd, data)
    os.close(fd)
    i += 1
"""

IN_FLIGHT = {"spin": SPIN, "forkbomb": FORK_BOMB, "sleeper": SLEEPER, "writer": WRITER}


# ---------------------------------------------------------------------------------------------
# What a server leaves on the host


def _stat_fields(pid):
    """(state, start time in clock ticks) of pid from /proc/PID/stat, or None when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()
    return rest[0], int(rest[19])


def _alive_same(pid, start):
    """pid is still the process that had start time `start`, and not a zombie."""
    f = _stat_fields(pid)
    return f is not None and f[1] == start and f[0] not in ("Z", "X")


def _ns(pid, kind):
    try:
        return os.stat(f"/proc/{pid}/ns/{kind}").st_ino
    except OSError:
        return None


def _host_mounts():
    """The host's mounts as a set of (mount point, fs type, source)."""
    out = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, tail = left.split(), right.split()
            out.add((fields[4], tail[0] if tail else "", tail[1] if len(tail) > 1 else ""))
    return out


def _nearest_outside_jail(pid, statuses):
    """The first ancestor of pid whose uids are outside the jail range (or 0)."""
    anc, hops = it._ppid(statuses[pid]), 0
    while hops < 64 and anc in statuses and it._in_jail_range(statuses[anc]):
        anc, hops = it._ppid(statuses[anc]), hops + 1
    return anc


def _in_namespaces(mnt_namespaces, dead_pid):
    """Live processes whose mount namespace is one the dead server's jail used. A namespace
    inode number is reused once freed: a process whose nearest ancestor outside the jail range
    is another live pybox belongs to that pybox."""
    statuses = it._all_status()
    found = []
    for pid, f in statuses.items():
        if not it._alive(f) or _ns(pid, "mnt") not in mnt_namespaces:
            continue
        if it._is_other_pybox(_nearest_outside_jail(pid, statuses), dead_pid):
            continue
        found.append((pid, " ".join(f.get("Name", []))))
    return found


def _cgroup_tree(parents):
    """Every directory at or below the given cgroup directories."""
    out = []
    for p in parents:
        for root, _, _ in os.walk(p):
            out.append(root)
    return sorted(out)


def _members(dirs):
    """{directory: [pids]} of the given cgroup directories that list members."""
    found = {}
    for d in dirs:
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                pids = f.read().split()
        except OSError:
            continue
        if pids:
            found[d] = pids
    return found


def wait_for(what, check, deadline_s):
    """Poll check() (returning a falsy value when satisfied, or what is still wrong) until it
    is satisfied or the deadline passes; returns what was last wrong, or None."""
    deadline = time.monotonic() + deadline_s
    while True:
        wrong = check()
        if not wrong:
            return None
        if time.monotonic() > deadline:
            return f"{what} after {deadline_s:.0f} s: {wrong}"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# The server


class CrashServer(it.Server):
    """A `pybox serve` that can be crashed and started again on the same data directory."""

    def crash(self, sig):
        """Send `sig` and wait for the exit; returns the wait status (negative: the signal)."""
        self.note_namespaces()
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"pybox serve did not die of signal {sig} within 30 s")

    def start_again(self):
        self._start()

    def keys(self, *args):
        p = subprocess.run([it.PYBOX, "keys", *args, "--data", str(self.data_dir)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60,
                           env=it.clean_env())
        assert p.returncode == 0, f"pybox keys {args}: {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p.stdout

    def busy(self):
        r = self.get("/metrics", timeout=10)
        assert r.status_code == 200, r.text
        for line in r.text.splitlines():
            if line.startswith("pybox_cells_busy "):
                return int(line.split()[1])
        pytest.fail(f"no pybox_cells_busy in /metrics:\n{r.text}")


# The controllers pybox confines cells with, as /proc/self/cgroup names their v1 hierarchies.
CONFINING = {"memory", "pids", "cpu"}


def _v1_hierarchies():
    """[(hierarchy directory, our cgroup in it)] of the v1 hierarchies serving a confining
    controller."""
    out = []
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctls, path = line.rstrip("\n").split(":", 2)
            if not ctls or not CONFINING & set(ctls.split(",")):
                continue
            mount = it.CGROUP_ROOT / ctls
            if (mount / "cgroup.procs").exists():
                out.append((mount, mount / path.lstrip("/")))
    return out


@pytest.fixture
def own_cgroup():
    """Run the test (and so the servers it starts) in cgroups of its own, below ours in every
    v1 hierarchy of a confining controller. A server reaps stale cgroups where it creates its
    own, below its cgroup: here only the servers of this test look, so a server of some other
    suite starting meanwhile cannot reap for them and blur what is proved. (On cgroup v2 the
    test stays where it is: a v2 cgroup holding a process cannot delegate controllers.)"""
    name = f"crash-test-{os.getpid()}"
    moved = []
    try:
        for mount, own in _v1_hierarchies():
            mine = own / name
            mine.mkdir()
            moved.append((own, mine))
            (mine / "cgroup.procs").write_text(str(os.getpid()))
        yield [mine for _, mine in moved]
    finally:
        for own, mine in moved:
            (own / "cgroup.procs").write_text(str(os.getpid()))
            for d in sorted((d for d, _, _ in os.walk(mine)), key=len, reverse=True):
                remove_cgroup(d)


@pytest.fixture
def crash_server(own_cgroup):
    """Factory of CrashServers; each is stopped (SIGTERM) and removed after the test."""
    servers = []
    core = resource.getrlimit(resource.RLIMIT_CORE)
    # No core dumps of the crashed servers (their working directory is the data directory).
    resource.setrlimit(resource.RLIMIT_CORE, (0, core[1]))

    def make(*flags, **kw):
        s = CrashServer(("--max-concurrency", "8", "--spares", "2:4", "--timeout", "60",
                         "--rpm", "1000", "--rpd", "100000") + flags, **kw)
        servers.append(s)
        return s

    try:
        yield make
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, core)
        for s in servers:
            if s.proc.poll() is None:
                s.terminate()
            shutil.rmtree(s.tmp, ignore_errors=True)


def _asan_env(sig):
    """A sanitizer build catches SIGSEGV itself and exits 1: let the signal kill it, as an
    ordinary build's crash would."""
    if sig != signal.SIGSEGV:
        return None
    opts = os.environ.get("ASAN_OPTIONS", "")
    return {"ASAN_OPTIONS": (opts + ":" if opts else "") + "handle_segv=0"}


def _run_in_flight(srv, key, answers):
    """Start the IN_FLIGHT executions from threads, each on a connection of its own; returns
    the threads. They end when the server dies, with a connection error; an answer before that
    goes to `answers`."""
    threads = []
    for name, code in IN_FLIGHT.items():
        def go(name=name, code=code):
            try:
                r = it.requests.post(srv.url + "/v1/execute", json={"code": code, "timeout": 60},
                                     headers={"Authorization": f"Bearer {key}"}, timeout=120)
                answers[name] = (r.status_code, r.text[:2000])
            except it.requests.RequestException:  # the server dies under it: that is the point
                pass

        t = threading.Thread(target=go, daemon=True, name=name)
        t.start()
        threads.append(t)
    return threads


def _wait_busy(srv, answers):
    """Until /metrics shows every execution busy and the sleeper's threads run."""

    def check():
        if answers:
            pytest.fail(f"executions ended before the crash: {answers}")
        busy = srv.busy()
        if busy < len(IN_FLIGHT):
            return f"pybox_cells_busy {busy} of {len(IN_FLIGHT)}"
        jobs = [it._proc_status(p) or {} for p in it.descendants(srv.pid)]
        threaded = [f for f in jobs if JAIL_USER_UID in it._uids(f)
                    and int(f.get("Threads", ["1"])[0]) >= SLEEPER_THREADS]
        if not threaded:
            return "the sleeper's threads are not running yet"
        return None

    wrong = wait_for("executions in flight", check, BUSY_WAIT)
    assert wrong is None, wrong + "\n" + srv.log_text()[-4000:]


def _snapshot(srv):
    """What the live server has on the host: its descendants (pid, start time), the mount
    namespaces of its jail, its cgroup directories."""
    procs = []
    mnt = set()
    own_mnt = _ns(os.getpid(), "mnt")
    for p in it.descendants(srv.pid):
        f = _stat_fields(p)
        if f is not None:
            procs.append((p, f[1]))
        ns = _ns(p, "mnt")
        if ns is not None and ns != own_mnt:
            mnt.add(ns)
    srv.note_namespaces()
    return procs, mnt, _cgroup_tree(it.pybox_cgroups_of(srv.pid))


def _store_copy(data_dir, into):
    """Copy the store as the crash left it (database and write-ahead log, not the shared-memory
    index, which SQLite rebuilds) and open the copy."""
    for suffix in ("", "-wal"):
        src = Path(data_dir) / ("pybox.db" + suffix)
        if src.exists():
            shutil.copy2(src, Path(into) / src.name)
    return sqlite3.connect(str(Path(into) / "pybox.db"))


def _store_facts(db):
    check = db.execute("PRAGMA integrity_check").fetchall()
    keys = db.execute("SELECT name, revoked FROM keys").fetchall()
    quota = db.execute("SELECT SUM(count) FROM quota WHERE client = ?",
                       ("key:" + KEY_NAME,)).fetchone()[0]
    audit = db.execute("SELECT COUNT(*) FROM audit WHERE key_name = ?", (KEY_NAME,)).fetchone()[0]
    return check, dict(keys), quota, audit


def _crash_and_check(crash_server, sig):
    """Start a server, put executions in flight, crash it with `sig`, prove that its jail is
    gone; returns (server, dead pid, its cgroup directories left, the key)."""
    mounts_before = _host_mounts()
    srv = crash_server(env=_asan_env(sig))
    key = srv.keys("create", "--name", KEY_NAME, "--rpd", "1000", "--rpm", "unlimited",
                   "--timeout", "60", "--modules", "all").strip()
    assert key, "pybox keys create printed no token"
    for i in range(DONE_BEFORE):
        r = srv.post("/v1/execute", {"code": f"print({i})"}, key=key)
        assert r.status_code == 200 and r.json()["stdout"] == f"{i}\n", r.text

    answers = {}
    threads = _run_in_flight(srv, key, answers)
    _wait_busy(srv, answers)
    procs, mnt, cgroups = _snapshot(srv)
    assert procs and mnt, f"no jail processes or mount namespaces seen: {procs} {mnt}"
    assert cgroups, "the server had no cgroup directories to leave behind"
    dead = srv.pid

    rc = srv.crash(sig)
    assert rc == -sig, f"pybox serve exited {rc}, not by signal {sig}\n{srv.log_text()[-4000:]}"
    for t in threads:
        t.join(30)

    # Every process of the jail ends with it, and with them every mount of it.
    wrong = wait_for("processes of the dead server", lambda: (
        [p for p, start in procs if _alive_same(p, start)] +
        it.jail_leftovers(dead, srv.user_namespaces)), GONE_WAIT)
    assert wrong is None, wrong
    wrong = wait_for("processes in the dead server's mount namespaces",
                     lambda: _in_namespaces(mnt, dead), GONE_WAIT)
    assert wrong is None, wrong
    new_mounts = _host_mounts() - mounts_before
    assert not new_mounts, f"host mounts appeared: {sorted(new_mounts)}"
    # What the kernel leaves: the cgroup directories, empty.
    left = [d for d in cgroups if os.path.isdir(d)]
    assert left, f"the dead server's cgroups vanished by themselves: {cgroups}"
    wrong = wait_for("members of the dead server's cgroups", lambda: _members(left), GONE_WAIT)
    assert wrong is None, wrong
    return srv, dead, left, key


def _check_store_after_crash(srv):
    with tempfile.TemporaryDirectory(prefix="pybox-crash-db-") as tmp:
        db = _store_copy(srv.data_dir, tmp)
        try:
            check, keys, quota, audit = _store_facts(db)
        finally:
            db.close()
    assert check == [("ok",)], f"PRAGMA integrity_check: {check}"
    assert keys.get(KEY_NAME) == 0, f"the key is gone or revoked: {keys}"
    # Every admitted execution was charged before it ran; only the finished ones were audited.
    assert quota == DONE_BEFORE + len(IN_FLIGHT), f"quota count {quota}"
    assert audit == DONE_BEFORE, f"audit rows {audit}"
    return quota


def _stop(srv):
    """SIGTERM: exit 0 and nothing of the server left (the data directory is kept)."""
    pid = srv.pid
    rc = srv.terminate()
    assert rc == 0, f"pybox serve exited {rc} on SIGTERM\n{srv.log_text()[-4000:]}"
    problems = srv.leftover_problems(pid)
    assert not problems, problems


def _check_next_start(srv, dead, left, key, quota):
    srv.start_again()
    wrong = wait_for("cgroups of the dead server", lambda: [d for d in left if os.path.exists(d)],
                     REAP_WAIT)
    assert wrong is None, wrong + "\n" + srv.log_text()[-4000:]
    assert not it.pybox_cgroups_of(dead), it.pybox_cgroups_of(dead)

    # The key still authenticates, and its quota count carries on from where the crash left it.
    r = srv.post("/execute", {"code": "print('after')"}, key=key)
    assert r.status_code == 200, r.text
    user = r.json()["user_info"]
    assert user.get("key_name") == KEY_NAME, user
    assert user["requests_today"] == quota + 1, user
    assert r.json()["execution_details"]["stdout"] == "after\n", r.json()
    # An execution that uses the pool, processes and files works.
    r = srv.admin({"code": "import os\nopen('/work/x', 'w').write('y')\n"
                           "pid = os.fork()\nif pid == 0: os._exit(7)\n"
                           "print(os.waitpid(pid, 0)[1] >> 8, open('/work/x').read())"}, v1=True)
    assert r.status_code == 200 and r.json()["stdout"] == "7 y\n", r.text

    _stop(srv)
    db = sqlite3.connect(str(Path(srv.data_dir) / "pybox.db"))
    try:
        check, keys, quota_now, audit = _store_facts(db)
    finally:
        db.close()
    assert check == [("ok",)], f"PRAGMA integrity_check: {check}"
    assert quota_now == quota + 1 and audit == DONE_BEFORE + 1, (quota_now, audit)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT],
                         ids=["SIGKILL", "SIGSEGV", "SIGABRT"])
def test_crash_with_executions_in_flight_loses_nothing(crash_server, sig):
    """Invariant: after `pybox serve` dies of `sig` with executions in flight, no process or
    mount of its jail remains, only its (empty) cgroup directories; the next start on the same
    data directory removes them, the store passes integrity_check with the key, its quota count
    and its audit rows intact, and executions work."""
    srv, dead, left, key = _crash_and_check(crash_server, sig)
    quota = _check_store_after_crash(srv)
    _check_next_start(srv, dead, left, key, quota)


FREEZER = Path("/sys/fs/cgroup/freezer")


@pytest.mark.skipif(not (FREEZER / "cgroup.procs").exists(),
                    reason="needs the cgroup v1 freezer (a frozen task outlives SIGKILL there)")
def test_stale_cgroup_with_a_member_still_exiting_is_reaped_later(crash_server):
    """Invariant: a cgroup of a dead server whose member has been killed but not yet exited
    when the next server starts is removed once the member is gone, not left for good.
    A task frozen by the v1 freezer stays a member after SIGKILL until it is thawed: that is the
    member still exiting."""
    srv, dead, left, _ = _crash_and_check(crash_server, signal.SIGKILL)
    cell = next((d for d in left if os.path.basename(d).startswith("cell-")), None)
    assert cell is not None, left
    frozen = FREEZER / f"crash-test-{os.getpid()}"
    frozen.mkdir()
    member = subprocess.Popen(["sleep", "600"])
    try:
        (Path(cell) / "cgroup.procs").write_text(str(member.pid))
        (frozen / "cgroup.procs").write_text(str(member.pid))
        (frozen / "freezer.state").write_text("FROZEN")
        wrong = wait_for("the freezer", lambda: (frozen / "freezer.state").read_text().strip()
                         != "FROZEN" and "not FROZEN", 10)
        assert wrong is None, wrong

        srv.start_again()
        # The start tried: it killed the member (frozen, it cannot exit yet) ...
        wrong = wait_for("a SIGKILL pending for the member",
                         lambda: not _sigkill_pending(member.pid) and "none", REAP_WAIT)
        assert wrong is None, wrong
        # ... and could not remove its cgroup, which the server keeps trying to remove.
        assert os.path.isdir(cell), "the cgroup of a member that had not exited is gone"
        (frozen / "freezer.state").write_text("THAWED")
        assert member.wait(timeout=30) == -signal.SIGKILL
        wrong = wait_for("cgroups of the dead server once its last member exited",
                         lambda: [d for d in left if os.path.exists(d)], REAP_WAIT)
        assert wrong is None, wrong + "\n" + srv.log_text()[-4000:]
        assert not it.pybox_cgroups_of(dead), it.pybox_cgroups_of(dead)
        _stop(srv)
    finally:
        try:
            (frozen / "freezer.state").write_text("THAWED")
        except OSError:
            pass
        member.kill()
        member.wait()
        remove_cgroup(str(frozen))
        for d in reversed(left):
            remove_cgroup(d)


def _sigkill_pending(pid):
    """SIGKILL is pending for pid (a frozen task keeps it pending until thawed)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("SigPnd:", "ShdPnd:")):
                    if int(line.split()[1], 16) & (1 << (signal.SIGKILL - 1)):
                        return True
    except OSError:
        return False
    return False
