"""The import allowlist (policy, not the wall): rejections, run-time refusals, and the proof
that getting past it reaches nothing of the host."""
import importlib.util
import re

import pytest

from conftest import REPO


def documented_modules():
    """The default allowlist as the README states it."""
    text = (REPO / "README.md").read_text()
    m = re.search(r"By default user code may import:(.*?)\(submodules included\)", text, re.S)
    assert m, "README.md no longer states the default allowlist"
    return m.group(1).split()


def _rejected(res, disallowed):
    assert res.data is not None, res
    assert res.data["status"] == "rejected", res
    assert res.status == 126, res
    assert res.data["exit_code"] is None, res
    err = res.data["error"]
    assert err["type"] == "ForbiddenImportError", res
    assert err["disallowed"] == disallowed, res
    assert "RAN" not in res.data["stdout"], "rejected code ran"


def test_import_os_rejected(pybox):
    """Invariant: `import os` without --allow-all-imports is refused before anything runs:
    status rejected, ForbiddenImportError, disallowed ["os"], exit 126."""
    res = pybox("print('RAN')\nimport os\nprint(os.listdir('/'))\n", "--timeout", "5")
    _rejected(res, ["os"])


def test_several_bad_imports_listed_together(pybox):
    """Invariant: every forbidden module of the script is reported at once, sorted, each
    once, whatever the import form."""
    code = ("print('RAN')\nimport os, socket\nimport subprocess as sp\nfrom ctypes import CDLL\n"
            "import os.path\nfrom shutil import rmtree\nimport math\n")
    res = pybox(code, "--timeout", "5")
    _rejected(res, ["ctypes", "os", "shutil", "socket", "subprocess"])


@pytest.mark.parametrize("code,bad", [
    ("__import__('os')", ["os"]),
    ("__import__('socket').socket()", ["socket"]),
    ("import importlib\nimportlib.import_module('os')", ["importlib", "os"]),
    ("def f():\n    import subprocess\n", ["subprocess"]),
    ("from . import secrets_of_host", ["."]),
])
def test_static_import_forms_rejected(pybox, code, bad):
    """Invariant: __import__ of a literal, imports inside functions and relative imports are
    all refused statically (status rejected, exit 126)."""
    res = pybox("print('RAN')\n" + code + "\n", "--timeout", "5")
    _rejected(res, bad)


@pytest.mark.parametrize("code,bad", [
    ("import numpyx", ["numpyx"]),
    ("import nump", ["nump"]),
    ("import Numpy", ["Numpy"]),
    ("import maths", ["maths"]),
    ("import sys2", ["sys2"]),
    ("import _io", ["_io"]),
    ("import pil", ["pil"]),
    ("import os.numpy", ["os"]),
    ("from .pkg import x", [".pkg"]),
    ("from .. import x", [".."]),
])
def test_near_miss_names_rejected(pybox, code, bad):
    """Invariant: a module is allowed only by its exact top-level name: a longer or shorter
    name, another case, a private twin, a dotted name under a forbidden package and a relative
    import are all refused statically (status rejected, exit 126)."""
    res = pybox("print('RAN')\n" + code + "\n", "--timeout", "5")
    _rejected(res, bad)


@pytest.mark.parametrize("code", [
    "import numpy.linalg\nprint('OK', numpy.linalg.norm([3, 4]))",
    "from collections import abc\nprint('OK', abc.Mapping.__name__)",
    "import PIL.Image as I\nprint('OK', I.new('L', (1, 1)).size)",
    "from math import pi\nprint('OK', pi > 3)",
    "m = __import__('ma' + 'th')\nprint('OK', m.pi > 3)",
    "j = __import__('json')\nprint('OK', j.dumps([1]))",
])
def test_allowed_import_forms_run(pybox, code):
    """Invariant: allowed modules import in every form (submodules, from-imports, aliases,
    __import__ of a literal or a computed name), and what they import themselves (numpy imports
    os) is not refused: status ok."""
    res = pybox(code + "\n", "--timeout", "20")
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    assert res.data["stdout"].startswith("OK "), res


def test_relative_import_refused_at_run_time(pybox):
    """Invariant: a relative import hidden from the static check (__import__ with a computed
    name and level 1) is refused when it runs: status error, ForbiddenImportError."""
    res = pybox("n = 'x'\n__import__(n, globals(), None, ('y',), 1)\nprint('IMPORTED')\n",
                "--timeout", "5")
    assert res.data is not None, res
    assert res.data["status"] == "error", res
    assert res.data["error"]["type"] == "ForbiddenImportError", res
    assert "relative" in res.data["error"]["message"], res
    assert "IMPORTED" not in res.data["stdout"], res


def test_documented_allowlist_is_the_one_in_force(pybox):
    """Invariant: the allowlist the README documents is the one pybox uses (as `pybox doctor`
    prints it), and each of its modules passes both checks: one execution imports them all and
    ends ok, only the modules this machine does not have failing with ModuleNotFoundError
    (IPython never: the sandbox provides its display module when it is not installed)."""
    documented = documented_modules()
    doctor = pybox(None, argv=["doctor"])
    m = re.search(r"modules: (.*)$", doctor.stdout, re.M)
    assert m, doctor
    assert m.group(1).replace(" (MISSING)", "").split() == documented, (m.group(1), documented)
    code = "".join("try:\n    import %s\nexcept ModuleNotFoundError:\n    print('MISSING', %r)\n"
                   % (name, name) for name in documented)
    res = pybox(code, "--timeout", "30")
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    missing = re.findall(r"^MISSING (\S+)$", res.data["stdout"], re.M)
    # IPython is there whether or not this machine has it: pybox provides IPython.display.
    assert missing == [n for n in documented
                       if importlib.util.find_spec(n) is None and n != "IPython"], res


@pytest.mark.parametrize("code", [
    "__import__('o' + 's')",
    "name = ''.join(['s', 'y', 's', 'l', 'o', 'g'])\n__import__(name)",
    "f = lambda: __import__('sub' + 'process')\nf()",
])
def test_computed_import_refused_at_run_time(pybox, code):
    """Invariant: an import whose name is computed at run time is refused when it runs:
    status error, error.type ForbiddenImportError, and the module is never usable."""
    res = pybox("print('BEFORE', flush=True)\n" + code + "\nprint('IMPORTED')\n", "--timeout", "5")
    assert res.data is not None, res
    assert res.data["status"] == "error", res
    assert res.data["error"]["type"] == "ForbiddenImportError", res
    assert "BEFORE" in res.data["stdout"] and "IMPORTED" not in res.data["stdout"], res
    assert res.status == 1, res


@pytest.mark.parametrize("code", [
    "exec(\"import os\\nprint('IMPORTED', os.getcwd())\")",
    "m = eval(\"__import__('o' + 's')\")\nprint('IMPORTED', m.getcwd())",
    "exec(compile('import socket', 'x', 'exec'))\nprint('IMPORTED')",
])
def test_import_through_exec_refused_at_run_time(pybox, code):
    """Invariant: an import hidden in a string run by exec/eval/compile is refused at run time
    like any computed import (status error, ForbiddenImportError), not silently allowed."""
    res = pybox(code + "\n", "--timeout", "5")
    assert res.data is not None, res
    assert "IMPORTED" not in res.data["stdout"], f"the allowlist was bypassed: {res!r}"
    assert res.data["status"] == "error", res
    assert res.data["error"]["type"] == "ForbiddenImportError", res


def test_allowlist_bypass_reaches_only_the_jail(pybox, canary):
    """Invariant: getting os past the allowlist (random._os) runs, but sees only the jail: no
    host canary, no /root, /home, /proc, /usr/local, and no host process."""
    path, secret = canary
    code = f"""
import random
os = random._os
print("ROOT", sorted(os.listdir("/")))
print("USR", sorted(os.listdir("/usr")))
for p in ({str(path)!r}, "/root", "/home", "/proc/1/environ", "/etc/shadow"):
    try:
        print("READ", p, open(p).read() if not os.path.isdir(p) else os.listdir(p))
    except OSError as e:
        print("ERR", p, type(e).__name__)
try:
    print("SYSTEM", os.system("cat {path} /etc/shadow; ls /root /home"))
except Exception as e:
    print("SYSTEM-ERR", type(e).__name__)
"""
    res = pybox(code, "--timeout", "10")
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    out = res.data["stdout"]
    root = eval(out.split("ROOT ", 1)[1].splitlines()[0])
    usr = eval(out.split("USR ", 1)[1].splitlines()[0])
    for name in ("root", "home", "proc", "sys", "var", "boot"):
        assert name not in root, (name, root)
    assert "local" not in usr, usr
    assert "READ" not in out, res
    assert secret not in res.stdout and secret not in res.stderr


def test_syntax_error_rejected_with_line(pybox):
    """Invariant: a SyntaxError is reported before running: status rejected, error.type
    SyntaxError, error.line the offending line, exit 126, nothing ran."""
    code = "print('RAN')\nx = 1\ndef broken(:\n    pass\n"
    res = pybox(code, "--timeout", "5")
    assert res.data is not None, res
    assert res.data["status"] == "rejected", res
    assert res.status == 126, res
    assert res.data["error"]["type"] == "SyntaxError", res
    assert res.data["error"]["line"] == 3, res
    assert "RAN" not in res.data["stdout"], res
    assert "main.py" in res.data["stderr"], res


def test_documented_stdin_example(pybox, tmp_path):
    """Invariant: the documented example `data = sys.stdin.read(); print(data.upper())` works
    with --stdin FILE."""
    f = tmp_path / "input.txt"
    f.write_text("hello pybox\nsecond line\n")
    res = pybox("import sys; data = sys.stdin.read(); print(data.upper())", "--stdin", str(f),
                "--timeout", "5")
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    assert res.data["stdout"] == "HELLO PYBOX\nSECOND LINE\n\n", res
    assert res.status == 0


def test_allow_all_imports_lifts_only_the_policy(pybox):
    """Invariant: --allow-all-imports lets `import os` run (the policy is lifted), while the
    kernel wall still holds (socket() refused)."""
    code = ("import os, socket\nprint('CWD', os.getcwd())\ntry:\n    socket.socket()\n"
            "    print('SOCKET')\nexcept OSError as e:\n    print('NOSOCKET', type(e).__name__)\n")
    res = pybox(code, "--timeout", "5", allow_all=True)
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    assert "CWD /work" in res.data["stdout"], res
    assert "NOSOCKET PermissionError" in res.data["stdout"], res


@pytest.mark.parametrize("preload", [False, True], ids=["imported", "preloaded"])
def test_pandas_readers_reach_only_the_jail(pybox, canary, preload):
    """Invariant: pandas, allowed by default, reads nothing of the host and no network: a host
    canary's path or file:// URL is not found in the jail's view, and http(s) URLs fail as every
    socket does (no network namespace route, seccomp), whether pandas was preloaded in the
    zygote or imported by the execution."""
    path, secret = canary
    code = f"""
import pandas as pd
for src in ({str(path)!r}, "file://" + {str(path)!r}, "http://127.0.0.1:9/x.csv",
            "http://93.184.216.34/x.csv", "https://example.com/x.csv"):
    try:
        print("READ", src, pd.read_csv(src).to_dict())
    except Exception as e:
        print("ERR", src, type(e).__name__)
"""
    res = pybox(code, "--timeout", "20", *(["--preload"] if preload else []))
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    out = res.data["stdout"]
    assert "READ" not in out, res
    assert out.count("ERR ") == 5, res
    assert f"ERR {path} FileNotFoundError" in out, res
    assert secret not in res.stdout and secret not in res.stderr


@pytest.mark.parametrize("preload", [False, True], ids=["imported", "preloaded"])
def test_matplotlib_font_paths_reach_only_the_jail(pybox, canary, preload):
    """Invariant: matplotlib, allowed by default, opens nothing of the host: a host canary
    given as a font, an rc file or an image is not found, a font search of its directory finds
    nothing, every font of the font list (built in the jail) is under /usr/share, and the
    subprocess module it holds runs nothing (the view has no host binaries)."""
    path, secret = canary
    code = f"""
import matplotlib
import matplotlib.font_manager as fm
import matplotlib.pyplot as plt
C, D = {str(path)!r}, {str(path.parent)!r}
def attempt(name, fn):
    try:
        print("GOT", name, repr(fn())[:300])
    except Exception as e:
        print("ERR", name, type(e).__name__)
attempt("addfont", lambda: fm.fontManager.addfont(C))
attempt("get_font", lambda: fm.get_font(C))
attempt("search", lambda: fm.findSystemFonts(fontpaths=[D]))
attempt("rc_file", lambda: matplotlib.rc_file(C))
attempt("imread", lambda: plt.imread(C))
def text():
    plt.figure().text(0.5, 0.5, "x", fontproperties=fm.FontProperties(fname=C))
    plt.savefig("t.png")
attempt("draw", text)
attempt("subprocess", lambda: matplotlib.subprocess.run(["cat", C], capture_output=True))
fonts = [f.fname for f in fm.fontManager.ttflist + fm.fontManager.afmlist]
print("FONTS", len(fonts), [f for f in fonts if not f.startswith("/usr/share/")])
"""
    res = pybox(code, "--timeout", "20", *(["--preload"] if preload else []))
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    out = res.data["stdout"]
    got = [line for line in out.splitlines() if line.startswith("GOT ")]
    assert got == ["GOT search []"], res
    for name in ("addfont", "get_font", "rc_file", "imread", "draw", "subprocess"):
        assert f"ERR {name} " in out, (name, res)
    fonts = re.search(r"^FONTS (\d+) (.*)$", out, re.M)
    assert fonts and int(fonts.group(1)) > 10 and fonts.group(2) == "[]", res
    assert secret not in res.stdout and secret not in res.stderr


def test_refusal_says_how_to_allow(pybox):
    """Invariant: a refused import is one line on stderr naming the module and the three ways
    to allow it (a key's --modules, pybox serve --modules, --allow-all-imports), exit 126; a
    relative import, which nothing allows, gets no hint."""
    res = pybox("import os\n", "--timeout", "5", json_out=False)
    assert res.status == 126, res
    assert res.stderr == (
        "ForbiddenImportError: import of 'os' not allowed; to allow it: an API key made with "
        "`pybox keys create --name NAME --modules os`, `pybox serve --modules os` for anonymous "
        "callers, or `pybox run --allow-all-imports` locally\n"), res
    res = pybox("import socket, ctypes\n", "--timeout", "5")
    _rejected(res, ["ctypes", "socket"])
    assert res.data["error"]["message"].startswith(
        "import of 'ctypes', 'socket' not allowed; to allow them: "), res
    assert "--modules ctypes,socket`" in res.data["error"]["message"], res
    res = pybox("from . import x\n", "--timeout", "5")
    _rejected(res, ["."])
    assert res.data["error"]["message"] == "import of '.' not allowed", res
    # Computed at run time: the same words.
    res = pybox("__import__('o' + 's')\n", "--timeout", "5")
    assert res.data["error"]["message"].startswith(
        "import of 'os' not allowed; to allow it: "), res
    # Many modules: the hint says MODULES rather than a list nobody types.
    res = pybox("".join(f"import mod{i}\n" for i in range(12)), "--timeout", "5")
    assert "`pybox serve --modules MODULES`" in res.data["error"]["message"], res


def test_file_modules_reach_only_the_jail(pybox, canary):
    """Invariant: the file and archive modules allowed by default (pathlib, glob, tempfile,
    zipfile, logging) see only the jail's view and write only the cell's tmpfs: no host
    canary, no /home or /root, a zip entry named ../../ lands below the extraction directory,
    and logging's network handlers fail as every socket does."""
    path, secret = canary
    code = f"""
import glob, logging, logging.handlers, pathlib, tempfile, zipfile
C = pathlib.Path({str(path)!r})
def attempt(name, fn):
    try:
        print("GOT", name, repr(fn())[:200])
    except Exception as e:
        print("ERR", name, type(e).__name__)
attempt("read", C.read_text)
attempt("exists", lambda: [C.exists(), C.parent.exists()])
attempt("glob", lambda: glob.glob("/home/*") + glob.glob("/root/*") + glob.glob(str(C.parent) + "/*"))
attempt("iterdir", lambda: sorted(p.name for p in pathlib.Path("/").iterdir()))
attempt("tempdir", lambda: tempfile.mkdtemp().startswith("/tmp/"))
attempt("write-usr", lambda: pathlib.Path("/usr/x").write_text("x"))
with zipfile.ZipFile("a.zip", "w") as z:
    z.writestr("../../evil.txt", "x")
with zipfile.ZipFile("a.zip") as z:
    z.extractall("out")
attempt("zip", lambda: sorted(str(p) for p in pathlib.Path("out").rglob("*")))
attempt("evil", lambda: [pathlib.Path("/evil.txt").exists(), pathlib.Path("/work/evil.txt").exists()])
def socket_handler():
    h = logging.handlers.SocketHandler("127.0.0.1", 9)
    h.createSocket()
    return h.sock
attempt("socket", socket_handler)
attempt("syslog", lambda: logging.handlers.SysLogHandler(address=("127.0.0.1", 514)))
"""
    res = pybox(code, "--timeout", "20")
    assert res.data is not None, res
    assert res.data["status"] == "ok", res
    out = res.data["stdout"]
    assert "ERR read FileNotFoundError" in out, res
    assert "GOT exists [False, False]" in out, res
    assert "GOT glob []" in out, res
    root = eval(out.split("GOT iterdir ", 1)[1].splitlines()[0])
    for name in ("root", "home", "proc", "sys", "var", "boot"):
        assert name not in root, (name, root)
    assert "GOT tempdir True" in out, res
    assert "ERR write-usr " in out, res
    assert "GOT zip ['out/evil.txt']" in out, res
    assert "GOT evil [False, False]" in out, res
    assert "GOT socket None" in out or "ERR socket " in out, res
    assert "ERR syslog PermissionError" in out, res
    assert secret not in res.stdout and secret not in res.stderr
