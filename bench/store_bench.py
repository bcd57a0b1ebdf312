#!/usr/bin/python3
"""What the Redis store adds to a request's latency against SQLite: p50 and p99 of POST
/v1/execute print(1), one client on one kept-alive connection, through a key with a daily quota
and a per-minute window (never the admin key, which skips both), on a `pybox serve --store
sqlite:` and a `pybox serve --store redis://` (a redis-server this script starts on loopback)
in the same run, their rounds interleaved; with the machine's copy-on-write yardstick
(pybox-bench-cow).

    bench/store_bench.py [--requests N] [--rounds N] [--pybox PATH]

A request on Redis makes its calls of the store there: the key's lookup, its admission (one Lua
script: the shared window's place, the day's quota and its charge, and a lease when its policy
caps executions at once), the lease's end when there is one, and the audit record.  Both servers
run with --server-timing, so the script also prints the medians of the phases in which a request
calls the store (auth, admit, charge, audit), as the servers timed them: what the store costs,
free of the execution's own noise (the lease's end comes after the answer is queued, outside
them).
"""
import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from http_bench import ROOT, built, percentile, server_timing  # noqa: E402

# The phases of Server-Timing in which a request calls the store: the key's lookup (auth), the
# admission (admit: window, quota, lease), the audit record (audit).
STORE_PHASES = ("auth", "admit", "charge", "audit")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            sys.exit("%s: not within %d s" % (what, timeout))
        time.sleep(0.05)


def redis_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
            c.sendall(b"PING\r\n")
            return c.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def serve(pybox, store, data, log):
    url_file = os.path.join(data, "url-" + str(len(os.listdir(data))))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYBOX_")}
    proc = subprocess.Popen([pybox, "serve", "--listen", "127.0.0.1:0", "--store", store,
                             "--data", data, "--url-file", url_file, "--max-concurrency", "4",
                             "--server-timing"],
                            env=env, stderr=log, stdout=subprocess.DEVNULL)
    wait_for("pybox serve --store " + store, lambda: os.path.exists(url_file)
             and open(url_file).read().strip())
    host, port = open(url_file).read().strip().split("//")[1].split(":")
    return proc, host, int(port)


def make_key(pybox, store, concurrency):
    p = subprocess.run([pybox, "keys", "create", "--name", "bench", "--rpm", "1000000",
                        "--rpd", "100000000", "--concurrency",
                        str(concurrency) if concurrency > 0 else "unlimited", "--store", store],
                       capture_output=True, text=True, check=True)
    return p.stdout.strip()


def requests(conn, key, n, phases=None):
    body = json.dumps({"code": "print(1)"})
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/execute", body,
                     {"Content-Type": "application/json", "Authorization": "Bearer " + key})
        resp = conn.getresponse()
        data = resp.read()
        out.append(time.perf_counter() - t0)
        if phases is not None:
            phases.append(server_timing(resp.getheader("Server-Timing"))[0])
        if resp.status != 200 or json.loads(data)["status"] != "ok":
            sys.exit("a request failed: %d %r" % (resp.status, data[:200]))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=300, help="requests per backend")
    ap.add_argument("--rounds", type=int, default=6, help="interleaved rounds they are split in")
    ap.add_argument("--pybox", default=os.path.join(ROOT, "build", "release", "pybox"))
    ap.add_argument("--concurrency", type=int, default=100,
                    help="the key's executions at once (a lease per request); 0: unlimited")
    args = ap.parse_args()
    cow = built(args.pybox)
    with tempfile.TemporaryDirectory() as tmp:
        log = open(os.path.join(tmp, "log"), "w")
        rport = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", tmp],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs = []
        try:
            wait_for("redis-server", lambda: redis_answers(rport))
            stores = {"sqlite": "sqlite:" + os.path.join(tmp, "pybox.db"),
                      "redis": "redis://127.0.0.1:%d/0" % rport}
            conns, keys, lat, ph = {}, {}, {}, {}
            for name, uri in stores.items():
                keys[name] = make_key(args.pybox, uri, args.concurrency)
                proc, host, port = serve(args.pybox, uri, tmp, log)
                procs.append(proc)
                conns[name] = http.client.HTTPConnection(host, port, timeout=60)
                requests(conns[name], keys[name], 20)  # warm-up
                lat[name] = []
                ph[name] = []
            per_round = max(1, args.requests // args.rounds)
            while min(len(v) for v in lat.values()) < args.requests:
                for name in stores:
                    n = min(per_round, args.requests - len(lat[name]))
                    lat[name] += requests(conns[name], keys[name], n, ph[name])
            print("machine: %d CPUs, %s; yardstick: %s" % (os.cpu_count(), os.uname().release,
                                                          cow))
            print("%-8s %8s %8s %8s" % ("store", "n", "p50 ms", "p99 ms"))
            p50 = {}
            for name in stores:
                p50[name] = percentile(lat[name], 50) * 1e3
                print("%-8s %8d %8.3f %8.3f" % (name, len(lat[name]), p50[name],
                                                percentile(lat[name], 99) * 1e3))
            print("redis - sqlite at p50: %+.3f ms" % (p50["redis"] - p50["sqlite"]))
            # The store's own phases, as each server timed them: free of the execution's noise.
            print("%-8s %s   (Server-Timing medians, ms)" % (
                "store", "  ".join("%8s" % p for p in STORE_PHASES + ("sum",))))
            med = {}
            for name in stores:
                med[name] = [percentile([t.get(p, 0.0) for t in ph[name]], 50)
                             for p in STORE_PHASES]
                print("%-8s %s" % (name, "  ".join("%8.3f" % v for v in med[name] +
                                                   [sum(med[name])])))
            print("redis - sqlite in the store's phases: %+.3f ms" % (
                sum(med["redis"]) - sum(med["sqlite"])))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=60)
            redis.terminate()
            redis.wait(timeout=30)


if __name__ == "__main__":
    main()
