"""A pybox session: state kept between runs, files in /work, output streamed as it comes.

Local mode (the `pybox` binary, from PYBOX_BIN or PATH) unless PYBOX_SERVER names a server:
    PYTHONPATH=python PYBOX_BIN=build/pybox /usr/bin/python3 examples/python/session.py
    PYBOX_SERVER=http://127.0.0.1:8080 /usr/bin/python3 examples/python/session.py
"""
from pybox import Sandbox

sandbox = Sandbox.from_env()
with sandbox.session() as session:
    session.files.write("prices.csv", "pears,30\napples,12\nplums,7\n")
    session.run("rows = [line.split(',') for line in open('prices.csv').read().split()]")
    r = session.run("total = sum(int(n) for _, n in rows)\ntotal")
    print(f"[{sandbox.mode}] call {r.execution_count}: total = {r.value.text}")
    for event in session.stream("import time\nfor name, n in rows:\n"
                                "    print(name, int(n) * 100 // total, flush=True)\n"
                                "    time.sleep(0.1)"):
        if event.kind == "stdout":
            print("streamed:", event.text, end="")
        elif event.kind == "end":
            print("status:", event.result.status)
