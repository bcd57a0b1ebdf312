"""No host file is readable or writable from a cell, returned files never carry host content,
and executions share no files."""
import base64
import hashlib
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from conftest import assert_usage_error, token
from pybox_host import wait_jail_file

# Script: try every path it is given in several ways, then walk the whole visible tree, list
# every name and read every small regular file outside the Python view; print all it got.
PROBE = r"""
import os, sys, json
req = json.loads(sys.stdin.read())
targets = req["targets"]
needle = req["needle"]
tried = 0
def show(what, data):
    print("GOT", what, repr(data[:300]))
for t in targets:
    rel = t.lstrip("/")
    variants = [t, "/proc/1/root/" + rel, "/proc/self/root/" + rel, "/proc/self/cwd/../../" + rel,
                "../" * 12 + rel, "/work/" + "../" * 12 + rel, "/./" + rel, "//" + rel,
                "/tmp/../" + rel, "/dev/fd/../../" + rel]
    for v in variants:
        tried += 1
        try:
            with open(v, "rb") as f:
                show(v, f.read(4096))
        except OSError as e:
            print("ERR", v, type(e).__name__)
    # relative to a directory fd of /
    try:
        dfd = os.open("/", os.O_RDONLY | os.O_DIRECTORY)
        fd = os.open(rel, os.O_RDONLY, dir_fd=dfd)
        show("dirfd:" + rel, os.read(fd, 4096))
    except OSError as e:
        print("ERR dirfd", rel, type(e).__name__)
    tried += 1
python_view = ("/usr", "/lib", "/lib64", "/bin")
names = 0
for root, dirs, files in os.walk("/", onerror=lambda e: print("WALKERR", e.filename)):
    for n in dirs + files:
        names += 1
        if needle in n:
            print("FOUND NAME", os.path.join(root, n))
    if root.startswith(python_view):
        continue
    for n in files:
        p = os.path.join(root, n)
        if root.startswith("/dev"):
            continue
        try:
            if os.path.isfile(p) and os.path.getsize(p) < (1 << 20):
                with open(p, "rb") as f:
                    data = f.read()
                if needle.encode() in data:
                    print("FOUND DATA", p)
                show(p, data)
        except OSError as e:
            print("ERR", p, type(e).__name__)
print("TRIED", tried, "NAMES", names)
"""


@pytest.fixture
def canaries():
    """World-readable canary files with one random token, in fresh dirs in host /tmp,
    /dev/shm and /var/tmp."""
    secret = token("CANARY")
    dirs, files = [], []
    for base in (None, "/dev/shm", "/var/tmp"):
        if base is not None and not os.path.isdir(base):
            continue
        d = tempfile.mkdtemp(prefix="pybox-canary-", dir=base)
        os.chmod(d, 0o755)
        f = os.path.join(d, "canary.txt")
        with open(f, "w") as fh:
            fh.write(secret + "\n")
        os.chmod(f, 0o644)
        dirs.append(d)
        files.append(f)
    try:
        yield files, secret
    finally:
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


def test_host_canary_unreachable(pybox, canaries):
    """Invariant: a world-readable host file (in /tmp, /dev/shm, /var/tmp) cannot be read from
    the cell by its path, via /proc/*/root, ../ tricks or a dir fd, nor found by walking the
    whole visible filesystem: its token never appears in the output."""
    files, secret = canaries
    req = {"targets": files, "needle": "pybox-canary-"}
    res = pybox(PROBE, "--timeout", "30", "--memory", "256", "--stdin", "-", allow_all=True,
                stdin=json.dumps(req).encode())
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    out = res.data["stdout"] + res.data["stderr"]
    assert f"TRIED {len(files) * 11}" in out, res  # the attack really ran
    assert "GOT /etc/passwd " in out, res  # and the probe does read what it can reach
    assert secret not in out and secret not in res.stdout and secret not in res.stderr
    assert "FOUND" not in out, [l for l in out.splitlines() if "FOUND" in l]
    for f in files:
        assert f"GOT {f} " not in out


def test_etc_shadow_unreadable(pybox):
    """Invariant: /etc/shadow cannot be read from a cell; no line of the host's shadow file
    appears in the output."""
    code = r"""
for p in ("/etc/shadow", "/etc/gshadow", "/etc/sudoers", "/etc/ssh/ssh_host_rsa_key"):
    try:
        print("READ", p, open(p).read())
    except OSError as e:
        print("ERR", p, type(e).__name__)
"""
    res = pybox(code, "--timeout", "10")
    assert res.data is not None, res
    out = res.data["stdout"]
    assert "ERR /etc/shadow" in out, res
    assert "READ" not in out, res
    with open("/etc/shadow") as f:
        host_lines = [l.strip() for l in f if l.strip()]
    for line in host_lines:
        assert line not in res.stdout, f"host shadow line {line.split(':')[0]} leaked"


def test_host_dirs_absent(pybox):
    """Invariant: /root, /home, /usr/local, /proc, /sys, /var, /opt, /srv, /mnt of the host
    are not in the cell."""
    code = r"""
import os
for p in ("/root", "/home", "/usr/local", "/proc", "/sys", "/var", "/opt", "/srv", "/mnt",
          "/boot", "/run", "/etc/ssh"):
    try:
        print("PRESENT", p, os.listdir(p))
    except OSError as e:
        print("ABSENT", p, type(e).__name__)
"""
    res = pybox(code, "--timeout", "10", allow_all=True)
    assert res.data is not None, res
    out = res.data["stdout"]
    assert "PRESENT" not in out, res
    assert out.count("ABSENT") == 12, res


def test_python_view_is_read_only(pybox):
    """Invariant: the cell cannot write into the Python view or the root: writing to
    /usr/lib/python3*/os.py, /etc/passwd, /bin and / fails, and the host's os.py is unchanged."""
    host_os_py = Path(os.__file__).resolve()
    before = hashlib.sha256(host_os_py.read_bytes()).hexdigest()
    code = r"""
import os, sys
targets = [os.__file__, "/etc/passwd", "/etc/hosts", "/bin/pwned", "/pwned", "/usr/pwned",
           "/lib/pwned", "/etc/pwned"]
for p in targets:
    try:
        with open(p, "a") as f:
            f.write("PWNED\n")
        print("WROTE", p)
    except OSError as e:
        print("DENIED", p, type(e).__name__)
for d in ("/usr", "/etc", "/", "/bin"):
    try:
        os.chmod(d, 0o777); print("CHMOD", d)
    except OSError as e:
        print("DENIED chmod", d, type(e).__name__)
"""
    res = pybox(code, "--timeout", "10", allow_all=True)
    assert res.data is not None, res
    out = res.data["stdout"]
    assert "WROTE" not in out and "CHMOD " not in out, res
    assert out.count("DENIED") == 12, res
    assert hashlib.sha256(host_os_py.read_bytes()).hexdigest() == before


def test_executions_share_no_files(pybox):
    """Invariant: a file one execution leaves in /work, /tmp or /dev/shm is invisible to an
    execution running at the same time and to a later one."""
    secret = token("SHARED")
    writer = f"""
import os, time
for d in ("/work", "/tmp", "/dev/shm"):
    with open(d + "/left-behind", "w") as f:
        f.write("{secret}")
print("WRITTEN", flush=True)
open("/work/{secret}", "w").close()  # the host waits for this: all written, now held
time.sleep(3)
"""
    reader = r"""
import os
for d in ("/work", "/tmp", "/dev/shm"):
    for n in os.listdir(d):
        print("SEEN", d, n, open(os.path.join(d, n)).read()[:100])
print("LISTED")
"""
    results = {}

    def run_writer():
        results["w"] = pybox(writer, "--timeout", "10", allow_all=True)

    t = threading.Thread(target=run_writer)
    t.start()
    try:
        wait_jail_file("/work/" + secret, 30)
        concurrent = pybox(reader, "--timeout", "10", allow_all=True)
        assert t.is_alive(), "the writer ended before the reader ran: they were not concurrent"
    finally:
        t.join()
    later = pybox(reader, "--timeout", "10", allow_all=True)
    assert "WRITTEN" in results["w"].data["stdout"], results["w"]
    for res in (concurrent, later):
        assert res.data is not None, res
        assert "LISTED" in res.data["stdout"], res
        assert "SEEN" not in res.data["stdout"], res
        assert secret not in res.stdout


# --------------------------------------------------------------------------------------------
# Returned files

RETURN_ATTACK = r"""
import os, errno
def attempt(what, fn):
    try:
        fn(); print("OK", what)
    except OSError as e:
        print("FAIL", what, errno.errorcode.get(e.errno, e.errno))
open("/work/inside.txt", "w").write("inside")
attempt("symlink-passwd", lambda: os.symlink("/etc/passwd", "/work/sl_passwd"))
attempt("symlink-host", lambda: os.symlink("/proc/1/root/etc/passwd", "/work/sl_proc"))
attempt("symlink-inside", lambda: os.symlink("/work/inside.txt", "/work/sl_inside"))
attempt("symlink-relative", lambda: os.symlink("inside.txt", "/work/sl_rel"))
attempt("symlink-dotdot", lambda: os.symlink("../../../etc/passwd", "/work/sl_dotdot"))
attempt("hardlink-outside", lambda: os.link("/etc/passwd", "/work/hl"))
attempt("hardlink-python", lambda: os.link(os.__file__, "/work/hl_py"))
attempt("fifo", lambda: os.mkfifo("/work/fifo"))
attempt("dir", lambda: os.mkdir("/work/dir"))
attempt("mknod-null", lambda: os.mknod("/work/dev", 0o666 | 0o020000, os.makedev(1, 3)))
attempt("mknod-sda", lambda: os.mknod("/work/disk", 0o666 | 0o060000, os.makedev(8, 0)))
def sparse():
    with open("/work/sparse", "wb") as f:
        f.truncate(32 << 20)   # sparse, over the 8 MiB return-size
attempt("sparse", sparse)
"""

RETURNED = ["sl_passwd", "sl_proc", "sl_inside", "sl_rel", "sl_dotdot", "hl", "hl_py", "fifo",
            "dir", "dev", "disk", "sparse"]


def test_returned_files_never_carry_host_content(pybox):
    """Invariant: symlinks (to /etc/passwd, inside /work, relative, ../), hardlinks to files
    outside /work, a FIFO, a directory, device nodes and a 32 MiB sparse file (over return-size) offered as
    returned files each come back as {"error": ...}, with no host content, and pybox returns
    promptly (the FIFO does not hang it); a regular file still comes back intact."""
    args = ["--timeout", "10", "--limit", "return-files=20"]
    for name in RETURNED + ["inside.txt"]:
        args += ["--return", name]
    res = pybox(RETURN_ATTACK, *args, allow_all=True)
    assert res.data is not None, res
    out = res.data["stdout"]
    assert "FAIL hardlink-outside" in out and "FAIL hardlink-python" in out, res
    assert "FAIL mknod-null" in out and "FAIL mknod-sda" in out, res
    assert "OK fifo" in out and "OK symlink-passwd" in out, res
    files = res.data["files"]
    for name in RETURNED:
        assert name in files, (name, res)
        entry = files[name]
        assert set(entry) == {"error"}, (name, entry)
        assert isinstance(entry["error"], str) and entry["error"], (name, entry)
    assert "regular" in files["fifo"]["error"], files["fifo"]
    assert "regular" in files["dir"]["error"], files["dir"]
    assert "OK sparse" in out and "large" in files["sparse"]["error"], files["sparse"]
    good = files["inside.txt"]
    assert base64.b64decode(good["content_base64"]) == b"inside" and good["size"] == 6, good
    with open("/etc/passwd") as f:
        host_first = f.readline().strip()
    assert host_first not in res.stdout, "host /etc/passwd content in the result"
    assert res.elapsed < 15, res


def test_fifo_with_writer_alive_does_not_hang(pybox):
    """Invariant: a FIFO offered as a returned file, with a daemonised writer trying to keep it
    open, does not make pybox hang: it returns well before the writer would stop."""
    code = r"""
import os, time
os.mkfifo("/work/out")
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        fd = os.open("/work/out", os.O_RDWR)
        time.sleep(30)
        os._exit(0)
    os._exit(0)
os.wait()
time.sleep(0.3)
"""
    res = pybox(code, "--timeout", "10", "--return", "out", allow_all=True)
    assert res.data is not None, res
    assert set(res.data["files"]["out"]) == {"error"}, res
    assert res.elapsed < 15, res


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "..", ".", "a/b", "",
                                  "x" * 256])
def test_return_name_traversal_is_usage_error(pybox, name):
    """Invariant: a --return name that is not a plain file name (traversal, absolute path,
    slash, dot, empty, too long) is refused before anything runs: exit 2, one line."""
    res = pybox("import time\ntime.sleep(5)\nprint('RAN')\n", "--return", name, "--timeout", "10")
    assert_usage_error(res)
    assert res.elapsed < 5, res


@pytest.mark.parametrize("name", ["../x", "a/b", "/x", "..", "."])
def test_file_name_traversal_is_usage_error(pybox, name, tmp_path):
    """Invariant: a --file NAME that is not a plain file name is refused before the host file
    is even opened (the PATH is a FIFO with no writer: opening it would hang): exit 2."""
    fifo = tmp_path / "never-read"
    os.mkfifo(fifo)
    res = pybox("print('RAN')\n", "--file", f"{name}={fifo}", "--timeout", "10", timeout=20)
    assert_usage_error(res)


def test_only_harmless_devices_and_they_work(pybox):
    """Invariant: /dev holds only the harmless devices the jail binds (null, zero, full,
    random, urandom) and they behave as such: null swallows writes and reads empty, zero reads
    zeros, full refuses writes with ENOSPC, urandom gives bytes; the cell cannot create any
    other device node."""
    code = r"""
import errno, os
def attempt(what, fn):
    try:
        print("OK", what, fn(), flush=True)
    except OSError as e:
        print("FAIL", what, errno.errorcode.get(e.errno, e.errno), flush=True)
def rw(path, n=16, data=b"x"):
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            w = os.write(fd, data)
        except OSError as e:
            w = errno.errorcode.get(e.errno)
        return (w, len(os.read(fd, n)), os.read(fd, n).count(0))
    finally:
        os.close(fd)
print("NODES", sorted(n for n in os.listdir("/dev")
                      if not os.path.islink("/dev/" + n) and n != "shm"))
attempt("null", lambda: rw("/dev/null"))
attempt("zero", lambda: rw("/dev/zero"))
attempt("full", lambda: rw("/dev/full"))
attempt("urandom", lambda: rw("/dev/urandom"))
attempt("mknod-mem", lambda: os.mknod("/work/mem", 0o666 | 0o020000, os.makedev(1, 1)))
attempt("mknod-tmp", lambda: os.mknod("/tmp/kmsg", 0o666 | 0o020000, os.makedev(1, 11)))
"""
    res = pybox(code, "--timeout", "10", allow_all=True)
    assert res.data is not None, res
    out = res.data["stdout"]
    assert "NODES ['full', 'null', 'random', 'urandom', 'zero']" in out, res
    assert "FAIL mknod-mem EPERM" in out and "FAIL mknod-tmp EPERM" in out, res
    assert "OK null (1, 0, 0)" in out, res
    assert "OK zero (1, 16, 16)" in out, res
    assert "OK full ('ENOSPC', 16, 16)" in out, res
    assert "OK urandom (1, 16," in out, res
