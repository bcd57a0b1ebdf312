#!/usr/bin/python3
"""The pybox soak: many mixed executions through one real `pybox serve`, then proof that the
server holds no more than its pools allow.

    bench/soak.py [--n 10000] [--clients 4] [--bin build/bench/pybox] [--spares 2:6]
                  [--slots 5] [--recycle EXECS:SECONDS] [--settle 60] [--seed 1] [--keep]

Starts its own `pybox serve` on 127.0.0.1:0 with a fresh data directory in a temporary
directory and an admin key (no rate limits, quotas or import allowlist), and sends --n requests
from --clients threads, each on a kept-alive connection. The mix: prints, exceptions,
sys.exit(3), wall timeouts (sleeping and spinning), memory kills (with a request's memory_mb and
with the server's default), forks and threads left running at exit, returned files, numpy,
stdin, input files, main mode, syntax errors; /v1/execute as JSON and as multipart/form-data,
and the compatible /execute with stdin_data, attachments and return_files. Every answer is
checked against what its request must get (/v1/execute: 200 with the result status; /execute:
200 success, or 400 RuntimeError/TimeoutError for a failed execution, as the documented
contract says); anything else is an unexpected answer.

Before and after the run, once the server is idle (polled: /metrics pybox_cells_busy 0, no
waiter, the warm pool back at its target, and two snapshots alike; --settle seconds at most), it
records the processes of the server's jail, the mounts of the server, of the zygote and of the
cells, the server's cgroups, its fds and RSS, and the files under the data directory and /tmp,
and checks the after figures against the bounds of the pools (printed beside them). Exit status
1 when a bound is broken, an answer was unexpected, the server did not settle, did not exit 0 on
SIGTERM or left something behind; 0 otherwise. Prints a table, then one JSON line.

Ctrl-C or SIGTERM stops the server (exit status 130) and removes the temporary directory; if
the bench is killed outright the server still gets SIGTERM, but /tmp/pybox-bench-* stays.
"""
import argparse
import base64
import collections
import hashlib
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MIB = 1 << 20
# pybox serve runs one engine (a zygote, its warm pool, its cgroup pool) per trust class:
# anonymous callers and key holders.
ENGINES = 2
CGROUP_POOL_EXTRA = 8  # cell cgroups kept beyond --spares MAX (src/engine/cells.c)
RSS_SLACK_KB = 32 * 1024
FD_SLACK = 4


# ---------------------------------------------------------------------------------------------
# The mix. Each kind makes the request of number i and checks its answer: check(status, body)
# returns (outcome, problem or None); the outcome is "HTTP-status result-status".


def v1_json(**fields):
    return "/v1/execute", json.dumps(fields).encode(), "application/json"


def compat_json(**fields):
    return "/execute", json.dumps(fields).encode(), "application/json"


def b64(data):
    return base64.b64encode(data).decode()


def v1_expect(status, pred=None):
    def check(http, body):
        if not isinstance(body, dict) or not isinstance(body.get("status"), str):
            return "%d (not a result)" % http, "no result object"
        outcome = "%d %s" % (http, body["status"])
        if http != 200:
            return outcome, "HTTP %d" % http
        if body["status"] != status:
            return outcome, "expected %s" % status
        problem = pred(body) if pred else None
        return outcome, problem

    return check


def compat_expect(http_want, etype=None, pred=None):
    def check(http, body):
        if not isinstance(body, dict):
            return "%d (not JSON)" % http, "not JSON"
        if body.get("status") == "success":
            outcome = "%d success" % http
        else:
            outcome = "%d %s" % (http, (body.get("error_details") or {}).get("type"))
        if http != http_want:
            return outcome, "expected HTTP %d" % http_want
        if etype is not None and (body.get("error_details") or {}).get("type") != etype:
            return outcome, "expected %s" % etype
        problem = pred(body) if pred else None
        return outcome, problem

    return check


def stdout_is(want):
    def pred(b):
        got = b.get("stdout")
        return None if got == want else "stdout %r" % (got or "")[:200]

    return pred


def compat_stdout_is(want):
    def pred(b):
        got = (b.get("execution_details") or {}).get("stdout")
        return None if got == want else "stdout %r" % (got or "")[:200]

    return pred


def returned(files, name, want):
    f = (files or {}).get(name) or {}
    data = f.get("content_base64")
    if data is None or base64.b64decode(data) != want:
        return "returned %s: %r" % (name, str(f)[:200])
    return None


FORKS_LEFT = """\
import os, time
for _ in range(3):
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(60)
    os._exit(0)
print('forked')
"""

THREADS_LEFT = """\
import threading, time
for _ in range(3):
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
def spin():
    while True:
        pass
threading.Thread(target=spin, daemon=True).start()
print('threads', threading.active_count())
"""


class Kind:
    def __init__(self, name, weight, make, check):
        self.name, self.weight, self.make, self.check = name, weight, make, check


def make_kinds():
    k = []

    def add(name, weight, make, check):
        k.append(Kind(name, weight, make, check))

    add("ok print", 3, lambda i: v1_json(code="print('ok', %d)" % i),
        lambda i: v1_expect("ok", stdout_is("ok %d\n" % i)))
    add("exception", 1,
        lambda i: v1_json(code="print('before')\nraise ValueError('boom %d')" % i),
        lambda i: v1_expect("error", lambda b: None if (b.get("error") or {}).get("type") ==
                            "ValueError" and b.get("stdout") == "before\n" else "not ValueError"))
    add("sys.exit(3)", 1, lambda i: v1_json(code="import sys\nprint('bye')\nsys.exit(3)"),
        lambda i: v1_expect("error", lambda b: None if b.get("exit_code") == 3 else
                            "exit_code %r" % b.get("exit_code")))
    add("timeout sleep", 0.4, lambda i: v1_json(code="import time\ntime.sleep(30)", timeout=0.5),
        lambda i: v1_expect("timeout"))
    add("timeout spin", 0.4, lambda i: v1_json(code="while True:\n    pass", timeout=0.5),
        lambda i: v1_expect("timeout"))
    add("memory memory_mb", 0.4,
        lambda i: v1_json(code="b = b'x' * (160 << 20)\nprint(len(b))", memory_mb=64),
        lambda i: v1_expect("memory_limit"))
    add("memory default", 0.3,
        lambda i: v1_json(code="b = b'x' * (320 << 20)\nprint(len(b))"),
        lambda i: v1_expect("memory_limit"))
    add("forks left", 1, lambda i: v1_json(code=FORKS_LEFT),
        lambda i: v1_expect("ok", stdout_is("forked\n")))
    add("threads left", 1, lambda i: v1_json(code=THREADS_LEFT),
        lambda i: v1_expect("ok", stdout_is("threads 5\n")))
    add("return_files", 1,
        lambda i: v1_json(code="open('out.txt', 'w').write('r%d')\n"
                               "open('b.bin', 'wb').write(bytes(range(256)) * 16)\nprint(1)" % i,
                          return_files=["out.txt", "b.bin", "absent.txt"]),
        lambda i: v1_expect("ok", lambda b: returned(b.get("files"), "out.txt",
                                                     b"r%d" % i) or
                            returned(b.get("files"), "b.bin", bytes(range(256)) * 16) or
                            (None if "error" in (b["files"].get("absent.txt") or {})
                             else "absent.txt")))
    add("numpy", 1,
        lambda i: v1_json(code="import numpy as np\nprint(int(np.arange(%d).sum()))" % (i % 997)),
        lambda i: v1_expect("ok", stdout_is("%d\n" % sum(range(i % 997)))))
    add("stdin", 1,
        lambda i: v1_json(code="import sys\nprint(sys.stdin.read().upper(), end='')",
                          stdin="line %d\n" % i),
        lambda i: v1_expect("ok", stdout_is("LINE %d\n" % i)))
    blob = bytes(range(256)) * 257
    blob_sha = hashlib.sha256(blob).hexdigest()
    add("input files", 0.5,
        lambda i: v1_json(code="import hashlib\nd = open('in.bin', 'rb').read()\n"
                               "print(len(d), hashlib.sha256(d).hexdigest())",
                          files=[{"name": "in.bin", "content_base64": b64(blob)}]),
        lambda i: v1_expect("ok", stdout_is("%d %s\n" % (len(blob), blob_sha))))
    add("main mode", 0.5,
        lambda i: v1_json(code="def main():\n    return {'i': %d}\n" % i, main=True),
        lambda i: v1_expect("ok", lambda b: None if b.get("result") == {"i": i} else
                            "result %r" % b.get("result")))
    add("syntax error", 0.3, lambda i: v1_json(code="def f(:\n    pass\n"),
        lambda i: v1_expect("rejected", lambda b: None if (b.get("error") or {}).get("type") ==
                            "SyntaxError" else "not SyntaxError"))

    def multipart_make(i):
        body, ctype = harness.multipart(
            [("code", "import sys\nd = open('data.bin', 'rb').read()\n"
                      "open('copy.bin', 'wb').write(d[::-1])\n"
                      "print(len(d), sys.stdin.read())"),
             ("stdin", "mp%d" % i), ("return_files", "copy.bin")],
            [("files", "data.bin", blob[:4096])])
        return "/v1/execute", body, ctype

    add("multipart", 1, multipart_make,
        lambda i: v1_expect("ok", lambda b: (None if b.get("stdout") == "4096 mp%d\n" % i
                                             else "stdout %r" % b.get("stdout")) or
                            returned(b.get("files"), "copy.bin", blob[:4096][::-1])))
    add("/execute ok", 1, lambda i: compat_json(code="print('c', %d)" % i),
        lambda i: compat_expect(200, pred=compat_stdout_is("c %d\n" % i)))
    add("/execute stdin_data", 0.5,
        lambda i: compat_json(code="print(input()[::-1])", stdin_data="abc%d\n" % i),
        lambda i: compat_expect(200, pred=compat_stdout_is(("abc%d" % i)[::-1] + "\n")))

    def attach_check(i):
        def pred(b):
            d = b.get("execution_details") or {}
            if d.get("stdout") != "a%d b\n" % i:
                return "stdout %r" % d.get("stdout")
            return returned(d.get("output_files"), "joined.txt", b"a%d|b" % i)

        return compat_expect(200, pred=pred)

    add("/execute attachments", 1,
        lambda i: compat_json(
            code="a = open('a.txt').read()\nb = open('b.txt').read()\n"
                 "open('joined.txt', 'w').write(a + '|' + b)\nprint(a, b)",
            attachments=[{"filename": "a.txt", "content_base_64": b64(b"a%d" % i)},
                         {"filename": "b.txt", "content_base_64": b64(b"b")}],
            return_files=["joined.txt"]),
        attach_check)
    add("/execute exception", 0.5, lambda i: compat_json(code="1/0"),
        lambda i: compat_expect(400, "RuntimeError"))
    add("/execute sys.exit(3)", 0.3, lambda i: compat_json(code="import sys\nsys.exit(3)"),
        lambda i: compat_expect(400, "RuntimeError", lambda b: None if (
            (b.get("error_details") or {}).get("execution_details") or {}).get("exit_code") == 3
            else "exit_code"))
    add("/execute timeout", 0.2,
        lambda i: compat_json(code="import time\ntime.sleep(30)", timeout=0.5),
        lambda i: compat_expect(400, "TimeoutError"))
    add("/execute script", 0.3,
        lambda i: compat_json(script="def main():\n    print('s')\n    return [%d]\n" % i),
        lambda i: compat_expect(200, pred=lambda b: None if b.get("stdout") == "s\n" and
                                b.get("result") in ([i], json.dumps([i])) else
                                "result %r stdout %r" % (b.get("result"), b.get("stdout"))))
    return k


# ---------------------------------------------------------------------------------------------
# What the server holds


def walk_files(top, max_depth=None, skip=()):
    """(files, bytes) under top, not following links; depth-limited when max_depth is set."""
    n = size = 0
    top_depth = top.rstrip("/").count("/")
    for dirpath, dirnames, filenames in os.walk(top):
        if max_depth is not None and dirpath.count("/") - top_depth >= max_depth:
            dirnames[:] = []
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        for f in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            n += 1
            size += st.st_size
    return n, size


def tmp_jail_owned(skip):
    """Entries of /tmp (two levels deep) owned by a uid of the jail's range."""
    out = []
    for dirpath, dirnames, filenames in os.walk("/tmp"):
        if dirpath.count("/") >= 3:
            dirnames[:] = []
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            try:
                uid = os.lstat(p).st_uid
            except OSError:
                continue
            if harness.JAIL_UID_MIN <= uid <= harness.JAIL_UID_MAX:
                out.append(p)
    return out


def mount_points(pid):
    try:
        with open("/proc/%d/mountinfo" % pid) as f:
            return [line.split()[4] for line in f]
    except OSError:
        return []


def start_time(pid):
    """The start time of a process in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def snapshot(srv):
    """What the server holds now."""
    s = {}
    procs = harness.jail_processes(srv.pid, srv.userns)
    zyg = [p for p in procs if p["name"] == "pybox-zygote"]
    s["jail_processes"] = len(procs)
    s["zygotes"] = len(zyg)
    s["jail_by_name"] = dict(collections.Counter("%s uid+%d" % (p["name"], p["uid"] -
                                                                 harness.JAIL_UID_MIN)
                                                 for p in procs))
    # The newest zygote is the current one; an older one is retired and should live only while
    # a spare forked from it is still in the pool (src/engine/pool.c).
    zyg.sort(key=lambda p: start_time(p["pid"]))
    cells_of = collections.Counter(p["ppid"] for p in procs)
    retired = zyg[:-ENGINES]
    s["retired_zygotes_with_spares"] = sum(1 for z in retired if cells_of[z["pid"]])
    s["spares_of_retired_zygotes"] = sum(cells_of[z["pid"]] for z in retired)
    zmnt = {p["mntns"] for p in zyg}
    zmounts = [harness.count_lines("/proc/%d/mountinfo" % p["pid"]) for p in zyg]
    s["zygote_mounts"] = max([m for m in zmounts if m is not None], default=None)
    cell_ns = {}
    for p in procs:
        if p["mntns"] is not None and p["mntns"] not in zmnt and p["mntns"] not in cell_ns:
            cell_ns[p["mntns"]] = harness.count_lines("/proc/%d/mountinfo" % p["pid"])
    s["cell_mount_namespaces"] = len(cell_ns)
    s["cell_mounts_max"] = max([m for m in cell_ns.values() if m is not None], default=0)
    s["_server_mount_points"] = mount_points(srv.pid)
    s["server_mounts"] = len(s["_server_mount_points"])
    cg = collections.Counter()
    parents = collections.Counter()
    for parent in harness.server_cgroups(srv.pid):
        h = harness.hierarchy_of(parent)
        parents[h] += 1
        cg[h] += len(harness.list_subdirs(parent))
    s["cgroup_parents"] = dict(parents)
    s["cgroup_cells"] = dict(cg)
    s["cgroup_cells_max"] = max(cg.values(), default=0)
    fds = harness.fd_targets(srv.pid) or []
    s["server_fds"] = len(fds)
    s["server_fds_deleted"] = sum(1 for t in fds if t.endswith("(deleted)"))
    s["server_fds_tmp"] = sum(1 for t in fds if t.startswith("/tmp/") and
                              not t.startswith(srv.tmp + "/"))
    s["server_rss_kb"] = harness.vm_rss_kb(srv.pid)
    s["server_threads"] = harness.threads_of(srv.pid)
    s["data_files"], s["data_bytes"] = walk_files(srv.data_dir)
    try:
        s["tmp_entries"] = len(os.listdir("/tmp"))
    except OSError:
        s["tmp_entries"] = None
    s["tmp_jail_owned"] = len(tmp_jail_owned({srv.tmp}))
    try:
        m = srv.metrics()
    except OSError:
        m = {}
    s["cells_idle"] = int(m.get("pybox_cells_idle", -1))
    s["pool_target"] = int(m.get("pybox_pool_target", -1))
    s["cells_busy"] = int(m.get("pybox_cells_busy", -1))
    s["queue_waiting"] = int(m.get("pybox_queue_waiting", -1))
    s["_metrics"] = m
    return s


STABLE_KEYS = ("jail_processes", "cgroup_cells_max", "server_fds", "cell_mount_namespaces",
               "cells_idle")


def settle(srv, deadline_s):
    """Poll until the server is idle: no busy cell, no waiter, the pool at its target and two
    snapshots 0.3 s apart alike. Returns (snapshot, seconds, settled)."""
    t0 = time.monotonic()
    prev = None
    while True:
        s = snapshot(srv)
        idle = (s["cells_busy"] == 0 and s["queue_waiting"] == 0 and
                s["cells_idle"] >= s["pool_target"] >= 0)
        key = tuple(s[k] for k in STABLE_KEYS)
        if idle and prev == key:
            return s, time.monotonic() - t0, True
        prev = key if idle else None
        if time.monotonic() - t0 > deadline_s:
            return s, time.monotonic() - t0, False
        time.sleep(0.3)


def bounds(before, after, spares_max):
    """[(measure, bound text, ok)] for the after snapshot."""
    idle = max(after["cells_idle"], 0)
    out = []

    def check(name, value, limit, text):
        out.append((name, text, value is not None and limit is not None and value <= limit))

    z_limit = ENGINES + after["retired_zygotes_with_spares"]
    check("zygotes", after["zygotes"], z_limit,
          "<= %d (one per trust class) + retired zygotes that still have a spare = %d" % (
              ENGINES, z_limit))
    check("idle spares (metric)", after["cells_idle"], ENGINES * spares_max,
          "<= %d x spares max = %d" % (ENGINES, ENGINES * spares_max))
    check("jail_processes", after["jail_processes"], after["zygotes"] + 2 * idle,
          "<= zygotes + 2 x idle spares = %d (a cell and its job each)" %
          (after["zygotes"] + 2 * idle))
    check("cell_mount_namespaces", after["cell_mount_namespaces"], idle,
          "<= idle spares = %d" % idle)
    check("cell_mounts_max", after["cell_mounts_max"], max(before["cell_mounts_max"], 0) or None,
          "<= before (%s)" % before["cell_mounts_max"])
    check("zygote_mounts", after["zygote_mounts"], before["zygote_mounts"],
          "<= before (%s)" % before["zygote_mounts"])
    check("server_mounts", after["server_mounts"], before["server_mounts"],
          "<= before (%d; the host's namespace)" % before["server_mounts"])
    cg_limit = ENGINES * (2 * spares_max + CGROUP_POOL_EXTRA)
    check("cgroup_cells_max", after["cgroup_cells_max"], cg_limit,
          "<= %d x (2 x spares max + %d) = %d per hierarchy (per engine: a pool of max + %d, "
          "max held by spares)" % (ENGINES, CGROUP_POOL_EXTRA, cg_limit, CGROUP_POOL_EXTRA))
    check("cgroup parents", sum(after["cgroup_parents"].values()),
          sum(before["cgroup_parents"].values()),
          "<= before (%d)" % sum(before["cgroup_parents"].values()))
    fd_limit = (before["server_fds"] + max(0, after["cells_idle"] - before["cells_idle"]) +
                2 * max(0, after["zygotes"] - before["zygotes"]) + FD_SLACK)
    check("server_fds", after["server_fds"], fd_limit,
          "<= before + 1 x more spares + 2 x more zygotes + %d = %d" % (FD_SLACK, fd_limit))
    check("server_fds_deleted", after["server_fds_deleted"], before["server_fds_deleted"],
          "<= before (%d)" % before["server_fds_deleted"])
    check("server_fds_tmp", after["server_fds_tmp"], before["server_fds_tmp"],
          "<= before (%d)" % before["server_fds_tmp"])
    rss_limit = (before["server_rss_kb"] or 0) + RSS_SLACK_KB
    check("server_rss_kb", after["server_rss_kb"], rss_limit,
          "<= before + %d MiB = %d kB" % (RSS_SLACK_KB // 1024, rss_limit))
    check("data_files", after["data_files"], before["data_files"],
          "<= before (%d); bytes grow with the audit table" % before["data_files"])
    check("tmp_jail_owned", after["tmp_jail_owned"], before["tmp_jail_owned"],
          "<= before (%d)" % before["tmp_jail_owned"])
    return out


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000, help="executions (default 10000)")
    ap.add_argument("--clients", type=int, default=4, help="client threads (default 4)")
    ap.add_argument("--bin", default=harness.DEFAULT_BIN, help="the pybox binary")
    ap.add_argument("--spares", default="2:6", help="the server's --spares (default 2:6)")
    ap.add_argument("--slots", type=int, default=5, help="the server's --max-concurrency")
    ap.add_argument("--recycle", help="the server's --recycle EXECS:SECONDS (default: its own, "
                    "5000:3600)")
    ap.add_argument("--settle", type=float, default=60.0,
                    help="seconds to wait for the server to be idle (default 60)")
    ap.add_argument("--seed", type=int, default=1, help="of the order of the mix")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit("no pybox binary at %s: cmake -S . -B build/bench -G Ninja "
                 "-DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build/bench" % args.bin)
    spares_max = int(args.spares.split(":")[1])
    harness.on_signals_unwind()
    kinds = make_kinds()
    rng = random.Random(args.seed)
    plan = rng.choices(range(len(kinds)), weights=[k.weight for k in kinds], k=args.n)

    print(harness.machine_line())
    ys = harness.cow_yardstick(args.bin)
    print(harness.yardstick_line(ys))
    flags = ["--spares", args.spares, "--max-concurrency", str(args.slots), "--queue",
             "%d:30" % max(16, args.clients)]
    if args.recycle:
        flags += ["--recycle", args.recycle]
    report = {"bench": "soak", "n": args.n, "clients": args.clients, "spares": args.spares,
              "slots": args.slots, "cow_yardstick_before": {k: v["faults_per_s"] for k, v in
                                                            ys.items()}}
    failures = []
    srv = harness.Server(args.bin, flags, keep=args.keep)
    with srv:
        print("pybox serve %s (pid %d) %s" % (srv.url, srv.pid, " ".join(flags)))
        before, before_s, ok = settle(srv, args.settle)
        if not ok:
            failures.append("the server was not idle %.0f s after start" % args.settle)
        outcomes = collections.Counter()
        per_kind = collections.defaultdict(collections.Counter)
        latency = collections.defaultdict(list)
        unexpected = []
        lock = threading.Lock()
        it = iter(range(args.n))
        stop = threading.Event()
        done = [0]

        def worker():
            client = harness.Client(srv, timeout=60)
            while not stop.is_set():
                with lock:
                    i = next(it, None)
                if i is None:
                    break
                kind = kinds[plan[i]]
                path, body, ctype = kind.make(i)
                try:
                    status, _, data, dt = client.post(path, body, ctype, srv.admin_key)
                except Exception as e:  # noqa: BLE001 - a connection error is an answer too
                    status, dt, data = None, None, b""
                    outcome, problem = "connection error", repr(e)
                if status is not None:
                    try:
                        outcome, problem = kind.check(i)(status, harness.json_body(data))
                    except (KeyError, TypeError, AttributeError, ValueError) as e:
                        outcome, problem = "%d (malformed)" % status, repr(e)
                with lock:
                    outcomes[outcome] += 1
                    per_kind[kind.name][outcome] += 1
                    if dt is not None:
                        latency[kind.name].append(dt)
                    if problem:
                        unexpected.append({"i": i, "kind": kind.name, "outcome": outcome,
                                           "problem": problem,
                                           "body": data[:300].decode("utf-8", "replace")})
                    done[0] += 1
            client.close()

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.clients)]
        samples = []
        t0 = time.monotonic()
        try:
            for t in threads:
                t.start()
            step = max(1, args.n // 10)
            next_sample = step
            while any(t.is_alive() for t in threads):
                time.sleep(0.5)
                if done[0] >= next_sample:
                    next_sample = (done[0] // step + 1) * step
                    pr = harness.jail_processes(srv.pid)
                    cg = max((len(harness.list_subdirs(p))
                              for p in harness.server_cgroups(srv.pid)), default=0)
                    smp = {"done": done[0], "s": round(time.monotonic() - t0, 1),
                           "rss_kb": harness.vm_rss_kb(srv.pid),
                           "fds": len(harness.fd_targets(srv.pid) or []),
                           "jail_processes": len(pr), "cgroup_cells_max": cg}
                    samples.append(smp)
                    print("  %6d done %7.1f s  rss %6s kB  fds %4d  jail processes %3d  cell "
                          "cgroups %3d  unexpected %d" % (smp["done"], smp["s"], smp["rss_kb"],
                                                          smp["fds"], smp["jail_processes"],
                                                          smp["cgroup_cells_max"],
                                                          len(unexpected)))
        finally:
            stop.set()
            for t in threads:
                t.join(70)
        wall = time.monotonic() - t0
        after, after_s, ok = settle(srv, args.settle)
        if not ok:
            failures.append("the server was not idle %.0f s after the run (busy %d, waiting %d, "
                            "idle %d of target %d)" % (args.settle, after["cells_busy"],
                                                       after["queue_waiting"],
                                                       after["cells_idle"],
                                                       after["pool_target"]))
        checks = bounds(before, after, spares_max)
        m = after["_metrics"]

    # The server is stopped here; what it left is in srv.leftovers.
    print()
    print("%d executions from %d clients in %.1f s: %.1f executions/s; settled in %.1f s "
          "before, %.1f s after" % (sum(outcomes.values()), args.clients, wall,
                                    sum(outcomes.values()) / wall, before_s, after_s))
    print("%-22s %8s %8s  %-8s %s" % ("answers (kind)", "count", "p50 ms", "", "outcomes"))
    for k in kinds:
        if per_kind[k.name]:
            print("  %-20s %8d %8.1f  %-8s %s" % (
                k.name, sum(per_kind[k.name].values()),
                (harness.percentile(latency[k.name], 50) or 0) * 1e3, "",
                ", ".join("%s: %d" % kv for kv in sorted(per_kind[k.name].items()))))
    print("statuses seen: " + ", ".join("%s: %d" % kv for kv in sorted(outcomes.items())))
    print("server: pool executions warm %d, forked %d; zygotes started %d; cgroups created %d, "
          "reused %d; queue timeouts %d" % (
              m.get('pybox_pool_executions_total{cell="warm"}', 0),
              m.get('pybox_pool_executions_total{cell="forked"}', 0),
              m.get("pybox_zygotes_started_total", 0),
              m.get('pybox_cgroups_total{how="created"}', 0),
              m.get('pybox_cgroups_total{how="reused"}', 0),
              m.get("pybox_queue_timeouts_total", 0)))
    print()
    print("%-24s %10s %10s  %-4s %s" % ("held by the server", "before", "after", "", "bound"))
    bound_of = {name: (text, good) for name, text, good in checks}
    rows = ["zygotes", "spares_of_retired_zygotes", "jail_processes", "cell_mount_namespaces",
            "cell_mounts_max", "zygote_mounts", "server_mounts", "cgroup_cells_max", "server_fds",
            "server_fds_deleted", "server_fds_tmp", "server_rss_kb", "server_threads",
            "data_files", "data_bytes", "tmp_entries", "tmp_jail_owned", "cells_idle",
            "pool_target"]
    for name in rows:
        text, good = bound_of.get(name, ("", None))
        print("%-24s %10s %10s  %-4s %s" % (name, before.get(name), after.get(name),
                                            {True: "ok", False: "OVER", None: ""}[good], text))
    print("%-24s %10s %10s  %-4s %s" % ("cgroup cells", before["cgroup_cells"],
                                        after["cgroup_cells"], "", "(per hierarchy)"))
    for name, text, good in checks:
        if name not in rows:
            print("%-24s %21s  %-4s %s" % (name, "", "ok" if good else "OVER", text))
    print("jail processes after: %s" % after["jail_by_name"])
    new_mounts = sorted(set(after["_server_mount_points"]) - set(before["_server_mount_points"]))
    if new_mounts:
        print("server mounts added during the run: %s" % new_mounts[:20])
    broken = [name for name, _, good in checks if not good]
    if broken:
        failures.append("bounds broken: " + ", ".join(broken))
    if unexpected:
        failures.append("%d unexpected answers" % len(unexpected))
        print("unexpected answers (first 10):")
        for u in unexpected[:10]:
            print("  #%d %s: %s (%s) %s" % (u["i"], u["kind"], u["outcome"], u["problem"],
                                            u["body"][:200]))
    if srv.exit_status != 0:
        failures.append("pybox serve exited %s on SIGTERM (expected 0)" % srv.exit_status)
    if srv.leftovers:
        failures.append("left after the server exited: " + "; ".join(srv.leftovers[:10]))
    if sum(outcomes.values()) < args.n:
        failures.append("only %d of %d requests were sent" % (sum(outcomes.values()), args.n))
    if samples and len(samples) > 2:
        first, last = samples[1], samples[-1]
        if last["done"] > first["done"]:
            print("RSS growth during the run: %.1f kB per 1000 executions (samples %d..%d)" % (
                (last["rss_kb"] - first["rss_kb"]) * 1000.0 / (last["done"] - first["done"]),
                first["done"], last["done"]))
    ys_after = harness.cow_yardstick(args.bin)
    print("before: " + harness.yardstick_line(ys))
    print("after:  " + harness.yardstick_line(ys_after))
    print("verdict: %s" % ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    report.update({
        "elapsed_s": round(wall, 1), "exec_per_s": round(sum(outcomes.values()) / wall, 1),
        "statuses": dict(outcomes), "unexpected": len(unexpected),
        "unexpected_first": unexpected[:5],
        "before": {k: v for k, v in before.items() if not k.startswith("_")},
        "after": {k: v for k, v in after.items() if not k.startswith("_")},
        "bounds": {name: {"bound": text, "ok": good} for name, text, good in checks},
        "cow_yardstick_after": {k: v["faults_per_s"] for k, v in ys_after.items()},
        "samples": samples, "server_exit": srv.exit_status, "leftovers": srv.leftovers,
        "failures": failures, "pass": not failures})
    print(json.dumps(report, sort_keys=True))
    return 0 if not failures else 1


if __name__ == "__main__":
    harness.run_main(main)
