"""What a new user of `pybox run` meets in the first hour behaves as they expect: piped stdin
reaches the script as with python3, `--file PATH` keeps the file's name, a returned file never
silently fails to be saved, pybox's own notes start on a line of their own, and `pybox doctor`
says what the jail's environment holds. Each is checked locally and, where a server is
involved, with --server too."""
import json
import subprocess

import pytest

from conftest import PYBOX, SLOW, clean_env

INPUT_SCRIPT = "name = input()\nprint('hi', name)\n"


@pytest.fixture(scope="module")
def server(module_start_server):
    return module_start_server("--rpm", "100000", "--rpd", "1000000")


def run(cwd, argv, stdin=subprocess.DEVNULL, merge=False, **kw):
    """`pybox run ARGV` in cwd; stdin is bytes to pipe in, or a file object/DEVNULL."""
    pipe = isinstance(stdin, bytes)
    return subprocess.run([PYBOX, "run"] + argv, input=stdin if pipe else None,
                          stdin=None if pipe else stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT if merge else subprocess.PIPE, cwd=cwd,
                          timeout=120 * SLOW, env=clean_env(), **kw)


def one_line(p):
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pybox: "), p.stderr
    return lines[0]


# --- stdin ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_piped_stdin_reaches_the_script(server, tmp_path, mode):
    """`echo bob | pybox run inp.py` reads "bob", as `python3 inp.py` does."""
    (tmp_path / "inp.py").write_text(INPUT_SCRIPT)
    extra = ["--server", server.url] if mode == "remote" else []
    p = run(tmp_path, ["inp.py"] + extra, stdin=b"bob\n")
    assert (p.returncode, p.stdout, p.stderr) == (0, b"hi bob\n", b"")
    py = subprocess.run(["/usr/bin/python3", "inp.py"], input=b"bob\n", cwd=tmp_path,
                        capture_output=True, timeout=60)
    assert py.stdout == p.stdout


def test_stdin_from_a_file_and_from_nothing(tmp_path):
    """A redirected file is stdin too; /dev/null is an empty stdin (EOFError, as python3);
    --stdin FILE wins over pybox's own stdin."""
    (tmp_path / "inp.py").write_text(INPUT_SCRIPT)
    (tmp_path / "in.txt").write_text("carol\n")
    (tmp_path / "other.txt").write_text("dave\n")
    with open(tmp_path / "in.txt", "rb") as f:
        p = run(tmp_path, ["inp.py"], stdin=f)
    assert (p.returncode, p.stdout) == (0, b"hi carol\n"), p.stderr
    p = run(tmp_path, ["inp.py"])
    assert p.returncode == 1 and b"EOFError" in p.stderr, p.stderr
    p = run(tmp_path, ["inp.py", "--stdin", "other.txt"], stdin=b"ignored\n")
    assert (p.returncode, p.stdout) == (0, b"hi dave\n"), p.stderr


def test_code_from_stdin_is_not_read_twice(tmp_path):
    """With the code on stdin (`-` or no FILE), stdin is the code's, not the script's."""
    p = run(tmp_path, ["-"], stdin=b"import sys\nprint(repr(sys.stdin.read()))\n")
    assert (p.returncode, p.stdout) == (0, b"''\n"), p.stderr


def test_piped_stdin_over_its_limit(tmp_path):
    """Piped stdin over the stdin limit is refused before anything runs: exit 2, one line that
    says which limit and how to raise it."""
    (tmp_path / "s.py").write_text("print('RAN')\n")
    p = run(tmp_path, ["s.py", "--limit", "stdin=1K"], stdin=b"x" * 1025)
    assert p.returncode == 2 and p.stdout == b"", p.stderr
    assert "--limit stdin=SIZE" in one_line(p)
    p = run(tmp_path, ["s.py", "--limit", "stdin=1K"], stdin=b"x" * 1024)
    assert (p.returncode, p.stdout) == (0, b"RAN\n"), p.stderr


# --- files ---------------------------------------------------------------------------------


def test_file_without_a_name_keeps_its_own(tmp_path):
    """--file PATH puts PATH's last component in /work; NAME=PATH still names it; a PATH with
    no last component is refused before anything runs."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.csv").write_text("a,b\n1,2\n")
    (tmp_path / "s.py").write_text("print(open('data.csv').read() + open('d2.csv').read(), "
                                   "end='')\n")
    p = run(tmp_path, ["s.py", "--file", "sub/data.csv", "--file", "d2.csv=sub/data.csv"])
    assert (p.returncode, p.stdout) == (0, b"a,b\n1,2\na,b\n1,2\n"), p.stderr
    for bad in ("sub/", "=sub/data.csv", "x="):
        p = run(tmp_path, ["s.py", "--file", bad])
        assert p.returncode == 2 and p.stdout == b"", (bad, p.stderr)
        one_line(p)


WRITE_OUT = "open('out.txt', 'w').write('new')\nprint('RAN')\n"


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_returned_file_that_exists_is_refused_before_the_run(server, tmp_path, mode):
    """--return NAME when --out DIR/NAME exists is refused before the run (exit 2, one line
    naming --force); --force replaces it; an --out that is not a directory is refused too."""
    (tmp_path / "s.py").write_text(WRITE_OUT)
    (tmp_path / "out.txt").write_text("old")
    extra = ["--server", server.url] if mode == "remote" else []
    p = run(tmp_path, ["s.py", "--return", "out.txt"] + extra)
    assert p.returncode == 2 and p.stdout == b"", p.stderr
    assert "--force" in one_line(p) and "out.txt" in one_line(p)
    assert (tmp_path / "out.txt").read_text() == "old"
    p = run(tmp_path, ["s.py", "--return", "out.txt", "--force"] + extra)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"RAN\n", b"")
    assert (tmp_path / "out.txt").read_text() == "new"
    p = run(tmp_path, ["s.py", "--return", "out.txt", "--out", "nowhere"] + extra)
    assert p.returncode == 2 and p.stdout == b"", p.stderr
    assert "nowhere" in one_line(p)


def test_returned_file_not_saved_fails_the_run(tmp_path):
    """A file that comes back but cannot be saved (a pattern's name that exists already) makes
    a run that succeeded exit 125, saying so; the others are saved."""
    (tmp_path / "s.py").write_text("open('a.txt', 'w').write('A')\nopen('b.txt', 'w').write('B')\n")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("old")
    p = run(tmp_path, ["s.py", "--return", "*.txt", "--out", "out"])
    assert p.returncode == 125, p.stderr
    assert "returned file `a.txt` not saved" in one_line(p) and "--force" in one_line(p)
    assert (tmp_path / "out" / "a.txt").read_text() == "old"
    assert (tmp_path / "out" / "b.txt").read_text() == "B"


# --- pybox's notes -------------------------------------------------------------------------


BIG = "import sys\nsys.stdout.write('x' * (1 << 20) + 'cut here')\n"


@pytest.mark.parametrize("mode", ["local", "remote"])
def test_truncation_note_on_a_line_of_its_own(server, tmp_path, mode):
    """Output cut at its 1 MiB limit in the middle of a line, then pybox's note: on a terminal
    (stdout and stderr one file) the note starts a new line; with stderr apart, stderr holds
    the note alone."""
    (tmp_path / "s.py").write_text(BIG)
    extra = ["--server", server.url] if mode == "remote" else []
    p = run(tmp_path, ["s.py"] + extra, merge=True)
    assert p.returncode == 0, p.stdout[-300:]
    assert p.stdout.startswith(b"x" * (1 << 20)), p.stdout[:100]
    assert p.stdout[1 << 20:].startswith(b"\npybox: stdout was truncated at "), p.stdout[-300:]
    p = run(tmp_path, ["s.py"] + extra)
    assert p.stdout == b"x" * (1 << 20)
    assert p.stderr.startswith(b"pybox: stdout was truncated at "), p.stderr


def test_main_value_on_a_line_of_its_own(tmp_path):
    """--main's value starts a line even when main() printed without a newline."""
    (tmp_path / "s.py").write_text("def main():\n    print('working', end='')\n    return 7\n")
    p = run(tmp_path, ["s.py", "--main"])
    assert (p.returncode, p.stdout) == (0, b"working\n7\n"), p.stderr


def test_doctor_says_what_the_environment_holds(tmp_path):
    """`pybox doctor`'s row on the jail's environment names the variables the code sees as
    what they are, not under the word "empty"."""
    p = subprocess.run([PYBOX, "doctor"], capture_output=True, text=True, timeout=120 * SLOW,
                       env=clean_env(), stdin=subprocess.DEVNULL)
    row = [line for line in p.stdout.splitlines() if "environment" in line]
    assert len(row) == 1, p.stdout
    assert "empty" not in row[0], row
    assert row[0].split()[:4] == ["no", "host", "environment", "yes"], row
    assert "the code sees only HOME, LANG" in row[0] and "set by pybox" in row[0], row


def test_json_object_unchanged_by_the_notes(tmp_path):
    """--json prints one object and no note, whatever was cut."""
    (tmp_path / "s.py").write_text(BIG)
    p = run(tmp_path, ["s.py", "--json"])
    obj = json.loads(p.stdout)
    assert obj["stdout_truncated"] is True and p.stderr == b"", p.stderr
