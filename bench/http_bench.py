#!/usr/bin/python3
"""HTTP benchmark of pybox serve: p50/p99 latency and requests/s of print(1)
through POST /v1/execute with 1, 2 and 5 concurrent clients, against the
per-execution time of bwrap + /usr/bin/python3 measured in the same run.

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


def run_clients(host, port, key, body, clients, total):
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
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return latencies, wall, errors


def bwrap_time(runs):
    with tempfile.TemporaryDirectory() as d:
        script = os.path.join(d, "p.py")
        with open(script, "w") as f:
            f.write("print(1)\n")
        cmd = ["bwrap", "--unshare-all", "--die-with-parent", "--clearenv",
               "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
               "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
               "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
               "--ro-bind", script, "/work/p.py", "--chdir", "/work",
               "/usr/bin/python3", "/work/p.py"]
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            out = subprocess.run(cmd, capture_output=True, check=True).stdout
            times.append(time.perf_counter() - t0)
            assert out.strip() == b"1", out
        return times


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
                        "--target", "pybox"], check=True, stdout=subprocess.DEVNULL)
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
            body = json.dumps({"code": "print(1)"})
            run_clients(host, int(port), key, body, 1, 10)  # warm-up
            print("machine: %d CPUs, %s" % (os.cpu_count(), os.uname().release))
            print("%-28s %8s %8s %10s" % ("pybox /v1/execute print(1)", "p50 ms", "p99 ms",
                                          "req/s"))
            p50_1 = None
            for clients in (1, 2, 5):
                lat, wall, errors = run_clients(host, int(port), key, body, clients,
                                                args.requests - args.requests % clients)
                if errors:
                    print("errors:", errors[:3])
                p50 = percentile(lat, 50) * 1e3
                if clients == 1:
                    p50_1 = p50
                print("%-28s %8.1f %8.1f %10.1f" % ("  %d concurrent client(s)" % clients, p50,
                                                    percentile(lat, 99) * 1e3, len(lat) / wall))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
            log.close()
    times = bwrap_time(max(20, args.requests // 10))
    bw = statistics.median(times) * 1e3
    print("%-28s %8.1f %8.1f %10.1f" % ("bwrap + python3 (per exec)", bw,
                                        percentile(times, 99) * 1e3, 1000.0 / bw))
    print("ratio bwrap / pybox (p50, 1 client): %.2fx" % (bw / p50_1))


if __name__ == "__main__":
    sys.exit(main())
