"""`cmake --install` in Debian's layout, as docs/deploy.md says to do it: a tree configured with
-DCMAKE_INSTALL_PREFIX=/usr, built (pybox and libpybox, without sanitizers) and installed to a
temporary DESTDIR holds the binary in usr/bin, libpybox with its soname in
usr/lib/<multiarch>/, the headers in usr/include/pybox/, libpybox.pc in
usr/lib/<multiarch>/pkgconfig/ (which pkg-config reads), the systemd unit in
usr/lib/systemd/system/ and the docs and deploy/ examples in usr/share/doc/pybox/; a small C
program built with pkg-config's flags links against the installed library and runs, and the
installed pybox runs Python for it."""
import os
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 600

PROGRAM = r"""
#include <pybox/pybox.h>
#include <pybox/version.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    const char *v = pybox_version();
    printf("libpybox %s\n", v);
    return strcmp(v, PYBOX_VERSION_STRING) == 0 ? 0 : 1;
}
"""


def sh(argv, **kw):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT,
                       stdin=subprocess.DEVNULL, **kw)
    assert p.returncode == 0, f"{argv} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return p.stdout


def plain_env():
    """No sanitizer or pybox settings of the ctest run leak into the build or the programs."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PYBOX", "ASAN_", "LSAN_", "UBSAN_", "PKG_CONFIG"))}


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    build, dest = tmp / "build", tmp / "dest"
    env = plain_env()
    sh(["cmake", "-S", str(REPO), "-B", str(build), "-G", "Ninja",
        "-DCMAKE_INSTALL_PREFIX=/usr", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"], env=env)
    sh(["cmake", "--build", str(build), "-j2", "--target", "pybox", "libpybox"], env=env)
    sh(["cmake", "--install", str(build)], env={**env, "DESTDIR": str(dest)})
    return dest


def multiarch():
    return sh(["gcc", "-print-multiarch"]).strip()


def test_the_files_are_where_debian_expects_them(staged):
    usr = staged / "usr"
    lib = usr / "lib" / multiarch()
    assert os.access(usr / "bin" / "pybox", os.X_OK)
    real = lib / "libpybox.so.0.1.0"
    assert real.is_file() and not real.is_symlink()
    assert os.readlink(lib / "libpybox.so.0") == "libpybox.so.0.1.0"
    assert os.readlink(lib / "libpybox.so") == "libpybox.so.0"
    assert "(SONAME)             Library soname: [libpybox.so.0]" in sh(["readelf", "-d",
                                                                          str(real)])
    assert (usr / "include" / "pybox" / "pybox.h").is_file()
    assert (usr / "include" / "pybox" / "version.h").is_file()
    assert (lib / "pkgconfig" / "libpybox.pc").is_file()
    # The unit as shipped: with the prefix /usr its paths are already the install's.
    unit = usr / "lib" / "systemd" / "system" / "pybox.service"
    assert unit.read_text() == (REPO / "deploy" / "pybox.service").read_text()
    assert oct(unit.stat().st_mode & 0o777) == "0o644"
    doc = usr / "share" / "doc" / "pybox"
    for f in ("README.md", "deploy.md", "api.md", "client.md", "mcp.md", "design/cgroups.md",
              "examples/pybox.service", "examples/pybox.env.example", "examples/nginx.conf",
              "examples/haproxy.cfg", "examples/Dockerfile", "examples/k8s/proxy.yaml",
              "examples/k8s/pybox-hardened.yaml"):
        assert (doc / f).is_file(), f
    # Nothing landed outside usr/ (no /etc, no /usr/local).
    assert sorted(p.name for p in staged.iterdir()) == ["usr"]
    assert not (usr / "local").exists()


def test_a_program_builds_and_runs_against_the_installed_libpybox(staged, tmp_path):
    lib = staged / "usr" / "lib" / multiarch()
    env = {**plain_env(), "PKG_CONFIG_PATH": str(lib / "pkgconfig")}
    flags = shlex.split(sh(["pkg-config", "--cflags", "--libs", "libpybox"], env=env))
    # libpybox.pc is relocatable: its paths are the staged tree's.
    incdirs = [Path(f[2:]).resolve() for f in flags if f.startswith("-I")]
    libdirs = [Path(f[2:]).resolve() for f in flags if f.startswith("-L")]
    assert incdirs == [staged / "usr" / "include"] and libdirs == [lib], flags
    assert "-lpybox" in flags, flags
    assert sh(["pkg-config", "--modversion", "libpybox"], env=env).strip() == "0.1.0"
    src = tmp_path / "version.c"
    src.write_text(PROGRAM)
    exe = tmp_path / "version"
    sh(["cc", str(src), "-o", str(exe), *flags], env=env)
    needed = sh(["readelf", "-d", str(exe)])
    assert "Shared library: [libpybox.so.0]" in needed, needed
    run_env = {**plain_env(), "LD_LIBRARY_PATH": str(lib)}
    assert sh([str(exe)], env=run_env) == "libpybox 0.1.0\n"
    # And libpybox's local mode with the installed pybox: Python runs.
    hello = tmp_path / "hello"
    sh(["cc", str(REPO / "examples" / "c" / "hello.c"), "-o", str(hello), *flags], env=env)
    out = sh([str(hello)], env={**run_env, "PYBOX_BIN": str(staged / "usr" / "bin" / "pybox")})
    assert out == "Hello from pybox\n42\n", out


def test_the_units_paths_follow_the_install_prefix(staged, tmp_path):
    """Installed with another prefix than the configured one (`cmake --install --prefix`),
    the unit runs that prefix's binary and names its docs."""
    build = staged.parent / "build"
    dest = tmp_path / "dest"
    sh(["cmake", "--install", str(build), "--prefix", "/opt/pybox"],
       env={**plain_env(), "DESTDIR": str(dest)})
    unit = (dest / "opt/pybox/lib/systemd/system/pybox.service").read_text()
    assert "\nExecStart=/opt/pybox/bin/pybox serve\n" in unit, unit
    assert "\nDocumentation=file:///opt/pybox/share/doc/pybox/deploy.md\n" in unit, unit
    assert "/usr/bin/pybox" not in unit and "/usr/share/doc" not in unit
    assert os.access(dest / "opt/pybox/bin/pybox", os.X_OK)
