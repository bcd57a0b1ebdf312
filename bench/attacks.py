#!/usr/bin/python3
"""What a hostile client costs `pybox serve`: each attack of a client with no key (or with a key
where the attack needs one), against a real server, and what the server held meanwhile.

- four 30 MiB JSON bodies of empty arrays at once (a parse tree would cost 45-80x the body);
- records of 12 MiB and 4 million values forged by user code on the record descriptor;
- a main() returning [[]] * 3900000;
- ten sparse 8 MiB files asked back (80 MiB within a 64 MiB disk);
- 515 connections from 127.0.0.1 that each send a header line and then a byte a second, while
  127.0.0.2 asks for /v1/health.

It prints, for each, the answers and the server's peak RSS (VmHWM) before and after. The tests
in tests/integration/test_server_bounds.py perform the same attacks and assert the bounds;
this reports the figures for a release build.

    /usr/bin/python3 bench/attacks.py --bin build/bench/pybox
"""
import argparse
import json
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

MIB = 1 << 20


def vm_mb(pid, field="VmHWM"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    return None


def post(srv, path, body, key=None, timeout=300):
    """(status, body bytes) of one POST on a connection of its own."""
    c = harness.Client(srv, timeout=timeout)
    try:
        status, _, data, _ = c.post(path, body, key=key)
        return status, data
    finally:
        c.close()


def json_bomb(srv):
    bomb = b'{"x":[' + b"[]," * (10 * MIB) + b"[]]}"
    before = vm_mb(srv.pid)
    codes = []
    threads = [threading.Thread(target=lambda: codes.append(post(srv, "/v1/execute", bomb)[0]))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("json bomb: 4 x %d MiB at once -> %s; server VmHWM %d -> %d MB" % (
        len(bomb) >> 20, sorted(codes), before, vm_mb(srv.pid)))


def forged_records(srv):
    code = ("import os\n"
            "line = b'{\"done\": true, \"exit_code\": 0, \"result\": \"[' + b'[],' * 3000000"
            " + b'[]]\"}\\n'\n"
            "os.write(3, line)\n"
            "os.write(3, b'[' + b'[],' * 1000000 + b'[]]\\n')\n"
            "os._exit(0)\n")
    before = vm_mb(srv.pid)
    for _ in range(3):
        status, body = post(srv, "/v1/execute", json.dumps(
            {"code": code, "main": True, "memory_mb": 512}).encode(), key=srv.admin_key)
    res = json.loads(body)
    print("forged records (12 MiB, 4 million values) x 3 -> %d %s, result %s; VmHWM %d -> %d MB"
          % (status, res["status"], res["result"], before, vm_mb(srv.pid)))


def main_bomb(srv):
    before = vm_mb(srv.pid)
    status, body = post(srv, "/v1/execute", json.dumps(
        {"code": "def main():\n    return [[]] * 3900000\n", "main": True,
         "memory_mb": 1024}).encode(), key=srv.admin_key)
    res = json.loads(body)
    print("main() -> [[]] * 3900000: %d %s %s; VmHWM %d -> %d MB" % (
        status, res["status"], (res["error"] or {}).get("type"), before, vm_mb(srv.pid)))


def sparse_files(srv):
    code = ("for i in range(10):\n    with open(f's{i}.bin', 'wb') as f:\n"
            "        f.truncate(8 * 1024 * 1024)\n")
    before = vm_mb(srv.pid)
    status, body = post(srv, "/v1/execute", json.dumps(
        {"code": code, "return_files": ["*.bin"]}).encode())
    files = json.loads(body)["files"]
    print("10 sparse 8 MiB files: %d, answer %.1f MiB, %d carried, %d refused; VmHWM %d -> %d MB"
          % (status, len(body) / MIB, sum(1 for f in files.values() if "size" in f),
             sum(1 for f in files.values() if "error" in f), before, vm_mb(srv.pid)))


def trickling_flood(srv):
    socks = []
    for _ in range(515):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        try:
            s.connect((srv.host, srv.port))
            s.sendall(b"POST /v1/execute HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        except OSError:
            s.close()
    stop = threading.Event()

    def trickle():
        while not stop.is_set():
            for s in socks:
                try:
                    s.send(b"X")
                except OSError:
                    pass
            stop.wait(1)

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    latencies = []
    for _ in range(10):
        c = socket.create_connection((srv.host, srv.port), timeout=20,
                                     source_address=("127.0.0.2", 0))
        t0 = time.monotonic()
        c.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            answer += chunk
        latencies.append((time.monotonic() - t0) * 1000)
        c.close()
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    t0 = time.monotonic()
    open_socks = list(socks)
    while open_socks and time.monotonic() - t0 < 120:
        still = []
        for s in open_socks:
            s.setblocking(False)
            try:
                if s.recv(65536) == b"":
                    continue
            except BlockingIOError:
                still.append(s)
                continue
            except OSError:
                continue
        open_socks = still
        time.sleep(0.1)
    stop.set()
    t.join(5)
    for s in socks:
        s.close()
    conn = srv.connection(30)
    conn.request("GET", "/metrics")
    metrics = conn.getresponse().read()
    conn.close()
    drops = [line for line in metrics.decode().splitlines()
             if line.startswith("pybox_deadline_drops_total")]
    print("515 trickling connections from 127.0.0.1: /v1/health from 127.0.0.2 x 10, max %.0f ms;"
          " every trickling one closed %.1f s after (%d open); %s" % (
              max(latencies), time.monotonic() - t0, len(open_socks), drops[0] if drops else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default="build/bench/pybox", help="the pybox binary")
    args = ap.parse_args()
    harness.on_signals_unwind()
    print(harness.machine_line())
    print(harness.yardstick_line(harness.cow_yardstick(args.bin)))
    with harness.Server(args.bin, ["--rpm", "100000", "--rpd", "1000000", "--memory", "1024"]) \
            as srv:
        json_bomb(srv)
        forged_records(srv)
        main_bomb(srv)
        sparse_files(srv)
    with harness.Server(args.bin, ["--rpm", "100000", "--rpd", "1000000", "--request-deadline",
                                   "5", "--client-timeout", "30"]) as srv:
        trickling_flood(srv)
    return 0


if __name__ == "__main__":
    harness.run_main(main)
