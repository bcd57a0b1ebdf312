"""Hello from a pybox sandbox.

Local mode (the `pybox` binary, from PYBOX_BIN or PATH) unless PYBOX_SERVER names a server:
    PYTHONPATH=python PYBOX_BIN=build/pybox /usr/bin/python3 examples/python/hello.py
    PYBOX_SERVER=http://127.0.0.1:8080 /usr/bin/python3 examples/python/hello.py
"""
from pybox import Sandbox

sandbox = Sandbox.from_env()
result = sandbox.run("import sys\nprint('hello from', sys.platform, 'in the sandbox')")
print(f"[{sandbox.mode}] status={result.status} exit_code={result.exit_code}")
print(result.stdout, end="")
raise SystemExit(0 if result.success else 1)
