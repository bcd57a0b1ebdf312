"""Host-side helpers shared by the pytest suites (security and integration): finding what an
execution may have left on the host."""
import os

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
