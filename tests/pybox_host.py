"""Host-side helpers shared by the pytest suites (security and integration): finding what an
execution may have left on the host, and seeing how far a running execution got."""
import os
import stat
import time

# Hostile code the suites run: a CPU spinner, and a fork bomb that the pids limit holds.
SPIN = "while True:\n    pass\n"
FORK_BOMB = """
import os
while True:
    try:
        os.fork()
    except OSError:
        pass
"""

CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_DEPTH = 6


def cgroup_dirs(match, root=CGROUP_ROOT, depth=CGROUP_DEPTH):
    """Paths of the directories under `root` (searched `depth` levels deep, never through a
    symlink) whose name satisfies `match(name)`."""
    found = []

    def walk(path, level):
        if level > depth:
            return
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        for e in entries:
            try:
                if not e.is_dir(follow_symlinks=False):
                    continue
            except OSError:
                continue
            if match(e.name):
                found.append(e.path)
            walk(e.path, level + 1)

    if os.path.isdir(root):
        walk(root, 0)
    return found


JAIL_UID_MIN = 1000000000
JAIL_UID_MAX = 1000065535


def _jail_pids():
    """The live processes whose real uid is in the jail's range (every cell and job)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        uids = fields.get("Uid", "").split()
        if uids and JAIL_UID_MIN <= int(uids[0]) <= JAIL_UID_MAX \
                and fields.get("State", "Z").split()[0] not in ("Z", "X"):
            pids.append(int(entry))
    return pids


def jail_file_pid(path):
    """The pid of a running execution that has the regular file `path` (as the execution sees
    it, e.g. /work/ready-<token>), looked at through /proc/PID/root of every jail process; None
    when none has it."""
    for pid in _jail_pids():
        try:
            fd = os.open(f"/proc/{pid}/root{path}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                return pid
        finally:
            os.close(fd)
    return None


def wait_jail_file(path, timeout):
    """Wait until a running execution has the file `path` (see jail_file_pid()); returns its
    pid, fails (AssertionError) after `timeout` seconds. This is how a test knows that the other
    side got as far as writing it: give it a name no other execution uses."""
    deadline = time.monotonic() + timeout
    while True:
        pid = jail_file_pid(path)
        if pid is not None:
            return pid
        assert time.monotonic() < deadline, f"no execution wrote {path} within {timeout:g} s"
        time.sleep(0.02)
