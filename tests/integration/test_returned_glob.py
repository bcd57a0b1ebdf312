"""A glob asks for the files the code made: the input files are left out, every match is
sorted before the output_files cap (10) applies, and more matches than the cap are said.

Before: POST /execute without return_files asked the engine for `*`, whose matches included
the input files, counted against the cap and then dropped by the server (2 inputs and 10 made:
8 back); and readdir() order decided which files came back when more matched.

Invariants proved against a real `pybox serve`:
  - S4's request with 2 input files whose script makes 10: all 10 back, no input;
  - 12 made: the first 10 in name order back, and a note (an `{"error"}` entry under the
    pattern in execution_details.output_files, a `pybox: output file` line in stderr);
  - POST /v1/execute: `*` leaves the inputs out too, an input asked by its own name still
    comes back, and the note is the pattern's `{"error"}` entry in the result object's files.

Run with Debian's interpreter: /usr/bin/python3 -m pytest -q tests/integration/test_returned_glob.py
"""
import base64

import pytest

from conftest import b64, body_of

CAP = 10  # the default output_files limit
INPUTS = {"in_a.txt": b"input a\n", "in_b.csv": b"input b\n"}


@pytest.fixture(scope="module")
def srv(module_start_server):
    return module_start_server("--rpm", "1000", "--rpd", "100000")


def make(n):
    """A script that makes out00..out{n-1}, in an order unlike the names', and reads inputs."""
    return ("import random\n"
            f"names = [f'out{{i:02d}}.txt' for i in range({n})]\n"
            "random.shuffle(names)\n"
            "for name in names:\n"
            "    open(name, 'w').write(name)\n"
            "assert open('in_a.txt').read() == 'input a\\n'\n"
            "print('made', len(names))\n")


def s4(code):
    return {"code": code, "timeout": 30, "allow_network": False,
            "files": {n: b64(d) for n, d in INPUTS.items()}}


def made(n):
    return {f"out{i:02d}.txt": f"out{i:02d}.txt".encode() for i in range(n)}


def test_s4_all_ten_made_come_back_without_the_inputs(srv):
    r = srv.post("/execute", json_body=s4(make(CAP)))
    assert r.status_code == 200, r.text
    body = body_of(r)
    assert body["stdout"] == f"made {CAP}\n", body
    out = {n: base64.b64decode(v) for n, v in body["output_files"].items()}
    assert out == made(CAP), body
    assert "not returned" not in body["stderr"], body


def test_s4_twelve_made_first_ten_sorted_and_a_note(srv):
    r = srv.post("/execute", json_body=s4(make(12)))
    assert r.status_code == 200, r.text
    body = body_of(r)
    out = {n: base64.b64decode(v) for n, v in body["output_files"].items()}
    assert out == made(CAP), body  # out00..out09: name order, whatever readdir() gave
    details = body["execution_details"]["output_files"]
    assert "more files matched" in details["*"]["error"], details
    assert "pybox: output file `*` not returned: more files matched" in body["stderr"], body


def v1(code, returns):
    return {"code": code, "files": [{"name": n, "content_base64": b64(d)}
                                    for n, d in INPUTS.items()], "return_files": returns}


def files_of(body):
    return {n: (base64.b64decode(e["content_base64"]) if "content_base64" in e else e["error"])
            for n, e in body["files"].items()}


def test_v1_glob_leaves_inputs_out_and_a_name_brings_one_back(srv):
    r = srv.post("/v1/execute", json_body=v1(make(CAP), ["*", "in_a.txt"]))
    assert r.status_code == 200, r.text
    got = files_of(body_of(r))
    # The glob's ten, and the input asked by its name; the cap was reached before it.
    assert {n: v for n, v in got.items() if n.startswith("out")} == made(CAP), got
    assert "in_b.csv" not in got, got
    r = srv.post("/v1/execute", json_body=v1(make(3), ["in_a.txt", "*.txt"]))
    got = files_of(body_of(r))
    assert got == {"in_a.txt": INPUTS["in_a.txt"], **made(3)}, got


def test_v1_more_matches_than_the_cap_are_said(srv):
    r = srv.post("/v1/execute", json_body=v1(make(12), ["out*"]))
    assert r.status_code == 200, r.text
    got = files_of(body_of(r))
    note = got.pop("out*")
    assert "more files matched than are returned" in note, note
    assert got == made(CAP), got
