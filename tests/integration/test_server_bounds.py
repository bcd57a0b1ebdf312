"""No client can cost the server more than its share: each attack performed for real against a
running `pybox serve`, with the bound that must hold.

- JSON bodies that would cost many times their size as a parse tree are refused before the tree
  is built; the server's peak memory stays a small multiple of what was sent.
- Requests in flight share a memory budget: beyond it, 503, and the budget comes back.
- Connections per client address are limited and every request has a deadline: a flood of
  trickling connections from one address leaves the server answering other addresses, and the
  trickling connections are cut.
- A caller over its rate limit is refused before it can take a slot or a place in the queue.
- Every error body is JSON with a type, a message and a request id, whatever bytes it quotes; a
  returned file whose name is not UTF-8 is reported, not dropped.
- Anonymous and keyed callers never share a zygote, so never its address-space layout.
"""
import json
import re
import socket
import threading
import time

from conftest import SLOW, body_of, metric, parse_http_response, wait_metric

MIB = 1 << 20
# Peak-memory tests measure pybox, not the sanitizer's quarantine of freed blocks (256 MiB by
# default under ASan): keep it small for their servers.
SMALL_QUARANTINE = {"ASAN_OPTIONS": "detect_leaks=1:quarantine_size_mb=16"}


def vm_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def assert_error_json(resp, status, etype=None):
    """A JSON error body with a type, a message and a request id, and the given status."""
    assert resp.status_code == status, (resp.status_code, resp.text[:500])
    body = json.loads(resp.content.decode("utf-8"))  # strict: the bytes must be UTF-8 JSON
    err = body.get("error_details")
    assert isinstance(err, dict), body
    # The same under `error`: the message itself on /execute (docs/api.md), else the object.
    assert body.get("error") in (err, err.get("message")), body
    assert isinstance(err.get("type"), str) and err["type"], body
    assert isinstance(err.get("message"), str) and err["message"], body
    assert isinstance(body.get("request_id"), str) and body["request_id"], body
    if etype is not None:
        assert err["type"] == etype, body
    return body


def budget_used(srv):
    m = re.search(r'^pybox_memory_budget_bytes\{state="used"\} (\d+)$', srv.get("/metrics").text,
                  re.M)
    assert m, "no pybox_memory_budget_bytes in /metrics"
    return int(m.group(1))


# ---------------------------------------------------------------------------------------------
# Parse cost


def test_json_of_empty_arrays_is_refused_before_it_is_parsed(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000", env=SMALL_QUARANTINE)
    bomb = b'{"x":[' + b"[]," * (10 * MIB) + b"[]]}"  # 30 MiB, about 10 million values
    before = vm_kb(srv.pid, "VmHWM")
    results = []

    def send():
        results.append(srv.post("/v1/execute", data=bomb, timeout=120))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(results) == 4
    for r in results:
        body = assert_error_json(r, 400, "InvalidRequest")
        assert "JSON values" in body["error"]["message"], body
    grown_mb = (vm_kb(srv.pid, "VmHWM") - before) / 1024
    # Four 30 MiB bodies held at once, in buffers grown by doubling: a few hundred MB.  A parse
    # tree of them was 1.4 GB each.
    assert grown_mb < 4 * 30 * 4, f"the server's peak RSS grew by {grown_mb:.0f} MB"
    srv.assert_healthy()


def test_deep_nesting_is_refused_with_a_clear_error(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000")
    r = srv.post("/execute", data=b'{"code": ' + b"[" * 100000 + b"]" * 100000 + b"}")
    body = assert_error_json(r, 400)
    assert "deeper" in body["error_details"]["message"], body


def test_a_valid_request_with_every_file_and_name_still_passes(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000")
    files = [{"name": f"f{i}.txt", "content_base64": "aGk="} for i in range(2)]
    r = srv.v1({"code": "print(open('f1.txt').read())", "files": files,
                "return_files": [f"r{i}" for i in range(10)]})
    assert r.status_code == 200, r.text
    assert body_of(r)["stdout"] == "hi\n"


def test_a_body_no_valid_request_can_be_is_refused_unread(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000", "--limit", "stdin=1K",
                       "--limit", "code=1K", "--limit", "file-size=1K")
    raw, _ = srv.raw([b"POST /v1/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                      b"\r\nContent-Length: 4000000\r\n\r\n"], read_timeout=10)
    status, headers, body = parse_http_response(raw)
    assert status == 413, raw[:300]
    assert json.loads(body)["error"]["type"] == "PayloadTooLarge"


# ---------------------------------------------------------------------------------------------
# The memory budget


def test_requests_beyond_the_memory_budget_get_503_and_the_budget_comes_back(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000", "--memory-budget", str(40 * MIB),
                       "--limit", "answer=1M")
    size = 15 * MIB  # charged twice over as it arrives (a buffer grown by doubling)
    body = json.dumps({"code": "print(1)", "stdin": "x" * (size - 40)}).encode()
    assert len(body) <= size
    sent = 12 * MIB
    holder = socket.create_connection((srv.host, srv.port), timeout=30)
    holder.sendall(b"POST /v1/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body) + body[:sent])
    deadline = time.monotonic() + 10 * SLOW
    while budget_used(srv) < 2 * sent:
        assert time.monotonic() < deadline, "the held request never took its budget"
        time.sleep(0.02)
    # What a header announces is not charged: a second holder that sends nothing holds nothing.
    idle = socket.create_connection((srv.host, srv.port), timeout=30)
    idle.sendall(b"POST /v1/execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(body))
    assert budget_used(srv) < 2 * sent + MIB
    r = srv.post("/v1/execute", data=body, timeout=60)
    assert_error_json(r, 503, "ServerBusy")
    assert metric(srv, "pybox_budget_refusals_total") >= 1
    holder.sendall(body[sent:])
    answer = b""
    while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
        chunk = holder.recv(65536)
        assert chunk, f"the held request got no complete answer: {answer[:300]!r}"
        answer += chunk
    status, _, _ = parse_http_response(answer)
    assert status == 413, answer[:300]  # stdin over its limit: refused, but read whole
    holder.close()
    idle.close()
    deadline = time.monotonic() + 10 * SLOW
    while budget_used(srv) != 0:
        assert time.monotonic() < deadline, "the budget was not given back"
        time.sleep(0.02)
    r = srv.post("/v1/execute", data=json.dumps({"code": "print(2)"}).encode())
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------------------------------------
# Slow clients


def test_a_trickling_flood_from_one_address_leaves_others_served(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000", "--request-deadline", "4",
                       "--client-timeout", "30", "--per-ip", "32")
    socks = []
    for _ in range(515):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        try:
            s.connect((srv.host, srv.port))
            s.sendall(b"POST /v1/execute HTTP/1.1\r\nHost: x\r\n")
        except OSError:
            s.close()
            continue
        socks.append(s)
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
    try:
        # Another address is answered while the flood goes on, the admin key included.
        for _ in range(3):
            r = srv.get("/v1/health", source="127.0.0.2", timeout=20)
            assert r.status_code == 200, r.text
            r = srv.admin({"code": "print(5)"}, v1=True, source="127.0.0.2", timeout=60)
            assert r.status_code == 200, r.text
            assert body_of(r)["stdout"] == "5\n"
        # Each trickling connection is cut at its deadline: the server closes them all.
        deadline = time.monotonic() + 30 * SLOW
        open_socks = list(socks)
        while open_socks:
            assert time.monotonic() < deadline, (
                f"{len(open_socks)} trickling connections still open after their deadline")
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
            time.sleep(0.2)
        assert metric(srv, "pybox_deadline_drops_total") >= 1
    finally:
        stop.set()
        t.join(5)
        for s in socks:
            s.close()
    srv.assert_healthy()


# ---------------------------------------------------------------------------------------------
# Rate limits before slots


class SlotHolder:
    """An admin execution that sleeps in the server's only slot: .done is set when it is over,
    .result is its answer."""

    def __init__(self, srv, seconds):
        self.done = threading.Event()
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(srv, seconds))
        self.thread.start()
        wait_metric(srv, "pybox_cells_busy", 1)

    def _run(self, srv, seconds):
        self.result = srv.admin({"code": "import time\ntime.sleep(%d)" % seconds}, v1=True,
                                source="127.0.0.3", timeout=120)
        self.done.set()

    def finish(self):
        self.thread.join(120)
        assert self.result is not None and self.result.status_code == 200, self.result


def test_a_caller_over_its_rate_takes_no_slot_and_no_place_in_the_queue(start_server):
    srv = start_server("--rpm", "1", "--rpd", "1000", "--max-concurrency", "1", "--queue", "2:30")
    r = srv.v1({"code": "print(1)"})
    assert r.status_code == 200, r.text  # the anonymous caller's one request this minute
    holder = SlotHolder(srv, int(6 * SLOW))
    done = holder.done
    answers = []
    lock = threading.Lock()

    def over():
        a = srv.v1({"code": "print(2)"}, timeout=60)
        with lock:
            answers.append((a, done.is_set(), metric(srv, "pybox_queue_waiting")))

    overs = [threading.Thread(target=over) for _ in range(4)]
    for o in overs:
        o.start()
    for o in overs:
        o.join(60)
    assert len(answers) == 4
    for a, slot_freed, waiting in answers:
        assert_error_json(a, 429, "RateLimitExceeded")
        assert not slot_freed, "a request over its rate waited for the slot before its 429"
        assert waiting == 0, "a request over its rate held a place in the queue"
    # Another caller still gets the queue's place, and its turn.
    r = srv.v1({"code": "print(3)"}, source="127.0.0.2", timeout=120)
    assert r.status_code == 200, r.text
    holder.finish()


# ---------------------------------------------------------------------------------------------
# Error bodies and file names


def test_an_error_quoting_bytes_that_are_not_utf8_is_still_json(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000")
    body = (b'--XX\r\nContent-Disposition: form-data; name="\xff\xfe\xc3"\r\n\r\nx\r\n--XX--\r\n')
    r = srv.post("/v1/execute", data=body, content_type="multipart/form-data; boundary=XX")
    assert_error_json(r, 400, "ValidationError")
    r = srv.post("/v1/execute", data=b'{"code": "print(1)", "\xff": 1}')
    assert_error_json(r, 400)
    r = srv.post("/execute", data=b'\xff\xfe{')
    assert_error_json(r, 400, "ValidationError")  # /execute: as the Python Sandbox API says


def test_a_returned_file_whose_name_is_not_utf8_is_reported(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000")
    code = "open(b'\\xff-odd.txt', 'w').write('x')\nopen('good.txt', 'w').write('y')\n"
    r = srv.v1({"code": code, "return_files": ["*.txt"]})
    assert r.status_code == 200, r.text
    files = body_of(r)["files"]
    assert files["good.txt"]["size"] == 1, files
    odd = [k for k in files if k.endswith("-odd.txt")]
    assert len(odd) == 1, f"the file with a non-UTF-8 name is missing from {files}"
    assert "\ufffd" in odd[0]
    assert "UTF-8" in files[odd[0]]["error"], files


# ---------------------------------------------------------------------------------------------
# Zygotes per trust class

LAYOUT_NO_CTYPES = "print(id(None), id(print), id(len))"


def test_anonymous_callers_never_see_a_keyed_callers_layout(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000")
    anon = [body_of(srv.v1({"code": LAYOUT_NO_CTYPES}))["stdout"] for _ in range(3)]
    keyed = [body_of(srv.admin({"code": LAYOUT_NO_CTYPES}, v1=True))["stdout"] for _ in range(3)]
    # The measurement can see sharing: executions of one class share their zygote's layout.
    assert len(set(anon)) == 1, anon
    assert len(set(keyed)) == 1, keyed
    a_none = anon[0].split()[0]
    k_none = keyed[0].split()[0]
    assert a_none != k_none, "an anonymous execution saw the address of None a keyed one had"
    assert metric(srv, "pybox_zygotes_started_total") >= 2


# ---------------------------------------------------------------------------------------------
# What comes back


def test_sparse_files_come_back_within_the_answer_limit(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000")
    code = ("for i in range(10):\n"
            "    with open(f's{i}.bin', 'wb') as f:\n"
            "        f.truncate(8 * 1024 * 1024)\n")
    r = srv.v1({"code": code, "return_files": ["*.bin"]}, timeout=120)
    assert r.status_code == 200, r.text[:500]
    # Ten files within their own 8 MiB cap and the 64 MiB disk (sparse), 80 MiB in all: the
    # 24 MiB answer limit holds, counted by the bytes carried; the rest are said, not dropped.
    assert len(r.content) < 24 * MIB * 4 // 3 + MIB, len(r.content)
    files = body_of(r)["files"]
    assert sorted(files) == [f"s{i}.bin" for i in range(10)], sorted(files)
    carried = [f for f in files.values() if "content_base64" in f]
    refused = [f for f in files.values() if "error" in f]
    assert carried and refused, files.keys()
    assert sum(f["size"] for f in carried) <= 24 * MIB
    assert all("answer" in f["error"] for f in refused), refused


def test_a_huge_main_value_is_refused_by_its_job_and_never_parsed_here(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000", "--memory", "1024")
    code = "def main():\n    return [[]] * 3900000\n"
    r = srv.admin({"code": code, "main": True, "memory_mb": 1024}, v1=True, timeout=120)
    assert r.status_code == 200, r.text[:500]
    body = body_of(r)
    assert body["status"] == "error", body
    assert body["error"]["type"] == "ResultNotSerializable", body["error"]
    assert body["result"] is None


def test_forged_records_of_millions_of_values_cost_the_server_little(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000", "--memory", "512", env=SMALL_QUARANTINE)
    # Written on the record descriptor by the code itself, past the bootstrap's own checks:
    # 12 MiB of records, each line a tree of a million values were it parsed.
    code = ("import os\n"
            "line = b'{\"done\": true, \"exit_code\": 0, \"result\": \"[' + b'[],' * 3000000"
            " + b'[]]\"}\\n'\n"
            "os.write(3, line)\n"
            "os.write(3, b'[' + b'[],' * 1000000 + b'[]]\\n')\n"
            "os._exit(0)\n")
    before = vm_kb(srv.pid, "VmHWM")
    for _ in range(3):
        r = srv.admin({"code": code, "main": True, "memory_mb": 512}, v1=True, timeout=120)
        assert r.status_code == 200, r.text[:500]
        body = body_of(r)
        assert body["status"] == "ok" and body["result"] is None, body
    grown_mb = (vm_kb(srv.pid, "VmHWM") - before) / 1024
    # The records are held (24 MiB at most each), never parsed into a tree (~150 B a value).
    assert grown_mb < 200, f"the server's peak RSS grew by {grown_mb:.0f} MB"


def test_a_burst_from_one_caller_holds_no_more_places_than_its_rate(start_server):
    srv = start_server("--rpm", "2", "--rpd", "1000", "--max-concurrency", "1", "--queue", "8:60")
    holder = SlotHolder(srv, int(6 * SLOW))
    done = holder.done
    answers = []
    lock = threading.Lock()

    def one():
        a = srv.v1({"code": "print(2)"}, timeout=120)
        with lock:
            answers.append((a, done.is_set()))

    burst = [threading.Thread(target=one) for _ in range(6)]
    for b in burst:
        b.start()
    # Two of the six fit the caller's window: they wait for the slot; the four others are
    # refused at once, while the slot is still taken.
    deadline = time.monotonic() + 30 * SLOW
    while True:
        with lock:
            refused = [a for a, _ in answers if a.status_code == 429]
        if len(refused) == 4:
            break
        assert time.monotonic() < deadline, [a.status_code for a, _ in answers]
        time.sleep(0.05)
    assert metric(srv, "pybox_queue_waiting") == 2
    assert not done.is_set(), "the slot was given back before the burst was sorted out"
    for b in burst:
        b.join(120)
    codes = sorted(a.status_code for a, _ in answers)
    assert codes == [200, 200, 429, 429, 429, 429], codes
    for a, freed in answers:
        if a.status_code == 429:
            assert_error_json(a, 429, "RateLimitExceeded")
    holder.finish()


def test_a_rejection_naming_seventy_thousand_modules_stays_a_rejection(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000", "--code-chars", "1000000")
    code = "import " + ",".join("m%d" % i for i in range(70000)) + "\n"
    r = srv.v1({"code": code}, timeout=120)
    assert r.status_code == 200, r.text[:500]
    body = body_of(r)
    assert body["status"] == "rejected", body["status"]
    assert body["error"]["type"] == "ForbiddenImportError", body["error"]["type"]
    assert len(body["error"]["disallowed"]) == 1000
    assert "(and 69000 more)" in body["error"]["message"]


def test_a_main_value_whose_record_is_over_the_limit_is_an_error_not_dropped(start_server):
    srv = start_server("--rpm", "1000", "--rpd", "1000", "--memory", "1024")
    # 7 MB of quotes: within the value limit, but its record escapes each quote.
    r = srv.v1({"code": "def main():\n    return '\"' * 7000000\n", "main": True}, timeout=120)
    assert r.status_code == 200, r.text[:500]
    body = body_of(r)
    assert body["status"] == "error", body["status"]
    assert body["error"]["type"] == "ResultNotSerializable", body["error"]


def wait_budget_free(srv):
    """Poll /metrics until nothing of the budget is held; fails after 10 s (times SLOW)."""
    deadline = time.monotonic() + 10 * SLOW
    while budget_used(srv) != 0:
        assert time.monotonic() < deadline, "the budget never came back"
        time.sleep(0.02)


def test_the_compatible_answer_is_reserved_whole(start_server):
    # POST /execute's answer carries stdout and stderr three times and the files twice: its
    # reserve counts every copy in the dumped text, each control character a six-byte escape.
    # 400 KB of them on each stream make a /execute answer of about 14 MB, over a 12 MiB
    # budget: refused before it runs, never built past the budget. /v1/execute, one copy of
    # each, runs.
    code = "import sys\nsys.stdout.write('\\x01' * 400000)\nsys.stderr.write('\\x01' * 400000)\n"
    budget = 12 * MIB
    srv = start_server("--rpm", "1000", "--rpd", "1000", "--memory-budget", str(budget),
                       "--limit", "answer=1M")
    r = srv.v1({"code": code}, timeout=60)
    assert r.status_code == 200 and body_of(r)["stdout"] == "\x01" * 400000, r.text[:300]
    r = srv.execute({"code": code}, timeout=60)
    assert len(r.content) <= budget, f"a {len(r.content)}-byte answer within a {budget} budget"
    assert_error_json(r, 503, "ServerBusy")
    wait_budget_free(srv)
    # With room for it, it runs whole, and its answer fits what it reserved.
    budget = 40 * MIB
    srv = start_server("--rpm", "1000", "--rpd", "1000", "--memory-budget", str(budget),
                       "--limit", "answer=1M")
    r = srv.execute({"code": code}, timeout=60)
    assert r.status_code == 200 and len(r.content) <= budget, (r.status_code, len(r.content))
    body = body_of(r)
    assert (body["stdout"], body["output"]) == ("\x01" * 400000, "\x01" * 400000)
    assert body["stderr"] == "\x01" * 400000 and body["error"] == "\x01" * 400000
    wait_budget_free(srv)
