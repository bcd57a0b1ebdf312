"""pybox inside a user namespace of 65536 ids, as a Kubernetes pod with `hostUsers: false`.

Invariants: the jail starts there (its ids picked inside the pod's, or given with --jail-ids),
code runs, and every process of the jail runs as one of the jail's ids, unprivileged ids of the
pod, never as the pod's root (the server's own uid) nor as host root; a --jail-ids range the
pod lacks, or one holding the pod's root, is refused with a message naming the pod's ranges.

The pod is podns.py: a user namespace whose ids 0-65535 are host ids POD_OUTER..+65535,
entered as its root with every capability in it (those the hardened profile keeps and more),
and the host's mounts and cgroup tree, which its root may not write (so the limits per
execution are rlimits, as in a pod whose /sys/fs/cgroup is read-only).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import PYBOX, _clean_env, _is_asan, _ppid, _proc_status, _uids

PODNS = str(Path(__file__).resolve().parent / "podns.py")
# The host id of the pod's root: one range for each build the suite runs, since their runs go
# side by side, and without cgroups (a pod's) the code's processes are counted per host uid
# (RLIMIT_NPROC), so two runs sharing the range would count each other's.
POD_OUTER = 300000 if _is_asan(PYBOX) else 400000
POD_IDS = 65536
TIMEOUT = 120

JOB_UID = 1000  # the jail's uid of the user's code


def pod(argv):
    """The command line that runs argv as root of the pod."""
    return [sys.executable, PODNS, str(POD_OUTER), str(POD_IDS), "--", *argv]


def descendants(root):
    """{pid: status fields} of every live process below `root` (not root itself)."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _proc_status(int(name))
            if fields is not None and fields.get("State", ["?"])[0] != "Z":
                table[int(name)] = fields
    out, todo = {}, [root]
    while todo:
        parent = todo.pop()
        for pid, fields in table.items():
            if _ppid(fields) == parent and pid not in out:
                out[pid] = fields
                todo.append(pid)
    return out


def host_processes_in(lo, hi):
    """pids of live processes with any uid in lo..hi, on the whole host."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _proc_status(int(name))
            if fields is not None and fields.get("State", ["?"])[0] != "Z" and any(
                    lo <= u <= hi for u in _uids(fields)):
                pids.append(int(name))
    return pids


def wait_for(what, cond, timeout=30.0):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.02)


# (--jail-ids given, the pod id the jail's 0 maps to)
CASES = [(None, 32768), ("40000:2000", 40000)]


@pytest.mark.parametrize("jail_ids,pod_base", CASES, ids=["auto", "given"])
def test_code_runs_as_the_jails_unprivileged_ids(jail_ids, pod_base):
    host_base = POD_OUTER + pod_base
    code = ("import os, time\n"
            "print('ids', os.getuid(), os.getgid(), os.geteuid(), flush=True)\n"
            "time.sleep(4)\n"
            "print('done', flush=True)\n")
    argv = [PYBOX, "run", "--allow-all-imports", "--timeout", "30"]
    if jail_ids:
        argv += ["--jail-ids", jail_ids]
    p = subprocess.Popen(pod(argv + ["-"]), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=_clean_env(None), text=True)
    try:
        p.stdin.write(code)
        p.stdin.close()
        first = p.stdout.readline()
        assert first == "ids 1000 1000 1000\n", (first, p.stderr.read() if p.poll() else "")
        # While the code sleeps: the processes under the server, seen from the host.
        tree = descendants(p.pid)
        server = [pid for pid, f in tree.items() if _ppid(f) == p.pid]
        assert len(server) == 1, tree
        assert _uids(tree[server[0]]) == [POD_OUTER] * 4, "the server is the pod's root"
        jail = {pid: f for pid, f in tree.items() if pid != server[0]}
        assert jail, "no jail process under the server"
        for pid, f in jail.items():
            uids = _uids(f)
            gids = [int(x) for x in f["Gid"]]
            for ids in (uids, gids):
                assert all(host_base <= i < host_base + 65536 for i in ids), (pid, f["Name"], ids)
                assert POD_OUTER not in ids and 0 not in ids, (pid, ids)
        job_id = host_base + JOB_UID
        jobs = [pid for pid, f in jail.items() if _uids(f) == [job_id] * 4]
        assert jobs, {pid: _uids(f) for pid, f in jail.items()}
        assert all([int(x) for x in jail[pid]["Gid"]] == [job_id] * 4 for pid in jobs)
        # The jail's root (the zygote) is the pod's id pod_base, not the pod's root.
        assert any(_uids(f) == [host_base] * 4 for f in jail.values())
        p.wait(timeout=TIMEOUT)  # little output: the pipes cannot fill
        rest, err = p.stdout.read(), p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert rest == "done\n", (rest, err)
    # Nothing of the jail outlives pybox.
    wait_for("the jail's processes to go",
             lambda: not host_processes_in(host_base, host_base + 65535), timeout=10)


def test_doctor_in_the_pod_says_the_ids_were_picked():
    r = subprocess.run(pod([PYBOX, "doctor"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=_clean_env(None), text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "uids 0-65535; gids 0-65535: a user namespace's" in r.stdout, r.stdout
    assert ("namespaces: user (uid 0-32767 -> host 32768-65535, picked: this user namespace "
            "lacks the default 1000000000-1000065535)") in r.stdout, r.stdout
    assert "unprivileged uid           yes  uid 1000, gid 1000 inside the jail" in r.stdout
    # On the host the default stays.
    r = subprocess.run([PYBOX, "doctor"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=_clean_env(None), text=True, timeout=TIMEOUT)
    assert "uid 0-65535 -> host 1000000000-1000065535)" in r.stdout, r.stdout


BAD = [
    ("1000000000:65536", "jail ids 1000000000-1000065535 are not all in one range of this user "
                         "namespace's ids (uids 0-65535; gids 0-65535)"),
    ("100:65536", "jail ids 100-65635 are not all in one range"),
    ("0:4096", "jail ids 0-4095 include 0 (root): a jail's processes must not share an id with "
               "pybox"),
    ("60000:500", "a jail needs at least 1001 ids (its 0 to 1000), not 500"),
    ("lots", "`lots` is not BASE[:COUNT] (whole numbers) or auto"),
]


@pytest.mark.parametrize("spec,message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_jail_id_range_is_refused(spec, message):
    for argv, env in (([PYBOX, "run", "--jail-ids", spec, "-"], None),
                      ([PYBOX, "run", "-"], {"PYBOX_JAIL_IDS": spec}),
                      ([PYBOX, "serve", "--jail-ids", spec], None),
                      ([PYBOX, "serve"], {"PYBOX_JAIL_IDS": spec}),
                      ([PYBOX, "doctor", "--jail-ids", spec], None)):
        r = subprocess.run(pod(argv), input="print('RAN')\n", stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=_clean_env(env), text=True,
                           timeout=TIMEOUT)
        assert r.returncode == 2, (argv, env, r.stderr)
        assert "RAN" not in r.stdout
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and message in lines[0], (argv, env, r.stderr)
        assert ("--jail-ids" if env is None else "PYBOX_JAIL_IDS") in lines[0], lines


def hardened_args():
    """The arguments deploy/k8s/pybox-hardened.yaml gives pybox serve but the node id."""
    text = (Path(__file__).resolve().parents[2] / "deploy" / "k8s" /
            "pybox-hardened.yaml").read_text()
    [line] = [x for x in text.splitlines() if x.strip().startswith("args:")]
    args = json.loads(line.split(":", 1)[1])
    assert args[:2] == ["--node-id", "n$(POD_INDEX)"], args
    return args[2:]


def test_serve_in_the_pod():
    """The server, with the hardened profile's arguments, starts both its jails in the pod
    and answers an execution."""
    args = hardened_args()
    assert args == ["--jail-ids", "32768:32768"], args
    data = Path(tempfile.mkdtemp(prefix="pybox-pod-"))
    os.chown(data, POD_OUTER, POD_OUTER)  # the pod's root owns its state
    url_file = data / "url"
    p = subprocess.Popen(pod([PYBOX, "serve", *args, "--no-preload", "--spares", "0:0",
                              "--listen", "127.0.0.1:0", "--data", str(data), "--url-file",
                              str(url_file)]),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=_clean_env(None), text=True)
    try:
        url = wait_for("the server's URL",
                       lambda: p.poll() is None and url_file.exists() and url_file.read_text()
                       .strip() or (p.poll() is not None and pytest.fail(p.stderr.read())),
                       timeout=TIMEOUT)
        body = json.dumps({"code": "print(6 * 7)"}).encode()
        req = urllib.request.Request(url.rstrip("/") + "/v1/execute", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            result = json.load(resp)
        assert result["status"] == "ok", result
        assert result["stdout"] == "42\n", result
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            _, err = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        shutil.rmtree(data, ignore_errors=True)
    assert p.returncode == 0, err
    # Its log names the ids in force, the ones given.
    assert "namespaces: user (uid 0-32767 -> host 32768-65535)" in err, err


def repl_jsonl(env, request):
    """`pybox repl --jsonl` (libpybox's local mode) in the pod, one request: its output lines
    (the ready line, then the answer) and its stderr.  Stdin stays open until the answer is in:
    EOF on stdin says the driving program is gone, which interrupts a call still running."""
    p = subprocess.Popen(pod([PYBOX, "repl", "--jsonl"]), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_clean_env(env),
                         text=True)
    watchdog = threading.Timer(TIMEOUT, p.kill)
    watchdog.start()
    lines = []
    try:
        first = p.stdout.readline()
        if first:
            lines.append(json.loads(first))
        if lines and lines[0].get("ready") is True:
            p.stdin.write(json.dumps(request) + "\n")
            p.stdin.flush()
            answer = p.stdout.readline()
            if answer:
                lines.append(json.loads(answer))
        p.stdin.close()
        err = p.stderr.read()
        p.wait(timeout=TIMEOUT)
    finally:
        watchdog.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    return lines, err


def test_libpybox_local_mode_in_the_pod():
    """The library's local engine (here under pybox repl) picks its ids too, or takes
    PYBOX_JAIL_IDS, and refuses a range the pod lacks with the same message."""
    request = {"op": "execute", "code": "print(6 * 7)"}
    lines, err = repl_jsonl(None, request)
    assert lines[0]["ready"] is True, (lines, err)
    # The whole result in the message: its stderr says why, should the code not have run.
    assert lines[1]["ok"] is True and lines[1]["result"]["stdout"] == "42\n", (
        json.dumps(lines[1]), err)
    lines, err = repl_jsonl({"PYBOX_JAIL_IDS": "40000:2000"}, request)
    assert lines[1]["ok"] is True and lines[1]["result"]["stdout"] == "42\n", (
        json.dumps(lines[1]), err)
    lines, err = repl_jsonl({"PYBOX_JAIL_IDS": "1000000000"}, request)
    assert lines[0]["ready"] is False, lines
    assert lines[0]["error"]["message"] == (
        "start the local sandbox: the jail's ids: jail ids 1000000000-1000065535 are not all in "
        "one range of this user namespace's ids (uids 0-65535; gids 0-65535)"), lines
