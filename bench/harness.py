"""Shared machinery of bench/soak.py and bench/overload.py: start a real `pybox serve` and stop
it again whatever happens, talk HTTP to it with the standard library, and look at what it holds
on the host (processes of the jail's uid range, mounts, cgroups, fds, memory).

Not a benchmark itself. Run the scripts with Debian's interpreter, /usr/bin/python3.
"""
import ctypes
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_BIN = os.path.join(ROOT, "build", "bench", "pybox")

# The jail's user namespace maps its uids 0..65535 to these host uids (docs/design); a started
# Server replaces them with the range its server logs.
JAIL_UID_MIN = 1000000000
JAIL_UID_MAX = 1000065535
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_DEPTH = 6

START_TIMEOUT = 90  # the zygote imports numpy and PIL at start
STOP_TIMEOUT = 40   # SIGTERM lets running executions finish (up to 30 s), then exit 0
PR_SET_PDEATHSIG = 1


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C, so every `finally` runs."""


def on_signals_unwind():
    """Turn SIGTERM and SIGHUP into an Interrupted exception in the main thread (SIGINT is
    KeyboardInterrupt already)."""
    def handler(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, handler)


def percentile(values, p):
    """The p-th percentile (0-100) of values by linear interpolation; None for no values."""
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def distribution_ms(seconds):
    """{n, p50, p90, p99, max} in milliseconds of a list of durations in seconds."""
    out = {"n": len(seconds)}
    for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
        v = percentile(seconds, p)
        out[name] = None if v is None else round(v * 1e3, 1)
    return out


def cow_yardstick(pybox_bin):
    """Run pybox-bench-cow (beside the pybox binary) with 1 and with os.cpu_count() processes:
    {"1": {"faults_per_s", "us_per_fault", "line"}, "<ncpu>": ...}, or {} without it."""
    tool = os.path.join(os.path.dirname(os.path.abspath(pybox_bin)), "pybox-bench-cow")
    out = {}
    if not os.access(tool, os.X_OK):
        return out
    for procs in sorted({1, os.cpu_count() or 1}):
        p = subprocess.run([tool, str(procs)], capture_output=True, text=True, timeout=120)
        m = re.search(r"([\d.]+) copy-on-write faults/s, ([\d.]+) us each", p.stdout)
        if p.returncode == 0 and m:
            out[str(procs)] = {"faults_per_s": float(m.group(1)),
                               "us_per_fault": float(m.group(2)), "line": p.stdout.strip()}
    return out


def yardstick_line(ys):
    if not ys:
        return "copy-on-write yardstick: (no pybox-bench-cow beside the binary)"
    return "copy-on-write yardstick (pybox-bench-cow): " + "; ".join(
        "%s process(es) %.0f faults/s, %.1f us each" % (k, v["faults_per_s"], v["us_per_fault"])
        for k, v in ys.items())


def machine_line():
    return "machine: %d CPUs, %s, load average %.2f %.2f %.2f" % (
        (os.cpu_count() or 0, os.uname().release) + os.getloadavg())


# ---------------------------------------------------------------------------------------------
# The server


_libc = ctypes.CDLL(None, use_errno=True)


def _pdeathsig():
    """In the child before exec: SIGTERM when the bench dies, even by SIGKILL, so no server
    outlives it (and its SIGTERM path still removes its cgroups)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Server:
    """One `pybox serve` on 127.0.0.1:0 with a fresh data directory in a temporary directory and
    a random admin key (PYBOX_ADMIN_KEY: no rate limits, quotas or import allowlist).

    Use as a context manager: on the way out it is stopped with SIGTERM (SIGKILL after
    STOP_TIMEOUT s), what it left is reported in .leftovers, and the temporary directory is
    removed. .url .host .port .pid .data_dir .admin_key .exit_status .leftovers."""

    def __init__(self, pybox_bin, flags=(), prepare=None, keep=False):
        self.bin = os.path.abspath(pybox_bin)
        self.flags = list(flags)
        self.admin_key = "adm-" + secrets.token_hex(16)
        self.tmp = tempfile.mkdtemp(prefix="pybox-bench-")
        self.data_dir = os.path.join(self.tmp, "data")
        os.mkdir(self.data_dir)
        self.log_path = os.path.join(self.tmp, "stderr.log")
        self.url_file = os.path.join(self.tmp, "url")
        self.prepare = prepare
        self.keep = keep
        self.proc = None
        self.url = self.host = self.port = None
        self.exit_status = None
        self.leftovers = []
        self.userns = set()

    def env(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYBOX") and k != "PYTHON_EXE_KEY"}
        env["PYBOX_ADMIN_KEY"] = self.admin_key
        return env

    def __enter__(self):
        try:
            if self.prepare:
                self.prepare(self)
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self):
        argv = [self.bin, "serve", "--listen", "127.0.0.1:0", "--data", self.data_dir,
                "--url-file", self.url_file] + self.flags
        with open(self.log_path, "ab") as log:
            # A session of its own: Ctrl-C reaches the bench only, which then stops the
            # server itself and checks how it went.
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=log, env=self.env(),
                                         cwd=self.tmp, start_new_session=True,
                                         preexec_fn=_pdeathsig)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("pybox serve exited with %s at start: %s\n%s" % (
                    self.proc.returncode, " ".join(argv), self.log_tail()))
            try:
                with open(self.url_file) as f:
                    text = f.read().strip()
            except FileNotFoundError:
                text = ""
            if text.startswith("http://"):
                self.url = text
                hostport = text[len("http://"):].rstrip("/")
                self.host, port = hostport.rsplit(":", 1)
                self.port = int(port)
                self.read_jail_uids()
                self.note_userns()
                return
            time.sleep(0.05)
        raise RuntimeError("pybox serve wrote no URL within %d s:\n%s" % (START_TIMEOUT,
                                                                          self.log_tail()))

    @property
    def pid(self):
        return self.proc.pid

    def read_jail_uids(self):
        """Take the jail's host uid range from the isolation line the server logs at start
        ("user (uid 0-65535 -> host 1000000000-1000065535)"), when it is there."""
        global JAIL_UID_MIN, JAIL_UID_MAX
        m = re.search(r"-> host (\d+)-(\d+)", self.log_tail(100000))
        if m:
            JAIL_UID_MIN, JAIL_UID_MAX = int(m.group(1)), int(m.group(2))

    def note_userns(self):
        """Remember the user namespaces of the server's jail (to recognise orphans later)."""
        for pid in descendants(self.pid):
            f = proc_status(pid)
            if f is not None and in_jail_range(f):
                ns = userns(pid)
                if ns is not None:
                    self.userns.add(ns)

    def __exit__(self, *exc):
        if self.proc is not None:
            self.stop()
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False

    def stop(self):
        """SIGTERM and wait; SIGKILL after STOP_TIMEOUT. Then record (and end) the processes of
        its jail that survive it, and remove empty cgroups it left."""
        pid = self.pid
        if self.proc.poll() is None:
            self.note_userns()
            self.proc.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            while True:
                try:
                    self.exit_status = self.proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() - t0 > STOP_TIMEOUT:
                        self.leftovers.append("pybox serve %d still running %d s after SIGTERM: "
                                              "SIGKILL" % (pid, STOP_TIMEOUT))
                        self.proc.kill()
                        self.proc.wait()
                        self.exit_status = None
                        break
                except (KeyboardInterrupt, Interrupted):
                    pass  # a second Ctrl-C: keep waiting for the stop we asked for
        else:
            self.exit_status = self.proc.returncode
        deadline = time.monotonic() + 5
        while True:
            procs = jail_processes(self.pid, self.userns)
            cgroups = server_cgroups(pid)
            if (not procs and not cgroups) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for p in procs:
            self.leftovers.append("jail process %d (%s, uid %d) survives the server" % (
                p["pid"], p["name"], p["uid"]))
            try:
                os.kill(p["pid"], signal.SIGKILL)
            except OSError:
                pass
        for path in cgroups:
            self.leftovers.append("cgroup %s survives the server" % path)
        for path in sorted(cgroups, key=len, reverse=True):
            for sub in sorted(list_subdirs(path), reverse=True):
                _rmdir(sub)
            _rmdir(path)

    def log_tail(self, n=3000):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def connection(self, timeout=60):
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def metrics(self):
        """GET /metrics as {"name" or "name{labels}": float}."""
        conn = self.connection(timeout=10)
        try:
            conn.request("GET", "/metrics", headers={"Connection": "close"})
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    pass
        return out


def _rmdir(path):
    try:
        os.rmdir(path)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------
# HTTP


class Client:
    """One kept-alive HTTP/1.1 connection that reconnects after an error. post() returns
    (status, headers {lower: value}, body bytes, seconds) or raises OSError /
    http.client.HTTPException (the connection is then dropped)."""

    def __init__(self, server, timeout=60):
        self.server = server
        self.timeout = timeout
        self.conn = None

    def post(self, path, body, content_type="application/json", key=None):
        headers = {"Content-Type": content_type}
        if key:
            headers["Authorization"] = "Bearer " + key
        if self.conn is None:
            self.conn = self.server.connection(self.timeout)
        t0 = time.perf_counter()
        try:
            self.conn.request("POST", path, body, headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except BaseException:
            self.close()
            raise
        dt = time.perf_counter() - t0
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        if resp.will_close:
            self.close()
        return resp.status, hdrs, data, dt

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def multipart(fields, files=()):
    """(body, content type) of multipart/form-data: fields [(name, str)], files
    [(field, filename, bytes)]."""
    boundary = "pyboxbench" + secrets.token_hex(12)
    parts = []
    for name, value in fields:
        parts.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n" % (
            boundary, name)).encode() + value.encode() + b"\r\n")
    for field, filename, data in files:
        parts.append(("--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
                      "Content-Type: application/octet-stream\r\n\r\n" % (
                          boundary, field, filename)).encode() + data + b"\r\n")
    parts.append(("--%s--\r\n" % boundary).encode())
    return b"".join(parts), "multipart/form-data; boundary=" + boundary


def json_body(data):
    """The parsed JSON of a response body, or None if it is not JSON."""
    try:
        return json.loads(data)
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------
# /proc and cgroup inspection


def proc_status(pid):
    try:
        with open("/proc/%s/status" % pid) as f:
            fields = {}
            for line in f:
                key, _, value = line.partition(":")
                fields[key] = value.split()
            return fields
    except OSError:
        return None


def all_status():
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = proc_status(entry)
            if f is not None:
                out[int(entry)] = f
    return out


def _ppid(fields):
    try:
        return int(fields.get("PPid", ["0"])[0])
    except ValueError:
        return 0


def _uid(fields):
    try:
        return int(fields.get("Uid", ["-1"])[0])
    except ValueError:
        return -1


def in_jail_range(fields):
    return JAIL_UID_MIN <= _uid(fields) <= JAIL_UID_MAX


def _alive(fields):
    return fields.get("State", ["Z"])[0] not in ("Z", "X")


def userns(pid):
    try:
        return os.stat("/proc/%d/ns/user" % pid).st_ino
    except OSError:
        return None


def descendants(root, statuses=None):
    statuses = statuses if statuses is not None else all_status()
    children = {}
    for pid, f in statuses.items():
        children.setdefault(_ppid(f), []).append(pid)
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def jail_processes(server_pid, seen_userns=()):
    """Live processes of the jail uid range that belong to the server: its descendants,
    members of its pybox-<pid>-* cgroups, and processes in a user namespace its jail was seen
    in. Each {"pid", "name", "uid", "ppid", "mntns"}."""
    statuses = all_status()
    ours = set(descendants(server_pid, statuses))
    tag = "pybox-%d-" % server_pid
    out = []
    for pid, f in statuses.items():
        if not in_jail_range(f) or not _alive(f):
            continue
        mine = pid in ours
        if not mine:
            try:
                with open("/proc/%d/cgroup" % pid) as cf:
                    mine = tag in cf.read()
            except OSError:
                pass
        if not mine and seen_userns:
            mine = userns(pid) in seen_userns
        if mine:
            try:
                mnt = os.stat("/proc/%d/ns/mnt" % pid).st_ino
            except OSError:
                mnt = None
            out.append({"pid": pid, "name": " ".join(f.get("Name", [])), "uid": _uid(f),
                        "ppid": _ppid(f), "mntns": mnt})
    return out


def list_subdirs(path):
    try:
        return [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def server_cgroups(server_pid):
    """The server's parent cgroups: directories pybox-<pid>-* under /sys/fs/cgroup (searched
    CGROUP_DEPTH levels deep, the v1 memory hierarchy may nest them), never through a link."""
    prefix = "pybox-%d-" % server_pid
    found = []

    def walk(path, level):
        if level > CGROUP_DEPTH:
            return
        for sub in list_subdirs(path):
            name = os.path.basename(sub)
            if name.startswith(prefix):
                found.append(sub)
            elif not name.startswith("pybox-"):
                walk(sub, level + 1)

    walk(CGROUP_ROOT, 0)
    return found


def hierarchy_of(path):
    """"memory" for /sys/fs/cgroup/memory/a/b (the first component under the root)."""
    rel = os.path.relpath(path, CGROUP_ROOT)
    return rel.split(os.sep)[0]


def count_lines(path):
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except OSError:
        return None


def fd_targets(pid):
    out = []
    try:
        names = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return None
    for n in names:
        try:
            out.append(os.readlink("/proc/%d/fd/%s" % (pid, n)))
        except OSError:
            pass
    return out


def vm_rss_kb(pid):
    f = proc_status(pid)
    try:
        return int(f["VmRSS"][0])
    except (TypeError, KeyError, IndexError, ValueError):
        return None


def threads_of(pid):
    f = proc_status(pid)
    try:
        return int(f["Threads"][0])
    except (TypeError, KeyError, IndexError, ValueError):
        return None


def run_main(main):
    """Run a benchmark's main() as its script: its exit status, or 130 when interrupted (the
    server stopped and its temporary directory removed by then)."""
    try:
        sys.exit(main())
    except (KeyboardInterrupt, Interrupted) as e:
        print("interrupted (%s): the server was stopped and its temporary directory removed" %
              (str(e) or "SIGINT"), file=sys.stderr)
        sys.exit(130)
