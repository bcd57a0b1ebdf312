"""Cells cannot see, signal or ptrace anything outside, cannot leave their namespaces, and
nothing of them outlives the execution."""
import json
import os
import subprocess
import threading
import time

from conftest import (PYBOX, _our_pybox_pids, jail_process_pids, jail_processes, pybox_cgroups,
                      remove_cgroup, wait_until_clean)

PROLOGUE = r"""
import ctypes, errno, json, os, signal, sys
cfg = json.loads(sys.stdin.read() or "{}")
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def err():
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
def sys_call(name, nr, *args):
    r = libc.syscall(nr, *args)
    print("RESULT", name, r, err() if r < 0 else "SUCCEEDED", flush=True)
"""


def _tracer_pid(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("TracerPid:"):
                return int(line.split()[1])
    return None


def test_ptrace_outside_fails(pybox, host_sleep):
    """Invariant: ptrace(PTRACE_ATTACH) and PTRACE_SEIZE of pid 1, of the parent, and of a
    host process (by its host pid) fail, and the host process stays untraced."""
    code = PROLOGUE + r"""
PTRACE_ATTACH, PTRACE_SEIZE = 16, 0x4206
for pid in (1, os.getppid(), cfg["host_pid"], cfg["test_pid"]):
    for req, name in ((PTRACE_ATTACH, "attach"), (PTRACE_SEIZE, "seize")):
        r = libc.ptrace(req, pid, 0, 0)
        print("RESULT", name, pid, r, err() if r < 0 else "SUCCEEDED", flush=True)
# a child of its own: ptrace is refused altogether
pid = os.fork()
if pid == 0:
    import time; time.sleep(5); os._exit(0)
r = libc.ptrace(PTRACE_ATTACH, pid, 0, 0)
print("RESULT attach-child", pid, r, err() if r < 0 else "SUCCEEDED", flush=True)
os.kill(pid, signal.SIGKILL); os.waitpid(pid, 0)
"""
    cfg = {"host_pid": host_sleep.pid, "test_pid": os.getpid()}
    res = pybox(code, "--timeout", "10", "--stdin", "-", allow_all=True,
                stdin=json.dumps(cfg).encode())
    assert res.data is not None, res
    out = res.data["stdout"]
    assert out.count("RESULT") == 9, res
    assert "SUCCEEDED" not in out, res
    for line in out.splitlines():
        assert line.split()[-1] in ("EPERM", "ESRCH"), line
    assert _tracer_pid(host_sleep.pid) == 0
    assert host_sleep.poll() is None


def test_kill_outside_fails(pybox, host_sleep):
    """Invariant: os.kill(-1, SIGKILL), os.kill(<host pid of the test's sleep>, SIGKILL), a
    kill of the test's own pid, and pidfd_open + pidfd_send_signal on those pids all fail to
    touch the host: the sleep process is alive afterwards."""
    code = PROLOGUE + r"""
for pid in (-1, cfg["host_pid"], cfg["test_pid"]):
    try:
        os.kill(pid, signal.SIGKILL)
        print("KILLED", pid, flush=True)
    except OSError as e:
        print("REFUSED kill", pid, errno.errorcode.get(e.errno), flush=True)
for pid in (cfg["host_pid"], cfg["test_pid"]):
    fd = libc.syscall(434, pid, 0)                       # pidfd_open
    if fd >= 0:
        r = libc.syscall(424, fd, signal.SIGKILL, None, 0)  # pidfd_send_signal
        print("KILLED" if r == 0 else "REFUSED", "pidfd", pid, r, flush=True)
    else:
        print("REFUSED pidfd_open", pid, err(), flush=True)
import time; time.sleep(0.2)
print("STILL-HERE")
"""
    cfg = {"host_pid": host_sleep.pid, "test_pid": os.getpid()}
    res = pybox(code, "--timeout", "10", "--stdin", "-", allow_all=True,
                stdin=json.dumps(cfg).encode())
    assert res.data is not None, res
    out = res.data["stdout"]
    assert "STILL-HERE" in out, res
    assert out.count("REFUSED") == 5 and "KILLED" not in out, res
    # kill(-1) from the job reaches nothing: it is alone in its pid namespace.
    time.sleep(0.2)
    assert host_sleep.poll() is None, "the host's sleep process was killed from the cell"


def test_cannot_see_other_processes(pybox, host_sleep):
    """Invariant: the code sees no process but its own pid namespace's: probing every pid up
    to 70000 with signal 0 finds only itself and the namespace's init (the cell, pid 1, which
    it may not signal), never the host's sleep by its host pid."""
    code = r"""
import os
seen = []
for pid in range(1, 70000):
    try:
        os.kill(pid, 0)
        seen.append(pid)
    except ProcessLookupError:
        pass
    except PermissionError:
        seen.append(pid)
print("SEEN", seen, "SELF", os.getpid())
try:
    os.kill(1, 9)
    print("KILLED INIT")
except PermissionError:
    print("INIT PROTECTED")
"""
    res = pybox(code, "--timeout", "20", allow_all=True)
    assert res.data is not None, res
    lines = res.data["stdout"].splitlines()
    assert lines[0] == "SEEN [1, 2] SELF 2", res
    assert lines[1] == "INIT PROTECTED", res


NAMESPACE_ESCAPES = PROLOGUE + r"""
CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x20000, 0x10000000, 0x20000000, 0x40000000
CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWCGROUP = 0x4000000, 0x8000000, 0x2000000
def call(name, fn, *args):
    r = fn(*args)
    print("RESULT", name, r, err() if r < 0 else "SUCCEEDED", flush=True)
call("mount-tmpfs", libc.mount, b"none", b"/tmp", b"tmpfs", 0, None)
call("mount-proc", libc.mount, b"proc", b"/work", b"proc", 0, None)
call("mount-bind", libc.mount, b"/", b"/work", None, 0x1000, None)       # MS_BIND
call("remount-rw", libc.mount, None, b"/usr", None, 0x20 | 0x1000, None)  # MS_REMOUNT|MS_BIND
call("umount-work", libc.umount2, b"/work", 2)
for name, flag in (("newuser", CLONE_NEWUSER), ("newns", CLONE_NEWNS), ("newpid", CLONE_NEWPID),
                   ("newnet", CLONE_NEWNET), ("newuts", CLONE_NEWUTS), ("newipc", CLONE_NEWIPC),
                   ("newcgroup", CLONE_NEWCGROUP), ("newuser+newns", CLONE_NEWUSER | CLONE_NEWNS)):
    call("unshare-" + name, libc.unshare, flag)
    r = libc.syscall(56, flag | signal.SIGCHLD, 0, 0, 0, 0)   # raw clone
    if r == 0:
        os._exit(0)
    print("RESULT clone-" + name, r, err() if r < 0 else "SUCCEEDED", flush=True)
    if r > 0:
        os.waitpid(r, 0)
for fd in (0, 1, 3):
    call("setns-%d" % fd, libc.setns, fd, 0)
try:
    fd = os.open("/", os.O_RDONLY)
    call("setns-root", libc.setns, fd, 0)
except OSError:
    pass
call("chroot", libc.chroot, b"/tmp")
try:
    os.chroot("/tmp")
    print("RESULT os.chroot 0 SUCCEEDED")
except OSError as e:
    print("RESULT os.chroot -1", errno.errorcode.get(e.errno))
sys_call("pivot_root", 155, b"/tmp", b"/tmp")
sys_call("fsopen", 430, b"tmpfs", 0)
sys_call("open_tree", 428, -100, b"/", 1)
sys_call("move_mount", 429, -100, b"/work", -100, b"/tmp", 0)
sys_call("mount_setattr", 442, -100, b"/usr", 0, None, 0)
sys_call("setuid-0", 105, 0)
sys_call("setgid-0", 106, 0)
sys_call("sethostname", 170, b"owned", 5)
sys_call("bpf", 321, 0, None, 0)
sys_call("perf_event_open", 298, ctypes.create_string_buffer(128), 0, -1, -1, 0)
sys_call("io_uring_setup", 425, 8, ctypes.create_string_buffer(120))
sys_call("keyctl", 250, 0, -3, 0)
sys_call("add_key", 248, b"user", b"pybox", b"x", 1, -3)
sys_call("userfaultfd", 323, 0)
sys_call("init_module", 175, None, 0, b"")
sys_call("kexec_load", 246, 0, 0, None, 0)
sys_call("open_by_handle_at", 304, -100, None, 0)
sys_call("process_vm_readv", 310, 1, None, 0, None, 0, 0)
sys_call("syslog", 103, 3, ctypes.create_string_buffer(100), 100)
sys_call("acct", 163, b"/work/acct")
sys_call("ioctl-TIOCSTI", 16, 0, 0x5412, b"x")
print("CAPS", end=" ")
class Hdr(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]
class Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]
hdr, data = Hdr(0x20080522, 0), (Data * 2)()
libc.syscall(125, ctypes.byref(hdr), data)                          # capget
print(sum(d.effective | d.permitted for d in data), "UID", os.getuid(), os.geteuid())
"""


def test_namespace_escapes_fail(pybox):
    """Invariant: mount (tmpfs, proc, bind, remount rw), umount, unshare and clone of every
    namespace kind, setns, chroot, pivot_root, the new mount API, setuid(0), and the kernel
    attack surface (bpf, perf, io_uring, keyrings, userfaultfd, modules, kexec, syslog, TIOCSTI)
    all fail with EPERM (or a similar refusal); the job has no capability and is not root."""
    res = pybox(NAMESPACE_ESCAPES, "--timeout", "10", allow_all=True)
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    out = res.data["stdout"]
    results = [l for l in out.splitlines() if l.startswith("RESULT")]
    assert len(results) >= 45, res
    ok_refusals = {"EPERM", "EACCES", "EINVAL", "ENOSYS", "EBADF", "ENOENT", "EFAULT"}
    for line in results:
        assert "SUCCEEDED" not in line, line
        assert line.split()[-1] in ok_refusals, line
    # the key ones must be the seccomp/capability refusal, not an accident of arguments
    for name in ("mount-tmpfs", "mount-proc", "unshare-newuser", "unshare-newns",
                 "clone-newuser", "chroot", "setns-0", "pivot_root", "bpf", "io_uring_setup",
                 "keyctl", "userfaultfd", "setuid-0"):
        line = next(l for l in results if l.split()[1] == name)
        assert line.split()[-1] == "EPERM", line
    assert "CAPS 0 UID 1000 1000" in out, res


def test_daemonised_grandchild_does_not_survive(pybox):
    """Invariant: a double-forked, setsid'd grandchild that closes its fds and sleeps 30 s
    does not outlive the execution: pybox returns promptly and no process of the jail's uid
    range is left on the host."""
    code = r"""
import os, signal, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(s, signal.SIG_IGN)
        os.closerange(0, 1024)
        time.sleep(30)
        os._exit(0)
    os._exit(0)
os.wait()
print("DAEMONISED", flush=True)
"""
    before = jail_process_pids()
    res = pybox(code, "--timeout", "10", allow_all=True)
    assert res.data is not None, res
    assert "DAEMONISED" in res.data["stdout"], res
    assert res.data["status"] == "ok", res
    assert res.elapsed < 8, res
    left = jail_processes(before)
    assert left == [], f"processes outlived the execution: {left}"


def test_daemon_holding_stdout_does_not_hold_pybox(pybox):
    """Invariant: a grandchild that keeps stdout and stderr open and sleeps 30 s neither keeps
    pybox waiting for end of output nor survives it."""
    code = r"""
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(30)
        print("GRANDCHILD WOKE", flush=True)
        os._exit(0)
    os._exit(0)
os.wait()
print("PARENT DONE", flush=True)
"""
    before = jail_process_pids()
    res = pybox(code, "--timeout", "10", allow_all=True)
    assert res.data is not None, res
    assert "PARENT DONE" in res.data["stdout"], res
    assert "GRANDCHILD WOKE" not in res.data["stdout"], res
    assert res.elapsed < 8, res
    assert jail_processes(before) == []


def test_killed_pybox_leaves_nothing(pybox, tmp_path):
    """Invariant: when pybox itself is SIGKILLed mid-execution, nothing of the execution
    survives: its jail processes die at once, and its cgroups are gone (at the latest once
    the next pybox run has started)."""
    script = tmp_path / "long.py"
    script.write_text("import time\nprint('STARTED', flush=True)\ntime.sleep(30)\n")
    before = jail_process_pids()
    proc = subprocess.Popen([PYBOX, "run", str(script), "--timeout", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    _our_pybox_pids.add(proc.pid)
    watchdog = threading.Timer(30, proc.kill)  # bound the wait for STARTED
    watchdog.start()
    try:
        line = proc.stdout.readline()
        assert line.strip() == b"STARTED", line
        assert pybox_cgroups({proc.pid}), "the execution has no cgroup to check"
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
        proc.stdout.close()
    procs, _ = wait_until_clean(before, grace=5.0)
    assert procs == [], f"jail processes survive their killed supervisor: {procs}"
    pybox("print('next run')\n", "--timeout", "5")
    left = pybox_cgroups({proc.pid})
    for path in left:  # clean up here: the failure is reported once, by this assertion
        remove_cgroup(path)
    assert left == [], f"cgroups of the killed execution survive: {left}"
