#!/usr/bin/python3
"""What preloading a module in the zygote buys and costs: for each preload set, the zygote's
start time (`pybox run --preload` of `pass`, start to exit), its memory, the private memory and
PSS of an idle warm cell (the number the pool's budget is about: at most 2 MB private), and, for
code importing numpy, pandas, matplotlib (plot and savefig to PNG) or scipy.stats, the time of
its import inside the execution and the execution's latency through POST /v1/execute (one
client pausing 50 ms between requests, so a warm cell is ready), against plain /usr/bin/python3
running the same code in the same run, with the ratios.

    bench/preload.py [--pybox PATH] [--requests N] [--starts N] [--sets NAME,...]

PATH defaults to build/bench/pybox (a release build); pybox-bench-cow beside it gives the
machine's copy-on-write yardstick, printed first with the load average. Each preload set is
given to the zygote through PYBOX_PRELOAD_MODULES (src/engine/zygotes.c); "none" is
--no-preload. The machine is shared: every figure is a median of N, and the load is printed.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from harness import (DEFAULT_BIN, JAIL_UID_MIN, Client, Server, cow_yardstick, descendants,
                     machine_line, proc_status, run_main, yardstick_line)

TODAY = "numpy PIL.Image PIL.ImageDraw PIL.ImageFilter"
MPL = "matplotlib.pyplot matplotlib.backends.backend_agg"

# (name, PYBOX_PRELOAD_MODULES or None for --no-preload)
SETS = [
    ("none", None),
    ("numpy+PIL", TODAY),
    ("+pandas", TODAY + " pandas"),
    ("+matplotlib", TODAY + " " + MPL),
    ("+scipy", TODAY + " scipy"),
    ("+scipy.stats", TODAY + " scipy.stats"),
    ("+pandas+matplotlib", TODAY + " pandas " + MPL),
    ("+pandas+matplotlib+scipy", TODAY + " pandas " + MPL + " scipy"),
    ("+all", TODAY + " pandas " + MPL + " scipy.stats"),
]

_TIMED = """import time
t0 = time.perf_counter()
%s
t1 = time.perf_counter()
%s
print("IMPORT_MS %%.3f" %% ((t1 - t0) * 1e3))
"""

# (name, code): each prints IMPORT_MS, the time its imports took.
CODES = [
    ("print(1)", _TIMED % ("pass", "print(1)")),
    ("numpy", _TIMED % ("import numpy as np", "print(np.ones((64, 64)).dot(np.ones(64)).sum())")),
    ("pandas", _TIMED % ("import pandas as pd",
                         "df = pd.DataFrame({'k': [i % 7 for i in range(1000)], "
                         "'v': range(1000)})\nprint(int(df.groupby('k')['v'].sum().sum()))")),
    ("matplotlib", _TIMED % ("import matplotlib.pyplot as plt",
                             "plt.plot([1, 2, 3], [4, 1, 9])\nplt.savefig('x.png')\n"
                             "print(open('x.png', 'rb').read(4))")),
    ("scipy.stats", _TIMED % ("from scipy import stats", "print(stats.norm.cdf(1.0))")),
]

JOB_UID = JAIL_UID_MIN + 1000  # the jail's uid 1000 runs the user's code


def median(values):
    return statistics.median(values) if values else float("nan")


def import_ms(stdout):
    for line in stdout.splitlines():
        if line.startswith("IMPORT_MS "):
            return float(line.split()[1])
    raise RuntimeError("no IMPORT_MS line in %r" % stdout[-500:])


def smaps(pid):
    """{field: kB} of /proc/PID/smaps_rollup, or {} when it is gone."""
    out = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].endswith(":"):
                    out[parts[0][:-1]] = int(parts[1])
    except (OSError, ValueError):
        pass
    return out


def private(fields):
    return fields.get("Private_Dirty", 0) + fields.get("Private_Clean", 0)


def clean_env(extra=None):
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    env.update(extra or {})
    return env


def python3_times(code, runs, tmp):
    """Wall times (s) and import times (ms) of /usr/bin/python3 -I -c code, in a fresh directory,
    with matplotlib's cache directory warm (as any long-lived user's is)."""
    env = clean_env({"HOME": tmp, "MPLBACKEND": "Agg", "MPLCONFIGDIR": os.path.join(tmp, "mpl")})
    walls, imports = [], []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        p = subprocess.run(["/usr/bin/python3", "-I", "-c", code], cwd=tmp, env=env,
                           capture_output=True, text=True, timeout=120)
        dt = time.perf_counter() - t0
        if p.returncode != 0:
            raise RuntimeError("python3 failed: %s" % p.stderr[-1000:])
        if i:  # the first run warms the page cache and matplotlib's font list
            walls.append(dt)
            imports.append(import_ms(p.stdout))
    return walls, imports


def start_times(pybox, modules, runs, tmp):
    """Wall times (s) of `pybox run [--preload] FILE` running `pass`: the zygote's start, the
    one execution and the stop."""
    script = os.path.join(tmp, "pass.py")
    with open(script, "w") as f:
        f.write("pass\n")
    argv = [pybox, "run", script] + (["--preload"] if modules is not None else [])
    env = clean_env({"PYBOX_PRELOAD_MODULES": modules} if modules else None)
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        p = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        out.append(time.perf_counter() - t0)
        if p.returncode != 0:
            raise RuntimeError("pybox run failed: %s" % p.stderr[-1000:])
    return out


class PreloadServer(Server):
    """A bench server whose zygote preloads `modules` (None: --no-preload)."""

    def __init__(self, pybox, modules):
        flags = ["--spares", "2:2", "--max-concurrency", "4"]
        if modules is None:
            flags.append("--no-preload")
        super().__init__(pybox, flags)
        self.modules = modules

    def env(self):
        env = super().env()
        if self.modules:
            env["PYBOX_PRELOAD_MODULES"] = self.modules
        return env


def wait_pool_full(srv, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = srv.metrics()
        idle, target = m.get("pybox_cells_idle", 0), m.get("pybox_pool_target", -1)
        if target > 0 and idle >= target:
            return
        time.sleep(0.05)
    raise RuntimeError("the warm pool did not fill in %d s" % timeout)


def jail_memory(srv):
    """(zygote smaps, [job smaps of each idle warm cell], [cell smaps of each]) of a server."""
    zygote, jobs, cells = {}, [], []
    for pid in descendants(srv.pid):
        f = proc_status(pid)
        if f is None:
            continue
        name = (f.get("Name") or [""])[0]
        uid = int((f.get("Uid") or ["-1"])[0])
        if name == "pybox-zygote" and uid == JAIL_UID_MIN:
            zygote = smaps(pid)
        elif uid == JOB_UID and (f.get("State") or ["?"])[0] == "S":
            jobs.append(smaps(pid))
            parent = int((f.get("PPid") or ["0"])[0])
            cells.append(smaps(parent))
    return zygote, jobs, cells


def measure_set(pybox, name, modules, requests, starts, tmp):
    row = {"name": name, "modules": modules or "(--no-preload)"}
    row["start_ms"] = median(start_times(pybox, modules, starts, tmp)) * 1e3
    with PreloadServer(pybox, modules) as srv:
        client = Client(srv)
        row["codes"] = {}
        for label, code in CODES:
            body = json.dumps({"code": code})
            lat, imp = [], []
            for i in range(requests + 2):
                wait_pool_full(srv)
                status, _, data, dt = client.post("/v1/execute", body, key=srv.admin_key)
                res = json.loads(data)
                if status != 200 or res.get("status") != "ok" or res.get("stderr"):
                    raise RuntimeError("%s under %s: %s %s" % (label, name, status, data[:800]))
                if i >= 2:  # two warm-ups
                    lat.append(dt)
                    imp.append(import_ms(res["stdout"]))
                time.sleep(0.05)
            row["codes"][label] = (median(lat) * 1e3, median(imp))
        # print(1) back to back: the spares drain, so cells fork on demand (a larger zygote has
        # more page tables to copy).
        body = json.dumps({"code": "print(1)"})
        lat = []
        for _ in range(requests * 2):
            status, _, data, dt = client.post("/v1/execute", body, key=srv.admin_key)
            if status != 200 or json.loads(data).get("status") != "ok":
                raise RuntimeError("print(1) under %s: %s %s" % (name, status, data[:800]))
            lat.append(dt)
        row["b2b_ms"] = median(lat) * 1e3
        client.close()
        wait_pool_full(srv)
        zygote, jobs, cells = jail_memory(srv)
    row["zygote_rss_mb"] = zygote.get("Rss", 0) / 1024.0
    row["zygote_pss_mb"] = zygote.get("Pss", 0) / 1024.0
    row["job_private_kb"] = median([private(j) for j in jobs])
    row["job_pss_kb"] = median([j.get("Pss", 0) for j in jobs])
    row["cell_private_kb"] = median([private(c) for c in cells])
    row["idle"] = len(jobs)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pybox", default=DEFAULT_BIN)
    ap.add_argument("--requests", type=int, default=15, help="executions per code and set")
    ap.add_argument("--starts", type=int, default=5, help="`pybox run` starts per set")
    ap.add_argument("--sets", default=",".join(n for n, _ in SETS),
                    help="comma-separated names of the preload sets to measure")
    args = ap.parse_args()
    pybox = os.path.abspath(args.pybox)
    if not os.access(pybox, os.X_OK):
        print("no pybox at %s: build it (cmake --preset release -B build/bench && "
              "cmake --build build/bench)" % pybox, file=sys.stderr)
        return 2
    wanted = args.sets.split(",")
    unknown = [n for n in wanted if n not in dict(SETS)]
    if unknown:
        print("unknown preload set(s): %s" % ", ".join(unknown), file=sys.stderr)
        return 2
    print(machine_line())
    print(yardstick_line(cow_yardstick(pybox)))
    tmp = tempfile.mkdtemp(prefix="pybox-preload-")
    try:
        plain = {}
        for label, code in CODES:
            walls, imps = python3_times(code, args.requests, tmp)
            plain[label] = (median(walls) * 1e3, median(imps))
        rows = [measure_set(pybox, n, m, args.requests, args.starts, tmp)
                for n, m in SETS if n in wanted]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("%-26s %9s %9s %9s %10s %9s %10s %9s" % (
        "preload set", "start ms", "zyg RSS", "zyg PSS", "job priv", "job PSS", "cell priv",
        "b2b p50"))
    for r in rows:
        print("%-26s %9.0f %7.1f M %7.1f M %7.0f kB %6.0f kB %7.0f kB %6.1f ms  (%d idle cells)"
              % (r["name"], r["start_ms"], r["zygote_rss_mb"], r["zygote_pss_mb"],
                 r["job_private_kb"], r["job_pss_kb"], r["cell_private_kb"], r["b2b_ms"],
                 r["idle"]))
    print("(start: `pybox run` of `pass`, the zygote's start included; zyg: the zygote; job: an "
          "idle warm cell's job,\n the pool's 2 MB budget; cell: its cell process; b2b: print(1) "
          "back to back, cells forked on demand)")
    print()
    print("per execution: p50 latency ms / median import ms inside the execution; "
          "ratio = python3 wall / pybox p50")
    labels = [label for label, _ in CODES]
    print("%-26s" % "" + "".join("%22s" % label for label in labels))
    print("%-26s" % "python3 -I -c (wall/imp)" +
          "".join("%13.1f /%7.1f" % plain[label] for label in labels))
    for r in rows:
        print("%-26s" % r["name"] + "".join(
            "%9.1f /%6.1f %4.1fx" % (r["codes"][label][0], r["codes"][label][1],
                                     plain[label][0] / r["codes"][label][0])
            for label in labels))
    base = next((r for r in rows if r["name"] == "numpy+PIL"), None)
    if base is not None:
        print()
        print("against numpy+PIL: import ms saved per execution, kB added per idle job, "
              "ms added to the zygote's start")
        for r in rows:
            if r is base:
                continue
            saved = ", ".join("%s %+.1f" % (label, base["codes"][label][1] - r["codes"][label][1])
                              for label in labels[1:])
            print("  %-24s saved: %s; job private %+.0f kB; start %+.0f ms" % (
                r["name"], saved, r["job_private_kb"] - base["job_private_kb"],
                r["start_ms"] - base["start_ms"]))
    print(machine_line())
    return 0


if __name__ == "__main__":
    run_main(main)
