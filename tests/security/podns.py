"""Run a command as root of a user namespace that holds only COUNT ids, as a Kubernetes pod
with `hostUsers: false` has (ids 0..COUNT-1 of it are host ids OUTER..OUTER+COUNT-1).

    /usr/bin/python3 podns.py OUTER COUNT -- COMMAND [ARG]...

Must be started by root of the initial user namespace, which may write any map (no
newuidmap is needed).  The command runs with uid and gid 0 of the new namespace and every
capability in it, and nothing outside it; the exit status is the command's (128+N for a
signal).  Only the user namespace is new: the mounts, /proc and the cgroup tree are the host's,
as in a pod whose runtime mounted nothing of its own.
"""
import ctypes
import os
import signal
import sys

CLONE_NEWUSER = 0x10000000


def main(argv):
    if len(argv) < 5 or argv[3] != "--":
        sys.stderr.write("usage: podns.py OUTER COUNT -- COMMAND [ARG]...\n")
        return 2
    outer, count = int(argv[1]), int(argv[2])
    command = argv[4:]
    libc = ctypes.CDLL(None, use_errno=True)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        if libc.unshare(CLONE_NEWUSER) != 0:
            os.write(2, b"podns: unshare(CLONE_NEWUSER): %s\n"
                     % os.strerror(ctypes.get_errno()).encode())
            os._exit(127)
        os.write(ready_w, b"u")
        if os.read(go_r, 1) != b"g":
            os._exit(127)
        os.setresgid(0, 0, 0)
        os.setgroups([])
        os.setresuid(0, 0, 0)
        try:
            os.execvp(command[0], command)
        except OSError as e:
            os.write(2, b"podns: exec %s: %s\n" % (command[0].encode(), e.strerror.encode()))
        os._exit(127)
    os.close(ready_w)
    os.close(go_r)
    if os.read(ready_r, 1) != b"u":
        _, status = os.waitpid(pid, 0)
        return 127
    line = b"0 %d %d\n" % (outer, count)
    for name in ("uid_map", "gid_map"):
        with open("/proc/%d/%s" % (pid, name), "wb") as f:
            f.write(line)
    os.write(go_w, b"g")
    # Signals meant for the command (a test's terminate()) go to it.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
