"""`pip install ./python` works offline with Debian's python3, pip, venv and setuptools, and the
installed package is complete (py.typed included) and runs."""
import os
import shutil
import subprocess

from pybox_integration_conftest import PYBOX, REPO  # loaded by this directory's conftest


def sh(*argv, **kw):
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
                       **kw)
    assert p.returncode == 0, f"{argv} exited {p.returncode}:\n{p.stdout.decode()}"
    return p.stdout.decode()


def test_pip_install_in_a_venv(tmp_path):
    # From a copy, so that the build leaves nothing in the checkout.
    src = tmp_path / "src"
    shutil.copytree(REPO / "python", src, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    venv = tmp_path / "venv"
    sh("/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv))
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYBOX") and k not in ("PYTHONPATH", "PIP_INDEX_URL")}
    sh(py, "-m", "pip", "install", "--no-build-isolation", "--no-index", "--no-cache-dir",
       "--disable-pip-version-check", str(src), env=env)
    out = sh(py, "-c", """
import importlib.resources, pybox, sys
assert pybox.__file__.startswith(sys.prefix), pybox.__file__
assert importlib.resources.files("pybox").joinpath("py.typed").is_file()
r = pybox.Sandbox().run("print(sum(range(10)))")
print(pybox.__version__, r.status, r.stdout.strip())
""", env={**env, "PYBOX_BIN": PYBOX}, cwd=str(tmp_path))
    assert out.split() == ["0.1.0", "ok", "45"]
