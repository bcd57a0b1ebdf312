#!/usr/bin/python3
"""pybox under overload: goodput with more clients than slots and queue, against the peak.

    bench/overload.py [--slots 2] [--queue 4:2] [--job print|busy20] [--peak-seconds 10]
                      [--seconds 30] [--factor 4] [--pause 0.05] [--limited-seconds 10]
                      [--limited-clients 4] [--target 0.9] [--bin build/bench/pybox]

Starts its own `pybox serve` on 127.0.0.1:0 with a fresh data directory, an admin key (no rate
limits) and --max-concurrency SLOTS --queue N:SECONDS, then:

1. peak: exactly SLOTS clients send the job back to back for --peak-seconds (after a 2 s
   warm-up): the executions/s the server completes when it is kept just full;
2. overload: FACTOR x (SLOTS + N) clients do the same for --seconds. Goodput is the successful
   executions/s, against the peak (target: --target, 90 %). The only answers allowed are 200
   (with status ok), 429 and 503; any other status, a connection error or a request that hangs
   (no answer within the queue wait + the server's timeout + 15 s) is a failure. A client that
   gets 429 or 503 waits --pause seconds before its next request (0: a retry storm);
3. rate-limited neighbours (--limited-seconds, 0 skips it): SLOTS admin clients again, beside
   --limited-clients clients of a key allowed 1 request per minute, which hammer the server
   with the same pause. Their 429s must not take the admin clients' slots: the admin goodput is
   held against the peak too;
4. the peak once more. The reference for the ratios is the mean of the two peaks, so that a
   neighbour's load that came or went during the run shows (their difference is printed, with a
   warning past 20 %) instead of passing for pybox's.

Latencies are reported as p50/p90/p99/max of the 200 answers (with the queue wait: the latency
less the execution's own duration_ms) and of the 503 answers. The machine's copy-on-write fault
rate (pybox-bench-cow, beside the binary) is printed before and after, as the yardstick of how
loaded the machine was. Exit status 1 when an answer was not allowed or a goodput is below the
target. Prints a table, then one JSON line.

Ctrl-C or SIGTERM stops the server (exit status 130) and removes the temporary directory; if
the bench is killed outright the server still gets SIGTERM, but /tmp/pybox-bench-* stays.
"""
import argparse
import collections
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

JOBS = {
    "print": "print(1)",
    "busy20": "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 0.02:\n"
              "    pass\nprint(1)",
}
SERVER_TIMEOUT = 10  # the server's default wall limit (pybox serve --timeout)


class Tally:
    """The answers of one group of clients in one phase."""

    def __init__(self):
        self.lock = threading.Lock()
        self.answers = collections.Counter()  # "200", "429", "503", "HTTP 500", "hang", ...
        self.ok_at = []                       # completion times (monotonic) of ok answers
        self.lat_ok = []                      # seconds, 200 ok
        self.wait_ok = []                     # seconds, 200 ok less the execution's duration
        self.lat_503 = []
        self.lat_429 = []
        self.bad = []                         # the first disallowed answers
        self.job_cpu_ms = 0.0                 # cpu_ms of the ok executions, summed

    def add(self, what, lat=None, end=None, duration_ms=None, detail=None, cpu_ms=None):
        with self.lock:
            self.answers[what] += 1
            if what == "200":
                self.job_cpu_ms += cpu_ms or 0.0
                self.ok_at.append(end)
                self.lat_ok.append(lat)
                if duration_ms is not None:
                    self.wait_ok.append(max(0.0, lat - duration_ms / 1e3))
            elif what == "503":
                self.lat_503.append(lat)
            elif what == "429":
                self.lat_429.append(lat)
            elif len(self.bad) < 10:
                self.bad.append({"answer": what, "detail": detail})

    def disallowed(self):
        return sum(n for a, n in self.answers.items() if a not in ("200", "429", "503"))

    def goodput(self, t0, t1):
        return sum(1 for t in self.ok_at if t0 <= t <= t1) / (t1 - t0)

    def summary(self, t0, t1):
        return {"answers": dict(self.answers), "goodput": round(self.goodput(t0, t1), 1),
                "latency_200_ms": harness.distribution_ms(self.lat_ok),
                "queue_wait_200_ms": harness.distribution_ms(self.wait_ok),
                "latency_503_ms": harness.distribution_ms(self.lat_503),
                "latency_429_ms": harness.distribution_ms(self.lat_429),
                "job_cpu": round(self.job_cpu_ms / 1e3 / (t1 - t0), 2),
                "disallowed": self.disallowed(), "disallowed_first": self.bad[:5]}


def client_loop(srv, key, body, until, tally, pause, hang_s):
    client = harness.Client(srv, timeout=hang_s)
    while time.monotonic() < until:
        try:
            status, _, data, lat = client.post("/v1/execute", body, key=key)
        except socket.timeout:
            tally.add("hang", detail="no answer within %.0f s" % hang_s)
            continue
        except Exception as e:  # noqa: BLE001 - a connection error is a failure we count
            tally.add("connection error", detail=repr(e))
            time.sleep(pause)
            continue
        end = time.monotonic()
        parsed = harness.json_body(data)
        if status == 200:
            if isinstance(parsed, dict) and parsed.get("status") == "ok":
                tally.add("200", lat, end, parsed.get("duration_ms"),
                          cpu_ms=parsed.get("cpu_ms"))
            else:
                tally.add("200 not ok", detail=data[:300].decode("utf-8", "replace"))
        elif status in (429, 503):
            etype = ((parsed or {}).get("error_details") or {}).get("type") \
                if isinstance(parsed, dict) else None
            want = "RateLimitExceeded" if status == 429 else "ServerBusy"
            if etype != want:
                tally.add("%d not %s" % (status, want), detail=data[:300].decode("utf-8",
                                                                                 "replace"))
            else:
                tally.add(str(status), lat, end)
            time.sleep(pause)
        else:
            tally.add("HTTP %d" % status, detail=data[:300].decode("utf-8", "replace"))
    client.close()


def cpu_now(srv):
    """CPU seconds used so far: by this bench (its client threads), by the server's supervisor
    process (its threads; the jail's processes are not counted) and by the whole machine (busy
    time of /proc/stat), with pool counters from /metrics."""
    tick = os.sysconf("SC_CLK_TCK")
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out = {"bench": ru.ru_utime + ru.ru_stime}
    try:
        with open("/proc/%d/stat" % srv.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out["supervisor"] = (int(fields[11]) + int(fields[12])) / tick
    except (OSError, IndexError, ValueError):
        out["supervisor"] = 0.0
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    out["machine"] = (sum(v[:8]) - v[3] - v[4]) / tick  # all but idle and iowait
    try:
        m = srv.metrics()
    except OSError:
        m = {}
    out["warm"] = m.get('pybox_pool_executions_total{cell="warm"}', 0)
    out["forked"] = m.get('pybox_pool_executions_total{cell="forked"}', 0)
    out["queue_timeouts"] = m.get("pybox_queue_timeouts_total", 0)
    return out


def run_phase(srv, groups, seconds, pause, hang_s):
    """groups: [(clients, key, body, tally)]. Runs every client for `seconds`; returns
    (t0, t1) of the measured window and what it cost (cpu_now() differences; CPU as a share
    of one CPU, e.g. 1.5 = 150 %)."""
    c0 = cpu_now(srv)
    t0 = time.monotonic()
    until = t0 + seconds
    threads = []
    for clients, key, body, tally in groups:
        for _ in range(clients):
            threads.append(threading.Thread(target=client_loop, daemon=True,
                                            args=(srv, key, body, until, tally, pause, hang_s)))
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.5)
    t1 = time.monotonic()
    c1 = cpu_now(srv)
    cost = {k: round(c1[k] - c0[k], 1) for k in ("warm", "forked", "queue_timeouts")}
    for k in ("bench", "supervisor", "machine"):
        cost[k + "_cpu"] = round((c1[k] - c0[k]) / (t1 - t0), 2)
    return t0, until, cost


def fmt_dist(d):
    if not d["n"]:
        return "-"
    return "%s/%s/%s/%s" % (d["p50"], d["p90"], d["p99"], d["max"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", default=harness.DEFAULT_BIN, help="the pybox binary")
    ap.add_argument("--slots", type=int, default=2, help="--max-concurrency (default 2)")
    ap.add_argument("--queue", default="4:2", help="--queue N:SECONDS (default 4:2)")
    ap.add_argument("--job", choices=sorted(JOBS), default="print",
                    help="print: print(1); busy20: a 20 ms busy loop")
    ap.add_argument("--peak-seconds", type=float, default=10.0)
    ap.add_argument("--seconds", type=float, default=30.0, help="of the overload phase")
    ap.add_argument("--factor", type=int, default=4,
                    help="overload clients = FACTOR x (slots + queue) (default 4)")
    ap.add_argument("--pause", type=float, default=0.05,
                    help="seconds a client waits after a 429 or 503 (default 0.05)")
    ap.add_argument("--limited-seconds", type=float, default=10.0,
                    help="of the rate-limited neighbours phase (0 skips it)")
    ap.add_argument("--limited-clients", type=int, default=4)
    ap.add_argument("--target", type=float, default=0.9, help="goodput / peak (default 0.9)")
    args = ap.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit("no pybox binary at %s: cmake -S . -B build/bench -G Ninja "
                 "-DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build/bench" % args.bin)
    qn, qs = args.queue.split(":") if ":" in args.queue else (args.queue, "5")
    qn, qs = int(qn), float(qs)
    hang_s = qs + SERVER_TIMEOUT + 15
    harness.on_signals_unwind()
    body = json.dumps({"code": JOBS[args.job]}).encode()
    limited_key = []

    def prepare(srv):
        if args.limited_seconds > 0:
            p = subprocess.run([srv.bin, "keys", "create", "--name", "limited", "--rpm", "1",
                                "--rpd", "1000000", "--data", srv.data_dir], env=srv.env(),
                               capture_output=True, text=True, timeout=60, check=True)
            limited_key.append(p.stdout.strip())

    print(harness.machine_line())
    ys_before = harness.cow_yardstick(args.bin)
    print(harness.yardstick_line(ys_before))
    flags = ["--max-concurrency", str(args.slots), "--queue", args.queue]
    failures = []
    report = {"bench": "overload", "slots": args.slots, "queue": args.queue, "job": args.job,
              "pause_s": args.pause}
    with harness.Server(args.bin, flags, prepare=prepare) as srv:
        print("pybox serve %s (pid %d) %s; job %r" % (srv.url, srv.pid, " ".join(flags),
                                                     args.job))
        admin = srv.admin_key
        # Warm-up: the pool adapts to the load, the page cache and the store are warm.
        run_phase(srv, [(args.slots, admin, body, Tally())], 2.0, args.pause, hang_s)

        peak = Tally()
        p0, p1, peak_cost = run_phase(srv, [(args.slots, admin, body, peak)],
                                      args.peak_seconds, args.pause, hang_s)
        peak_s = dict(peak.summary(p0, p1), cost=peak_cost)

        over_clients = args.factor * (args.slots + qn)
        over = Tally()
        o0, o1, cost = run_phase(srv, [(over_clients, admin, body, over)], args.seconds,
                                 args.pause, hang_s)
        over_s = dict(over.summary(o0, o1), cost=cost)

        lim_s = lim_admin_s = None
        if args.limited_seconds > 0:
            lim_admin, lim = Tally(), Tally()
            l0, l1, cost = run_phase(srv, [(args.slots, admin, body, lim_admin),
                                           (args.limited_clients, limited_key[0], body, lim)],
                                     args.limited_seconds, args.pause, hang_s)
            lim_admin_s = dict(lim_admin.summary(l0, l1), cost=cost)
            lim_s = dict(lim.summary(l0, l1), cost=cost)

        # The peak once more: a neighbour's load that came or went shows as a difference.
        peak2 = Tally()
        p0, p1, cost = run_phase(srv, [(args.slots, admin, body, peak2)], args.peak_seconds,
                                 args.pause, hang_s)
        peak2_s = dict(peak2.summary(p0, p1), cost=cost)
    ys_after = harness.cow_yardstick(args.bin)
    # The reference is the mean of the peak before and after the other phases.
    peak_rate = (peak_s["goodput"] + peak2_s["goodput"]) / 2
    drift = (abs(peak_s["goodput"] - peak2_s["goodput"]) / peak_rate) if peak_rate else 0.0

    def ratio(x):
        return x / peak_rate if peak_rate else 0.0

    print()
    print("%-31s %7s %9s %5s  %-24s %-22s %-16s %s" % (
        "phase", "clients", "goodput/s", "/peak", "200 ms p50/p90/p99/max",
        "503 ms p50/p90/p99/max", "warm/forked", "answers"))
    rows = [("peak (clients = slots)", args.slots, peak_s),
            ("overload (%d x (slots + queue))" % args.factor, over_clients, over_s)]
    if lim_s is not None:
        rows.append(("admin beside rate-limited", args.slots, lim_admin_s))
        rows.append(("  the rate-limited (1/min)", args.limited_clients, lim_s))
    rows.append(("peak again", args.slots, peak2_s))
    for name, clients, s in rows:
        c = s["cost"]
        print("%-31s %7d %9.1f %4.0f%%  %-24s %-22s %-16s %s" % (
            name, clients, s["goodput"], 100 * ratio(s["goodput"]),
            fmt_dist(s["latency_200_ms"]), fmt_dist(s["latency_503_ms"]),
            "%d/%d" % (c["warm"], c["forked"]),
            ", ".join("%s: %d" % kv for kv in sorted(s["answers"].items()))))
    print("peak reference %.1f/s: the mean of the first and last peak (%.0f%% apart)" % (
        peak_rate, 100 * drift))
    print("queue wait of the 200s under overload (latency - duration_ms), ms p50/p90/p99/max: %s"
          % fmt_dist(over_s["queue_wait_200_ms"]))
    print("CPU (100 %% = one CPU of %d): bench clients / pybox supervisor / the jobs of the ok "
          "answers (their cpu_ms) / the whole machine, neighbours included:" %
          (os.cpu_count() or 0))
    for name, _, s in rows:
        if not name.startswith("  "):
            c = s["cost"]
            print("  %-29s %4.0f%% / %4.0f%% / %4.0f%% / %4.0f%%" % (
                name, 100 * c["bench_cpu"], 100 * c["supervisor_cpu"], 100 * s["job_cpu"],
                100 * c["machine_cpu"]))
    if drift > 0.2:
        print("warning: the two peaks differ by %.0f%%: the machine's load changed, the ratios "
              "are not reliable" % (100 * drift))
    print("before: " + harness.yardstick_line(ys_before))
    print("after:  " + harness.yardstick_line(ys_after))

    for name, _, s in rows:
        if s["disallowed"]:
            failures.append("%s: %d answers not allowed, e.g. %s" % (
                name.strip(), s["disallowed"], s["disallowed_first"][:2]))
    if not peak_rate:
        failures.append("no successful execution at peak")
    if ratio(over_s["goodput"]) < args.target:
        failures.append("overload goodput %.1f/s is %.0f%% of the peak %.1f/s (target %.0f%%)" % (
            over_s["goodput"], 100 * ratio(over_s["goodput"]), peak_rate, 100 * args.target))
    if lim_admin_s is not None and ratio(lim_admin_s["goodput"]) < args.target:
        failures.append("beside rate-limited clients the admin goodput %.1f/s is %.0f%% of the "
                        "peak (target %.0f%%)" % (lim_admin_s["goodput"],
                                                  100 * ratio(lim_admin_s["goodput"]),
                                                  100 * args.target))
    if srv.exit_status != 0:
        failures.append("pybox serve exited %s on SIGTERM (expected 0)" % srv.exit_status)
    if srv.leftovers:
        failures.append("left after the server exited: " + "; ".join(srv.leftovers[:10]))
    print("verdict: %s" % ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    report.update({
        "peak_per_s": round(peak_rate, 1), "peak": peak_s, "peak_again": peak2_s,
        "peak_drift": round(drift, 3), "overload_clients": over_clients,
        "overload": over_s, "goodput_ratio": round(ratio(over_s["goodput"]), 3),
        "limited_admin": lim_admin_s, "limited": lim_s,
        "limited_admin_ratio": None if lim_admin_s is None else
        round(ratio(lim_admin_s["goodput"]), 3),
        "cow_yardstick_before": {k: v["faults_per_s"] for k, v in ys_before.items()},
        "cow_yardstick_after": {k: v["faults_per_s"] for k, v in ys_after.items()},
        "server_exit": srv.exit_status, "leftovers": srv.leftovers, "failures": failures,
        "pass": not failures})
    print(json.dumps(report, sort_keys=True))
    return 0 if not failures else 1


if __name__ == "__main__":
    harness.run_main(main)
