"""The Python package's sessions, streaming and rich outputs, in local mode (a `pybox repl
--jsonl` process) and remote mode (a real `pybox serve`'s /v1/sessions): each behaviour in both
modes, and the same calls give equal Results in both.

Nothing is left behind: a session's process and its server-side session end with close(), with
its `with` block, when it is garbage-collected, and when the program exits.
"""
import base64
import dataclasses
import gc
import json
import os
import subprocess
import sys
import threading
import time

import pytest

import pybox
from pybox import Event, Output, Result, Sandbox

from pybox_integration_conftest import PYBOX, REPO, SLOW  # loaded by this directory's conftest

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAF"
                       "BQIAX8jx0gAAAABJRU5ErkJggg==")
PNG_CLASS = ("import base64\n"
             "class P:\n"
             "    def _repr_png_(self):\n"
             f"        return base64.b64decode('{base64.b64encode(PNG).decode()}')\n"
             "    def __repr__(self):\n"
             "        return 'P()'\n")


@pytest.fixture(scope="module")
def session_server(module_start_server, create_key):
    """A server with room for the sessions these tests open, and a key of unlimited rates."""
    server = module_start_server("--sessions", "32:32:64")
    server.client_key = create_key(server, "client", "--rpm", "unlimited", "--rpd", "unlimited")
    return server


@pytest.fixture
def remote(session_server):
    return Sandbox(url=session_server.url, api_key=session_server.client_key)


@pytest.fixture
def local(pybox_bin):
    return Sandbox(binary=pybox_bin)


@pytest.fixture(params=["local", "remote"])
def sb(request):
    return request.getfixturevalue(request.param)


def live_sessions(server):
    """The ids of the key's sessions that have not ended, as the server lists them."""
    r = server.get("/v1/sessions",
                   headers={"Authorization": f"Bearer {server.client_key}"})
    assert r.status_code == 200, r.text
    return [s["id"] for s in r.json()["sessions"] if s["status"] != "dead"]


def gone(pid, timeout=20):
    deadline = time.time() + timeout * SLOW
    while time.time() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------------------------
# One table of calls, both modes


CALLS = [
    dict(code="x = 41"),
    dict(code="x += 1\nprint('hi')\nx"),
    dict(code="x * 2;"),
    dict(code="_ + 1"),
    dict(code="display('abc')\nraise ValueError('v')"),
    dict(code="import sys\nprint('err', file=sys.stderr)\nsys.stdin.read().upper()", stdin="in"),
    dict(code="open('b.txt', 'w').write(open('a.txt').read() * 2)", files={"a.txt": "ab"},
         return_files=["b.txt"]),
    dict(code=PNG_CLASS + "display(P())\nP()"),
    dict(code="class H:\n    def _repr_html_(self):\n        return '<b>x</b>'\n"
              "    def __repr__(self):\n        return 'H()'\nH()"),
    dict(code="def (", ),
    dict(code="def main():\n    return {'x': x}", main=True),
    dict(code="import time\ntime.sleep(30)", timeout=1),
    dict(code="print(x)"),
]


def test_calls_agree_between_modes(local, remote):
    with local.session() as a, remote.session() as b:
        assert a.mode == "local" and b.mode == "remote"
        assert a.id.startswith("ses_") and b.id.startswith("ses_") and a.id != b.id
        for i, call in enumerate(CALLS, 1):
            ra, rb = a.run(**call), b.run(**call)
            assert ra == rb, (call, ra, rb)
            strip = lambda raw: {k: v for k, v in raw.items()  # noqa: E731
                                 if k not in ("duration_ms", "cpu_ms", "max_rss_kb", "request_id",
                                              "session")}
            assert strip(ra.raw) == strip(rb.raw), call
            assert ra.execution_count == i and ra.state_preserved is True
            assert ra.session["status"] == "idle" and ra.session["id"] == a.id
        assert a.dead_reason is None and b.dead_reason is None


def test_repl_rules(sb):
    with sb.session() as s:
        assert s.run("y = 6").value is None
        r = s.run("y * 7")
        assert r.value.type == "result" and r.value.text == "42" and r.outputs == [r.value]
        assert s.run("_ + 1").value.text == "43"
        assert s.run("y;").value is None
        r = s.run("a = 1\n\nraise KeyError('k')")
        assert r.status == "error" and 'File "<cell 5>", line 3' in r.stderr
        assert r.state_preserved is True


def test_outputs_helpers(sb, tmp_path):
    with sb.session() as s:
        r = s.run(PNG_CLASS + "import json\n"
                  "class J:\n    def _repr_json_(self):\n        return {'k': [1, 2]}\n"
                  "display(P(), J())\n"
                  "class H:\n    def _repr_html_(self):\n        return '<i>h</i>'\nH()")
    assert r.status == "ok", r
    png, js, html = r.outputs
    assert isinstance(png, Output) and png.type == "display" and png.text == "P()"
    assert png.png == PNG and png.is_image and png.html is None and png["data"] is png.data
    assert js.json == {"k": [1, 2]} and js.png is None and not js.is_image
    assert html.type == "result" and html.html == "<i>h</i>" and r.value is html
    assert r.images() == [png] and r.html() == ["<i>h</i>"]
    path = png.save(tmp_path / "p.png")
    assert path == str(tmp_path / "p.png") and (tmp_path / "p.png").read_bytes() == PNG
    with pytest.raises(ValueError, match="no image"):
        js.save(tmp_path / "j.png")
    # Sandbox.run() has them too (there a final expression is no output).
    r = sb.run(PNG_CLASS + "display(P())\nP()")
    assert [o.type for o in r.outputs] == ["display"] and r.images()[0].png == PNG
    assert r.execution_count is None and r.state_preserved is None and r.session is None


# ---------------------------------------------------------------------------------------------
# Files


def test_files(sb):
    with sb.session(files={"in.txt": "from the start"}) as s:
        assert s.files.read("in.txt") == b"from the start"
        s.files.write("d/e/bin.dat", b"\0\1\2\xff")
        s.files.put("top.txt", "text")
        assert s.files.get("d/e/bin.dat") == b"\0\1\2\xff"
        r = s.run("print(open('top.txt').read(), len(open('d/e/bin.dat', 'rb').read()))\n"
                  "open('made.txt', 'w').write('by code')")
        assert r.stdout == "text 4\n"
        assert s.files.read("made.txt") == b"by code"
        s.files.delete("made.txt")
        listed = {f.path: f.size for f in s.files.list()}
        assert listed == {"in.txt": 14, "d/e/bin.dat": 4, "top.txt": 4}
        assert all(f.mtime and f.mtime.endswith("Z") for f in s.files)
        with pytest.raises(pybox.PyboxError) as e:
            s.files.read("made.txt")
        assert e.value.type == "NotFound" and "made.txt" in e.value.message
        assert "pybox server" not in e.value.message
        for bad in ("../etc/passwd", "a/./b", "", "/abs"):
            with pytest.raises(pybox.InvalidRequest) as e:
                s.files.read(bad)
            assert e.value.type == "ValidationError", (bad, e.value)
        with pytest.raises(pybox.RequestTooLarge) as e:
            s.files.write("big.bin", b"\0" * ((8 << 20) + 1))
        assert e.value.type == "PayloadTooLarge"
        with pytest.raises(pybox.InvalidRequest):
            s.files.write("x", 5)


# ---------------------------------------------------------------------------------------------
# Interrupt, restart, one call at a time, the end of a session


def test_interrupt_keeps_state(sb):
    with sb.session() as s:
        assert s.interrupt() is False  # nothing runs
        sent = []

        def interrupter():
            deadline = time.time() + 20
            while time.time() < deadline:
                time.sleep(0.3)
                if s.interrupt():
                    sent.append(True)
                    return

        t = threading.Thread(target=interrupter)
        t.start()
        t0 = time.time()
        r = s.run("import time\nz = 5\ntime.sleep(30)")
        t.join()
        assert sent and time.time() - t0 < 15
        assert r.status == "error" and r.error_type == "KeyboardInterrupt"
        assert r.state_preserved is True
        assert s.run("print(z)").stdout == "5\n"


def test_restart_keeps_files(sb):
    with sb.session() as s:
        s.run("gone = 1\nopen('kept.txt', 'w').write('k')")
        s.restart()
        r = s.run("print('gone' in globals(), open('kept.txt').read())")
        assert r.stdout == "False k\n" and r.execution_count == 1


def test_one_call_at_a_time(sb):
    with sb.session() as s:
        t = threading.Thread(target=s.run, args=("import time\ntime.sleep(3)",))
        t.start()
        time.sleep(1)
        with pytest.raises(pybox.SessionBusy) as e:
            s.run("print(1)")
        assert e.value.type == "SessionBusy" and e.value.retry_after == 1
        with pytest.raises(pybox.SessionBusy):
            s.files.list()
        t.join()
        assert s.run("print(1)").stdout == "1\n"


def test_a_call_that_does_not_stop_ends_the_session(local, remote):
    results = []
    for sb in (local, remote):
        with sb.session() as s:
            r = s.run("import time\nwhile True:\n    try:\n        time.sleep(10)\n"
                      "    except KeyboardInterrupt:\n        pass\n", timeout=1)
            assert r.status == "timeout" and r.state_preserved is False, r
            assert r.session["status"] == "dead" and r.session["dead_reason"] == "timeout"
            assert s.dead_reason == "timeout"
            with pytest.raises(pybox.SessionDead) as e:
                s.run("print(1)")
            assert e.value.type == "SessionDead" and e.value.details["reason"] == "timeout"
            with pytest.raises(pybox.SessionDead):
                s.files.list()
            results.append(r)
    assert results[0] == results[1]


def test_memory_kill_ends_the_session(sb):
    with sb.session(memory_mb=64) as s:
        r = s.run("b = bytearray(200 << 20)")
        assert r.status == "memory_limit" and r.state_preserved is False, r
        assert s.dead_reason == "memory_limit"
        with pytest.raises(pybox.SessionDead):
            s.run("print(1)")


def test_idle_ttl_ends_the_session(sb):
    with sb.session(idle_ttl=1) as s:
        s.run("x = 1")
        time.sleep(2.5)
        with pytest.raises(pybox.SessionDead) as e:
            s.run("print(x)")
        assert e.value.details["reason"] == "idle_timeout" and s.dead_reason == "idle_timeout"


def session_cell(s, name):
    """Mark the session's /work with a file `name`, and return the host pids of its cell and
    interpreter (the processes named pybox-cell that see the mark: this machine's engine's in
    local mode, the server's in remote mode)."""
    s.run(f"open({name!r}, 'w').close()")
    pids = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/comm") as f:
                if f.read().strip() != "pybox-cell":
                    continue
            if os.path.exists(f"/proc/{entry}/root/work/{name}"):
                pids.append(int(entry))
        except (OSError, ValueError):
            continue
    assert len(pids) == 2, pids
    return pids


def test_idle_ttl_frees_the_session_between_calls(sb):
    """Nothing calls it, and its cell is gone soon after its idle time: the reaper's work (the
    server's remotely, libpybox's in the session's process locally), not the next call's."""
    with sb.session(idle_ttl=1, max_lifetime=600) as s:
        # A call longer than the idle time runs to its end: the idle time runs from a call's end.
        r = s.run("import time\ntime.sleep(2)\nx = 7\nx")
        assert r.status == "ok" and r.state_preserved is True and r.value.text == "7"
        pids = session_cell(s, f"mark-{s.id}")
        assert all(gone(p, timeout=15) for p in pids), "the idle session's cell is still there"
        with pytest.raises(pybox.SessionDead) as e:
            s.run("print(x)")
        assert e.value.details["reason"] == "idle_timeout" and s.dead_reason == "idle_timeout"


def test_max_lifetime_ends_the_session(local, remote):
    results = []
    for sb in (local, remote):
        with sb.session(idle_ttl=600, max_lifetime=3) as s:
            pids = session_cell(s, f"mark-{s.id}")
            # A call running when the lifetime runs out finishes; then the session is dead.
            r = s.run("import time\ntime.sleep(4)\nprint('done')")
            assert r.status == "ok" and r.stdout == "done\n" and r.state_preserved is True, r
            assert r.session["status"] == "dead" and r.session["dead_reason"] == "max_lifetime"
            assert all(gone(p, timeout=10) for p in pids)
            with pytest.raises(pybox.SessionDead) as e:
                s.files.list()
            assert e.value.details["reason"] == "max_lifetime"
            assert s.dead_reason == "max_lifetime"
            results.append(r)
    assert results[0] == results[1]


def test_extend(sb):
    with sb.session(idle_ttl=60, max_lifetime=2) as s:
        s.run("y = 5")
        assert s.extend(max_lifetime=120) is None
        time.sleep(3)
        r = s.run("y")  # past its first lifetime, with its state
        assert r.value.text == "5" and s.dead_reason is None
        for kw in (dict(idle_ttl=0), dict(max_lifetime="60"), dict(idle_ttl=True),
                   dict(idle_ttl=1.5)):
            with pytest.raises(pybox.InvalidRequest):
                s.extend(**kw)
        for kw in (dict(idle_ttl=3601), dict(max_lifetime=86401), dict(max_lifetime=1)):
            with pytest.raises(pybox.InvalidRequest) as e:
                s.extend(**kw)
            assert e.value.type == "ValidationError", (kw, e.value)
        with pytest.raises(pybox.InvalidRequest, match="has passed"):
            s.extend(max_lifetime=1)
        # Answered while a call runs.
        t = threading.Thread(target=s.run, args=("import time\ntime.sleep(2)",))
        t.start()
        time.sleep(0.5)
        s.extend(idle_ttl=30)
        t.join()
        # Shorter: the session ends at its new idle time.
        pids = session_cell(s, f"mark-{s.id}")
        s.extend(idle_ttl=1)
        assert all(gone(p, timeout=15) for p in pids)
        with pytest.raises(pybox.SessionDead) as e:
            s.extend(idle_ttl=60)
        assert e.value.details["reason"] == "idle_timeout" and s.dead_reason == "idle_timeout"
    with pytest.raises(pybox.SessionDead, match="closed"):
        s.extend(idle_ttl=60)


def test_files_are_sent_with_the_opening(local, remote, monkeypatch):
    """session(files=...) sends them in the opening (POST /v1/sessions `files`, `pybox repl
    --file`), never as writes after it, within the caps of a run's input files."""
    from pybox import _local, _remote  # noqa: PLC0415

    def no_put(self, path, data):
        raise AssertionError(f"{path} was written after the opening")

    monkeypatch.setattr(_local.LocalSession, "put", no_put)
    monkeypatch.setattr(_remote.RemoteSession, "put", no_put)
    results = []
    for sb in (local, remote):
        with sb.session(files={"a.txt": "from the start", "b.bin": b"\0\1\xff"}) as s:
            r = s.run("print(open('a.txt').read(), list(open('b.bin', 'rb').read()))")
            assert r.stdout == "from the start [0, 1, 255]\n" and r.execution_count == 1
            assert {f.path: f.size for f in s.files.list()} == {"a.txt": 14, "b.bin": 3}
            results.append(r)
        with pytest.raises(pybox.RequestTooLarge) as e:
            sb.session(files={"a": "1", "b": "2", "c": "3"})  # a run's input files: 2
        assert e.value.type == "PayloadTooLarge"
        with pytest.raises(pybox.RequestTooLarge):
            sb.session(files={"big": b"\0" * ((8 << 20) + 1)})
        for bad in ("d/x.txt", "..", ""):
            with pytest.raises(pybox.InvalidRequest) as e:
                sb.session(files={bad: "x"})
            assert e.value.type == "ValidationError", (bad, e.value)
    assert results[0] == results[1]


def test_closed_and_bad_sessions(sb, pybox_bin):
    s = sb.session()
    s.close()
    s.close()  # twice is fine
    assert s.closed
    with pytest.raises(pybox.SessionDead, match="closed"):
        s.run("print(1)")
    with pytest.raises(pybox.SessionDead):
        s.files.list()
    for kw in (dict(memory_mb=0), dict(timeout=-1), dict(idle_ttl=0), dict(max_lifetime="1"),
               dict(files={"a": 5})):
        with pytest.raises(pybox.InvalidRequest):
            sb.session(**kw)
    net = Sandbox(url=sb.url, api_key=getattr(sb._backend, "api_key", None), network=True) \
        if sb.url else Sandbox(binary=pybox_bin, network=True)
    with pytest.raises(pybox.Forbidden) as e:
        net.session()
    assert e.value.type == "NetworkNotAllowed"
    with sb.session() as s2:
        with pytest.raises(TypeError):
            s2.run("print(1)", memory_mb=64)  # a session's memory is its own


# ---------------------------------------------------------------------------------------------
# Nothing left behind


def _local_pid(session):
    return session._h._proc.pid


def test_close_ends_the_process_and_the_server_side_session(local, remote, session_server):
    s = local.session()
    pid = _local_pid(s)
    s.run("x = 1")
    s.close()
    assert gone(pid)
    s = remote.session()
    assert s.id in live_sessions(session_server)
    s.close()
    assert s.id not in live_sessions(session_server)


def test_garbage_collected_sessions_end(local, remote, session_server):
    s = local.session()
    pid = _local_pid(s)
    r = remote.session()
    rid = r.id
    del s, r
    gc.collect()
    assert gone(pid), "the session's process outlived its Session"
    assert rid not in live_sessions(session_server)


def test_sessions_end_when_the_program_exits(pybox_bin, session_server):
    code = (f"import sys; sys.path.insert(0, {str(REPO / 'python')!r})\n"
            "import pybox\n"
            f"a = pybox.Sandbox(binary={pybox_bin!r}).session()\n"
            f"b = pybox.Sandbox(url={session_server.url!r}, "
            f"api_key={session_server.client_key!r}).session()\n"
            "a.run('x = 1'); b.run('x = 1')\n"
            "print(a._h._proc.pid, b.id, flush=True)\n")
    p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120,
                       env={k: v for k, v in os.environ.items() if not k.startswith("PYBOX")})
    assert p.returncode == 0, p.stderr.decode()
    pid, rid = p.stdout.decode().split()
    assert gone(int(pid))
    assert rid not in live_sessions(session_server)


def test_a_killed_program_leaves_no_process(pybox_bin):
    """SIGKILL gives no finalizer a chance: the EOF on the child's stdin ends it."""
    code = (f"import sys, time; sys.path.insert(0, {str(REPO / 'python')!r})\n"
            "import pybox\n"
            f"a = pybox.Sandbox(binary={pybox_bin!r}).session()\n"
            "print(a._h._proc.pid, flush=True)\n"
            "time.sleep(60)\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                         env={k: v for k, v in os.environ.items() if not k.startswith("PYBOX")})
    pid = int(p.stdout.readline())
    p.kill()
    p.wait()
    p.stdout.close()
    assert gone(pid)


# ---------------------------------------------------------------------------------------------
# Streaming


STREAMED = ("import sys, time\nprint(1, flush=True)\ntime.sleep(0.5)\nprint(2)\n"
            "sys.stdout.flush()\nsys.stdout.buffer.write(b'\\xc3')\nsys.stdout.flush()\n"
            "time.sleep(0.1)\nsys.stdout.buffer.write(b'\\xa9 \\xff\\n')\n"
            "print('e', file=sys.stderr)\ndisplay('d')\n1 / 0")


def collect(events):
    out, stamps = [], []
    for ev in events:
        assert isinstance(ev, Event)
        out.append(ev)
        stamps.append(time.monotonic())
    return out, stamps


def check_stream(events, stamps):
    kinds = [e.kind for e in events]
    assert kinds[-2:] == ["error", "end"] and kinds.count("end") == 1, kinds
    result = events[-1].result
    assert isinstance(result, Result) and result.status == "error"
    assert events[-2].error == result.error
    assert "".join(e.text for e in events if e.kind == "stdout") == result.stdout == \
        "1\n2\n\u00e9 \ufffd\n"
    assert "".join(e.text for e in events if e.kind == "stderr") == result.stderr
    assert [e.output for e in events if e.kind in ("display", "result")] == result.outputs
    out = [t for e, t in zip(events, stamps) if e.kind == "stdout"]
    assert out[-1] - out[0] >= 0.4, "the stdout events came together: nothing was streamed"
    return result


def test_stream_agrees_with_run(local, remote):
    results = []
    for sb in (local, remote):
        events, stamps = collect(sb.stream(STREAMED))
        results.append(check_stream(events, stamps))
    assert results[0] == results[1]
    assert results[0] == local.run(STREAMED)


def test_session_stream(local, remote):
    results = []
    for sb in (local, remote):
        with sb.session() as s:
            s.run("x = 7")
            events, stamps = collect(s.stream(STREAMED.replace("1 / 0", "x * 6\n1 / 0")))
            results.append(check_stream(events, stamps))
            r = s.run("x * 6")
            assert r.value.text == "42" and r.execution_count == 3
    assert results[0] == results[1]


def test_stream_refusals_and_early_stop(sb):
    with pytest.raises(pybox.InvalidRequest):
        next(iter(sb.stream("print(1)", files={"../x": b""})))
    # Leaving the loop early stops the run (local mode: its process; the temporary files go).
    t0 = time.time()
    for ev in sb.stream("import time\nprint('go', flush=True)\ntime.sleep(30)"):
        if ev.kind == "stdout":
            break
    assert time.time() - t0 < 20


def test_stream_of_a_result_that_came_whole():
    """A server that answers JSON to Accept: text/event-stream still gives every event."""
    from test_hostile_server import FakeServer  # noqa: PLC0415 - the fake server of that file

    fake = FakeServer()
    try:
        events = list(Sandbox(url=fake.url).stream("print(1)"))
    finally:
        fake.close()
    assert [e.kind for e in events] == ["end"] and events[0].result.status == "ok"


def test_result_equality_ignores_the_session_id(local, remote):
    with local.session() as a, remote.session() as b:
        ra, rb = a.run("print(1)"), b.run("print(1)")
    assert ra.session["id"] != rb.session["id"] and ra == rb
    assert dataclasses.replace(ra, execution_count=9) != rb


def test_pybox_run_stream(session_server):
    """`pybox run --json --stream`: event lines, then the result object, in both modes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYBOX")}
    outs = []
    for extra in ([], ["--server", session_server.url, "--api-key", session_server.client_key]):
        p = subprocess.run([PYBOX, "run", "--json", "--stream", "-", *extra],
                           input=b"print(1)\ndisplay('d')\n", stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=120)
        assert p.returncode == 0, p.stderr
        lines = [json.loads(line) for line in p.stdout.splitlines()]
        assert lines[0] == {"event": "stdout", "data": {"text": "1\n"}}
        assert lines[1] == {"event": "display", "data": {"type": "display",
                                                         "data": {"text/plain": "'d'"},
                                                         "metadata": {}}}
        assert lines[2]["status"] == "ok" and len(lines) == 3
        outs.append({k: v for k, v in lines[2].items()
                     if k not in ("duration_ms", "cpu_ms", "max_rss_kb")})
    assert outs[0] == outs[1]
    p = subprocess.run([PYBOX, "run", "--stream", "-"], input=b"print(1)",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=60)
    assert p.returncode == 2 and b"--stream needs --json" in p.stderr


def test_leaving_a_session_stream_early_interrupts_its_call(sb):
    with sb.session() as s:
        s.run("kept = 'yes'")
        t0 = time.time()
        for ev in s.stream("import time\nprint('go', flush=True)\ntime.sleep(30)"):
            if ev.kind == "stdout":
                break
        deadline = time.time() + 15 * SLOW
        while True:
            try:
                r = s.run("print(kept)")
                break
            except pybox.SessionBusy:
                assert time.time() < deadline, "the call went on after the stream was left"
                time.sleep(0.2)
        assert r.stdout == "yes\n" and time.time() - t0 < 20 * SLOW
