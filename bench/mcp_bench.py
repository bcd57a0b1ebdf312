#!/usr/bin/python3
"""The MCP benchmark: run_python with print(1) through `pybox mcp` over stdio (the local
engine) and through `pybox serve`'s /mcp over HTTP (one kept-alive connection), p50/p99 over
N calls, against POST /v1/execute of the same code to the same `pybox serve` in the same run,
with the machine's copy-on-write yardstick (pybox-bench-cow).

    bench/mcp_bench.py [--calls N] [--pybox PATH]
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
from http_bench import built, percentile  # noqa: E402


def mcp_calls(pybox, n):
    p = subprocess.Popen([pybox, "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, bufsize=1)

    def ask(msg):
        p.stdin.write(json.dumps(msg) + "\n")
        p.stdin.flush()
        while True:
            line = p.stdout.readline()
            if not line:
                raise RuntimeError("pybox mcp ended")
            reply = json.loads(line)
            if reply.get("id") == msg["id"]:
                return reply

    ask({"jsonrpc": "2.0", "id": 0, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "bench", "version": "1"}}})
    p.stdin.write(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}) + "\n")
    times = []
    for i in range(1, n + 21):
        t0 = time.perf_counter()
        r = ask({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                 "params": {"name": "run_python", "arguments": {"code": "print(1)"}}})
        dt = time.perf_counter() - t0
        assert not r["result"].get("isError"), r
        if i > 20:  # the first ones warm up
            times.append(dt)
    p.stdin.close()
    p.wait(timeout=60)
    return times


def http_calls(host, port, key, n):
    """run_python over /mcp and POST /v1/execute, one call of each in turn (each on a
    kept-alive connection of its own), so that both see the machine in the same state."""
    mcp = http.client.HTTPConnection(host, port, timeout=60)
    v1 = http.client.HTTPConnection(host, port, timeout=60)
    hdrs = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
            "Authorization": "Bearer " + key}

    # (An Accept of text/event-stream would have /v1/execute answer as a stream.)
    v1h = {"Content-Type": "application/json", "Authorization": "Bearer " + key}

    def post(conn, path, msg, h):
        t0 = time.perf_counter()
        conn.request("POST", path, body=json.dumps(msg), headers=h)
        r = conn.getresponse()
        data = r.read()
        dt = time.perf_counter() - t0
        assert r.status in (200, 202), (path, r.status, data[:200])
        return r, data, dt

    r, _, _ = post(mcp, "/mcp", {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                                 "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                            "clientInfo": {"name": "bench", "version": "1"}}},
                   hdrs)
    mh = dict(hdrs, **{"Mcp-Session-Id": r.getheader("Mcp-Session-Id"),
                       "MCP-Protocol-Version": "2025-11-25"})
    post(mcp, "/mcp", {"jsonrpc": "2.0", "method": "notifications/initialized"}, mh)
    over_mcp, over_v1 = [], []
    for i in range(1, n + 21):
        _, data, dt = post(mcp, "/mcp", {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                                         "params": {"name": "run_python",
                                                    "arguments": {"code": "print(1)"}}}, mh)
        assert not json.loads(data)["result"].get("isError"), data[:300]
        _, data, dv = post(v1, "/v1/execute", {"code": "print(1)"}, v1h)
        assert json.loads(data)["stdout"] == "1\n", data[:300]
        if i > 20:  # the first ones warm up
            over_mcp.append(dt)
            over_v1.append(dv)
    mcp.request("DELETE", "/mcp", headers=mh)
    mcp.getresponse().read()
    mcp.close()
    v1.close()
    return over_mcp, over_v1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--pybox", default=os.path.join(ROOT, "build", "release", "pybox"))
    args = ap.parse_args()
    yardstick = built(args.pybox)
    print("machine: %d CPUs, %s; yardstick: %s" % (os.cpu_count(), os.uname().release,
                                                    yardstick))
    mcp = mcp_calls(args.pybox, args.calls)
    key = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as data:
        url_file = os.path.join(data, "url")
        proc = subprocess.Popen([args.pybox, "serve", "--listen", "127.0.0.1:0", "--data", data,
                                 "--url-file", url_file], env=dict(os.environ, PYBOX_ADMIN_KEY=key),
                                stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        try:
            for _ in range(600):
                if os.path.exists(url_file):
                    break
                time.sleep(0.1)
            host, port = open(url_file).read().strip().split("//")[1].split(":")
            mcp_http, http = http_calls(host, int(port), key, args.calls)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print("run_python print(1) over MCP stdio: p50 %.2f ms, p99 %.2f ms (%d calls)" % (
        percentile(mcp, 50) * 1e3, percentile(mcp, 99) * 1e3, len(mcp)))
    print("run_python print(1) over MCP HTTP (/mcp): p50 %.2f ms, p99 %.2f ms (%d calls)" % (
        percentile(mcp_http, 50) * 1e3, percentile(mcp_http, 99) * 1e3, len(mcp_http)))
    print("POST /v1/execute print(1), in turn with /mcp: p50 %.2f ms, p99 %.2f ms" % (
        percentile(http, 50) * 1e3, percentile(http, 99) * 1e3))
    for name, t in (("MCP stdio", mcp), ("MCP HTTP", mcp_http)):
        print("%s - POST /v1/execute: %+.2f ms at p50, %+.2f ms at p99" % (
            name, (percentile(t, 50) - percentile(http, 50)) * 1e3,
            (percentile(t, 99) - percentile(http, 99)) * 1e3))


if __name__ == "__main__":
    main()
