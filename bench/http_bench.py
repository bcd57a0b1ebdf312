#!/usr/bin/python3
"""The pybox benchmark: p50/p99 latency and executions/s of print(1) and of a
numpy script with 1, 2 and 5 concurrent clients back to back, and with one
client pausing 50 ms between requests ("paced": a warm cell is ready, the
latency at light load), through POST /v1/execute and through the engine
directly (bench/engine_bench.c), page faults per execution, private/PSS memory
per idle warm cell, against the per-execution time of bwrap + /usr/bin/python3
in the same run, with the ratios.

    bench/http_bench.py [--requests N] [--pybox PATH]

Starts its own `pybox serve` (release build by default) on a free loopback
port with a temporary data directory and an admin key (no rate limits).
"""
import argparse
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


def percentile(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def run_clients(host, port, key, body, clients, total, gap=0.0):
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
    that run as the job uid and sleep waiting for code)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/status" % entry) as f:
                status = f.read()
            uid = int(status.split("Uid:")[1].split()[0])
            if uid != JAIL_JOB_UID:
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


def built(pybox):
    """Build `pybox` and pybox-bench-cow in its directory (configured as Release when the
    binary is not there yet); the machine's copy-on-write yardstick, as pybox-bench-cow says it."""
    build = os.path.dirname(pybox)
    if not os.path.exists(pybox):
        subprocess.run(["cmake", "-S", ROOT, "-B", build, "-G", "Ninja",
                        "-DCMAKE_BUILD_TYPE=Release"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", build, "--target", "pybox", "pybox-bench-cow"],
                   check=True, stdout=subprocess.DEVNULL)
    cow = subprocess.run([os.path.join(build, "pybox-bench-cow")], capture_output=True,
                         text=True)
    return cow.stdout.strip() or cow.stderr.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--pybox", default=os.path.join(ROOT, "build", "release", "pybox"))
    args = ap.parse_args()
    if not os.path.exists(args.pybox):
        subprocess.run(["cmake", "-S", ROOT, "-B", os.path.join(ROOT, "build", "release"), "-G",
                        "Ninja", "-DCMAKE_BUILD_TYPE=Release"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", os.path.join(ROOT, "build", "release"),
                        "--target", "pybox", "pybox-bench-engine"], check=True,
                       stdout=subprocess.DEVNULL)
    engine_bench = os.path.join(os.path.dirname(args.pybox), "pybox-bench-engine")
    key = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as data:
        url_file = os.path.join(data, "url")
        env = dict(os.environ, PYBOX_ADMIN_KEY=key)
        log = open(os.path.join(data, "log"), "w")
        proc = subprocess.Popen([args.pybox, "serve", "--listen", "127.0.0.1:0", "--data", data,
                                 "--url-file", url_file, "--max-concurrency", "8"],
                                env=env, stderr=log, stdout=subprocess.DEVNULL)
        try:
            for _ in range(600):
                if os.path.exists(url_file):
                    break
                time.sleep(0.1)
            url = open(url_file).read().strip()
            host, port = url.split("//")[1].split(":")
            host, port = host, int(port)
            print("machine: %d CPUs, %s" % (os.cpu_count(), os.uname().release))
            print("%-34s %8s %8s %10s %8s" % ("pybox /v1/execute", "p50 ms", "p99 ms", "req/s",
                                              "faults"))
            p50_1 = {}
            for label, code in (("print(1)", "print(1)"),
                                ("numpy", "import numpy as np\n"
                                          "print(np.ones((64, 64)).dot(np.ones(64)).sum())")):
                body = json.dumps({"code": code})
                run_clients(host, port, key, body, 1, 10)  # warm-up
                for clients in (1, 2, 5):
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
                time.sleep(1)
                lat, wall, errors = run_clients(host, port, key, body, 1, n, gap=0.05)
                if errors:
                    print("errors:", errors[:3])
                print("%-34s %8.1f %8.1f %10s" % ("  %s, 1 client, paced" % label,
                                                  percentile(lat, 50) * 1e3,
                                                  percentile(lat, 99) * 1e3, "-"))
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
    if os.path.exists(engine_bench):
        print("%-34s %8s %8s %10s %8s" % ("pybox engine, direct", "p50 ms", "p99 ms", "exec/s",
                                          "faults"))
        for label, flag in (("print(1)", []), ("numpy", ["--numpy"])):
            out = subprocess.run([engine_bench, "--requests", str(max(30, args.requests // 4)),
                                  "--gap", "50"] + flag, capture_output=True, text=True)
            if out.returncode == 0:
                r = json.loads(out.stdout)
                print("%-34s %8.1f %8.1f %10s %8.0f   (%.0f before the code arrived)" % (
                    "  %s, 1 client, paced" % label, r["p50_ms"], r["p99_ms"], "-",
                    r["faults_per_exec"], r["prep_faults_per_exec"]))
            for clients in (1, 2, 5):
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
    for label, code in (("print(1)", "print(1)\n"),
                        ("numpy", "import numpy as np\n"
                                  "print(np.ones((64, 64)).dot(np.ones(64)).sum())\n")):
        times = bwrap_time(max(20, args.requests // 10), code)
        bw = statistics.median(times) * 1e3
        print("%-34s %8.1f %8.1f %10.1f" % ("bwrap + python3 %s, per exec" % label, bw,
                                            percentile(times, 99) * 1e3, 1000.0 / bw))
        print("ratio bwrap / pybox for %s (p50, 1 client): HTTP %.2fx%s" % (
            label, bw / p50_1[label],
            ", engine %.2fx" % (bw / engine_p50[label]) if label in engine_p50 else ""))


if __name__ == "__main__":
    sys.exit(main())
