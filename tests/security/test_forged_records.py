"""Every status is a fact: records that user code writes itself on the job's record descriptor
never change the verdict.

The bootstrap reports to the supervisor in JSON lines on fd 3 (PBX_FD_META, src/engine/proto.h;
_META_FD in src/engine/bootstrap.py): a check record before any user code runs, a done record
after it. User code holds the same descriptor, so it can write any record it likes. The status,
exit_code, signal, truncation flags and files must come from what the cell and the supervisor
observed (wait status, timers, the memory cgroup, the collected files); a record may only add
detail (an exception's type and message, main()'s value). See docs/design/error-handling.md.
"""
import json

import pytest

from conftest import PYBOX_IS_ASAN, run_pybox

# What every forging script starts with: write one record, as the bootstrap does, on fd 3.
FORGE = r"""
import json, os, sys
def forge(record, end=b"\n"):
    data = json.dumps(record).encode() + end
    while data:
        data = data[os.write(3, data):]
def leave(code):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
"""


def forged(body, *options, **kwargs):
    """Run FORGE + body with every import allowed (the forging needs os)."""
    res = run_pybox(FORGE + body, "--timeout", "10", *options, allow_all=True, **kwargs)
    assert res.data is not None, res
    return res


def done_text(error=None, exit_code=0, **extra):
    """A done record's JSON text, as the bootstrap writes it."""
    record = {"done": True, "exit_code": exit_code, "error": error}
    record.update(extra)
    return json.dumps(record)


def done(error=None, exit_code=0, **extra):
    """The same record as a Python expression, for forge() in the script."""
    return "json.loads(%r)" % done_text(error, exit_code, **extra)


def test_the_record_descriptor_is_live():
    """Invariant (the precondition of every other test here): a record written on fd 3 by user
    code reaches the supervisor's parser, and it may add detail: a forged error object with a
    real exit status 1 is that error's description."""
    res = forged(f"forge({done({'type': 'ForgedDetail', 'message': 'from user code'}, 1)})\n"
                 "leave(1)\n")
    d = res.data
    assert (d["status"], d["exit_code"]) == ("error", 1), res
    assert d["error"] == {"type": "ForgedDetail", "message": "from user code"}, res


@pytest.mark.parametrize("etype", ["MemoryError", "TimeoutError", "Killed", "SandboxError",
                                   "ZeroDivisionError"])
def test_forged_error_with_exit_zero_is_ok(etype):
    """Invariant: a forged done record with an error, MemoryError included, followed by
    os._exit(0) is status ok with exit_code 0 and no error (the bootstrap exits 1 on every
    error it reports), and pybox exits 0."""
    res = forged(f"forge({done({'type': etype, 'message': 'forged'}, 0)})\n"
                 "print('after the forgery')\nleave(0)\n")
    d = res.data
    assert d["status"] == "ok", res
    assert d["exit_code"] == 0 and d["signal"] is None, res
    assert d["error"] is None, res
    assert d["stdout"] == "after the forgery\n", res
    assert res.status == 0, res


@pytest.mark.parametrize("forged_code,real_code", [(0, 3), (42, 0), (137, 1), (1, 7)])
def test_forged_exit_code_is_not_taken(forged_code, real_code):
    """Invariant: exit_code is the wait status's, never a done record's exit_code."""
    res = forged(f"forge({done(None, forged_code)})\nleave({real_code})\n")
    d = res.data
    assert d["exit_code"] == real_code, res
    assert d["status"] == ("ok" if real_code == 0 else "error"), res
    assert res.status == real_code, res


def test_forged_memory_error_far_below_the_limit_is_error():
    """Invariant: a forged MemoryError with a real exit status 1, using a few MiB of a 256 MiB
    limit, is status error (the error's detail is the job's), never memory_limit."""
    res = forged(f"forge({done({'type': 'MemoryError', 'message': 'forged'}, 1)})\nleave(1)\n",
                 "--memory", "256")
    d = res.data
    assert d["status"] == "error", res
    assert d["exit_code"] == 1 and d["signal"] is None, res
    assert res.status == 1, res


@pytest.mark.parametrize("code", [
    "raise MemoryError('raised by the code itself')\n",
    # A request no machine grants: refused at once, far below the limit.
    "x = bytearray(1 << 50)\n",
])
def test_self_raised_memory_error_is_error(pybox, code):
    """Invariant: a MemoryError the code raises while far below its memory limit is status error
    with error.type MemoryError and exit_code 1, not memory_limit."""
    if "bytearray" in code and PYBOX_IS_ASAN:
        pytest.skip("ASan's allocator aborts on an allocation it cannot make")
    res = pybox(code, "--timeout", "10", "--memory", "256")
    d = res.data
    assert d is not None, res
    assert d["status"] == "error", res
    assert d["error"]["type"] == "MemoryError", res
    assert d["exit_code"] == 1, res
    assert res.status == 1, res


HOG = r"""
hog = []
for i in range(1024):
    hog.append(b"\x01" * (1 << 20))   # 1 MiB, every page written
print("SURVIVED", len(hog))
"""


def test_real_memory_blowup_is_memory_limit():
    """Invariant: touching far more memory than --memory 64 is status memory_limit (the memory
    cgroup's OOM kill, or the peak at the limit), whatever records the code wrote before."""
    res = forged(f"forge({done(None, 0)})\nforge({done(None, 0, result='1')})\n" + HOG,
                 "--memory", "64", "--limit", "cpu=10")
    d = res.data
    assert "SURVIVED" not in d["stdout"], res
    assert d["status"] == "memory_limit", res
    assert d["error"]["type"] == "MemoryError", res
    assert res.status == 137, res


def test_done_twice_then_a_real_exception():
    """Invariant: forged done records (twice) before a real exception do not hide it: status
    error, exit_code 1, the real exception's type."""
    res = forged(f"forge({done({'type': 'MemoryError', 'message': 'one'}, 0)})\n"
                 f"forge({done({'type': 'MemoryError', 'message': 'two'}, 0)})\n"
                 "1 / 0\n")
    d = res.data
    assert d["status"] == "error" and d["exit_code"] == 1, res
    assert d["error"]["type"] == "ZeroDivisionError", res
    assert res.status == 1, res


# Code that patches os.write, which the bootstrap writes its records with, so that the
# bootstrap's own done record goes out as FORGED_DONE (defaults, not globals: the bootstrap
# clears the script's globals before it writes).
REWRITE_DONE = r"""
def write(fd, data, real_write=os.write, forged=(FORGED_DONE + "\n").encode(), size=len):
    if fd == 3 and b'"done"' in data:
        real_write(fd, forged)
        return size(data)
    return real_write(fd, data)
os.write = write
"""


def test_bootstraps_own_done_rewritten():
    """Invariant: code that rewrites the bootstrap's own done record into a MemoryError with
    exit_code 0 (the last done record there is) while it ends on a real exception cannot make
    the run memory_limit or ok: status error, exit_code 1."""
    forged_done = done_text({"type": "MemoryError", "message": "rewritten"}, 0)
    res = forged(f"FORGED_DONE = {forged_done!r}\n" + REWRITE_DONE + "raise ValueError('real')\n")
    d = res.data
    assert d["status"] == "error" and d["exit_code"] == 1, res
    assert d["signal"] is None, res
    assert d["error"]["message"] == "rewritten", "the rewrite did not happen: proves nothing"
    assert res.status == 1, res


def test_forged_result_before_main_returns():
    """Invariant: in --main mode a done record that main() forges before it returns does not
    replace the value main() really returns."""
    res = forged(f"def main():\n    forge({done(None, 0, result=json.dumps('forged'))})\n"
                 "    return 'real'\n", "--main")
    d = res.data
    assert d["status"] == "ok", res
    assert d["result"] == "real", res


@pytest.mark.parametrize("how", ["forged first", "bootstrap's record rewritten"])
def test_forged_result_when_main_raises(how):
    """Invariant: in --main mode a main() that forges a result and then raises has no result:
    status error, exit_code 1, result null, even when the last done record, the bootstrap's
    own rewritten, carries the forged value and no error."""
    result = json.dumps("forged")
    if how == "forged first":
        body = f"def main():\n    forge({done(None, 0, result=result)})\n"
    else:
        body = (f"FORGED_DONE = {done_text(None, 0, result=result)!r}\n" + REWRITE_DONE +
                "def main():\n")
    res = forged(body + "    raise ValueError('real')\n", "--main")
    d = res.data
    assert d["status"] == "error" and d["exit_code"] == 1, res
    assert d["result"] is None, res
    if how == "forged first":
        assert d["error"]["type"] == "ValueError", res
    assert res.status == 1, res


def test_uncarriable_forged_result_keeps_the_exit_status():
    """Invariant: a done record whose result pybox cannot parse (an integer beyond 64 bits)
    under a real exit status 0 changes neither status nor exit_code: status ok, exit_code 0,
    no result (the value main() really returned was another)."""
    forged_done = done_text(None, 0, result=str(2 ** 64))
    res = forged(f"FORGED_DONE = {forged_done!r}\n" + REWRITE_DONE +
                 "def main():\n    return 'real'\n", "--main")
    d = res.data
    assert (d["status"], d["exit_code"]) == ("ok", 0), res
    assert d["error"] is None and d["result"] is None, res
    assert res.status == 0, res


@pytest.mark.parametrize("ret", ["2 ** 64", "'\\udcff'", "{1: 'a', '1': 'b'}", "{'a\\x00b': 1}"])
def test_uncarriable_result_is_mains_own_error(ret):
    """Invariant: a value main() really returns that pybox cannot carry is main()'s error,
    decided in the job (exit status 1), not by the supervisor: status error, exit_code 1,
    error.type ResultNotSerializable."""
    res = forged(f"def main():\n    return {ret}\n", "--main")
    d = res.data
    assert (d["status"], d["exit_code"]) == ("error", 1), res
    assert d["error"]["type"] == "ResultNotSerializable", res
    assert d["result"] is None, res
    assert res.status == 1, res


def test_forged_result_outside_main_mode():
    """Invariant: without --main there is no result, whatever a forged done record carries."""
    res = forged(f"forge({done(None, 0, result=json.dumps('forged'))})\nleave(0)\n")
    d = res.data
    assert d["status"] == "ok", res
    assert d["result"] is None, res


@pytest.mark.parametrize("prefix", ["", "os.write(3, b'\\n')\n", "forge({'check': 'ok'})\n"])
def test_forged_rejection_is_not_a_rejection(prefix):
    """Invariant: a check record written by user code, with the bootstrap's own exit status 1,
    is no rejection: the first line is the bootstrap's check, written before user code runs.
    Status error with exit_code 1, and pybox exits 1, not 126."""
    rejected = json.dumps({"check": "rejected",
                           "error": {"type": "SyntaxError", "message": "forged"}})
    res = forged(prefix + f"forge({rejected})\nleave(1)\n")
    d = res.data
    assert d["status"] == "error", res
    assert d["exit_code"] == 1, res
    assert res.status == 1, res


def test_real_rejection_still_rejects(pybox):
    """Invariant (the control of the test above): code the policy refuses is status rejected,
    with no exit_code, and pybox exits 126."""
    res = pybox("import socket\nprint('ran')\n", "--timeout", "5")
    d = res.data
    assert d is not None, res
    assert d["status"] == "rejected", res
    assert d["exit_code"] is None and d["stdout"] == "", res
    assert res.status == 126, res


def test_forged_fields_beyond_the_error():
    """Invariant: fields a forged done record adds for the result object (status, signal,
    truncation flags, files, usage) are never taken: they come from the cell and the
    supervisor."""
    record = done(None, 0, status="timeout", signal="SIGKILL", stdout_truncated=True,
                  stderr_truncated=True, exit_status=9,
                  files={"out.txt": {"content_base64": "Zm9yZ2Vk", "size": 6}},
                  max_rss_kb=1, cpu_ms=99999)
    res = forged(f"forge({record})\nprint('hi')\nleave(0)\n", "--return", "out.txt")
    d = res.data
    assert (d["status"], d["exit_code"], d["signal"]) == ("ok", 0, None), res
    assert d["stdout"] == "hi\n", res
    assert d["stdout_truncated"] is False and d["stderr_truncated"] is False, res
    assert d["files"] == {"out.txt": {"error": "not found"}}, res
    assert d["max_rss_kb"] > 1000 and d["cpu_ms"] < 99999, res


def test_huge_records():
    """Invariant: 20 MiB of forged records (past the 16 MiB kept of them) and one forged done
    record of 15 MiB (kept and parsed) change nothing: the runs end as their exit statuses say,
    promptly."""
    flood = forged(f"line = ({done_text({'type': 'MemoryError', 'message': 'x'}, 0)!r} + '\\n').encode()\n"
                   "blob = line * ((20 << 20) // len(line) + 1)\n"
                   "view = memoryview(blob)\n"
                   "while view:\n    view = view[os.write(3, view):]\n"
                   "leave(0)\n")
    assert flood.data["status"] == "ok" and flood.data["exit_code"] == 0, flood
    assert flood.elapsed < 30, flood
    big = forged("forge({'done': True, 'exit_code': 0,\n"
                 "       'error': {'type': 'MemoryError', 'message': 'm' * (15 << 20)}})\n"
                 "leave(1)\n")
    assert big.data["status"] == "error" and big.data["exit_code"] == 1, big
    assert big.elapsed < 30, big


# Output records as the bootstrap writes them (src/engine/meta.h), forged by user code.
PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJ"
           "RU5ErkJggg==")
OUTPUT_MAX = 4 << 20
MAX_OUTPUTS = 1000


def output(text="x", **data):
    return {"output": {"type": "display", "data": dict({"text/plain": text}, **data),
                       "metadata": {}}}


# The same, built in the script (large texts never go into the code).
OUT = "def out(t):\n    return {'output': {'type': 'display', 'data': {'text/plain': t}}}\n"


def omitted(o):
    return (o["type"] == "display" and o["metadata"] == {"omitted": True}
            and o["data"]["text/plain"].startswith("[output omitted: "))


def assert_outputs_shape(d):
    """Every output is {type, data, metadata} with a string text/plain, whatever was forged."""
    assert isinstance(d["outputs"], list), d
    assert len(d["outputs"]) <= MAX_OUTPUTS + 1, len(d["outputs"])
    for o in d["outputs"]:
        assert set(o) == {"type", "data", "metadata"}, o
        assert o["type"] in ("display", "result"), o
        assert isinstance(o["data"]["text/plain"], str), o
        assert set(o["data"]) <= {"text/plain", "text/html", "image/png", "image/svg+xml",
                                  "application/json"}, o
        assert isinstance(o["metadata"], dict), o


def test_forged_outputs_are_kept_or_marked():
    """Invariant: forged output records of the wrong shape (types, data, base64 that is no PNG
    or no base64, invalid UTF-8, a lone surrogate, cut short, not JSON) each become a marker in
    their place, a valid one is kept as the bootstrap would write it, and the status stays the
    wait status's."""
    bad_lines = [
        json.dumps({"output": {"type": "evil", "data": {"text/plain": "x"}}}),
        json.dumps({"output": {"type": "display", "data": {"text/plain": 5}}}),
        json.dumps({"output": {"type": "display", "data": "x"}}),
        json.dumps({"output": {"type": "display", "data": {"text/plain": "x"}, "metadata": 1}}),
        json.dumps(output(**{"image/png": "bm90IGEgcG5n"})),
        json.dumps(output(**{"image/png": "%%%% not base64"})),
        json.dumps(output(**{"text/html": ["a"]})),
        '{"output": {"type": "display", "data": {"text/plain": "\\ud800"}}}',
        '{"output": {"type": "display", "data": {"text/plain": "cut',
        '{"output" garbage',
    ]
    body = "".join("os.write(3, %r)\n" % (line.encode() + b"\n") for line in bad_lines)
    body += "os.write(3, %r)\n" % (b'{"output": {"type": "display", "data": {"text/plain": '
                                    b'"\xff\xfe"}}}\n')
    body += f"forge({output('kept', **{'image/png': PNG_B64})!r})\nleave(0)\n"
    res = forged(body)
    d = res.data
    assert (d["status"], d["exit_code"], d["error"]) == ("ok", 0, None), res
    assert_outputs_shape(d)
    assert len(d["outputs"]) == len(bad_lines) + 2, d["outputs"]
    assert all(omitted(o) for o in d["outputs"][:-1]), d["outputs"]
    assert d["outputs"][-1]["data"] == {"text/plain": "kept", "image/png": PNG_B64}, d


def test_forged_output_floods_are_capped():
    """Invariant: 5000 forged outputs come back as 1000 and one marker counting the rest; an
    output record of 16 MiB is a marker, never parsed; outputs that would pass the room main()'s
    value has are markers; the answer stays within the answer limit, promptly."""
    res = forged(f"for i in range(5000):\n    forge({output()!r})\nleave(0)\n")
    d = res.data
    assert d["status"] == "ok", res
    assert len(d["outputs"]) == MAX_OUTPUTS + 1, len(d["outputs"])
    assert not any(omitted(o) for o in d["outputs"][:MAX_OUTPUTS])
    assert omitted(d["outputs"][-1]) and "4000 more" in d["outputs"][-1]["data"]["text/plain"]
    huge = forged(OUT + "forge(out('h' * (16 << 20)))\nforge(out('after'))\nleave(0)\n")
    d = huge.data
    assert d["status"] == "ok", huge
    assert len(d["outputs"]) == 2 and omitted(d["outputs"][0]), d["outputs"][:1]
    assert "over %d bytes" % OUTPUT_MAX in d["outputs"][0]["data"]["text/plain"]
    assert d["outputs"][1]["data"]["text/plain"] == "after"
    assert huge.elapsed < 30, huge
    # 2.5 MiB outputs in a room of 22 MiB: eight fit, the next one is a marker, and past what
    # the supervisor reads of the records (the room and about 1.3 MiB) nothing is read at all.
    room = forged(OUT + "for i in range(9):\n    forge(out('r' * (5 << 19)))\n"
                  "os.write(3, b'x' * (8 << 20))\nleave(0)\n")
    d = room.data
    assert [omitted(o) for o in d["outputs"]] == [False] * 8 + [True], d["outputs"][8:]
    assert "all outputs may carry" in d["outputs"][-1]["data"]["text/plain"]
    assert len(room.stdout) < 24 << 20, len(room.stdout)


def test_forged_outputs_take_from_main_value():
    """Invariant: forged outputs count against the room of main()'s value as the bootstrap's
    do: what they leave is less than main()'s value needs, so it is not taken, and the status
    is the wait status's."""
    res = forged(OUT + "for i in range(7):\n    forge(out('r' * (3 << 20)))\n"
                 "forge({'done': True, 'exit_code': 0, 'error': None,\n"
                 "       'result': json.dumps('v' * (2 << 20))})\nleave(0)\n",
                 "--main")
    d = res.data
    assert d["status"] == "ok" and d["result"] is None, {k: d[k] for k in ("status", "error")}
    assert len(res.stdout) < 24 << 20
