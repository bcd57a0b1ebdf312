"""Black-box tests of `pybox keys`: create, list and revoke through the built binary.

The binary is env PYBOX, default <repo>/build/pybox.  Every test has its own --data directory.
Run with Debian's interpreter: /usr/bin/python3 -m pytest -q tests/integration/test_keys_cli.py
"""
import json
import os
import re
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYBOX = os.path.abspath(os.environ.get("PYBOX") or str(REPO / "build" / "pybox"))
TOKEN_RE = re.compile(r"^pbx_[A-Za-z0-9_-]{43}$")
TIMEOUT = 60


def pybox(*args, env=None, check=None):
    """Run pybox with a clean store environment; returns the CompletedProcess (text)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("PYBOX_DATA", "PYBOX_STORE")}
    full_env.update(env or {})
    p = subprocess.run([PYBOX, *args], capture_output=True, text=True, env=full_env,
                       timeout=TIMEOUT)
    if check is not None:
        assert p.returncode == check, (p.returncode, p.stdout, p.stderr)
    return p


def one_line_error(p):
    """A failure says one line on stderr, "pybox: ...", and nothing on stdout."""
    assert p.stdout == "", p.stdout
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("pybox: "), p.stderr
    return lines[0]


@pytest.fixture
def data(tmp_path):
    return str(tmp_path / "data")


def create(data, name, *opts):
    p = pybox("keys", "create", "--name", name, *opts, "--data", data, check=0)
    return p.stdout.strip()


def list_json(data):
    return json.loads(pybox("keys", "list", "--json", "--data", data, check=0).stdout)


def store_bytes(data):
    """Every byte pybox keeps in the data directory (database, WAL, shared memory)."""
    out = b""
    for f in Path(data).iterdir():
        out += f.read_bytes()
    return out


def test_create_prints_the_token_alone(data):
    p = pybox("keys", "create", "--name", "alice", "--data", data, check=0)
    assert p.stdout.endswith("\n") and p.stdout.count("\n") == 1, repr(p.stdout)
    token = p.stdout.strip()
    assert TOKEN_RE.match(token), token
    # One line on stderr that says it is shown once, without the token.
    note = p.stderr.splitlines()
    assert len(note) == 1 and "only this once" in note[0], p.stderr
    assert token not in p.stderr
    # It names the store it used.
    assert f" in sqlite:{data}/pybox.db;" in note[0], p.stderr


def test_tokens_differ(data):
    tokens = {create(data, f"k{i}") for i in range(5)}
    assert len(tokens) == 5
    assert all(TOKEN_RE.match(t) for t in tokens)


def test_store_never_holds_the_token(data):
    token = create(data, "secret-holder")
    # Nor the random part alone, nor its bytes after the displayed prefix.
    blob = store_bytes(data)
    assert token.encode() not in blob
    assert token[4:].encode() not in blob
    assert token[10:].encode() not in blob
    assert b"secret-holder" in blob


def test_store_files_are_private(data):
    create(data, "k")
    assert stat.S_IMODE(os.stat(data).st_mode) == 0o700
    db = Path(data) / "pybox.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    for f in Path(data).iterdir():
        assert stat.S_IMODE(f.stat().st_mode) & 0o077 == 0, f


def test_list_shows_the_key_never_the_token(data):
    token = create(data, "alice")
    p = pybox("keys", "list", "--data", data, check=0)
    assert token not in p.stdout and token[4:] not in p.stdout
    lines = p.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "PREFIX", "CREATED"]
    assert len(lines) == 2
    row = lines[1].split()
    assert row[0] == "alice"
    assert row[1] == token[:10]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", row[2]), row[2]
    assert row[3] == "no"
    keys = list_json(data)
    assert [k["name"] for k in keys] == ["alice"]
    assert keys[0]["prefix"] == token[:10]
    assert keys[0]["revoked"] is False
    assert token not in json.dumps(keys)


def test_policy_round_trip(data):
    create(data, "rich", "--rpm", "60", "--rpd", "unlimited", "--timeout", "2.5", "--memory",
           "512", "--modules", "scipy, sympy", "--network", "--concurrency", "3")
    create(data, "boss", "--admin", "--modules", "all", "--sessions", "2", "--session-idle-ttl",
           "30", "--session-lifetime", "31536000")
    create(data, "plain")
    rich, boss, plain = list_json(data)
    assert (rich["rpm"], rich["rpd"], rich["timeout_ms"], rich["memory_bytes"]) == \
        (60, -1, 2500, 512 << 20)
    assert rich["modules"] == ["scipy", "sympy"] and rich["all_modules"] is False
    assert rich["network"] is True and rich["admin"] is False
    assert (rich["concurrency"], boss["concurrency"], plain["concurrency"]) == (3, 0, 0)
    assert boss["admin"] is True and boss["all_modules"] is True and boss["modules"] == []
    assert (plain["rpm"], plain["rpd"], plain["timeout_ms"], plain["memory_bytes"]) == (0, 0, 0, 0)
    assert (boss["sessions"], boss["session_idle_ttl_s"], boss["session_lifetime_s"]) == \
        (2, 30, 31536000)
    for k in (rich, plain):
        assert (k["sessions"], k["session_idle_ttl_s"], k["session_lifetime_s"]) == (0, 0, 0), k
    table = pybox("keys", "list", "--data", data, check=0).stdout.splitlines()
    assert table[0].split()[6:8] == ["RPD", "CONCURRENCY"]
    assert table[0].split()[8:] == ["TIMEOUT", "MEMORY", "SESSIONS", "IDLE-TTL", "LIFETIME",
                                    "MODULES", "NETWORK", "ADMIN"]
    assert table[1].split()[4:] == ["60", "unlimited", "3", "2.5s", "512M", "default", "default",
                                    "default", "+scipy,sympy", "yes", "no"]
    assert table[2].split()[4:] == ["default", "default", "default", "default", "default", "2", "30s",
                                    "31536000s", "all", "no", "yes"]


@pytest.mark.parametrize("value, says", [
    ("100001", "pybox: --concurrency: 100001 is more than 100000; use `unlimited`"),
    ("many", "pybox: --concurrency: `many` is not a whole number, `unlimited` or `default`"),
    ("-2", "pybox: --concurrency: `-2` is not a whole number, `unlimited` or `default`"),
])
def test_concurrency_errors_say_what_is_allowed(data, value, says):
    line = one_line_error(pybox("keys", "create", "--name", "x", "--concurrency", value,
                                "--data", data, check=2))
    assert line.startswith(says), line
    assert not os.path.exists(os.path.join(data, "pybox.db"))  # nothing was created


@pytest.mark.parametrize("opt, value, what", [
    ("--sessions", "0", "sessions from 1 to 100000"),
    ("--session-idle-ttl", "1.5", "seconds from 1 to 31536000"),
    ("--session-lifetime", "31536001", "seconds from 1 to 31536000"),
])
def test_session_policy_errors_say_what_is_allowed(data, opt, value, what):
    line = one_line_error(pybox("keys", "create", "--name", "x", opt, value, "--data", data,
                                check=2))
    assert line.startswith(f"pybox: {opt}: `{value}` is not a whole number of {what}"), line


def test_an_old_store_is_upgraded(data):
    """A store of schema version 1 (before keys had session policies) lists and takes keys."""
    import sqlite3
    from test_session_policy import SCHEMA_V1
    os.makedirs(data, mode=0o700)
    db = sqlite3.connect(os.path.join(data, "pybox.db"))
    db.executescript(SCHEMA_V1)
    db.execute("INSERT INTO keys (name, prefix, hash, created, rpm) "
               "VALUES ('old', 'pbx_AAAAAA', x'00', 1700000000, 5)")
    db.commit()
    db.close()
    create(data, "new", "--sessions", "4")
    old, new = list_json(data)
    assert (old["name"], old["rpm"], old["sessions"], old["session_lifetime_s"]) == \
        ("old", 5, 0, 0)
    assert (new["name"], new["sessions"]) == ("new", 4)


def test_revoke_marks_the_key(data):
    create(data, "a")
    create(data, "b")
    p = pybox("keys", "revoke", "a", "--data", data, check=0)
    assert p.stdout == "" and p.stderr == f"pybox: revoked key `a` in sqlite:{data}/pybox.db\n"
    keys = {k["name"]: k for k in list_json(data)}
    assert keys["a"]["revoked"] is True
    assert keys["b"]["revoked"] is False
    rows = {line.split()[0]: line.split() for line in
            pybox("keys", "list", "--data", data, check=0).stdout.splitlines()[1:]}
    assert rows["a"][3] == "yes" and rows["b"][3] == "no"
    # Again: still fine.  Unknown: an error of the store, exit 1, one line.
    pybox("keys", "revoke", "a", "--data", data, check=0)
    line = one_line_error(pybox("keys", "revoke", "nobody", "--data", data, check=1))
    assert "nobody" in line


def test_duplicate_name(data):
    create(data, "dup")
    p = pybox("keys", "create", "--name", "dup", "--data", data)
    assert p.returncode != 0
    assert "dup" in one_line_error(p)
    # Revoked names stay taken.
    pybox("keys", "revoke", "dup", "--data", data, check=0)
    p = pybox("keys", "create", "--name", "dup", "--data", data)
    assert p.returncode != 0
    one_line_error(p)
    assert len(list_json(data)) == 1


@pytest.mark.parametrize("args", [
    ["keys"],
    ["keys", "frob"],
    ["keys", "create"],
    ["keys", "create", "--name"],
    ["keys", "create", "--name", "x", "--bogus"],
    ["keys", "create", "--name", "x", "extra"],
    ["keys", "create", "--name", "bad name"],
    ["keys", "create", "--name", "x" * 65],
    ["keys", "create", "--name", "x", "--rpm", "abc"],
    ["keys", "create", "--name", "x", "--rpm", "-5"],
    ["keys", "create", "--name", "x", "--rpd", "1.5"],
    ["keys", "create", "--name", "x", "--timeout", "soon"],
    ["keys", "create", "--name", "x", "--timeout", "0"],
    ["keys", "create", "--name", "x", "--memory", "512M"],
    ["keys", "create", "--name", "x", "--memory", "1"],
    ["keys", "create", "--name", "x", "--modules", "os;rm"],
    ["keys", "create", "--name", "x", "--modules", ""],
    ["keys", "create", "--name", "x", "--sessions", "0"],
    ["keys", "create", "--name", "x", "--sessions", "-1"],
    ["keys", "create", "--name", "x", "--sessions", "100001"],
    ["keys", "create", "--name", "x", "--sessions", "two"],
    ["keys", "create", "--name", "x", "--sessions", "2.0"],
    ["keys", "create", "--name", "x", "--sessions", ""],
    ["keys", "create", "--name", "x", "--session-idle-ttl", "0"],
    ["keys", "create", "--name", "x", "--session-idle-ttl", "1.5"],
    ["keys", "create", "--name", "x", "--session-idle-ttl", "10s"],
    ["keys", "create", "--name", "x", "--session-idle-ttl", "default"],
    ["keys", "create", "--name", "x", "--session-lifetime", "31536001"],
    ["keys", "create", "--name", "x", "--session-lifetime", "99999999999999999999999"],
    ["keys", "create", "--name", "x", "--session-lifetime", "-5"],
    ["keys", "create", "--name", "x", "--session-lifetime", " 5"],
    ["keys", "list", "extra"],
    ["keys", "list", "--table"],
    ["keys", "revoke"],
    ["keys", "revoke", "a", "b"],
    ["keys", "list", "--store", "mysql://127.0.0.1:3306"],
    ["keys", "list", "--store", "rediss://127.0.0.1:6379"],
    ["keys", "create", "--name", "x", "--store", "sqlite:"],
])
def test_bad_usage_exits_2(data, args):
    p = pybox(*args, "--data", data)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    one_line_error(p)
    # Nothing was stored.
    if os.path.exists(os.path.join(data, "pybox.db")):
        assert list_json(data) == []


@pytest.mark.parametrize("cmd", [[], ["create"], ["list"], ["revoke"]])
def test_help(cmd):
    p = pybox("keys", *cmd, "--help", check=0)
    assert p.stdout.startswith("usage: pybox keys"), p.stdout
    assert "--data" in p.stdout and "--store" in p.stdout


def test_list_does_not_create_a_store(tmp_path):
    data = tmp_path / "typo"
    line = one_line_error(pybox("keys", "list", "--data", str(data), check=1))
    assert "does not exist" in line
    one_line_error(pybox("keys", "revoke", "x", "--data", str(data), check=1))
    assert not data.exists()


def test_store_location_options_and_environment(tmp_path):
    a, b, c = (str(tmp_path / n) for n in ("a", "b", "c"))
    pybox("keys", "create", "--name", "by-env-data", env={"PYBOX_DATA": a}, check=0)
    assert [k["name"] for k in list_json(a)] == ["by-env-data"]
    pybox("keys", "create", "--name", "by-env-store", env={"PYBOX_DATA": a,
                                                           "PYBOX_STORE": f"sqlite:{b}/s.db"},
          check=0)
    assert [k["name"] for k in list_json(a)] == ["by-env-data"]
    # --store beats --data; an option beats the environment.
    pybox("keys", "create", "--name", "by-opt-store", "--data", a, "--store", f"sqlite:{b}/s.db",
          check=0)
    pybox("keys", "create", "--name", "by-opt-data", "--data", c,
          env={"PYBOX_STORE": f"sqlite:{b}/s.db"}, check=0)
    names = json.loads(pybox("keys", "list", "--json", "--store", f"sqlite:{b}/s.db",
                             check=0).stdout)
    assert [k["name"] for k in names] == ["by-env-store", "by-opt-store"]
    assert [k["name"] for k in list_json(c)] == ["by-opt-data"]


def test_relative_store_path(tmp_path):
    p = subprocess.run([PYBOX, "keys", "create", "--name", "rel", "--store", "sqlite:sub/x.db"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "sub" / "x.db").is_file()


def test_unwritable_token_revokes_the_key(data):
    """A token nobody saw is revoked at once rather than left valid."""
    p = subprocess.run(["sh", "-c", 'exec "$0" "$@" >&-', PYBOX, "keys", "create", "--name",
                        "lost", "--data", data], capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "revoked" in p.stderr
    assert list_json(data)[0]["revoked"] is True


def test_every_command_names_its_store(tmp_path):
    """create, list and revoke say on stderr which store they used, a relative one made
    absolute, so a key never lands in a store nobody looks at."""
    p = subprocess.run([PYBOX, "keys", "create", "--name", "k", "--data", "d"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stderr
    assert f"created key `k` in sqlite:{tmp_path}/d/pybox.db;" in p.stderr, p.stderr
    p = pybox("keys", "list", "--data", str(tmp_path / "d"), check=0)
    assert p.stderr == f"pybox: keys in sqlite:{tmp_path}/d/pybox.db\n", p.stderr
    assert p.stdout.splitlines()[1].split()[0] == "k", p.stdout
    p = pybox("keys", "list", "--json", env={"PYBOX_STORE": f"sqlite:{tmp_path}/d/pybox.db"},
              check=0)
    assert p.stderr == f"pybox: keys in sqlite:{tmp_path}/d/pybox.db\n", p.stderr
    assert [k["name"] for k in json.loads(p.stdout)] == ["k"]


NOBODY = 65534


def as_nobody(home, *argv, env=None):
    """Run pybox as uid/gid 65534 with HOME=home and no PYBOX_*/XDG_* variable."""
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("PYBOX", "XDG_")) and k != "HOME"}
    full_env.update({"HOME": str(home), **(env or {})})

    def drop():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)

    return subprocess.run([PYBOX, *argv], capture_output=True, text=True, env=full_env,
                          cwd="/", preexec_fn=drop, timeout=TIMEOUT)


@pytest.fixture
def nobody_home():
    """A home directory uid 65534 owns, in a directory it may traverse (pytest's are root's)."""
    with tempfile.TemporaryDirectory(prefix="pybox-keys-") as top:
        os.chmod(top, 0o755)
        home = Path(top) / "home"
        home.mkdir()
        os.chown(home, NOBODY, NOBODY)
        yield home


def test_default_data_directory_of_a_user(nobody_home):
    """Without --data or PYBOX_DATA, a user other than root keeps keys in
    $XDG_DATA_HOME/pybox, else ~/.local/share/pybox (root's are in /var/lib/pybox), and
    `pybox serve` of that user opens the same store (named on its first line; the server
    itself then needs root)."""
    store = f"sqlite:{nobody_home}/.local/share/pybox/pybox.db"
    p = as_nobody(nobody_home, "keys", "create", "--name", "mine")
    assert p.returncode == 0, p.stderr
    assert f" in {store};" in p.stderr, p.stderr
    p = as_nobody(nobody_home, "keys", "list", "--json")
    assert p.returncode == 0, p.stderr
    assert [k["name"] for k in json.loads(p.stdout)] == ["mine"]
    assert p.stderr == f"pybox: keys in {store}\n", p.stderr
    p = as_nobody(nobody_home, "serve", "--listen", "127.0.0.1:0", "--no-preload")
    assert p.stderr.splitlines()[0] == f"pybox: store {store}", p.stderr
    assert p.returncode != 0  # no jail without root

    xdg = nobody_home / "xdg"
    p = as_nobody(nobody_home, "keys", "create", "--name", "x", env={"XDG_DATA_HOME": str(xdg)})
    assert p.returncode == 0, p.stderr
    assert f" in sqlite:{xdg}/pybox/pybox.db;" in p.stderr, p.stderr
    # A relative XDG_DATA_HOME is not one (the XDG Base Directory specification).
    p = as_nobody(nobody_home, "keys", "list", env={"XDG_DATA_HOME": "rel"})
    assert p.stderr == f"pybox: keys in {store}\n", p.stderr


def test_serve_takes_the_store_as_keys_do(tmp_path):
    """pybox serve chooses its store by the rule of `pybox keys`: --store beats --data, an
    option beats the environment; its first line names the store."""
    a, b = tmp_path / "a", tmp_path / "b"
    cases = [
        ([], {"PYBOX_DATA": str(a)}, f"sqlite:{a}/pybox.db"),
        (["--data", str(b)], {"PYBOX_STORE": f"sqlite:{a}/s.db"}, f"sqlite:{b}/pybox.db"),
        (["--data", str(a), "--store", f"sqlite:{b}/s.db"], {}, f"sqlite:{b}/s.db"),
        ([], {"PYBOX_DATA": str(a), "PYBOX_STORE": f"sqlite:{b}/t.db"}, f"sqlite:{b}/t.db"),
    ]
    for opts, env, store in cases:
        # A listen address that cannot be used: the server stops right after naming its store.
        p = pybox("serve", "--listen", "256.0.0.1:1", *opts, env=env)
        assert p.returncode != 0, p.stderr
        assert p.stderr.splitlines()[0] == f"pybox: store {store}", (opts, env, p.stderr)


def test_a_redis_stores_password_is_never_printed(tmp_path, start_server):
    """`pybox keys` and `pybox serve` name their store on stderr: a redis:// URI's password is
    left out of that line and of every message."""
    from redis_server import Redis

    secret = "s3cr3t-" + os.urandom(6).hex()
    r = Redis(tmp_path, password=secret)
    try:
        from conftest import clean_env

        env = clean_env()
        p = subprocess.run([PYBOX, "keys", "create", "--name", "pw", "--store", r.uri],
                           capture_output=True, text=True, timeout=60, env=env)
        assert p.returncode == 0, p.stderr
        assert secret not in p.stderr and "redis://127.0.0.1:%d" % r.port in p.stderr, p.stderr
        for args in (["list"], ["revoke", "pw"]):
            p = subprocess.run([PYBOX, "keys", *args, "--store", r.uri], capture_output=True,
                               text=True, timeout=60, env=env)
            assert p.returncode == 0 and secret not in p.stderr + p.stdout, p.stderr
        bad = r.uri.replace(secret, secret + "x")  # a wrong password: refused, still not shown
        p = subprocess.run([PYBOX, "keys", "list", "--store", bad], capture_output=True,
                           text=True, timeout=60, env=env)
        assert p.returncode != 0 and secret not in p.stderr, p.stderr
        srv = start_server("--store", r.uri)
        assert srv.v1({"code": "print(1)"}).status_code == 200
        assert secret not in srv.log_text(), srv.log_text()[-2000:]
    finally:
        r.stop()


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_pybox_audit_prints_the_servers_records(backend, tmp_path, start_server):
    """`pybox audit` prints the newest records of the store the server wrote, from SQLite and
    from Redis alike (the stream every node writes)."""
    import hashlib

    from conftest import clean_env
    from redis_server import Redis

    r = Redis(tmp_path) if backend == "redis" else None
    try:
        store = ["--store", r.uri] if r else []
        srv = start_server(*store)
        where = store or ["--data", str(srv.data_dir)]
        codes = [f"print({i}) # {os.urandom(4).hex()}" for i in range(3)]
        for code in codes:
            assert srv.v1({"code": code}).status_code == 200
        p = subprocess.run([PYBOX, "audit", "--last", "2", *where], capture_output=True,
                           text=True, timeout=60, env=clean_env())
        assert p.returncode == 0, p.stderr
        rows = [json.loads(line) for line in p.stdout.splitlines()]
        assert len(rows) == 2, rows
        digests = {hashlib.sha256(c.encode()).hexdigest() for c in codes[1:]}
        assert {row["code_sha256"] for row in rows} == digests, rows
        assert all(row["route"] == "/v1/execute" and row["status"] == "ok" for row in rows), rows
        p = subprocess.run([PYBOX, "audit", "--last", "0", *where], capture_output=True,
                           text=True, timeout=60, env=clean_env())
        assert p.returncode == 2 and "--last" in p.stderr, p.stderr
    finally:
        if r:
            r.stop()
