#!/usr/bin/python3
"""The pybox benchmark: p50/p99 latency and executions/s of print(1) and of a
numpy script with 1, 2 and 5 concurrent clients back to back, and with one
client pausing 50 ms between requests ("paced": a warm cell is ready, the
latency at light load), through POST /v1/execute and through the engine
directly (bench/engine_bench.c), page faults per execution, private/PSS memory
per idle warm cell, against the per-execution time of bwrap + /usr/bin/python3
in the same run, with the ratios.

The paced runs are also broken down: the server runs with --server-timing, and
the medians of each phase of its Server-Timing header are printed beside the
client's total and what remains of it (the answer's write, the network, the
client), with the context switches of the server's threads per request and,
where `perf` works, the scheduler's wake-ups (and those that cross CPUs),
switches and migrations per request, system-wide and of pybox's processes.
Beside them the machine's yardsticks: the fork floor (pybox-bench-fork) and the
copy-on-write fault cost (pybox-bench-cow), and each paced p50 as a multiple of
the fork floor; and the HTTP floor: a paced GET /healthz with the same client,
what any answer costs on this machine before pybox runs anything.

    bench/http_bench.py [--requests N] [--pybox PATH] [--breakdown]

--breakdown runs only the yardsticks, the paced runs with their breakdown and
the engine's paced runs.  Starts its own `pybox serve` (release build by
default, built or brought up to date first) on a free loopback port with a
temporary data directory and an admin key (no rate limits).
"""
import argparse
import collections
import http.client
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from harness import cow_yardstick, machine_line, yardstick_line  # noqa: E402

# The phases of Server-Timing (docs/api.md, Operations), in order; an answer has `run` or
# `code` and `exit`.
PHASES = ("parse", "auth", "admit", "queue", "charge", "prep", "handoff", "start", "run",
          "code", "exit", "collect", "report", "result", "audit", "answer")
PACED_GAP = 0.05  # s between the paced requests
TARGET_FLOOR_RATIO = 15  # the target: paced HTTP print(1) p50 at most 15 times the fork floor


def percentile(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def run_clients(host, port, key, body, clients, total, gap=0.0, timings=None):
    """Send `total` requests from `clients` connections; with a list `timings`, append
    (client seconds, the Server-Timing header or None) of each to it."""
    latencies = []
    lock = threading.Lock()
    errors = []
    per_client = total // clients

    def worker():
        conn = http.client.HTTPConnection(host, port, timeout=60)
        for _ in range(per_client):
            t0 = time.perf_counter()
            conn.request("POST", "/v1/execute", body,
                         {"Content-Type": "application/json", "Authorization": "Bearer " + key})
            resp = conn.getresponse()
            data = resp.read()
            dt = time.perf_counter() - t0
            if resp.status != 200 or json.loads(data)["status"] != "ok":
                errors.append((resp.status, data[:200]))
            with lock:
                latencies.append(dt)
                if timings is not None:
                    timings.append((dt, resp.getheader("Server-Timing")))
            if gap:
                time.sleep(gap)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return latencies, wall, errors


JAIL_JOB_UID = 1000001000  # uid 1000 of the jail, on the host


def smaps_kb(pid):
    """Private (dirty and clean) and PSS memory of process `pid`, in kB."""
    fields = {}
    with open("/proc/%s/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":"):
                fields[parts[0][:-1]] = int(parts[1])
    return fields.get("Private_Dirty", 0) + fields.get("Private_Clean", 0), fields.get("Pss", 0)


def idle_cell_memory():
    """Private dirty and PSS (kB) of each idle warm job (the pre-forked processes of the jail
    that run as the job uid and sleep waiting for code).  A job's holder of its memory
    (pybox-holder, in the job's own address space) is not a cell of its own: it is left out."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/status" % entry) as f:
                status = f.read()
            uid = int(status.split("Uid:")[1].split()[0])
            if uid != JAIL_JOB_UID or status.startswith("Name:\tpybox-holder"):
                continue
            out.append(smaps_kb(entry))
        except (OSError, IndexError, ValueError):
            continue
    return out


def metric(host, port, name):
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    total = 0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.split()[-1])
    return total


def bwrap_time(runs, code="print(1)\n"):
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "p.py")
        with open(script, "w") as f:
            f.write(code)
        cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--clearenv",
               "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
               "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
               "--ro-bind", "/etc/alternatives", "/etc/alternatives",
               "--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache",
               "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
               "--ro-bind", script, "/work/p.py", "--chdir", "/work",
               "/usr/bin/python3", "/work/p.py"]
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, check=True).stdout
            times.append(time.perf_counter() - t0)
            assert out.strip(), out
        return times


def server_timing(value):
    """({phase: ms}, the cell's kind or None) of a Server-Timing header value."""
    durs, cell = {}, None
    for part in (value or "").split(","):
        fields = [f.strip() for f in part.split(";")]
        for f in fields[1:]:
            k, _, v = f.partition("=")
            if k == "dur":
                durs[fields[0]] = float(v)
            elif k == "desc" and fields[0] == "cell":
                cell = v.strip('"')
    return durs, cell


def ctxt_switches(pid):
    """Voluntary and involuntary context switches of every thread of process `pid` now (a
    thread that ended meanwhile takes its count with it)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:",
                                        "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


SCHED_EVENTS = "sched:sched_wakeup,sched:sched_switch,sched:sched_migrate_task"
FORK_EVENT = "sched:sched_process_fork"


def tree_tids(root):
    """The thread ids of process `root` and of every process descending from it, now."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    parent[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    procs, grew = {root}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in procs and p not in procs}
        procs |= more
        grew = bool(more)
    tids = set()
    for p in procs:
        try:
            tids |= {int(t) for t in os.listdir("/proc/%d/task" % p)}
        except OSError:
            continue
    return tids


def perf_works():
    try:
        p = subprocess.run(["perf", "stat", "-a", "-x,", "-e", SCHED_EVENTS, "--", "true"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return p.returncode == 0 and "sched:sched_switch" in p.stderr and "<not" not in p.stderr


class SchedTrace:
    """`perf record` of the scheduler's events on every CPU while the block runs; .counts()
    then says how many wake-ups (and of those, how many woke a task on another CPU than the
    waker's), switches and migrations there were, all and of this server's tasks: its threads
    and those of every process descending from it (zygotes, spares) when the block began, and
    every task they forked meanwhile (cells, jobs), followed through sched_process_fork."""

    def __init__(self, tmpdir, server_pid):
        self.path = os.path.join(tmpdir, "perf.data")
        self.server_pid = server_pid
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen(["perf", "record", "-q", "-a", "-e",
                                      SCHED_EVENTS + "," + FORK_EVENT, "-o", self.path],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # perf sets its events up before the run begins
        self.tids = tree_tids(self.server_pid)
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=60)

    def counts(self):
        ours = self.tids.__contains__
        out = subprocess.run(["perf", "script", "-i", self.path, "-F", "cpu,event,trace"],
                             capture_output=True, text=True, timeout=300).stdout
        c = collections.Counter()
        for line in out.splitlines():
            head, _, trace = line.partition(": ")
            parts = head.split()
            if len(parts) < 2 or not parts[0].startswith("["):
                continue
            cpu, event = int(parts[0].strip("[]")), parts[1].rstrip(":")
            nums = dict(kv.split("=", 1) for kv in trace.split() if "=" in kv)
            if event == FORK_EVENT:
                if ours(int(nums.get("pid", -1))):
                    self.tids.add(int(nums.get("child_pid", -1)))
            elif event == "sched:sched_wakeup":
                cross = int(nums.get("target_cpu", cpu)) != cpu
                c["wakeups"] += 1
                c["cross"] += cross
                if ours(int(nums.get("pid", -1))):
                    c["our_wakeups"] += 1
                    c["our_cross"] += cross
            elif event == "sched:sched_switch":
                c["switches"] += 1
                c["our_switches"] += ours(int(nums.get("prev_pid", -1)))
            elif event == "sched:sched_migrate_task":
                c["migrations"] += 1
                c["our_migrations"] += ours(int(nums.get("pid", -1)))
        return c


def fork_floor_us(build):
    """The median of pybox-bench-fork's fork + _exit + waitpid, in us, and its line."""
    p = subprocess.run([os.path.join(build, "pybox-bench-fork"), "5000"], capture_output=True,
                       text=True, timeout=300)
    line = p.stdout.strip()
    try:
        return float(line.split("median ")[1].split()[0]), line
    except (IndexError, ValueError):
        return None, p.stderr.strip() or line


def breakdown(label, timings, switches):
    """Print the medians of each phase of `timings` ((client s, Server-Timing) pairs)."""
    phases = collections.defaultdict(list)
    client, remainder, warm, fallback = [], [], 0, 0
    for dt, header in timings:
        durs, cell = server_timing(header)
        if "total" not in durs:
            continue
        for name, ms in durs.items():
            phases[name].append(ms)
        client.append(dt * 1e3)
        remainder.append(dt * 1e3 - durs["total"])
        warm += cell == "warm"
        fallback += "handoff" not in durs
    print("  %s: %d requests, %d on a warm spare, %d without the cell's times" % (
        label, len(client), warm, fallback))
    if not client:
        print("    (no Server-Timing header: is the server's --server-timing on?)")
        return
    names = [p for p in PHASES if p in phases] + [
        p for p in phases if p not in PHASES and p != "total"]
    for name in names:
        print("    %-10s %8.3f ms%s" % (
            name, statistics.median(phases[name]),
            "   (%d of the %d requests)" % (len(phases[name]), len(client))
            if len(phases[name]) < len(client) else ""))
    print("    %-10s %8.3f ms   (the phases' medians need not add up to it)" % (
        "server", statistics.median(phases["total"])))
    print("    %-10s %8.3f ms" % ("client", statistics.median(client)))
    print("    %-10s %8.3f ms   (client - server: the write, the network, the client)" % (
        "remainder", statistics.median(remainder)))
    print("    context switches of the server's threads: %.1f per request" % (
        switches / len(timings)))


def http_floor(host, port, n):
    """The paced round trip of GET /healthz with this benchmark's client: what any answer
    costs here before pybox runs anything (the client's work, the loopback, the wake-ups of
    idle CPUs).  Returns its p50 in ms."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        resp.read()
        lat.append(time.perf_counter() - t0)
        time.sleep(PACED_GAP)
    conn.close()
    return percentile(lat, 50) * 1e3


def paced(host, port, key, body, n, server_pid, data, label, perf):
    """The paced run of `body` (n requests 50 ms apart), broken down; returns its latencies.
    Under perf, a second run of the same size gives the scheduler's counts, so that tracing
    does not weigh on the timed run."""
    timings = []
    time.sleep(1)
    cs0 = ctxt_switches(server_pid)
    lat, wall, errors = run_clients(host, port, key, body, 1, n, gap=PACED_GAP, timings=timings)
    cs = ctxt_switches(server_pid) - cs0
    if errors:
        print("errors:", errors[:3])
    breakdown(label, timings, cs)
    if not perf:
        print("    perf unavailable: no system-wide wake-ups, switches or migrations")
        return lat
    time.sleep(1)
    with SchedTrace(data, server_pid) as tr:
        run_clients(host, port, key, body, 1, n, gap=PACED_GAP)
    c = tr.counts()
    print("    perf, per request, all CPUs: %.1f wake-ups (%.1f cross-CPU), %.1f switches, "
          "%.1f migrations" % (c["wakeups"] / n, c["cross"] / n, c["switches"] / n,
                               c["migrations"] / n))
    print("    perf, per request, the server's: %.1f wake-ups (%.1f cross-CPU), %.1f switches, "
          "%.1f migrations" % (c["our_wakeups"] / n, c["our_cross"] / n,
                               c["our_switches"] / n, c["our_migrations"] / n))
    return lat


def build(pybox):
    """Build `pybox` and the benchmarks' binaries in its directory (configured as Release when
    the binary is not there yet), so what is measured is the source as it is."""
    build_dir = os.path.dirname(pybox)
    if not os.path.exists(pybox):
        subprocess.run(["cmake", "-S", ROOT, "-B", build_dir, "-G", "Ninja",
                        "-DCMAKE_BUILD_TYPE=Release"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", build_dir, "--target", "pybox", "pybox-bench-engine",
                    "pybox-bench-cow", "pybox-bench-fork"], check=True, stdout=subprocess.DEVNULL)


def built(pybox):
    """build(pybox), then the machine's copy-on-write yardstick line (for the other benchmarks,
    which print it beside their figures)."""
    build(pybox)
    return yardstick_line(cow_yardstick(pybox))


CODES = (("print(1)", "print(1)"),
         ("numpy", "import numpy as np\n"
                   "print(np.ones((64, 64)).dot(np.ones(64)).sum())"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--pybox", default=os.path.join(ROOT, "build", "release", "pybox"))
    ap.add_argument("--breakdown", action="store_true",
                    help="only the yardsticks and the paced runs, broken down")
    args = ap.parse_args()
    args.pybox = os.path.abspath(args.pybox)
    build(args.pybox)
    build_dir = os.path.dirname(args.pybox)
    engine_bench = os.path.join(build_dir, "pybox-bench-engine")
    print(machine_line())
    floor_us, floor_line = fork_floor_us(build_dir)
    print("fork floor (pybox-bench-fork): %s" % floor_line)
    print(yardstick_line(cow_yardstick(args.pybox)))
    perf = perf_works()
    key = secrets.token_hex(16)
    paced_p50 = {}
    p50_1 = {}
    with tempfile.TemporaryDirectory() as data:
        url_file = os.path.join(data, "url")
        env = dict(os.environ, PYBOX_ADMIN_KEY=key)
        log = open(os.path.join(data, "log"), "w")
        proc = subprocess.Popen([args.pybox, "serve", "--listen", "127.0.0.1:0", "--data", data,
                                 "--url-file", url_file, "--max-concurrency", "8",
                                 "--server-timing"],
                                env=env, stderr=log, stdout=subprocess.DEVNULL)
        try:
            for _ in range(600):
                if os.path.exists(url_file):
                    break
                time.sleep(0.1)
            url = open(url_file).read().strip()
            host, port = url.split("//")[1].split(":")
            host, port = host, int(port)
            print("%-34s %8s %8s %10s %8s" % ("pybox /v1/execute", "p50 ms", "p99 ms", "req/s",
                                              "faults"))
            for label, code in CODES:
                body = json.dumps({"code": code})
                run_clients(host, port, key, body, 1, 10)  # warm-up
                for clients in (() if args.breakdown else (1, 2, 5)):
                    f0 = metric(host, port, "pybox_job_page_faults_total")
                    n = args.requests - args.requests % clients
                    lat, wall, errors = run_clients(host, port, key, body, clients, n)
                    faults = (metric(host, port, "pybox_job_page_faults_total") - f0) / n
                    if errors:
                        print("errors:", errors[:3])
                    p50 = percentile(lat, 50) * 1e3
                    if clients == 1:
                        p50_1[label] = p50
                    print("%-34s %8.1f %8.1f %10.1f %8.0f" % (
                        "  %s, %d client(s)" % (label, clients), p50,
                        percentile(lat, 99) * 1e3, len(lat) / wall, faults))
            # Paced: 1 client pausing 50 ms between requests, so a warm cell is ready.
            n = max(30, args.requests // 4)
            lats = {}
            print("paced, broken down (medians of Server-Timing's phases):")
            for label, code in CODES:
                lats[label] = paced(host, port, key, json.dumps({"code": code}), n, proc.pid,
                                    data, label, perf)
            for label, _ in CODES:
                lat = lats[label]
                paced_p50[label] = percentile(lat, 50) * 1e3
                print("%-34s %8.1f %8.1f %10s" % ("  %s, 1 client, paced" % label,
                                                  paced_p50[label], percentile(lat, 99) * 1e3,
                                                  "-"))
            floor_http = http_floor(host, port, n)
            print("%-34s %8.2f   (a paced GET /healthz: the HTTP floor of this client here)"
                  % ("  HTTP round trip, paced", floor_http))
            time.sleep(2)  # let the pool refill
            mem = idle_cell_memory()
            if mem:
                print("idle warm cells: %d; private %.0f kB, PSS %.0f kB each (median)" % (
                    len(mem), statistics.median(m[0] for m in mem),
                    statistics.median(m[1] for m in mem)))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            log.close()
    engine_p50 = {}
    engine_paced = {}
    if os.path.exists(engine_bench):
        print("%-34s %8s %8s %10s %8s" % ("pybox engine, direct", "p50 ms", "p99 ms", "exec/s",
                                          "faults"))
        for label, flag in (("print(1)", []), ("numpy", ["--numpy"])):
            out = subprocess.run([engine_bench, "--requests", str(max(30, args.requests // 4)),
                                  "--gap", "50"] + flag, capture_output=True, text=True)
            if out.returncode == 0:
                r = json.loads(out.stdout)
                engine_paced[label] = r["p50_ms"]
                print("%-34s %8.1f %8.1f %10s %8.0f   (%.0f before the code arrived)" % (
                    "  %s, 1 client, paced" % label, r["p50_ms"], r["p99_ms"], "-",
                    r["faults_per_exec"], r["prep_faults_per_exec"]))
            for clients in (() if args.breakdown else (1, 2, 5)):
                n = args.requests - args.requests % clients
                out = subprocess.run([engine_bench, "--requests", str(n), "--clients",
                                      str(clients)] + flag, capture_output=True, text=True)
                if out.returncode != 0:
                    print("  %s, %d client(s): failed: %s" % (label, clients,
                                                              out.stderr.strip()[-200:]))
                    continue
                r = json.loads(out.stdout)
                if clients == 1:
                    engine_p50[label] = r["p50_ms"]
                print("%-34s %8.1f %8.1f %10.1f %8.0f   (%.0f before the code arrived)" % (
                    "  %s, %d client(s)" % (label, clients), r["p50_ms"], r["p99_ms"],
                    r["per_s"], r["faults_per_exec"], r["prep_faults_per_exec"]))
    else:
        print("(no %s: build the pybox-bench-engine target for the engine numbers)" %
              engine_bench)
    if floor_us:
        floor_ms = floor_us / 1e3
        print("paced p50 / fork floor (%.3f ms):" % floor_ms)
        for label, _ in CODES:
            print("  HTTP %-9s %6.1fx%s" % (
                label, paced_p50[label] / floor_ms,
                "   (target: at most %dx)" % TARGET_FLOOR_RATIO
                if label == "print(1)" else ""))
            if label in engine_paced:
                print("  engine %-7s %6.1fx" % (label, engine_paced[label] / floor_ms))
    if args.breakdown:
        return 0
    for label, code in CODES:
        times = bwrap_time(max(20, args.requests // 10), code + "\n")
        bw = statistics.median(times) * 1e3
        print("%-34s %8.1f %8.1f %10.1f" % ("bwrap + python3 %s, per exec" % label, bw,
                                            percentile(times, 99) * 1e3, 1000.0 / bw))
        print("ratio bwrap / pybox for %s (p50, 1 client): HTTP %.2fx%s" % (
            label, bw / p50_1[label],
            ", engine %.2fx" % (bw / engine_p50[label]) if label in engine_p50 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
