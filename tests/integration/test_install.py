"""libpybox as docs/client.md says to use it: installed to any prefix, `pkg-config --cflags
--libs libpybox` gives that prefix's paths (libpybox.pc is relocatable: moving the whole tree
moves them too) and a C program builds and runs with them; and a program built against the
build tree runs with LD_LIBRARY_PATH and PYBOX_BIN."""
import os
import shlex
import shutil
import subprocess
from pathlib import Path

from conftest import PYBOX, REPO, SLOW

BUILD = Path(PYBOX).parent
HELLO = REPO / "examples" / "c" / "hello.c"
TIMEOUT = 120 * SLOW


def sh(argv, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL, **kw)
    assert p.returncode == 0, f"{argv} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def sanitizer_flags():
    """A sanitized libpybox needs its runtimes first in the program that loads it."""
    needed = sh(["readelf", "-d", str(BUILD / "libpybox.so")])
    return ["-fsanitize=address,undefined"] if "libasan" in needed else []


def pkg_config(pcdir):
    env = {**os.environ, "PKG_CONFIG_PATH": str(pcdir)}
    env.pop("PKG_CONFIG_LIBDIR", None)
    return shlex.split(sh(["pkg-config", "--cflags", "--libs", "libpybox"], env=env))


def build_and_run(tmp, flags, libdir, pybox_bin):
    exe = tmp / "hello"
    sh(["cc", str(HELLO), "-o", str(exe), *flags, *sanitizer_flags()])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYBOX")}
    env.update(LD_LIBRARY_PATH=str(libdir), PYBOX_BIN=str(pybox_bin))
    return sh([str(exe)], env=env)


def test_installed_to_a_prefix(tmp_path):
    prefix = tmp_path / "p"
    sh(["cmake", "--install", str(BUILD), "--prefix", str(prefix)])
    [pc] = prefix.glob("**/pkgconfig/libpybox.pc")
    text = pc.read_text()
    assert "prefix=${pcfiledir}/" in text, text
    assert "/usr/local" not in text, text
    flags = pkg_config(pc.parent)
    incdir = Path(next(f[2:] for f in flags if f.startswith("-I")))
    libdir = Path(next(f[2:] for f in flags if f.startswith("-L")))
    assert (incdir / "pybox" / "pybox.h").is_file(), flags
    assert (libdir / "libpybox.so").exists(), flags
    assert incdir.resolve().is_relative_to(prefix) and libdir.resolve().is_relative_to(prefix)
    out = build_and_run(tmp_path, flags, libdir, prefix / "bin" / "pybox")
    assert out == "Hello from pybox\n42\n", out

    # The whole tree moved elsewhere: the paths follow it.
    moved = tmp_path / "moved"
    shutil.move(str(prefix), str(moved))
    [pc] = moved.glob("**/pkgconfig/libpybox.pc")
    flags = pkg_config(pc.parent)
    libdir = Path(next(f[2:] for f in flags if f.startswith("-L")))
    assert libdir.resolve().is_relative_to(moved), flags
    out = build_and_run(tmp_path, flags, libdir, moved / "bin" / "pybox")
    assert out == "Hello from pybox\n42\n", out


def test_built_against_the_build_tree(tmp_path):
    """docs/client.md: cc prog.c -Iinclude -Lbuild -lpybox, run with LD_LIBRARY_PATH=build and
    PYBOX_BIN=build/pybox."""
    flags = [f"-I{REPO / 'include'}", f"-L{BUILD}", "-lpybox"]
    out = build_and_run(tmp_path, flags, BUILD, BUILD / "pybox")
    assert out == "Hello from pybox\n42\n", out


def tree(root):
    """Every path below root, relative, bytecode caches left out (Python writes them for any
    module it imports, the build backend's too; git ignores them)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if "__pycache__" not in p.parts}


def test_pip_install_leaves_the_source_tree_as_it_was(tmp_path):
    """`pip install ./python`, as the README says, from the checkout itself: the package
    installs and imports, and python/ holds afterwards exactly what it held before (no
    build/, no pybox.egg-info/)."""
    src = REPO / "python"
    before = tree(src)
    venv = tmp_path / "venv"
    sh(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)])
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYBOX") and k not in ("PYTHONPATH", "PIP_INDEX_URL")}
    sh([str(venv / "bin" / "pip"), "install", "--no-build-isolation", "--no-index",
        "--no-cache-dir", "--disable-pip-version-check", str(src)], env=env, cwd=str(tmp_path))
    out = sh([str(venv / "bin" / "python"), "-c",
              "import pybox, sandbox_executor, sys; print(pybox.__file__.startswith(sys.prefix))"],
             env=env, cwd=str(tmp_path))
    assert out == "True\n", out
    after = tree(src)
    assert after == before, {"added": sorted(after - before), "removed": sorted(before - after)}
