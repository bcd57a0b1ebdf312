"""One error table, every client, both modes.

The error table of src/common/errtable.h names each failure in every vocabulary of pybox: the
server's error type and HTTP status, libpybox's code in remote and in local mode, `pybox run`'s
exit status and the Python package's exception. This file holds everything else to it:

- the Python package's copy (pybox.errors.ERROR_TYPES, status_class) and the tables of
  docs/api.md and docs/design/error-handling.md agree with it, row by row;
- every bad request a client can make goes through libpybox (tests/client/client_driver.c),
  the Python package and `pybox run --json`, each in local mode and against a real
  `pybox serve`, and fails as the table says for that mode: the same libpybox code, the same
  exception and the same error type in both modes, unless the table says the mode has no
  equivalent (a key, a policy, a connection: remote only).

The table is read from the C side (`client_driver --table`), never parsed from the header.
"""
import dataclasses
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

import pybox
from pybox import Sandbox, errors

REPO = Path(__file__).resolve().parents[2]
DRIVER = os.environ.get("PYBOX_CLIENT_DRIVER") or str(REPO / "build" / "client_driver")
MIB = 1 << 20
RUN_TIMEOUT = 300

# Remote refusals that wait for the server to answer them from the table: until then it
# answers a field over its limit 400 ValidationError on /v1/execute (src/server/execute.c
# take_request and check_request). Strict, so the marker goes when the server is wired.


def _env():
    return {k: v for k, v in os.environ.items() if not k.startswith("PYBOX")}


@pytest.fixture(scope="module")
def table():
    p = subprocess.run([DRIVER, "--table"], stdout=subprocess.PIPE, check=True, timeout=60)
    t = json.loads(p.stdout)
    t["by_id"] = {r["id"]: r for r in t["rows"]}
    return t


# ---------------------------------------------------------------------------------------------
# The copies of the table


def test_python_error_types_are_the_tables(table):
    typed = [r for r in table["rows"] if r["type"] is not None]
    assert list(errors.ERROR_TYPES) == [r["type"] for r in typed]
    for r in typed:
        status, cls = errors.ERROR_TYPES[r["type"]]
        assert (status, cls.__name__) == (r["status"], r["python"]), r
        assert cls is getattr(errors, r["python"])
        assert errors.error_class(r["type"], 599) is cls  # the type wins over the status
    for r in table["rows"]:
        if r["python"] is not None:
            assert issubclass(getattr(errors, r["python"]), errors.PyboxError), r
            assert getattr(pybox, r["python"]) is getattr(errors, r["python"])
    # Without a type the table knows, the status decides, as libpybox decides.
    for status in range(100, 600):
        want = table["by_id"][table["by_status"][str(status)]]["python"]
        assert errors.status_class(status).__name__ == want, status
        assert errors.error_class("SomeProxysType", status).__name__ == want, status
    assert errors.status_class(None) is errors.PyboxError


def test_api_doc_lists_the_tables_types(table):
    """docs/api.md's error table has every type the server answers, with its status."""
    text = (REPO / "docs" / "api.md").read_text()
    documented = {}
    for types, statuses in re.findall(r"^\| (`\w+`(?: / `\w+`)*) \| (\d+(?: / \d+)*) \|", text,
                                      re.M):
        for t, s in zip(re.findall(r"`(\w+)`", types), statuses.split(" / ")):
            documented[t] = int(s)
    assert documented == {r["type"]: r["status"] for r in table["rows"] if r["type"]}


def _cell(text):
    text = text.strip()
    return None if text == "—" else text.strip("`")


def test_design_doc_shows_the_table(table):
    """docs/design/error-handling.md's table is the C table, row for row and column for column."""
    text = (REPO / "docs" / "design" / "error-handling.md").read_text()
    section = text[text.index("## One error table"):]
    rows = []
    for line in section.splitlines():
        cells = line.split("|")[1:-1]
        if len(cells) >= 8 and re.fullmatch(r" `[A-Z_]+` ", cells[0]):
            rows.append(cells)
    assert [_cell(c[0]) for c in rows] == [r["id"] for r in table["rows"]]
    for cells, r in zip(rows, table["rows"]):
        shown = [_cell(c) for c in cells[1:7]]
        assert shown == [r["type"], str(r["status"]) if r["status"] else None, r["remote"],
                         r["local"], str(r["exit"]), r["python"]], (cells, r)


# ---------------------------------------------------------------------------------------------
# Every bad request, every client, both modes


@dataclasses.dataclass
class Case:
    """A request, and what it must give: `expect` everywhere, unless overridden.

    An expectation is a row id of the table (the request fails so), "result:STATUS:TYPE" (it
    runs, with that status and error type), "setup" (libpybox refuses it in a setter, with
    PYBOX_E_INVALID, in both modes) or None (this client or mode cannot make the request).
    """

    expect: Optional[str]
    code: str = "print(1)"
    stdin: Optional[str] = None
    files: List[Tuple[str, bytes]] = dataclasses.field(default_factory=list)
    returns: List[str] = dataclasses.field(default_factory=list)
    timeout: Optional[float] = None
    memory: Optional[int] = None
    network: bool = False
    key: str = "client"                # "client", "network" (a key allowed it), "bad" (none)
    server: str = "up"                 # "down": a port nobody listens on
    local: Optional[str] = "same"      # the local mode's expectation, if not `expect`
    remote: Optional[str] = "same"     # the remote mode's, if not `expect`
    c: Optional[str] = "same"          # libpybox's, in both modes, if not the above
    python: Optional[str] = "same"     # the Python package's, likewise
    cli: Optional[str] = "same"        # pybox run's, likewise

    def want(self, client, mode):
        per_client = getattr(self, client)
        if per_client != "same":
            return per_client
        per_mode = getattr(self, mode)
        return self.expect if per_mode == "same" else per_mode


CASES: Dict[str, Case] = {
    # Over a limit: the same limits in both modes (the anonymous policy's).
    "stdin over its limit": Case("PAYLOAD_TOO_LARGE", stdin="x" * (8 * MIB + 1)),
    "a file over its limit": Case("PAYLOAD_TOO_LARGE", files=[("big.bin", b"\0" * (8 * MIB + 1))]),
    "code over its limit": Case("PAYLOAD_TOO_LARGE", code="#" * (1 * MIB + 1)),
    "too many files": Case("PAYLOAD_TOO_LARGE", files=[("a", b"1"), ("b", b"2"), ("c", b"3")]),
    "too many names to return": Case("PAYLOAD_TOO_LARGE", returns=[f"r{i}" for i in range(11)]),
    # Invalid: libpybox checks names, timeouts and memory as it is given them.
    "a bad file name": Case("VALIDATION_ERROR", files=[("../x", b"1")], c="setup"),
    "a bad name to return": Case("VALIDATION_ERROR", returns=["a/b"], c="setup"),
    "a file given twice": Case("VALIDATION_ERROR", files=[("a", b"1"), ("a", b"2")], c="setup",
                               python=None),  # the package takes files as a mapping
    "timeout out of range": Case("VALIDATION_ERROR", timeout=1e7, c="setup"),
    "memory out of range": Case("VALIDATION_ERROR", memory=8, c="setup"),
    # Network: local mode has the anonymous policy, which does not allow it, as a key's
    # policy need not; a key allowed it gets 501, which has no local equivalent.
    "network, a key not allowed it": Case("NETWORK_NOT_ALLOWED", network=True, cli=None),
    "network, a key allowed it": Case("NETWORK_NOT_ALLOWED", network=True, key="network",
                                      remote="NETWORK_UNAVAILABLE", cli=None),
    # Policy refuses code before it runs: a result, never an error, in both modes.
    "a forbidden import": Case("result:rejected:ForbiddenImportError", code="import socket"),
    "a syntax error": Case("result:rejected:SyntaxError", code="def ("),
    # Remote only: keys, the caller's limits, the connection.
    "an API key that is not one": Case("UNAUTHORIZED", key="bad", local=None),
    "a timeout over the caller's limit": Case("VALIDATION_ERROR", timeout=100,
                                              local="result:ok:"),
    "no server": Case("CONNECT", server="down", local=None),
    # A difference the table does not cover: the server refuses empty code, local mode runs it.
    "empty code": Case("VALIDATION_ERROR", code="", local="result:ok:"),
}


def _closed_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def keys(client_server, create_key):
    return {"client": client_server.client_key,
            "network": create_key(client_server, "network", "--rpm", "unlimited", "--rpd",
                                  "unlimited", "--network"),
            "bad": "pbx_not-a-real-key"}


@pytest.fixture(scope="module")
def down_url():
    return f"http://127.0.0.1:{_closed_port()}"


def _write_inputs(case, tmp):
    """The case's code, stdin and files as files in `tmp`, for the driver and the CLI."""
    tmp.mkdir(exist_ok=True)
    (tmp / "code.py").write_text(case.code)
    args = []
    if case.stdin is not None:
        (tmp / "stdin").write_text(case.stdin)
        args += ["--stdin", str(tmp / "stdin")]
    for i, (name, data) in enumerate(case.files):
        (tmp / f"file{i}").write_bytes(data)
        args += ["--file", f"{name}={tmp / f'file{i}'}"]
    for name in case.returns:
        args += ["--return", name]
    if case.timeout is not None:
        args += ["--timeout", f"{case.timeout:.10g}"]
    if case.memory is not None:
        args += ["--memory", str(case.memory)]
    return args


def _remote_args(case, url, keys):
    return ["--server", url, "--api-key", keys[case.key]]


def run_c(case, mode, url, keys, pybox_bin, tmp):
    args = _write_inputs(case, tmp)
    if mode == "remote":
        args += _remote_args(case, url, keys)
    if case.network:
        args.append("--network")
    p = subprocess.run([DRIVER] + args + [str(tmp / "code.py")], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, env={**_env(), "PYBOX_BIN": pybox_bin},
                       timeout=RUN_TIMEOUT, check=False)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    out = json.loads(p.stdout)
    if "setup" in out:
        return ("setup", out["setup"])
    if out["rc"] == "PYBOX_OK":
        return ("result", out["status"], out["error_type"])
    return ("error", out["rc"], out["type"])


def run_python(case, mode, url, keys, pybox_bin):
    if mode == "local":
        sb = Sandbox(binary=pybox_bin, network=case.network)
    else:
        sb = Sandbox(url=url, api_key=keys[case.key], network=case.network)
    try:
        r = sb.run(case.code, stdin=case.stdin, files=dict(case.files),
                   return_files=case.returns, timeout=case.timeout, memory_mb=case.memory)
    except errors.PyboxError as e:
        return ("error", type(e).__name__, e.type)
    return ("result", r.status, r.error_type)


def run_cli(case, mode, url, keys, pybox_bin, tmp):
    args = _write_inputs(case, tmp)
    if mode == "remote":
        args += _remote_args(case, url, keys)
    p = subprocess.run([pybox_bin, "run", "--json", str(tmp / "code.py")] + args,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(),
                       stdin=subprocess.DEVNULL, timeout=RUN_TIMEOUT, check=False)
    assert p.stdout.count(b"\n") == 1, (p.stdout, p.stderr)
    out = json.loads(p.stdout)
    if "error_details" in out:
        assert out["error"] == out["error_details"]
        return ("error", p.returncode, out["error"]["type"])
    error = out.get("error") or {}
    assert p.returncode == {"ok": 0, "rejected": 126}[out["status"]], (p.returncode, out)
    return ("result", out["status"], error.get("type"))


def expected(want, client, mode, table):
    """What `client` must give in `mode` for expectation `want`."""
    if want == "setup":
        return ("setup", "PYBOX_E_INVALID")
    if want.startswith("result:"):
        _, status, etype = want.split(":")
        return ("result", status, etype or None)
    row = table["by_id"][want]
    if client == "c":
        code = row["local"] if mode == "local" else row["remote"]
        assert code is not None, f"{want} has no local equivalent in the table"
        return ("error", code, row["type"])
    if client == "python":
        return ("error", row["python"], row["type"])
    return ("error", row["exit"], row["type"])


def _params():
    for name, case in CASES.items():
        for client in ("c", "python", "cli"):
            for mode in ("local", "remote"):
                if case.want(client, mode) is None:
                    continue  # this client or mode cannot make the request
                yield pytest.param(name, client, mode, id=f"{name}-{client}-{mode}")


@pytest.mark.parametrize("name,client,mode", list(_params()))
def test_each_mode_fails_as_the_table_says(name, client, mode, table, client_server, keys,
                                           down_url, pybox_bin, tmp_path):
    """Where both modes make the request and expect the same row, each gives that row's
    code, type, exception and exit status, so the two give the same: a row's local and remote
    codes are the same but for InternalServerError (PYBOX_E_ENGINE, PYBOX_E_SERVER), which no
    request here can cause."""
    case = CASES[name]
    url = down_url if case.server == "down" else client_server.url
    if client == "c":
        got = run_c(case, mode, url, keys, pybox_bin, tmp_path)
    elif client == "python":
        got = run_python(case, mode, url, keys, pybox_bin)
    else:
        got = run_cli(case, mode, url, keys, pybox_bin, tmp_path)
    assert got == expected(case.want(client, mode), client, mode, table)


def test_rows_give_one_code_in_both_modes(table):
    """The premise of the test above: a row both modes meet has one code for both."""
    for r in table["rows"]:
        if r["local"] is not None and r["id"] != "INTERNAL_SERVER_ERROR":
            assert r["local"] == r["remote"], r
