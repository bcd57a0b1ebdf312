"""Shared machinery of the security suite: run pybox, and prove nothing of a run survives.

Every test runs real attacks through the built binary (env PYBOX, default <repo>/build/pybox).
The autouse fixture `no_leftovers` checks after each test that the execution left nothing on
the host: no process of the jail's uid range, no pybox-* cgroup, no extra mount.

Run with Debian's interpreter: /usr/bin/python3 -m pytest -q tests/security
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pybox_host import cgroup_dirs  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PYBOX = os.path.abspath(os.environ.get("PYBOX") or str(REPO / "build" / "pybox"))


def _is_asan(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
        return b"libasan" in data or b"__asan_init" in data
    except OSError:
        return False


# An ASan build: its jail processes are ASan processes too (own SIGSEGV handler, quarantine).
PYBOX_IS_ASAN = _is_asan(PYBOX)

# The jail's user namespace maps jail uids 0..65535 to these host uids.
JAIL_UID_MIN = 1000000000
JAIL_UID_MAX = 1000065535

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_DEPTH = 6

# Bound on every wait for pybox: a hang fails the test instead of stalling the suite.
SUBPROCESS_TIMEOUT = 60

MIB = 1 << 20

# Host uid of the jail's uid 1000, which runs the user's code.
JAIL_USER_UID = JAIL_UID_MIN + 1000

# pids of pybox processes this suite started (to tell our leftovers from other users' runs).
_our_pybox_pids = set()


class RunResult(tuple):
    """(exit status, parsed JSON or None, raw stderr), plus .stdout (raw) and .elapsed (s)."""

    def __new__(cls, status, data, stderr, stdout, elapsed, argv):
        self = super().__new__(cls, (status, data, stderr))
        self.status = status
        self.data = data
        self.stderr = stderr
        self.stdout = stdout
        self.elapsed = elapsed
        self.argv = argv
        return self

    def __repr__(self):
        return (f"RunResult(status={self.status}, elapsed={self.elapsed:.2f}s, argv={self.argv!r}, "
                f"data={_short(self.data)}, stderr={self.stderr[:2000]!r})")


def _short(data, limit=4000):
    text = json.dumps(data) if data is not None else "None"
    return text if len(text) <= limit else text[:limit] + "...(%d chars)" % len(text)


def _strict_json(text):
    """Parse pybox's output as strict JSON (NaN/Infinity are not JSON)."""

    def reject(name):
        raise ValueError(f"invalid JSON constant {name}")

    return json.loads(text, parse_constant=reject)


def assert_usage_error(res):
    """A request refused before anything ran: exit 2 and exactly one line on stderr starting
    "pybox: ".  Without --json nothing is on stdout; with --json stdout holds exactly one
    error object whose message is that line's (a JSON reader needs no stderr)."""
    lines = res.stderr.strip("\n").splitlines()
    assert res.status == 2, res
    assert len(lines) == 1 and lines[0].startswith("pybox: "), res
    if "--json" not in res.argv:
        assert res.stdout == "", res
        return
    out = res.stdout.splitlines()
    assert len(out) == 1, res
    obj = _strict_json(out[0])
    assert obj["status"] == "error", res
    assert obj["error"]["type"] == "ValidationError", res
    assert obj["error_details"] == obj["error"], res
    assert lines[0].startswith("pybox: " + obj["error"]["message"]), res
    assert "RAN" not in res.stdout, res


def _clean_env(extra_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYBOX")}
    if extra_env:
        env.update(extra_env)
    return env


def run_pybox(code, *args, json_out=True, allow_all=False, stdin=None, env=None,
              timeout=SUBPROCESS_TIMEOUT, script_dir=None, argv=None, monitor=False):
    """Run `pybox run SCRIPT [args]` with `code` written to a temp file.

    json_out adds --json, allow_all adds --allow-all-imports; stdin is bytes given to pybox's
    own stdin; env adds variables to pybox's environment (PYBOX_* of the caller are dropped).
    argv, when given, replaces the whole command line after the binary (code is then ignored
    unless "{script}" appears in it). Returns a RunResult: (exit status, parsed JSON or None,
    raw stderr). monitor=True polls the host's /proc while pybox runs and sets
    .max_user_procs / .max_user_threads: the most processes / threads of the jail's user
    (host uid JAIL_USER_UID) under this pybox seen at once.
    """
    tmpdir = Path(script_dir) if script_dir else Path(tempfile.mkdtemp(prefix="pybox-sec-script-"))
    try:
        script = tmpdir / "attack_script.py"
        if code is not None:
            script.write_text(code)
        if argv is None:
            cmd = [PYBOX, "run", str(script)]
            if json_out:
                cmd.append("--json")
            if allow_all:
                cmd.append("--allow-all-imports")
            cmd += [str(a) for a in args]
        else:
            cmd = [PYBOX] + [str(a).replace("{script}", str(script)) for a in argv]
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_clean_env(env),
                                cwd=str(tmpdir))
        _our_pybox_pids.add(proc.pid)
        mon = _Monitor(proc.pid) if monitor else None
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"pybox did not return within {timeout} s: {cmd!r}")
        finally:
            if mon:
                mon.stop()
        elapsed = time.monotonic() - start
        data = None
        text = out.decode("utf-8", "replace")
        if json_out and argv is None:
            lines = text.strip().splitlines()
            if lines:
                try:
                    data = _strict_json(lines[0])
                except ValueError:
                    data = None
        res = RunResult(proc.returncode, data, err.decode("utf-8", "replace"), text, elapsed, cmd)
        if mon:
            res.max_user_procs, res.max_user_threads = mon.max_procs, mon.max_threads
        return res
    finally:
        if not script_dir:
            shutil.rmtree(tmpdir, ignore_errors=True)


class _Monitor:
    """Polls /proc for processes of JAIL_USER_UID descending from one pybox, keeps the maxima."""

    def __init__(self, root_pid):
        self.root = root_pid
        self.max_procs = 0
        self.max_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _descends(self, pid, parents):
        for _ in range(64):
            if pid == self.root:
                return True
            pid = parents.get(pid)
            if pid is None or pid <= 1:
                return False
        return False

    def _sample(self):
        parents, user = {}, {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            fields = _proc_status(entry)
            if fields is None:
                continue
            pid = int(entry)
            parents[pid] = int(fields.get("PPid", ["0"])[0])
            if JAIL_USER_UID in _uids(fields) and fields.get("State", ["Z"])[0] != "Z":
                user[pid] = int(fields.get("Threads", ["1"])[0])
        mine = [p for p in user if self._descends(p, parents)]
        self.max_procs = max(self.max_procs, len(mine))
        self.max_threads = max(self.max_threads, sum(user[p] for p in mine))

    def _loop(self):
        while not self._stop.is_set():
            try:
                self._sample()
            except (OSError, ValueError):
                pass
            self._stop.wait(0.01)

    def stop(self):
        self._stop.set()
        self._thread.join()


@pytest.fixture
def pybox():
    """The run helper: pybox(code, *options, allow_all=..., json_out=..., stdin=..., env=...)."""
    return run_pybox


@pytest.fixture(scope="session", autouse=True)
def _binary_exists():
    if not os.access(PYBOX, os.X_OK):
        pytest.fail(f"pybox binary not found at {PYBOX}: build it or set PYBOX")
    # The security-plain/* run of ctest is there for what an ASan build cannot show.
    if os.environ.get("PYBOX_EXPECT_PLAIN") == "1" and PYBOX_IS_ASAN:
        pytest.fail(f"{PYBOX} is an ASan build, but this run wants one without sanitizers")


# ---------------------------------------------------------------------------------------------
# Leftover detection
#
# Other people may run pybox (or its unit tests) on the same machine while this suite runs, so
# leftovers are attributed: a cgroup pybox-<P>-<n> is ours when P is a pybox this suite started;
# a process of the jail uid range is ours when it sits in one of our cgroups, descends from one
# of our pybox processes, or is an orphan (re-parented to pid 1 or to an ancestor of this test
# process) that appeared during the test. Zombies are dead and hold nothing: they are ignored.


def _proc_status(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            fields = {}
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.split()
            return fields
    except OSError:
        return None


def _uids(fields):
    try:
        return [int(x) for x in fields.get("Uid", [])]
    except ValueError:
        return []


def _in_jail_range(uids):
    return any(JAIL_UID_MIN <= u <= JAIL_UID_MAX for u in uids)


def _ppid(fields):
    try:
        return int(fields.get("PPid", ["0"])[0])
    except ValueError:
        return 0


def _own_ancestry():
    chain, pid = set(), os.getpid()
    while pid > 0 and pid not in chain:
        chain.add(pid)
        f = _proc_status(pid)
        if f is None:
            break
        pid = _ppid(f)
    return chain


def _cgroup_owner_pids(pid):
    owners = set()
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            for line in f:
                for part in line.strip().split("/"):
                    bits = part.split("-")
                    if len(bits) >= 3 and bits[0] == "pybox" and bits[1].isdigit():
                        owners.add(int(bits[1]))
    except OSError:
        pass
    return owners


def _jail_process_table():
    """{pid: (name, uids, first ancestor outside the jail range, pybox cgroup owners)} of the
    live (non-zombie) processes of the jail uid range."""
    table = {}
    statuses = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _proc_status(entry)
            if f is not None:
                statuses[int(entry)] = f
    for pid, f in statuses.items():
        if not _in_jail_range(_uids(f)) or f.get("State", ["Z"])[0] in ("Z", "X"):
            continue
        anc, hops = _ppid(f), 0
        while hops < 64 and anc in statuses and _in_jail_range(_uids(statuses[anc])):
            anc, hops = _ppid(statuses[anc]), hops + 1
        table[pid] = (" ".join(f.get("Name", [])), _uids(f), anc, _cgroup_owner_pids(pid))
    return table


def jail_process_pids():
    """The pids of the live processes of the jail uid range now (a `before` snapshot)."""
    return set(_jail_process_table())


def jail_processes(before=None):
    """Live processes of the jail uid range that belong to this suite's executions (see the
    attribution rules above). `before`: the pids present when the test started."""
    ancestry = _own_ancestry()
    found = []
    for pid, (name, uids, anc, owners) in _jail_process_table().items():
        ours = bool(owners & _our_pybox_pids) or anc in _our_pybox_pids
        orphan = anc in ancestry or anc <= 1
        if ours or (orphan and (before is None or pid not in before)):
            found.append((pid, name, uids))
    return found


def pybox_cgroups(owned_by=None):
    """Directories named pybox-* under /sys/fs/cgroup/*/ (searched CGROUP_DEPTH levels deep);
    with owned_by, only those of these supervisor pids."""

    def match(name):
        if not name.startswith("pybox-"):
            return False
        bits = name.split("-")
        owner = int(bits[1]) if len(bits) > 1 and bits[1].isdigit() else None
        return owned_by is None or owner in owned_by

    return cgroup_dirs(match, str(CGROUP_ROOT), CGROUP_DEPTH)


def remove_cgroup(path):
    """rmdir a leaked cgroup and its sub-cgroups, deepest first (cleanup after a failure)."""
    for root, dirs, _ in os.walk(path, topdown=False):
        for d in dirs:
            try:
                os.rmdir(os.path.join(root, d))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def our_leftovers(before_pids=None):
    return jail_processes(before_pids), pybox_cgroups(_our_pybox_pids)


def wait_until_clean(before_pids=None, grace=3.0):
    """Leftovers after `grace` seconds (processes being reaped get that long to vanish)."""
    deadline = time.monotonic() + grace
    while True:
        procs, cgroups = our_leftovers(before_pids)
        if (not procs and not cgroups) or time.monotonic() >= deadline:
            return procs, cgroups
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def no_leftovers():
    """After every test: no process of the jail uid range from this test's executions on the
    host, no pybox-* cgroup of them under /sys/fs/cgroup, and the same host mount count."""
    mounts_before = mount_count()
    before_pids = set(_jail_process_table())
    yield
    procs, cgroups = wait_until_clean(before_pids)
    mounts_after = mount_count()
    problems = []
    if procs:
        problems.append(f"processes of the jail uid range survive on the host: {procs}")
        for pid, _, _ in procs:  # clean up so one failure does not cascade
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    if cgroups:
        problems.append(f"cgroups of executions survive: {cgroups}")
        for path in cgroups:
            remove_cgroup(path)
    if mounts_after != mounts_before:
        problems.append(f"host mount table changed: {mounts_before} lines before, "
                        f"{mounts_after} after")
    assert not problems, "; ".join(problems)


def mount_count():
    with open("/proc/self/mountinfo") as f:
        return len(f.read().splitlines())


# ---------------------------------------------------------------------------------------------
# Small helpers shared by several test files


@pytest.fixture
def host_sleep():
    """A `sleep 60` process on the host, killed after the test."""
    proc = subprocess.Popen(["sleep", "60"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def token(prefix="PBXSEC"):
    return f"{prefix}{os.urandom(12).hex().upper()}"


@pytest.fixture
def canary(tmp_path_factory):
    """A world-readable file on the host, in a fresh temp dir, holding a random token."""
    d = Path(tempfile.mkdtemp(prefix="pybox-sec-canary-"))
    os.chmod(d, 0o755)
    secret = token("CANARY")
    f = d / "canary.txt"
    f.write_text(secret + "\n")
    os.chmod(f, 0o644)
    try:
        yield f, secret
    finally:
        shutil.rmtree(d, ignore_errors=True)
