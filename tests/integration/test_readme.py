"""README.md followed literally: the quick start's server, its curl examples, the Python
client's install and the API keys section run as written, in a fresh directory, against a
server started by the quick start's own command, and each command prints what the README says
it prints. So the README cannot drift from what works.

What the test changes, and only this:
  - the working directory is a temporary one holding two symlinks, `build` (the build directory
    of the binary under test, env PYBOX) and `python` (the checkout's python/), so `build/pybox`
    and `./python` mean what they mean in a checkout;
  - the server listens on a free port: `--listen 127.0.0.1:0` is added to the quick start's
    `build/pybox serve`, and http://127.0.0.1:8080 in the commands becomes its URL;
  - every command runs with PYBOX_DATA set to a temporary directory (the README's way to choose
    the data directory), instead of root's default /var/lib/pybox.

A line `# → TEXT` after a command is what that command prints on stdout (`...` matches
anything); every command must exit 0.
"""
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PYBOX, REPO, SLOW, START_TIMEOUT, STOP_TIMEOUT, clean_env

README = REPO / "README.md"
BUILD = Path(PYBOX).parent
README_URL = "http://127.0.0.1:8080"
README_DATA = "/var/lib/pybox"
EXPECT = "# → "


def sections():
    """{heading: [(language, code), ...]} of README.md's `## ` sections."""
    out, current = {}, None
    for m in re.finditer(r"^## ([^\n]+)$|^```(\w*)\n(.*?)^```$", README.read_text(), re.M | re.S):
        if m.group(1) is not None:
            current = out.setdefault(m.group(1).strip(), [])
        elif current is not None:
            current.append((m.group(2), m.group(3)))
    return out


def text_of(heading):
    text = README.read_text()
    start = text.index("## " + heading + "\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else None]


def commands(code):
    """[(command, expected or None)]: the shell commands of a block, each whole (quotes,
    continuation lines and $(...) spanning lines), with the `# → ` line that follows it."""
    out, cur, quote, depth, i = [], "", None, 0, 0
    while i < len(code):
        c = code[i]
        if quote is None and cur.strip() == "" and c == "#":
            line, _, rest = code[i:].partition("\n")
            if line.startswith(EXPECT):
                assert out and out[-1][1] is None, f"`{line}` follows no command"
                out[-1] = (out[-1][0], line[len(EXPECT):])
            code, i, cur = rest, 0, ""
            continue
        if quote is None and c == "#" and cur[-1:] in (" ", "\t"):
            # A comment after a command: bash drops it, and so do we (an apostrophe in it
            # is no quote).
            end = code.find("\n", i)
            i = len(code) if end < 0 else end
            continue
        cur += c
        if c == "\\" and quote != "'" and i + 1 < len(code):
            cur += code[i + 1]
            i += 2
            continue
        if quote:
            if c == quote:
                quote = None
        elif c in "'\"":
            quote = c
        elif c == "(" and cur.endswith("$("):
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif c == "\n" and depth == 0:
            if cur.strip():
                out.append((cur.strip(), None))
            cur = ""
        i += 1
    assert quote is None and depth == 0, f"unterminated command: {cur!r}"
    if cur.strip():
        out.append((cur.strip(), None))
    return out


def matches(expected, got):
    pattern = ".*?".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, got.rstrip("\n"), re.S) is not None


@pytest.fixture
def workdir(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "build").symlink_to(BUILD)
    (work / "python").symlink_to(REPO / "python")
    return work


@pytest.fixture
def env(tmp_path):
    return clean_env({"PYBOX_DATA": str(tmp_path / "data")})


@pytest.fixture
def server(workdir, env, tmp_path):
    """The quick start's `build/pybox serve`, on a free port: (url, its stderr so far)."""
    first = sections()["Two commands"][0]
    assert first[0] == "sh", first
    serve = [line for line in first[1].splitlines() if "build/pybox serve" in line]
    assert len(serve) == 1, first
    argv = serve[0].split("&&")[-1].split()
    assert argv == ["build/pybox", "serve"], serve
    url_file, log_path = tmp_path / "url", tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv + ["--listen", "127.0.0.1:0", "--url-file", str(url_file)],
                                cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + START_TIMEOUT * SLOW
        while not (url_file.exists() and url_file.read_text().endswith("\n")):
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "no URL: " + log_path.read_text()
            time.sleep(0.05)
        yield url_file.read_text().strip(), log_path
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_TIMEOUT * SLOW) == 0, log_path.read_text()


def test_the_server_says_what_the_readme_says(server, env):
    """The quick start's server names its store and its URL in the README's words."""
    url, log_path = server
    text = text_of("Two commands")
    said = re.findall(r"`(pybox: (?:store|serving on) [^`]+)`", text)
    assert len(said) == 2, said
    lines = log_path.read_text().splitlines()
    for line in said:
        want = line.replace(README_DATA, env["PYBOX_DATA"]).replace(README_URL, url)
        assert want in lines, (want, lines)


def test_the_readme_commands_print_what_it_says(server, workdir, env):
    """The quick start's curl examples, the Python client's install and the API keys section,
    run in that order in one shell, as a reader would."""
    url, _ = server
    blocks = sections()
    steps = [blocks["Two commands"][1], blocks["Python client"][0], blocks["API keys"][0]]
    assert all(lang == "sh" for lang, _ in steps), steps
    cmds = [c for _, code in steps for c in commands(code)]
    assert sum(1 for _, e in cmds if e is not None) >= 6, cmds
    script = "".join(f"{cmd.replace(README_URL, url)}\nprintf '\\0%s\\0' $?\n"
                     for cmd, _ in cmds)
    p = subprocess.run(["bash", "-c", script], cwd=workdir, env=env, capture_output=True,
                       stdin=subprocess.DEVNULL, timeout=600 * SLOW)
    parts = p.stdout.decode("utf-8", "replace").split("\0")
    assert len(parts) == 2 * len(cmds) + 1, (parts, p.stderr.decode())
    for n, (cmd, expected) in enumerate(cmds):
        out, rc = parts[2 * n], parts[2 * n + 1]
        assert rc == "0", f"`{cmd}` exited {rc}:\n{out}\n{p.stderr.decode()}"
        if expected is not None:
            assert matches(expected, out), f"`{cmd}` printed {out!r}, the README {expected!r}"


def test_command_splitting():
    """The splitter sees commands as a shell does."""
    code = ("a 'x\ny' \\\n  b\n# plain comment\nc $(d\ne)\n# → out\nf \"g # h\"  # it's\n")
    assert commands(code) == [("a 'x\ny' \\\n  b", None), ("c $(d\ne)", "out"),
                              ('f "g # h"', None)]
    assert matches('{"a":1,...,"c":3...}', '{"a":1,"b":2,"c":3,"d":4}\n')
    assert not matches('{"a":1}', '{"a":2}')
