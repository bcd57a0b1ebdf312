#!/usr/bin/python3
"""The many-nodes benchmark: executions/s of print(1) through nginx (deploy/nginx.conf) in front
of 1, 2 and 3 `pybox serve` nodes sharing one Redis store, with C concurrent clients, the
per-node efficiency (executions/s per node against one node's), and one node straight
(no proxy) in the same run as the peer; with the machine's copy-on-write yardstick.

    bench/nodes_bench.py [--requests N] [--clients C] [--pybox PATH]

On a machine with fewer cores than nodes the machine, not pybox, is the bound: every node's
cells share the same cores, so the efficiency falls as nodes are added.
"""
import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from http_bench import built, percentile, run_clients  # noqa: E402

SHIPPED = (8081, 8082, 8083)  # the nodes' ports deploy/nginx.conf names


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    for _ in range(1200):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen within a minute")


def start_node(pybox, tmp, node, port, store, key):
    d = os.path.join(tmp, node)
    os.makedirs(d)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYBOX")}
    env["PYBOX_ADMIN_KEY"] = key
    p = subprocess.Popen([pybox, "serve", "--listen", f"127.0.0.1:{port}", "--data", d,
                          "--node-id", node, "--store", store, "--trusted-proxy", "127.0.0.1/32"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, p, f"node {node}")
    return p


def start_nginx(tmp, ports, listen):
    """deploy/nginx.conf with this run's ports; the nodes it has not, pointed at the last one."""
    conf = open(os.path.join(ROOT, "deploy", "nginx.conf")).read()
    for shipped, port in zip(SHIPPED, ports + [ports[-1]] * (3 - len(ports))):
        conf = conf.replace(f"127.0.0.1:{shipped}", f"127.0.0.1:{port}")
    conf = conf.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    prefix = os.path.join(tmp, f"nginx-{len(ports)}")
    os.makedirs(prefix)
    with open(os.path.join(prefix, "site.conf"), "w") as f:
        f.write(conf)
    with open(os.path.join(prefix, "nginx.conf"), "w") as f:
        f.write(f"daemon off; worker_processes 2; pid {prefix}/pid; error_log {prefix}/err;\n"
                "events { worker_connections 1024; }\n"
                f"http {{ access_log off; client_body_temp_path {prefix}/b; "
                f"proxy_temp_path {prefix}/p; include {prefix}/site.conf; }}\n")
    p = subprocess.Popen(["nginx", "-p", prefix, "-c", os.path.join(prefix, "nginx.conf")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(listen, p, "nginx")
    return p


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def measure(port, key, clients, n):
    body = '{"code": "print(1)"}'
    run_clients("127.0.0.1", port, key, body, clients, clients * 10)  # warm every node's cells
    lat, wall, errors = run_clients("127.0.0.1", port, key, body, clients, n)
    assert not errors, errors[:3]
    return len(lat) / wall, percentile(lat, 50) * 1e3, percentile(lat, 99) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--pybox", default=os.path.join(ROOT, "build", "release", "pybox"))
    args = ap.parse_args()
    yardstick = built(args.pybox)
    print("machine: %d CPUs, %s; yardstick: %s" % (os.cpu_count(), os.uname().release,
                                                    yardstick))
    key = secrets.token_hex(16)
    with tempfile.TemporaryDirectory() as tmp:
        rport = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(rport), "--bind", "127.0.0.1",
                                  "--save", "", "--appendonly", "no", "--dir", tmp],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        nodes = []
        try:
            wait_port(rport, redis, "redis-server")
            store = f"redis://127.0.0.1:{rport}"
            ports = [free_port() for _ in range(3)]
            nodes = [start_node(args.pybox, tmp, f"n{i + 1}", ports[i], store, key)
                     for i in range(3)]
            rps, p50, p99 = measure(ports[0], key, args.clients, args.requests)
            print("1 node, no proxy: %.0f executions/s, p50 %.2f ms, p99 %.2f ms" % (rps, p50, p99))
            one = None
            for n in (1, 2, 3):
                listen = free_port()
                proxy = start_nginx(tmp, ports[:n], listen)
                try:
                    rps, p50, p99 = measure(listen, key, args.clients, args.requests)
                finally:
                    stop(proxy)
                one = one or rps
                print("%d node(s) behind nginx: %.0f executions/s (%.2f of one node's per node), "
                      "p50 %.2f ms, p99 %.2f ms" % (n, rps, rps / one / n, p50, p99))
        finally:
            for p in nodes:
                stop(p)
            redis.kill()
            redis.wait()


if __name__ == "__main__":
    main()
