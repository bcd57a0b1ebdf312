"""deploy/pybox.service: systemd accepts every line of it, and pybox works under what its
directives do.

systemd is not PID 1 on the machines this runs on, so the unit itself cannot be started
(systemd-run needs a running manager).  Instead each sandboxing directive of the unit is
carried out as systemd would: a mount namespace with the file system read-only but for the
state directory and the API file systems (ProtectSystem=strict, StateDirectory=), empty
unreadable /home, /root and /run/user (ProtectHome=yes), a private /tmp and /var/tmp
(PrivateTmp=yes), a /dev of null, zero, full, random, urandom and tty (PrivateDevices=yes),
/lib/modules hidden (ProtectKernelModules=yes), then no_new_privs and the capability bounding
set (setpriv).  In it `pybox doctor` must find every isolation feature in force, and a real
`pybox serve` must run code, hit its limits, keep a session, reload on SIGHUP and drain on
SIGTERM within TimeoutStopSec.  A directive the unit gains that this file neither carries out
nor lists as a seccomp filter or a dropped capability fails the test."""
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
PYBOX = os.path.abspath(os.environ.get("PYBOX") or str(REPO / "build" / "pybox"))
UNIT = REPO / "deploy" / "pybox.service"
ENV_EXAMPLE = REPO / "deploy" / "pybox.env.example"

# Carried out below.
EMULATED = {"NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices",
            "ProtectKernelModules", "CapabilityBoundingSet", "AmbientCapabilities",
            "StateDirectory", "StateDirectoryMode", "User", "Environment", "EnvironmentFile",
            "ExecStart"}
# seccomp filters (or a dropped capability with an inaccessible path) systemd adds, that
# pybox's own filter in every job already goes beyond; not carried out here.
FILTERS_ONLY = {"SystemCallArchitectures", "LockPersonality", "RestrictRealtime",
                "RestrictSUIDSGID", "ProtectKernelLogs"}
# Not sandboxing: how the service is run and stopped, checked for their values below.
LIFECYCLE = {"Type", "ExecReload", "KillMode", "KillSignal", "TimeoutStopSec", "Restart",
             "RestartSec", "Delegate", "TasksMax", "LimitNOFILE"}
DRAIN_S = 30  # how long pybox serve lets running executions finish after SIGTERM


def unit_service():
    """The [Service] section as {key: [values]}."""
    section, out = None, {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        key, _, value = line.partition("=")
        if section == "[Service]":
            out.setdefault(key, []).append(value)
    return out


SERVICE = unit_service()


def one(key):
    [value] = SERVICE[key]
    return value


def test_systemd_analyze_verify(tmp_path):
    """Every key known to systemd and every value parsed: systemd-analyze prints nothing (it
    exits 0 even on unknown keys, but names them on stderr)."""
    unit = tmp_path / "pybox.service"
    # verify checks that ExecStart's binary exists: point it at the one under test.
    unit.write_text(UNIT.read_text().replace("ExecStart=/usr/bin/pybox", f"ExecStart={PYBOX}"))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and p.stderr == "" and p.stdout == "", (p.returncode, p.stdout,
                                                                      p.stderr)
    # A key systemd does not know is reported, so the check above can fail.
    unit.write_text(unit.read_text().replace("[Install]", "Frobnicate=yes\n[Install]", 1))
    p = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert "Frobnicate" in p.stderr, p.stderr


def test_every_directive_is_accounted_for():
    unknown = set(SERVICE) - EMULATED - FILTERS_ONLY - LIFECYCLE
    assert not unknown, f"directives neither emulated nor listed: {sorted(unknown)}"
    assert one("Restart") == "on-failure"
    assert one("StateDirectory") == "pybox"
    assert one("ExecStart") == "/usr/bin/pybox serve"
    assert one("ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one("KillMode") == "mixed" and one("KillSignal") == "SIGTERM"
    assert int(one("TimeoutStopSec")) > DRAIN_S
    assert one("EnvironmentFile").lstrip("-") == "/etc/pybox/pybox.env"
    assert one("User") == "root"
    # The env example names the admin key.
    assert re.search(r"^PYBOX_ADMIN_KEY=", ENV_EXAMPLE.read_text(), re.M)


def bounding_set():
    caps = one("CapabilityBoundingSet").split()
    assert caps and all(c.startswith("CAP_") for c in caps), caps
    return "-all," + ",".join("+" + c[4:].lower() for c in caps)


SETUP = r"""
set -eu
state="$1"; keep="$2"; shift 2
# StateDirectory=pybox: /var/lib/pybox, writable.
mkdir -p /var/lib/pybox
mount --bind "$state" /var/lib/pybox
# What stands for /usr/bin/pybox: the binary under test and the checkout (its sanitizer
# suppressions), put back at their paths if what follows hides them.
mkdir /var/lib/pybox/.keep
i=0
for d in $keep; do
    i=$((i + 1))
    mkdir "/var/lib/pybox/.keep/$i"
    mount --rbind "$d" "/var/lib/pybox/.keep/$i"
done
# ProtectHome=yes: empty and inaccessible (read-only once the kept paths are back).
hidden=""
for d in /home /root /run/user; do
    if [ -d "$d" ]; then
        mount -t tmpfs -o nosuid,nodev,noexec,mode=000 tmpfs "$d"
        hidden="$hidden $d"
    fi
done
# PrivateTmp=yes.
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /var/tmp
i=0
for d in $keep; do
    i=$((i + 1))
    if ! [ -e "$d" ]; then
        mkdir -p "$d"
        mount --rbind "/var/lib/pybox/.keep/$i" "$d"
    fi
    umount -l "/var/lib/pybox/.keep/$i"
    rmdir "/var/lib/pybox/.keep/$i"
done
rmdir /var/lib/pybox/.keep
for d in $hidden; do
    mount -o remount,ro "$d"
done
# PrivateDevices=yes: a /dev of its own with the pseudo devices only.
mkdir /tmp/.hostdev
mount --rbind /dev /tmp/.hostdev
mount -t tmpfs -o nosuid,noexec,mode=755 tmpfs /dev
for n in null zero full random urandom tty; do
    touch "/dev/$n"
    mount --bind "/tmp/.hostdev/$n" "/dev/$n"
done
mkdir /dev/shm /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
ln -s /proc/self/fd /dev/fd
umount -l /tmp/.hostdev
rmdir /tmp/.hostdev
# ProtectKernelModules=yes: the modules out of sight.
for d in /lib/modules /usr/lib/modules; do
    [ -d "$d" ] && ! [ -L "$d" ] && mount -t tmpfs -o ro,mode=000 tmpfs "$d" || true
done
# ProtectSystem=strict: every other mount read-only; /dev, /proc and /sys (and so
# /sys/fs/cgroup) stay as they are.
awk '{print $5}' /proc/self/mountinfo | sort -u | while read -r m; do
    case "$m" in
    /proc | /proc/* | /sys | /sys/* | /dev | /dev/* | /tmp | /var/tmp | /var/lib/pybox) ;;
    *) mount -o remount,bind,ro "$m" 2>/dev/null || true ;;
    esac
done
# The proof that it took: / is read-only now.
if touch /.pybox-rw-probe 2>/dev/null; then echo "/ is still writable" >&2; exit 90; fi
exec "$@"
"""


def confined(state, argv):
    """argv as pybox.service would run it: the namespace above, then no_new_privs and the
    bounding set, no inheritable or ambient capabilities."""
    assert one("NoNewPrivileges") == "yes"
    assert one("ProtectSystem") == "strict" and one("ProtectHome") == "yes"
    assert one("PrivateTmp") == "yes" and one("PrivateDevices") == "yes"
    assert SERVICE["AmbientCapabilities"] == [""]
    keep = " ".join(sorted({os.path.dirname(PYBOX), str(REPO)}))
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", SETUP, "sh",
            str(state), keep, "setpriv", "--no-new-privs", "--inh-caps=-all", "--ambient-caps=-all",
            f"--bounding-set={bounding_set()}", "--", *argv]


def service_env(admin_key):
    """The environment systemd gives: Environment= and the EnvironmentFile's lines."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C.UTF-8"}
    for v in SERVICE.get("Environment", []):
        k, _, val = v.partition("=")
        env[k] = val
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, val = line.partition("=")
            env[k] = val
    for k in ("ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    env["PYBOX_ADMIN_KEY"] = admin_key
    env["PYBOX_LISTEN"] = "127.0.0.1:0"
    return env


def test_doctor_finds_everything_in_force(tmp_path):
    p = subprocess.run(confined(tmp_path, [PYBOX, "doctor"]), capture_output=True, text=True,
                       timeout=180, env=service_env("x"), stdin=subprocess.DEVNULL)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "Every isolation feature pybox uses is in force." in out, out
    # And the same bounding set without CAP_SETUID really stops it: the test can fail.
    argv = confined(tmp_path, [PYBOX, "doctor"])
    i = next(i for i, a in enumerate(argv) if a.startswith("--bounding-set="))
    argv[i] = argv[i].replace(",+setuid", "")
    p = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=service_env("x"),
                       stdin=subprocess.DEVNULL)
    assert p.returncode != 0 and "uid_map" in p.stdout + p.stderr, p.stdout + p.stderr


def metric(url, name):
    text = requests.get(url + "/metrics", timeout=30).text
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def wait_for(what, cond, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def test_serve_under_the_unit(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    log = tmp_path / "stderr.log"
    key = "adm-" + os.urandom(12).hex()
    argv = [*one("ExecStart").split(), "--url-file", "/var/lib/pybox/url", "--no-preload"]
    argv[0] = PYBOX
    with open(log, "w") as err:
        proc = subprocess.Popen(confined(state, argv), stdout=subprocess.DEVNULL, stderr=err,
                                stdin=subprocess.DEVNULL, env=service_env(key))
    try:
        wait_for("the url file", lambda: (state / "url").exists() or proc.poll() is not None)
        assert proc.poll() is None, log.read_text()
        url = (state / "url").read_text().strip()
        # The store went where StateDirectory= put it.
        assert "store sqlite:/var/lib/pybox/pybox.db" in log.read_text(), log.read_text()
        assert (state / "pybox.db").exists()
        admin = {"Authorization": f"Bearer {key}"}

        def run(code, **kw):
            r = requests.post(url + "/v1/execute", json={"code": code, **kw}, headers=admin,
                              timeout=120)
            assert r.status_code == 200, r.text
            return r.json()

        assert requests.get(url + "/v1/health", timeout=30).status_code == 200
        assert run("print(6*7)")["stdout"] == "42\n"
        # The limits hold (the cell's cgroups or rlimits), and a timeout kills.
        big = run("b = bytearray(600 << 20); print('allocated')")
        assert big["status"] != "ok" and "allocated" not in big["stdout"], big
        slow = run("while True: pass", timeout=1)
        assert slow["status"] == "timeout", slow
        # A session lives between calls.
        r = requests.post(url + "/v1/sessions", json={}, headers=admin, timeout=120)
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        for code, want in (("x = 20", ""), ("print(x + 22)", "42\n")):
            r = requests.post(f"{url}/v1/sessions/{sid}/execute", json={"code": code},
                              headers=admin, timeout=120)
            assert r.status_code == 200 and r.json()["stdout"] == want, r.text
        # ExecReload: SIGHUP starts new zygotes; code runs on them.
        started = metric(url, "pybox_zygotes_started_total")
        os.kill(proc.pid, signal.SIGHUP)
        wait_for("the new zygotes", lambda: metric(url, "pybox_zygotes_started_total") > started)
        assert run("print('after reload')")["stdout"] == "after reload\n"
        # Stop: SIGTERM while an execution runs; it finishes, the server exits 0 in time.
        done = {}

        def slow_call():
            done["r"] = run("import time; time.sleep(2); print('drained')", timeout=10)

        t = threading.Thread(target=slow_call)
        t.start()
        wait_for("the execution running", lambda: metric(url, "pybox_cells_busy") >= 1)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=int(one("TimeoutStopSec"))) == 0, log.read_text()
        assert time.monotonic() - t0 < int(one("TimeoutStopSec"))
        t.join(timeout=30)
        assert done["r"]["stdout"] == "drained\n", done
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
