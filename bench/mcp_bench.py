#!/usr/bin/python3
"""The MCP benchmark: run_python with print(1) through `pybox mcp` over stdio (the local
engine), p50/p99 over N calls, against POST /v1/execute of the same code to a `pybox serve`
in the same run, with the machine's copy-on-write yardstick (pybox-bench-cow).

    bench/mcp_bench.py [--calls N] [--pybox PATH]
"""
import argparse
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
from http_bench import built, percentile, run_clients  # noqa: E402


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
            body = json.dumps({"code": "print(1)"})
            run_clients(host, int(port), key, body, 1, 20)
            http, _, errors = run_clients(host, int(port), key, body, 1, args.calls)
            assert not errors, errors[:3]
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print("run_python print(1) over MCP stdio: p50 %.2f ms, p99 %.2f ms (%d calls)" % (
        percentile(mcp, 50) * 1e3, percentile(mcp, 99) * 1e3, len(mcp)))
    print("POST /v1/execute print(1), 1 client: p50 %.2f ms, p99 %.2f ms; MCP - HTTP at p50: "
          "%+.2f ms" % (percentile(http, 50) * 1e3, percentile(http, 99) * 1e3,
                        (percentile(mcp, 50) - percentile(http, 50)) * 1e3))


if __name__ == "__main__":
    main()
