"""The queue in front of the concurrency cap (--queue N:SECONDS): beyond --max-concurrency, up
to N requests wait in order of arrival, each for at most SECONDS, before 503 ServerBusy.

(`--queue 0`, an immediate 503, is covered by test_server_admission.py.)

Each concurrent request comes from its own loopback address (127.0.0.x) on its own session.
"""
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import PYBOX, SLOW, body_of, clean_env, expect_error, metric, wait_metric


class Request(threading.Thread):
    """POST /v1/execute from its own address in a thread; records the response and when it
    came back (time.monotonic())."""

    def __init__(self, srv, source, code):
        super().__init__(daemon=True)
        self.srv, self.source, self.code = srv, source, code
        self.resp = self.start_t = self.end_t = self.error = None

    def run(self):
        self.start_t = time.monotonic()
        try:
            self.resp = self.srv.post("/v1/execute", {"code": self.code}, source=self.source,
                                      timeout=60)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e
        self.end_t = time.monotonic()

    @property
    def elapsed(self):
        return self.end_t - self.start_t

    def finish(self):
        self.join(90)
        assert not self.is_alive(), f"request from {self.source} never came back"
        assert self.error is None, f"request from {self.source} failed: {self.error!r}"
        return self.resp


def ran_ok(req, stdout):
    r = req.finish()
    body = body_of(r)
    assert r.status_code == 200, f"{req.source}: {r.status_code}: {r.text[:2000]}"
    assert body["status"] == "ok", body
    assert body["stdout"] == stdout, body
    return body


def busy(resp):
    body = expect_error(resp, 503, "ServerBusy")
    ra = resp.headers.get("Retry-After")
    assert ra is not None and ra.isdigit() and int(ra) >= 1, resp.headers
    return body


def sleeper(seconds, label):
    return f"import time\ntime.sleep({seconds})\nprint('{label}')\n"


@pytest.fixture(scope="module")
def one_slot(module_start_server):
    return module_start_server("--max-concurrency", "1", "--queue", "2:3", "--rpm", "1000",
                               "--rpd", "10000")


def test_waiters_run_after_the_slot_frees_in_arrival_order(one_slot):
    srv = one_slot
    assert metric(srv, "pybox_queue_timeouts_total") == 0
    a = Request(srv, "127.0.0.31", sleeper(1.5, "A"))
    a.start()
    wait_metric(srv, "pybox_cells_busy", 1)
    # B then C arrive while A runs: both wait, B first.
    b = Request(srv, "127.0.0.32", sleeper(0.3, "B"))
    b.start()
    wait_metric(srv, "pybox_queue_waiting", 1)
    c = Request(srv, "127.0.0.33", sleeper(0.3, "C"))
    c.start()
    wait_metric(srv, "pybox_queue_waiting", 2)
    assert a.is_alive() and b.is_alive() and c.is_alive()

    # A fourth, beyond the queue: 503 at once, long before A is done.
    t0 = time.monotonic()
    r = srv.post("/v1/execute", {"code": "print('D')"}, source="127.0.0.34", timeout=60)
    d_end = time.monotonic()
    busy(r)
    assert d_end - t0 < 1.0 * SLOW, f"the 503 took {d_end - t0:.2f} s"
    assert a.is_alive(), "the 503 came only after the sleeper ended"
    assert metric(srv, "pybox_queue_waiting") == 2

    ran_ok(a, "A\n")
    ran_ok(b, "B\n")
    ran_ok(c, "C\n")
    assert a.elapsed >= 1.5
    # One at a time, in order of arrival: each ends at least its own sleep after the one before.
    assert b.end_t - a.end_t >= 0.25, (a.end_t, b.end_t)
    assert c.end_t - b.end_t >= 0.25, (b.end_t, c.end_t)
    # The waiters waited for A, not for their own deadline of 3 s.
    assert b.elapsed < 3.0 + 1.0 * SLOW, b.elapsed
    assert metric(srv, "pybox_queue_waiting") == 0
    assert metric(srv, "pybox_queue_timeouts_total") == 0
    assert metric(srv, "pybox_cells_busy") == 0
    # Served and refused alike, the server goes on: a request now runs at once.
    r = srv.post("/v1/execute", {"code": "print('E')"}, source="127.0.0.35", timeout=60)
    assert r.status_code == 200 and body_of(r)["stdout"] == "E\n", r.text


def test_waiter_gets_503_when_its_wait_runs_out(start_server):
    srv = start_server("--max-concurrency", "1", "--queue", "1:0.5", "--rpm", "1000",
                       "--rpd", "10000")
    a = Request(srv, "127.0.0.41", sleeper(3, "A"))
    a.start()
    wait_metric(srv, "pybox_cells_busy", 1)
    t0 = time.monotonic()
    r = srv.post("/v1/execute", {"code": "print('B')"}, source="127.0.0.42", timeout=60)
    waited = time.monotonic() - t0
    busy(r)
    # Neither at once nor after the sleeper: after its own half second.
    assert waited >= 0.45, f"the 503 came after {waited:.2f} s, before the wait of 0.5 s"
    assert waited < 0.5 + 1.5 * SLOW, f"the 503 came after {waited:.2f} s"
    assert a.is_alive(), "the 503 came only after the sleeper ended"
    assert metric(srv, "pybox_queue_timeouts_total") == 1
    assert metric(srv, "pybox_queue_waiting") == 0
    ran_ok(a, "A\n")
    # The one that gave up left the queue: the slot is free again.
    assert metric(srv, "pybox_cells_busy") == 0
    r = srv.post("/v1/execute", {"code": "print('C')"}, source="127.0.0.43", timeout=60)
    assert r.status_code == 200 and body_of(r)["stdout"] == "C\n", r.text
    assert metric(srv, "pybox_queue_timeouts_total") == 1


def test_default_queue_and_environment(start_server):
    # No --queue: the default (16:5) lets a request wait for the busy slot.
    srv = start_server("--max-concurrency", "1", "--rpm", "1000", "--rpd", "10000")
    a = Request(srv, "127.0.0.51", sleeper(1, "A"))
    a.start()
    wait_metric(srv, "pybox_cells_busy", 1)
    b = Request(srv, "127.0.0.52", "print('B')\n")
    b.start()
    ran_ok(a, "A\n")
    ran_ok(b, "B\n")
    # B waited for A rather than being refused or run beside it: A's code sleeps 1 s from
    # after A was sent, so its slot was not free before then (the two clients' threads may
    # read their answers in either order, so their ends are not compared).
    assert b.end_t >= a.start_t + 1.0 and b.elapsed >= 0.5, (a.start_t, b.end_t, b.elapsed)
    srv.stop_and_check()

    # PYBOX_QUEUE=0: no queue, 503 at once.
    srv = start_server("--max-concurrency", "1", "--rpm", "1000", "--rpd", "10000",
                       env={"PYBOX_QUEUE": "0"})
    a = Request(srv, "127.0.0.53", sleeper(2, "A"))
    a.start()
    wait_metric(srv, "pybox_cells_busy", 1)
    t0 = time.monotonic()
    r = srv.post("/v1/execute", {"code": "print('B')"}, source="127.0.0.54", timeout=60)
    assert time.monotonic() - t0 < 1.0 * SLOW
    busy(r)
    assert a.is_alive()
    ran_ok(a, "A\n")
    assert metric(srv, "pybox_queue_timeouts_total") == 0


def run_serve(args, env=None):
    """`pybox serve ARGS` that must exit by itself; returns (status, stderr)."""
    with tempfile.TemporaryDirectory(prefix="pybox-it-") as data:
        argv = [PYBOX, "serve", "--listen", "127.0.0.1:0", "--data", data, "--no-preload"]
        try:
            p = subprocess.run(argv + list(args), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=20, env=clean_env(env))
        except subprocess.TimeoutExpired:
            pytest.fail(f"pybox serve {args} env {env} did not exit: the value was accepted")
    return p.returncode, p.stderr


@pytest.mark.parametrize("value", ["abc", "5", "1:-1", "1:99999", "1:", ":5", "-1:5", "1:abc",
                                   "1:nan", "2:3:4", "100001:5", ""])
def test_bad_queue_option_exits_2(value):
    rc, err = run_serve(["--queue", value])
    assert rc == 2, f"--queue {value!r}: exit {rc}, stderr {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"--queue {value!r}: not one line: {err!r}"
    assert "--queue" in lines[0], lines[0]


@pytest.mark.parametrize("value", ["abc", "5", "1:99999"])
def test_bad_queue_environment_exits_2(value):
    rc, err = run_serve([], env={"PYBOX_QUEUE": value})
    assert rc == 2, f"PYBOX_QUEUE={value!r}: exit {rc}, stderr {err!r}"
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"PYBOX_QUEUE={value!r}: not one line: {err!r}"
    assert value in lines[0], lines[0]
