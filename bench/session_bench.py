#!/usr/bin/python3
"""The sessions benchmark: a warm call (`x += 1`) in a session over HTTP, p50/p99 over N
calls, against the same call sent to a plain /usr/bin/python3 kept running (the peer: no
sandbox, no HTTP); session creation p50, against bwrap + /usr/bin/python3 starting; private
and PSS memory of an idle session right after creation and after importing pandas and
matplotlib, and how many such sessions this machine's memory holds; and the streaming delay,
from a print() in the code to its `stdout` event reaching the client.

    bench/session_bench.py [--calls N] [--pybox PATH]

Starts its own `pybox serve` (release build by default) on a free loopback port with a
temporary data directory and an admin key (no rate limits), and prints the machine's
copy-on-write yardstick (pybox-bench-cow) beside the figures.
"""
import argparse
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from http_bench import JAIL_JOB_UID, bwrap_time, built, percentile, smaps_kb  # noqa: E402


class Client:
    def __init__(self, host, port, key):
        self.conn = http.client.HTTPConnection(host, port, timeout=120)
        self.key = key

    def call(self, method, path, body=None, accept=None):
        headers = {"Authorization": "Bearer " + self.key}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if accept:
            headers["Accept"] = accept
        self.conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status >= 300:
            raise RuntimeError("%s %s: %d %s" % (method, path, resp.status, data[:300]))
        return json.loads(data) if data else None


def peer_calls(n):
    """The same call sent to a plain python3 kept running: code in, one line out."""
    loop = ("import sys\nns = {}\nfor line in sys.stdin:\n"
            "    exec(compile(line.replace('\\\\n', '\\n'), '<cell>', 'exec'), ns)\n"
            "    sys.stdout.write('ok\\n'); sys.stdout.flush()\n")
    p = subprocess.Popen(["/usr/bin/python3", "-c", loop], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, bufsize=1)
    p.stdin.write("x = 0\n")
    p.stdout.readline()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        p.stdin.write("x += 1\n")
        p.stdin.flush()
        assert p.stdout.readline() == "ok\n"
        times.append(time.perf_counter() - t0)
    p.stdin.close()
    p.wait()
    return times


def session_processes():
    """(pid, uid, state, ppid) of the jail's processes that are stopped: idle sessions' jobs."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/status" % entry) as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            uid = int(status["Uid"].split()[0])
            out.append((int(entry), uid, status["State"].strip()[0], int(status["PPid"])))
        except (OSError, KeyError, ValueError):
            continue
    return out


def session_memory():
    """Private and PSS (kB) of each idle session: its stopped job plus its cell."""
    procs = session_processes()
    result = []
    for pid, uid, state, ppid in procs:
        if uid == JAIL_JOB_UID and state == "T":
            job = smaps_kb(pid)
            cell = smaps_kb(ppid)
            result.append((job[0] + cell[0], job[1] + cell[1], job, cell))
    return result


def mem_available_kb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1])
    return 0


def stream_delays(host, port, key, sid):
    """Per print(): the delay from the code's time.time() to the event's arrival."""
    code = ("import time\nfor i in range(20):\n    print(repr(time.time()), flush=True)\n"
            "    time.sleep(0.05)\n")
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request("POST", "/v1/sessions/%s/execute" % sid, json.dumps({"code": code}),
                 {"Authorization": "Bearer " + key, "Content-Type": "application/json",
                  "Accept": "text/event-stream"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError("stream: %d %s" % (resp.status, resp.read()[:200]))
    delays = []
    event = None
    while True:
        line = resp.fp.readline()
        if not line:
            break
        line = line.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event == "stdout":
            now = time.time()
            for value in json.loads(line[6:])["text"].split():
                delays.append(now - float(value))
        elif line.startswith("data: ") and event == "end":
            break
    conn.close()
    return delays


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--sessions", type=int, default=20, help="creations timed")
    ap.add_argument("--pybox", default=os.path.join(ROOT, "build", "release", "pybox"))
    args = ap.parse_args()
    yardstick = built(args.pybox)
    key = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as data:
        url_file = os.path.join(data, "url")
        env = dict(os.environ, PYBOX_ADMIN_KEY=key)
        log = open(os.path.join(data, "log"), "w")
        proc = subprocess.Popen([args.pybox, "serve", "--listen", "127.0.0.1:0", "--data", data,
                                 "--url-file", url_file], env=env, stderr=log,
                                stdout=subprocess.DEVNULL)
        try:
            for _ in range(600):
                if os.path.exists(url_file):
                    break
                time.sleep(0.1)
            host, port = open(url_file).read().strip().split("//")[1].split(":")
            port = int(port)
            c = Client(host, port, key)
            print("machine: %d CPUs, %s; yardstick: %s" % (
                os.cpu_count(), os.uname().release, yardstick))

            # Creation.
            created = []
            for _ in range(args.sessions):
                t0 = time.perf_counter()
                s = c.call("POST", "/v1/sessions", {})
                created.append(time.perf_counter() - t0)
                c.call("DELETE", "/v1/sessions/" + s["id"])
            peer = bwrap_time(max(5, args.sessions // 2), "x = 0\nprint(x)\n")
            print("session creation p50 %.1f ms (p99 %.1f); bwrap + python3 start p50 %.1f ms; "
                  "ratio %.2f" % (percentile(created, 50) * 1e3, percentile(created, 99) * 1e3,
                                  percentile(peer, 50) * 1e3,
                                  percentile(created, 50) / percentile(peer, 50)))

            # Warm calls.
            s = c.call("POST", "/v1/sessions", {})
            path = "/v1/sessions/%s/execute" % s["id"]
            c.call("POST", path, {"code": "x = 0"})
            for _ in range(20):
                c.call("POST", path, {"code": "x += 1"})
            lat = []
            for _ in range(args.calls):
                t0 = time.perf_counter()
                r = c.call("POST", path, {"code": "x += 1"})
                lat.append(time.perf_counter() - t0)
                assert r["status"] == "ok", r
            last = c.call("POST", path, {"code": "x"})
            assert last["outputs"][-1]["data"]["text/plain"] == str(args.calls + 20), last
            peer = peer_calls(args.calls)
            print("warm call x += 1 over HTTP: p50 %.2f ms, p99 %.2f ms (%d calls); plain python3 "
                  "kept running: p50 %.3f ms; ratio %.1f" % (
                      percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3, args.calls,
                      percentile(peer, 50) * 1e3, percentile(lat, 50) / percentile(peer, 50)))

            # Streaming delay.
            delays = stream_delays(host, port, key, s["id"])
            print("streaming: print() to its stdout event at the client: p50 %.1f ms, max %.1f ms"
                  " (%d prints 50 ms apart)" % (
                      percentile(delays, 50) * 1e3, max(delays) * 1e3, len(delays)))
            c.call("DELETE", "/v1/sessions/" + s["id"])

            # Memory of idle sessions.
            fresh = c.call("POST", "/v1/sessions", {})
            mem = session_memory()
            print("idle session right after creation: private %.0f kB, PSS %.0f kB "
                  "(job private %d kB, cell private %d kB)" % (
                      mem[0][0], mem[0][1], mem[0][2][0], mem[0][3][0]) if mem else
                  "idle session: no stopped job found")
            c.call("POST", "/v1/sessions/%s/execute" % fresh["id"],
                   {"code": "import pandas as pd, matplotlib.pyplot as plt\n"
                            "df = pd.DataFrame({'a': range(1000)})\nplt.plot([1, 2])\n"
                            "plt.close('all')\n"})
            mem2 = session_memory()
            if mem2:
                avail = mem_available_kb()
                print("idle session after pandas + matplotlib + a plot: private %.0f kB, "
                      "PSS %.0f kB" % (mem2[0][0], mem2[0][1]))
                print("this machine's available memory (%d MiB) holds about %d such sessions "
                      "(about %d fresh ones); the server's session caps stop it first" % (
                          avail // 1024, avail // max(mem2[0][0], 1),
                          avail // max(mem[0][0] if mem else 1, 1)))
            c.call("DELETE", "/v1/sessions/" + fresh["id"])
        finally:
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
