"""`pybox serve --drain S` (docs/deploy.md "Stop and drain"): on SIGTERM the server lets running
executions finish for up to S seconds, then stops those still running (status `killed`, error
type `Stopped`, answered to their clients) and exits 0 within about S seconds, rather than
waiting for each execution's own time limit; one that ends within the drain is answered whole.
Every wait polls with a deadline.
"""
import signal
import threading
import time

from conftest import SLOW, body_of, wait_metric

LONG = "import time\nprint('started', flush=True)\ntime.sleep(60)\nprint('never')"


def run_in_thread(srv, code, timeout):
    out = {}

    def go():
        try:
            out["r"] = srv.admin({"code": code, "timeout": timeout}, v1=True, timeout=120)
        except Exception as e:  # noqa: BLE001 - the test reads what happened
            out["error"] = e

    th = threading.Thread(target=go, daemon=True)
    th.start()
    return th, out


def wait_exit(srv, timeout):
    """Seconds from now to the server's exit, polled; fails past `timeout`."""
    t0 = time.monotonic()
    while srv.proc.poll() is None:
        assert time.monotonic() - t0 < timeout, f"still running {timeout} s after SIGTERM"
        time.sleep(0.02)
    return time.monotonic() - t0


def test_drain_stops_a_long_execution_at_its_end(start_server):
    srv = start_server("--drain", "1", "--timeout", "90")
    th, out = run_in_thread(srv, LONG, 80)
    wait_metric(srv, "pybox_cells_busy", 1, timeout=30)
    srv.proc.send_signal(signal.SIGTERM)
    took = wait_exit(srv, 1 + 5 * SLOW)
    assert srv.proc.returncode == 0, srv.log_text()[-2000:]
    assert took >= 0.9, took  # it did drain first
    th.join(30)
    assert "r" in out, out
    res = body_of(out["r"])
    assert res["status"] == "killed" and res["error"]["type"] == "Stopped", res
    assert res["stdout"] == "started\n", res
    assert "those still running at the drain's end were stopped" in srv.log_text()
    srv.stop_and_check()  # exited 0 already; nothing of it is left


def test_an_execution_that_ends_within_the_drain_is_answered_whole(start_server):
    srv = start_server("--drain", "20")
    th, out = run_in_thread(srv, "import time\ntime.sleep(1.5)\nprint('done')", 10)
    wait_metric(srv, "pybox_cells_busy", 1, timeout=30)
    srv.proc.send_signal(signal.SIGTERM)
    took = wait_exit(srv, 20)
    assert srv.proc.returncode == 0
    assert took < 15, took  # it left once the execution ended, not at the drain's end
    th.join(30)
    res = body_of(out["r"])
    assert res["status"] == "ok" and res["stdout"] == "done\n", res
    srv.stop_and_check()
