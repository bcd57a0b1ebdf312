"""pybox serve --server-timing (issue 17): an execution's answer carries a Server-Timing header
whose phases, each >= 0, sum to its `total`, which is no more than the client measured; a server
without the option, a refused request and a streamed answer carry none.
"""
import re
import subprocess
import time

import pytest

from conftest import PYBOX, body_of, clean_env, wait_metric

# The phases of an execution whose cell reported its step times, in their order; `run` is
# `code` and `exit` when the job's last record was read before the cell reaped it.
HEAD = ["parse", "auth", "admit", "queue", "charge", "prep", "handoff", "start"]
TAIL = ["collect", "report", "result", "audit", "answer"]
PHASES = (HEAD + ["run"] + TAIL, HEAD + ["code", "exit"] + TAIL)
ENTRY = re.compile(r'^([a-z]+)(?:;dur=(\d+\.\d{3}))?(?:;desc="([a-z]+)")?$')


def parse_timing(value):
    """[(name, dur ms or None, desc or None)] of a Server-Timing value, each entry checked
    against the syntax pybox writes."""
    out = []
    for part in value.split(", "):
        m = ENTRY.match(part)
        assert m, f"entry {part!r} of Server-Timing {value!r}"
        out.append((m.group(1), float(m.group(2)) if m.group(2) else None, m.group(3)))
    return out


def timed(call):
    """(response, ms the client waited for it)."""
    t0 = time.perf_counter()
    r = call()
    return r, (time.perf_counter() - t0) * 1e3


def check_breakdown(r, client_ms, cell):
    """The answer's Server-Timing: every phase in order, each >= 0, their sum the total to the
    rounding, the total within what the client measured, and the cell as `cell` says."""
    assert r.status_code == 200, r.text
    assert body_of(r)["status"] in ("ok", "success"), r.text  # /v1/execute's, /execute's
    value = r.headers.get("Server-Timing")
    assert value, r.headers
    entries = parse_timing(value)
    durs = {name: dur for name, dur, _ in entries}
    names = [name for name, dur, _ in entries if dur is not None]
    assert names in [p + ["total"] for p in PHASES], value
    phases = names[:-1]
    assert all(durs[p] >= 0 for p in phases), value
    assert abs(sum(durs[p] for p in phases) - durs["total"]) <= 1.0, value
    assert 0 < durs["total"] <= client_ms, (value, client_ms)
    assert ("cell", None, cell) in entries, value
    # The code itself ran within `run` (or `code`, then `exit`): the job ran and was reaped.
    durs["run"] = durs.get("run", 0) + durs.get("code", 0) + durs.get("exit", 0)
    assert durs["run"] > 0, value
    return durs


@pytest.fixture(scope="module")
def srv(module_start_server):
    return module_start_server("--server-timing", "--spares", "2:2", "--rpm", "1000", "--rpd",
                               "100000")


def warm(s):
    """Wait until every spare is ready (2 of the anonymous callers' engine, 2 of the keyed
    callers'), so the next execution takes a warm one."""
    wait_metric(s, "pybox_cells_idle", 4)


def test_v1_answer_has_every_phase(srv):
    for _ in range(5):
        warm(srv)
        r, ms = timed(lambda: srv.admin({"code": "print(1)"}, v1=True))
        check_breakdown(r, ms, "warm")


def test_compatible_answer_too(srv):
    warm(srv)
    r, ms = timed(lambda: srv.admin({"code": "print(1)"}))
    check_breakdown(r, ms, "warm")
    # The anonymous caller's path (its window and quota held, then charged) is timed as well.
    warm(srv)
    r, ms = timed(lambda: srv.execute({"code": "print(2)"}))
    check_breakdown(r, ms, "warm")


def test_run_phase_holds_the_code(srv):
    """A job that sleeps 0.3 s: its sleep lands in `run` (or `code`), not elsewhere."""
    warm(srv)
    r, ms = timed(lambda: srv.admin({"code": "import time\ntime.sleep(0.3)"}, v1=True))
    durs = check_breakdown(r, ms, "warm")
    assert durs["run"] >= 300, durs
    assert durs.get("code", durs["run"]) >= 300, durs
    assert durs["total"] - durs["run"] < durs["run"], durs


def test_refusals_and_streams_carry_none(srv):
    r = srv.post("/v1/execute", data=b"{not json", key=srv.admin_key)
    assert r.status_code == 400, r.text
    assert "Server-Timing" not in r.headers, r.headers
    r = srv.post("/v1/execute", {"code": "print(1)"}, key=srv.admin_key,
                 headers={"Accept": "text/event-stream"})
    assert r.status_code == 200 and "event: end" in r.text, r.text
    assert "Server-Timing" not in r.headers, r.headers
    r = srv.get("/v1/health")
    assert r.status_code == 200 and "Server-Timing" not in r.headers, r.headers


def test_forked_cell(start_server):
    """Without a warm pool each execution's cell is forked for it: the same phases, so named."""
    s = start_server("--server-timing", "--spares", "0:0")
    for _ in range(2):
        r, ms = timed(lambda: s.admin({"code": "print(1)"}, v1=True))
        check_breakdown(r, ms, "forked")


def test_off_by_default(start_server):
    s = start_server()
    r = s.admin({"code": "print(1)"}, v1=True)
    assert r.status_code == 200, r.text
    assert "Server-Timing" not in r.headers, r.headers
    r = s.admin({"code": "print(1)"})
    assert r.status_code == 200 and "Server-Timing" not in r.headers, r.headers


def test_environment_switch(start_server):
    s = start_server("--spares", "2:2", env={"PYBOX_SERVER_TIMING": "1"})
    warm(s)
    r, ms = timed(lambda: s.admin({"code": "print(1)"}, v1=True))
    check_breakdown(r, ms, "warm")
    s = start_server(env={"PYBOX_SERVER_TIMING": "0"})
    r = s.admin({"code": "print(1)"}, v1=True)
    assert r.status_code == 200 and "Server-Timing" not in r.headers, r.headers


def test_environment_switch_refuses_other_values():
    p = subprocess.run([PYBOX, "serve", "--listen", "127.0.0.1:0"], capture_output=True,
                       text=True, timeout=30, env=clean_env({"PYBOX_SERVER_TIMING": "yes"}))
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "PYBOX_SERVER_TIMING" in p.stderr and "1 or 0" in p.stderr, p.stderr
