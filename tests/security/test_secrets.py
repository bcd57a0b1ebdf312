"""No secret of pybox's own process (its environment above all) is reachable from a cell."""
import os

import pytest

from conftest import token

SCAVENGE = r"""
import ctypes, errno, os, sys
# the needles come reversed, so that stdin itself does not hold them
needles = [n[::-1].encode() for n in sys.stdin.read().split()]
print("ENVIRON", dict(os.environ))
print("ENVIRONB", dict(os.environb))
def dump(path, data, show=True):
    if show:
        print("READ", path, repr(data[:2000]))
    for n in needles:
        if n in data:
            print("FOUND-IN", path)
paths = ["/proc/self/environ", "/proc/1/environ", "/proc/%d/environ" % os.getppid(),
         "/proc/self/cmdline", "/proc/1/cmdline", "/proc/self/mem"]
paths += ["/proc/%d/environ" % p for p in range(2, 64)]
for p in paths:
    try:
        with open(p, "rb") as f:
            dump(p, f.read(1 << 20))
    except OSError as e:
        print("ERR", p, type(e).__name__)
# Every small regular file of the visible tree outside the Python view, /.cell included.
for root, dirs, files in os.walk("/", onerror=lambda e: print("WALKERR", e.filename)):
    if root.startswith(("/usr", "/lib", "/lib64", "/bin", "/dev")):
        continue
    for n in files:
        p = os.path.join(root, n)
        try:
            if os.path.isfile(p) and os.path.getsize(p) < (1 << 20):
                with open(p, "rb") as f:
                    dump(p, f.read())
        except OSError as e:
            print("ERR", p, type(e).__name__)
for fd in range(0, 64):
    try:
        data = os.pread(fd, 1 << 20, 0)
        dump("fd%d" % fd, data)
    except OSError:
        pass

# The process's own stack, where an inherited environment would live, page by page.
# Pages are copied out by the kernel (a raw write(2) into a pipe, EFAULT when unmapped), so
# no user-space read can fault, and a sanitizer's interceptors never see the access.
libc = ctypes.CDLL(None, use_errno=True)
libc.getauxval.restype = ctypes.c_ulong
libc.syscall.restype = ctypes.c_long
libc.syscall.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t]
execfn = libc.getauxval(31)                      # AT_EXECFN: a string near the stack top
PAGE = 4096
r, w = os.pipe()
def page_at(addr):
    n = libc.syscall(1, w, addr, PAGE)           # SYS_write
    return os.read(r, n) if n > 0 else None
stack = bytearray()
addr = (execfn & ~(PAGE - 1)) - 512 * PAGE
pages = 0
while True:
    data = page_at(addr)
    if data is not None:
        stack += data
        pages += 1
    elif addr > execfn:
        break
    addr += PAGE
dump("stack", bytes(stack), show=False)
print("STACK-PAGES", pages, "STACK-HAS-ENV", b"\0PATH=" in stack)
"""


@pytest.fixture
def secrets_env():
    values = {
        "PYBOX_ADMIN_KEY": token("ADMINKEY"),
        "PYTHON_EXE_KEY": token("EXEKEY"),
        "AWS_SECRET_ACCESS_KEY": token("AWSKEY"),
        "DATABASE_URL": "postgres://admin:" + token("DBPASS") + "@db/prod",
    }
    return values


def _assert_absent(res, values):
    for name, value in values.items():
        secret = value if "://" not in value else value.split(":")[2].split("@")[0]
        assert secret not in res.stdout, f"{name} leaked into stdout"
        assert secret not in res.stderr, f"{name} leaked into stderr"


def test_environment_secrets_unreachable(pybox, secrets_env):
    """Invariant: secrets in pybox's own environment (PYBOX_ADMIN_KEY, PYTHON_EXE_KEY, ...)
    reach the cell by no route: os.environ, /proc/*/environ, files and fds it can read, or
    its own stack memory; the tokens never appear in its output."""
    needles = " ".join((v if "://" not in v else v.split(":")[2].split("@")[0])[::-1]
                       for v in secrets_env.values())
    res = pybox(SCAVENGE, "--timeout", "30", "--memory", "256", "--stdin", "-",
                allow_all=True, env=secrets_env, stdin=needles.encode())
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    out = res.data["stdout"]
    assert "ENVIRON {" in out and "STACK-PAGES" in out, res  # the scavenging really ran
    pages = int(out.split("STACK-PAGES")[1].split()[0])
    # positive control: the scan does see the job's own initial environment block
    assert pages > 0 and "STACK-HAS-ENV True" in out, res
    assert "FOUND-IN" not in out, [l for l in out.splitlines() if "FOUND-IN" in l]
    for name in secrets_env:
        assert name not in out, f"variable {name} visible in the cell"
    _assert_absent(res, secrets_env)


def test_environment_secrets_unreachable_in_main_mode(pybox, secrets_env):
    """Invariant: in main() mode too, the returned value built from os.environ carries none of
    pybox's environment."""
    code = "import os\ndef main():\n    return dict(os.environ)\n"
    res = pybox(code, "--main", "--timeout", "10", allow_all=True, env=secrets_env)
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    assert isinstance(res.data["result"], dict), res
    for name in secrets_env:
        assert name not in res.data["result"], name
    _assert_absent(res, secrets_env)


def test_host_python_environment_has_no_effect(pybox, tmp_path):
    """Invariant: PYTHONPATH, PYTHONSTARTUP, PYTHONINSPECT, PYTHONHOME and PYTHONWARNINGS in
    pybox's environment do not reach the jail's interpreter: a host sitecustomize or shadowing
    module never runs, and no host path leaks through them."""
    marker = token("HOSTCODE")
    evil = tmp_path / "evil"
    evil.mkdir()
    for mod in ("sitecustomize.py", "usercustomize.py", "math.py", "json.py"):
        (evil / mod).write_text(f"print('{marker}')\n")
    startup = tmp_path / "startup.py"
    startup.write_text(f"print('{marker}')\n")
    os.chmod(tmp_path, 0o755)
    os.chmod(evil, 0o755)
    env = {"PYTHONPATH": str(evil), "PYTHONSTARTUP": str(startup), "PYTHONINSPECT": "1",
           "PYTHONWARNINGS": "error", "PYTHONUSERBASE": str(evil)}
    code = "import math, json\nimport sys\nprint('PATH', sys.path)\nprint(json.dumps([math.pi]))\n"
    res = pybox(code, "--timeout", "10", env=env)
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    assert "[3.141592653589793]" in res.data["stdout"], res
    assert marker not in res.stdout and marker not in res.stderr, res
    assert str(tmp_path) not in res.stdout, res
